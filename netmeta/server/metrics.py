"""The API server's metrics, access log and health.

* ``netmeta_api_requests_total{method,route,status}`` and
  ``netmeta_api_request_duration_seconds{method,route}``: ``route`` is the
  matched route's pattern (``/v2.0/networks/{id}``), never the raw path, so
  a caller cannot grow the series; anything unmatched is ``other``.
* ``netmeta_api_watch_clients``: long-polls waiting right now.
* ``netmeta_api_revision``: the newest change-feed revision this server knows.
* ``netmeta_api_watch_log_reads_total{reason}``: reads of the change log for
  watchers — ``catch_up`` (one for every watcher waiting: a notice without
  its events, or a periodic look) or ``behind`` (a watcher older than the
  hub's window); a write through any server normally costs none.

The access log (logger ``netmeta.server.access``) has a line per request —
peer, method, path, status, bytes, milliseconds — bounded by
:class:`~netmeta.logs.RateLimitedLog`. The change feed's own traffic (the
agent's and the metadata service's list and long-polls) is logged at debug
level: it is the components talking, not an operator's call.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from netmeta.logs import RateLimitedLog

REQUESTS = Counter("netmeta_api_requests", "API requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "netmeta_api_request_duration_seconds", "Time to answer an API request (watch long-polls excluded)",
    ["method", "route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WATCH_CLIENTS = Gauge("netmeta_api_watch_clients", "Change-feed long-polls waiting now")
REVISION = Gauge("netmeta_api_revision", "Newest change-feed revision this server knows")
LOG_READS = Counter("netmeta_api_watch_log_reads", "Reads of the change log for watchers", ["reason"])

FEED_ROUTES = frozenset({"/netmeta/v1/watch", "/netmeta/v1/state"})
ACCESS = RateLimitedLog(logging.getLogger("netmeta.server.access"), burst=200, interval=10.0,
                        what="API requests")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Route variables whose values the route's own pattern restricts to a fixed
# set (the Neutron collections, the router actions): spelled out in the label.
_BOUNDED_VARIABLES = ("kind", "action")


def route_of(request: web.Request) -> str:
    """The matched route's pattern, e.g. ``/v2.0/networks/{id}``; ``other`` when none matched."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    if not canonical or getattr(info, "http_exception", None):
        return "other"
    label = str(canonical)
    for name in _BOUNDED_VARIABLES:
        if name in info:
            label = label.replace("{" + name + "}", info[name])
    return label


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, time and log every request; runs outside the error middleware."""
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    watching = request.path == "/netmeta/v1/watch"
    if watching:
        WATCH_CLIENTS.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if watching:
            WATCH_CLIENTS.dec()
        elapsed = time.perf_counter() - started
        route = route_of(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        feed = route in FEED_ROUTES
        if route != "/netmeta/v1/watch":
            LATENCY.labels(request.method, route).observe(elapsed)
        size = (getattr(response, "content_length", None) or 0) if response is not None else 0
        ACCESS.log(
            logging.DEBUG if feed else logging.INFO,
            "%s %s %s %d %dB %.1fms", request.remote or "-", request.method, request.path_qs, status, size,
            elapsed * 1000, kind=route,
            fields={"peer": request.remote, "method": request.method, "path": request.path_qs,
                    "route": route, "status": status, "bytes": size, "ms": round(elapsed * 1000, 2)},
        )
