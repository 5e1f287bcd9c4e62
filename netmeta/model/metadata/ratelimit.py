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
        self._others = tuple(column for column in range(workers) if column != worker)
        self._applies: dict[str, bool] = {}

    def applies_to(self, ip: str) -> bool:
        """Whether requests from ``ip`` are limited (enabled, and its IP version configured); remembered per address."""
        known = self._applies.get(ip)
        if known is None:
            known = self.config.rate_limit_enabled and ip_version(ip) in self.config.ip_versions
            if len(self._applies) > 4096:
                self._applies.clear()
            self._applies[ip] = known
        return known

    def check(self, key: Hashable, ip: str, record: bool = True) -> Decision:
        """Record one request from ``ip`` under ``key`` and decide on it.

        ``record=False`` only asks whether the key is over its limit now (one
        more request would be refused), counting nothing. Written out for
        the two windows: this runs for every request a guest makes.
        """
        if not self.applies_to(ip):
            return ALLOW
        now = self.clock()
        tag = key_tag(key)
        row = (tag >> 1) % self.slots * self.workers
        table = self.table
        mine = (row + self.worker) * _CELL.size
        cell_tag, p0, c0, q0, p1, c1, q1 = _CELL.unpack_from(table, mine)
        if cell_tag != tag:
            p0 = c0 = q0 = p1 = c1 = q1 = 0
        (d0, limit0), (d1, limit1) = self.windows
        n0, n1 = int(now // d0), int(now // d1)
        # This worker's cell, moved to the current periods; a period's count
        # becomes the previous one when the next period starts.
        if p0 == n0:
            c0 = min(_MAX, c0 + record)
        else:
            p0, c0, q0 = n0, int(record), c0 if p0 == n0 - 1 else 0
        if p1 == n1:
            c1 = min(_MAX, c1 + record)
        else:
            p1, c1, q1 = n1, int(record), c1 if p1 == n1 - 1 else 0
        if record:
            _CELL.pack_into(table, mine, tag, p0, c0, q0, p1, c1, q1)
        cur0, prev0, cur1, prev1 = c0, q0, c1, q1
        for column in self._others:  # every other worker's cell of the key
            other_tag, o_p0, o_c0, o_q0, o_p1, o_c1, o_q1 = _CELL.unpack_from(table, (row + column) * _CELL.size)
            if other_tag != tag:
                continue
            if o_p0 == n0:
                cur0, prev0 = cur0 + o_c0, prev0 + o_q0
            elif o_p0 == n0 - 1:
                prev0 += o_c0
            if o_p1 == n1:
                cur1, prev1 = cur1 + o_c1, prev1 + o_q1
            elif o_p1 == n1 - 1:
                prev1 += o_c1
        wait0 = _over(now, n0 * d0, d0, limit0, cur0, prev0, record)
        wait1 = _over(now, n1 * d1, d1, limit1, cur1, prev1, record)
        if wait0 is None and wait1 is None:
            return ALLOW
        return Decision(False, max(1, math.ceil(max(wait0 or 0.0, wait1 or 0.0))))

    def __len__(self) -> int:
        """How many keys this worker's column holds (bounded by ``slots``)."""
        return sum(1 for row in range(self.slots)
                   if _CELL.unpack_from(self.table, (row * self.workers + self.worker) * _CELL.size)[0])


def _over(now: float, start: int, duration: int, limit: int, current: int, previous: int, record: bool) -> float | None:
    """Seconds until a window's rate is back at its limit when it is over it (haproxy's sliding rate); else None."""
    rate = current + previous * (1 - (now - start) / duration)
    if rate + (not record) <= limit:
        return None
    if current >= limit or previous == 0:
        until = start + duration + duration * (1 - limit / max(current, 1))
    else:
        until = start + duration * (1 - (limit - current) / previous)
    return until - now
