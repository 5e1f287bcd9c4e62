"""The rate limiter's written-out decision equals the plain statement of haproxy's sliding rate.

:meth:`RateLimiter.check` is spelled out for its two windows because it runs
for every guest request; ``reference_check`` below is the same rule written
the straightforward way (any number of windows, lists and loops). Random
sequences of requests from several workers into one table, with keys that
share rows and time that jumps, must get the same decisions and leave the
same bytes in the table.
"""

from __future__ import annotations

import math
import struct
from typing import Hashable

from hypothesis import given, settings, strategies as st

from netmeta.config import RateLimitConfig
from netmeta.model.metadata.ratelimit import ALLOW, Decision, RateLimiter, key_tag, table_size

CELL = struct.Struct("<Q6I")


def reference_check(rl: RateLimiter, table: bytearray, key: Hashable, now: float, record: bool) -> Decision:
    tag = key_tag(key)
    row = (tag >> 1) % rl.slots * rl.workers
    mine = (row + rl.worker) * CELL.size
    cell = list(CELL.unpack_from(table, mine))
    if cell[0] != tag:
        cell = [tag, 0, 0, 0, 0, 0, 0]
    periods = [int(now // duration) for duration, _ in rl.windows]
    for w, period in enumerate(periods):
        at = 1 + 3 * w
        if cell[at] == period:
            cell[at + 1] = min(0xFFFFFFFF, cell[at + 1] + record)
        else:
            cell[at + 2] = cell[at + 1] if cell[at] == period - 1 else 0
            cell[at], cell[at + 1] = period, int(record)
    if record:
        CELL.pack_into(table, mine, *cell)
    current, previous = [0] * len(periods), [0] * len(periods)
    for column in range(rl.workers):
        other = cell if column == rl.worker else CELL.unpack_from(table, (row + column) * CELL.size)
        if other[0] != tag:
            continue
        for w, period in enumerate(periods):
            at = 1 + 3 * w
            if other[at] == period:
                current[w] += other[at + 1]
                previous[w] += other[at + 2]
            elif other[at] == period - 1:
                previous[w] += other[at + 1]
    wait, denied = 0.0, False
    for w, (duration, limit) in enumerate(rl.windows):
        start = periods[w] * duration
        rate = current[w] + previous[w] * (1 - (now - start) / duration)
        if rate + (not record) <= limit:
            continue
        denied = True
        if current[w] >= limit or previous[w] == 0:
            until = start + duration + duration * (1 - limit / max(current[w], 1))
        else:
            until = start + duration * (1 - (limit - current[w]) / previous[w])
        wait = max(wait, until - now)
    return Decision(False, max(1, math.ceil(wait))) if denied else ALLOW


@settings(max_examples=200, deadline=None)
@given(
    workers=st.integers(1, 3),
    limits=st.tuples(st.integers(1, 5), st.integers(1, 20), st.integers(1, 3), st.integers(1, 10)),
    steps=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["a", "b", "c", "d", "e"]),
                             st.floats(0, 3, allow_nan=False), st.booleans()), max_size=80),
)
def test_check_equals_the_reference(workers: int, limits: tuple[int, int, int, int],
                                    steps: list[tuple[int, str, float, bool]]) -> None:
    base_window, base_limit, burst_window, burst_limit = limits
    config = RateLimitConfig(rate_limit_enabled=True, base_window_duration=base_window,
                             base_query_rate_limit=base_limit, burst_window_duration=burst_window,
                             burst_query_rate_limit=burst_limit)
    now = [1000.0]
    slots = 3  # five keys in three rows: keys take rows from each other
    table, mirror = bytearray(table_size(workers, slots)), bytearray(table_size(workers, slots))
    limiters = [RateLimiter(config, lambda: now[0], table=table, workers=workers, worker=w, slots=slots)
                for w in range(workers)]
    for worker, key, advance, record in steps:
        now[0] += advance
        rl = limiters[worker % workers]
        assert rl.check(key, "10.0.0.5", record) == reference_check(rl, mirror, key, now[0], record)
        assert table == mirror
