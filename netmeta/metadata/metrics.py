"""The metadata service's metrics and access log.

Counted in prometheus_client's multiprocess mode when the service runs as
several workers (:func:`netmeta.metrics.use_multiprocess`); in one process
(and in tests) the same objects count in memory.

* ``netmeta_metadata_requests_total{listener,family,status}`` and
  ``netmeta_metadata_request_duration_seconds{listener,family}``: listener is
  ``network`` (qdhcp), ``router`` (qrouter) or ``signed`` (Nova's side);
  family is ``openstack``, ``ec2``, ``token`` or ``root`` — bounded, whatever
  paths guests send.
* ``netmeta_metadata_connections_open`` and
  ``netmeta_metadata_connections_refused_total{reason}``: counted by the
  connection layer (:mod:`netmeta.metadata.http`).
* ``netmeta_metadata_tokens_issued_total``,
  ``netmeta_metadata_rate_limited_total{listener}``,
  ``netmeta_metadata_listeners{kind}``.

The access log (logger ``netmeta.metadata.access``) has one line per
answered request: caller IP, listener, resolved instance, method, path,
status, bytes, milliseconds. Successes and refusals have separate budgets
(:class:`~netmeta.logs.RateLimitedLog`), so a flood of one never hides the
other, and each costs at most a burst and a summary line per interval.

Requests, latencies and open connections are tallied in plain counters and
added to the metrics by :func:`flush`, which the service calls on every
tick: an increment in multiprocess mode writes a shared file under a lock,
and three of them per request cost more than parsing the request. A scrape
therefore sees a request at most one tick (half a second) late.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from netmeta.logs import RateLimitedLog

REQUESTS = Counter("netmeta_metadata_requests", "Metadata requests answered", ["listener", "family", "status"])
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)
LATENCY = Histogram(
    "netmeta_metadata_request_duration_seconds", "Time to answer a metadata request", ["listener", "family"],
    buckets=LATENCY_BUCKETS,
)
CONNECTIONS_OPEN = Gauge("netmeta_metadata_connections_open", "Guest connections open now",
                         multiprocess_mode="livesum")
CONNECTIONS_REFUSED = Counter("netmeta_metadata_connections_refused", "Guest connections refused", ["reason"])
TOKENS_ISSUED = Counter("netmeta_metadata_tokens_issued", "IMDSv2 session tokens issued")
RATE_LIMITED = Counter("netmeta_metadata_rate_limited", "Requests answered 429 by the rate limit", ["listener"])
LISTENERS = Gauge("netmeta_metadata_listeners", "Listening sockets open, by kind", ["kind"],
                  multiprocess_mode="livemax")

ACCESS = RateLimitedLog(logging.getLogger("netmeta.metadata.access"), burst=100, interval=10.0,
                        what="metadata requests")
ACCESS_REFUSED = RateLimitedLog(logging.getLogger("netmeta.metadata.access"), burst=100, interval=10.0,
                                what="refused metadata requests (4xx/5xx)")

# label children, looked up once: .labels() costs more than the increment
_counters: dict[tuple[str, str, int], Any] = {}
_histograms: dict[tuple[str, str], Any] = {}

# What happened since the last flush (see the module docstring).
_BOUNDS = (*LATENCY_BUCKETS, math.inf)
_requests: collections.Counter[tuple[str, str, int]] = collections.Counter()
# per (listener, family): a count per bucket of _BOUNDS, then the sum of seconds
_latency: dict[tuple[str, str], list[float]] = {}
_open = 0


def _family(path: str) -> str:
    if path == "/" or not path:
        return "root"
    first = path.split("/", 2)[1]
    if first == "openstack":
        return "openstack"
    if path.rstrip("/").endswith("/api/token"):
        return "token"
    return "ec2"


_families: dict[str, str] = {}


def family(path: str) -> str:
    """``openstack``, ``ec2``, ``token`` or ``root``: the one label a path gives (remembered per path)."""
    fam = _families.get(path)
    if fam is None:
        fam = _family(path)
        if len(path) <= 256:  # what a guest sends cannot grow this beyond 4096 short paths
            if len(_families) > 4096:
                _families.clear()
            _families[path] = fam
    return fam


def observe(listener: str, path: str, status: int, seconds: float) -> str:
    """Count one answered request (added to the metrics by :func:`flush`); returns its family."""
    fam = family(path)
    _requests[(listener, fam, status)] += 1
    slot = _latency.get((listener, fam))
    if slot is None:
        slot = _latency[(listener, fam)] = [0.0] * (len(_BOUNDS) + 1)
    # prometheus counts an observation in the first bucket whose bound is >= it
    slot[bisect.bisect_left(_BOUNDS, seconds)] += 1
    slot[-1] += seconds
    return fam


def connection_opened() -> None:
    global _open
    _open += 1


def connection_closed() -> None:
    global _open
    _open -= 1


def _flush_counts() -> None:
    global _open
    for (listener, fam, status), count in _requests.items():
        counter = _counters.get((listener, fam, status))
        if counter is None:
            counter = _counters[(listener, fam, status)] = REQUESTS.labels(listener, fam, str(status))
        counter.inc(count)
    _requests.clear()
    for key, slot in _latency.items():
        hist = _histograms.get(key)
        if hist is None:
            hist = _histograms[key] = LATENCY.labels(*key)
        # prometheus_client keeps a value per bucket (not cumulative) and the
        # sum; adding a batch to them is what that many observe() calls do
        # (tests/unit/test_metadata_metrics.py holds this against observe()).
        for index, observed in enumerate(slot[:-1]):
            if observed:
                hist._buckets[index].inc(observed)
        hist._sum.inc(slot[-1])
    _latency.clear()
    if _open:
        CONNECTIONS_OPEN.inc(_open)
        _open = 0


def access(peer: str, listener: str, listener_id: str, instance: str, method: str, path: str,
           status: int, size: int, seconds: float) -> None:
    """One access-log line, within its budget."""
    limited = ACCESS if status < 400 else ACCESS_REFUSED
    if not limited.take(logging.INFO, str(status)):
        return  # left out (over budget, or INFO off): the line is never built
    limited.logger.info(
        "%s %s:%s %s %s %s %d %dB %.2fms", peer, listener, listener_id[:8], instance or "-", method, path,
        status, size, seconds * 1000,
        extra={"fields": {"peer": peer, "listener": listener, "listener_id": listener_id, "instance": instance or None,
                          "method": method, "path": path, "status": status, "bytes": size,
                          "ms": round(seconds * 1000, 3)}},
    )


def flush() -> None:
    """Add the tallies to the metrics and write pending flood summaries (the service's tick)."""
    _flush_counts()
    ACCESS.flush()
    ACCESS_REFUSED.flush()
