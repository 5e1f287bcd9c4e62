"""Neutron's ``[metadata_rate_limiting]``, without haproxy, shared by every worker.

Neutron renders two haproxy stick tables per listener, a base window and a
burst window, each tracking ``http_req_rate`` per source, and denies with
429 when *either* rate is above its limit. Denied requests are counted too
(tracking happens before the deny), so a client that keeps hammering stays
refused until it slows down. haproxy's rate is a *frequency counter*: the
count of the current period plus the previous period's count weighted by
the part of it still inside the sliding window. This module computes the
same thing, in a table every worker process can read:

* the table is a fixed array of cells (``slots`` rows × ``workers``
  columns): a key hashes to a row; each worker writes only its own column,
  so no two processes ever write the same bytes, and a decision sums the
  row. So a limit is per guest, whichever worker its connections reach;
* memory is bounded by construction (like haproxy's ``size 10k``); two keys
  sharing a row take the row from each other (a fresh count, never a
  wrong refusal).

Only the configured ``ip_versions`` are limited. Pure: the clock and the
table (a ``bytearray``, or a shared mmap made by the caller) are injected.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Callable, Hashable, Union

from netmeta.model.ip import ip_version
from netmeta.model.settings import RateLimits


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0


ALLOW = Decision(True)

# tag, then (period, count, previous count) for the base and the burst window.
_CELL = struct.Struct("<Q6I")
_MAX = 0xFFFFFFFF
SLOTS = 8192

Table = Union[bytearray, memoryview]


def table_size(workers: int, slots: int = SLOTS) -> int:
    """Bytes of a table for ``workers`` processes."""
    return slots * workers * _CELL.size


@functools.lru_cache(maxsize=8192)  # a hash per request otherwise
def key_tag(key: Hashable) -> int:
    """A key's tag in a shared table: 64 bits of its hash, odd (0 marks a free cell)."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little") | 1


class RateLimiter:
    """Decides on one request of a key; one instance per worker, one table for all."""

    def __init__(self, config: RateLimits, clock: Callable[[], float], *, table: Table | None = None,
                 workers: int = 1, worker: int = 0, slots: int = SLOTS) -> None:
        self.config = config
        self.clock = clock
        self.workers, self.worker, self.slots = workers, worker, slots
        self.table: Table = table if table is not None else bytearray(table_size(workers, slots))
        if len(self.table) < table_size(workers, slots):
            raise ValueError("rate-limit table too small for its workers")
        self.windows = ((max(1, config.base_window_duration), config.base_query_rate_limit),
                        (max(1, config.burst_window_duration), config.burst_query_rate_limit))

    def applies_to(self, ip: str) -> bool:
        return self.config.rate_limit_enabled and ip_version(ip) in self.config.ip_versions

    def check(self, key: Hashable, ip: str, record: bool = True) -> Decision:
        """Record one request from ``ip`` under ``key`` and decide on it.

        ``record=False`` only asks whether the key is over its limit now (one
        more request would be refused), counting nothing.
        """
        if not self.applies_to(ip):
            return ALLOW
        now = self.clock()
        tag = key_tag(key)
        row = (tag >> 1) % self.slots * self.workers
        mine = (row + self.worker) * _CELL.size
        cell = list(_CELL.unpack_from(self.table, mine))
        if cell[0] != tag:
            cell = [tag, 0, 0, 0, 0, 0, 0]
        periods = [int(now // duration) for duration, _ in self.windows]
        for w, period in enumerate(periods):
            at = 1 + 3 * w
            if cell[at] == period:
                cell[at + 1] = min(_MAX, cell[at + 1] + record)
            else:
                cell[at + 2] = cell[at + 1] if cell[at] == period - 1 else 0
                cell[at], cell[at + 1] = period, int(record)
        if record:
            _CELL.pack_into(self.table, mine, *cell)
        current = [0, 0]
        previous = [0, 0]
        for column in range(self.workers):
            other = cell if column == self.worker else _CELL.unpack_from(self.table, (row + column) * _CELL.size)
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
        for w, (duration, limit) in enumerate(self.windows):
            start = periods[w] * duration
            rate = current[w] + previous[w] * (1 - (now - start) / duration)
            if rate + (not record) <= limit:
                continue
            denied = True
            # When the rate, with no more requests, is back at the limit.
            if current[w] >= limit or previous[w] == 0:
                until = start + duration + duration * (1 - limit / max(current[w], 1))
            else:
                until = start + duration * (1 - (limit - current[w]) / previous[w])
            wait = max(wait, until - now)
        if denied:
            return Decision(False, max(1, math.ceil(wait)))
        return ALLOW

    def __len__(self) -> int:
        """How many keys this worker's column holds (bounded by ``slots``)."""
        return sum(1 for row in range(self.slots)
                   if _CELL.unpack_from(self.table, (row * self.workers + self.worker) * _CELL.size)[0])
