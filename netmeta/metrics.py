"""Prometheus metrics and health: one small HTTP endpoint per component.

Each component defines its metrics with ``prometheus_client`` in its own
module (:mod:`netmeta.server.metrics`, :mod:`netmeta.agent.metrics`,
:mod:`netmeta.metadata.metrics`) and serves them with :class:`Endpoint` on
its own address (``server_metrics_bind``, ``agent_metrics_bind``,
``metadata_metrics_bind``; loopback by default, empty turns it off)::

    GET /metrics   the Prometheus text format (prometheus_client's encoder)
    GET /healthz   {"component", "status": "ok" | "degraded" | "failing", ...}
                   200 unless failing (then 503), for a probe or `netmeta status`

The address actually bound (port 0 picks one) is published in the
component's status file (``<state_dir>/<component>/status.json``, key
``metrics``), which is where ``netmeta up`` and ``netmeta status`` read it.

The metadata service may run as several worker processes; its metrics use
prometheus_client's multiprocess mode (:func:`use_multiprocess`, called
before anything imports prometheus_client), so every worker counts into
files under the state directory and one scrape sums them all.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from netmeta.errors import NetmetaError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OK, DEGRADED, FAILING = "ok", "degraded", "failing"

# (status, details): status is OK, DEGRADED or FAILING
Health = Callable[[], Awaitable[tuple[str, dict[str, Any]]]]


class EndpointError(NetmetaError):
    """The metrics endpoint cannot listen; the message says where and why."""


def use_multiprocess(directory: str) -> None:
    """Count into per-process files under ``directory`` (before prometheus_client is imported).

    The files of an earlier run are removed: counters start at zero with the
    process, as they do in single-process mode.
    """
    if "prometheus_client" in sys.modules and os.environ.get(MULTIPROC_ENV) != directory:
        raise RuntimeError("prometheus_client was imported before multiprocess mode was chosen")
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.unlink(stale)
    os.environ[MULTIPROC_ENV] = directory


def registry() -> Any:
    """The registry to scrape: this process's, or every process's in multiprocess mode."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get(MULTIPROC_ENV):
        combined = CollectorRegistry()
        MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return combined
    return REGISTRY


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{bind!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class Endpoint:
    """``/metrics`` and ``/healthz`` for one component, on the component's own loop."""

    component: str
    bind: str
    health: Health
    address: str = ""

    async def start(self) -> str:
        """Listen; returns the address bound. :class:`EndpointError` when it cannot."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            host, port = parse_bind(self.bind)
            site = web.TCPSite(self._runner, host, port, shutdown_timeout=0.5)
            await site.start()
        except (OSError, ValueError) as exc:
            await self._runner.cleanup()
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise EndpointError(
                f"{self.component}: cannot serve metrics on {self.bind}: {why.lower()} "
                f"(set {self.component}_metrics_bind, or empty to turn it off)"
            ) from exc
        bound = self._runner.addresses[0]
        self.address = f"{host}:{bound[1]}" if ":" not in host else f"[{host}]:{bound[1]}"
        return self.address

    async def stop(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: Any) -> Any:
        from aiohttp import web

        try:
            status, details = await self.health()
        except Exception as exc:  # noqa: BLE001 - a health check that breaks is a failing component
            status, details = FAILING, {"error": str(exc)}
        return web.json_response({"component": self.component, "status": status, **details},
                                 status=503 if status == FAILING else 200)
