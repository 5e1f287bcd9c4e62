"""Neutron's ``[metadata_rate_limiting]``, without haproxy.

Neutron renders two haproxy stick tables per listener, a base window and a
burst window, each tracking ``http_req_rate`` per source address, and denies
with 429 when *either* rate is above its limit. Denied requests are counted
too (tracking happens before the deny), so a client that keeps hammering
stays refused until it slows down. This module keeps the same semantics with
exact sliding windows:

* per key (listener, guest IP) a deque of the most recent request times,
  never longer than the larger limit + 1 — enough to decide, so memory per
  guest is bounded;
* idle keys are evicted on a sweep, and the table holds at most
  ``max_entries`` keys (the oldest-used goes first), like haproxy's
  ``size 10k``.

Only the configured ``ip_versions`` are limited. Pure: the clock is injected.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Hashable

from netmeta.config import RateLimitConfig
from netmeta.model.ip import ip_version


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0


ALLOW = Decision(True)


@dataclass
class RateLimiter:
    config: RateLimitConfig
    clock: Callable[[], float]
    max_entries: int = 10000
    _seen: "OrderedDict[Hashable, deque[float]]" = field(default_factory=OrderedDict)
    _next_sweep: float = 0.0

    @property
    def _horizon(self) -> float:
        return float(max(self.config.base_window_duration, self.config.burst_window_duration))

    def applies_to(self, ip: str) -> bool:
        version = ip_version(ip) or 4  # no address at all (an unknown peer): as before, IPv4's limits
        return self.config.rate_limit_enabled and version in self.config.ip_versions

    def check(self, key: Hashable, ip: str) -> Decision:
        """Record one request from ``ip`` under ``key`` and decide on it."""
        if not self.applies_to(ip):
            return ALLOW
        now = self.clock()
        self._sweep(now)
        times = self._seen.get(key)
        if times is None:
            cap = max(self.config.base_query_rate_limit, self.config.burst_query_rate_limit) + 1
            times = self._seen[key] = deque(maxlen=cap)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        times.append(now)
        wait = 0.0
        for window, limit in (
            (self.config.base_window_duration, self.config.base_query_rate_limit),
            (self.config.burst_window_duration, self.config.burst_query_rate_limit),
        ):
            recent = sum(1 for t in times if t > now - window)
            if recent > limit:
                # The next request passes once only limit-1 of these remain.
                oldest_needed = times[-limit] if limit > 0 else now
                wait = max(wait, oldest_needed + window - now)
        if wait > 0:
            return Decision(False, max(1, math.ceil(wait)))
        return ALLOW

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._horizon
        idle = [k for k, times in self._seen.items() if not times or times[-1] <= now - self._horizon]
        for key in idle:
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
