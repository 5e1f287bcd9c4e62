"""``netmeta metadata``: one asyncio process, a listener inside every namespace.

Neutron runs a proxy process per namespace (a haproxy today) in front of a
metadata agent in front of Nova: three hops and one process per network.
Here a single process follows the change feed and, for every namespace that
should serve metadata, opens a listening socket *inside* that namespace (a
socket keeps the namespace it was created in, see
:func:`netmeta.drivers.sockets.listening_socket_in_namespace`) and serves it
from its own event loop. A new network costs one socket, not a process.

Which listeners exist is a pure function of the snapshot
(:func:`desired_listeners`); this module only keeps the set of open sockets
equal to it. The agent creates the namespaces; when one is not there yet, or
was deleted and created again under the same name (a socket in the old one
would serve nobody), the listener is (re)opened on the next tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from netmeta.config import Config
from netmeta.credentials import service_tokens
from netmeta.drivers import netns, sockets, workers
from netmeta.endpoints import Endpoints
from netmeta.feed import FeedFollower
from netmeta.metrics import DEGRADED, FAILING, MULTIPROC_ENV, OK, Endpoint
from netmeta.reporting import Reporter, metadata_rows
from netmeta.metadata import metrics
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import SIGNED, Caps, ConnectionCaps, HttpProtocol, HttpShared, ListenerContext
from netmeta.metadata.passwords import ApiPasswordStore
from netmeta.model.listeners import desired_listeners as model_listeners
from netmeta.model.metadata import conncount
from netmeta.model.metadata.conncount import SharedCounts
from netmeta.model.metadata.ratelimit import RateLimiter, Table, table_size
from netmeta.model.types import Snapshot
from netmeta.status import read_status as read_component_status
from netmeta.status import status_path, write_status

log = logging.getLogger(__name__)

RECHECK_INTERVAL = 0.5


@dataclass(frozen=True)
class ListenerSpec:
    context: ListenerContext
    namespace: str
    host: str
    port: int
    device: str = ""  # the scope of a link-local host (the qdhcp tap)


def desired_listeners(snapshot: Snapshot, config: Config) -> dict[tuple[str, str], ListenerSpec]:
    """The listeners ``model`` decides on (:mod:`netmeta.model.listeners`), as specs to open.

    Only in this host's namespaces: the snapshot is seen from ``config.host``.
    """
    snapshot = snapshot.for_host(config.host)
    return {
        key: ListenerSpec(ListenerContext(want.kind, want.id), want.namespace, want.host, want.port, want.device)
        for key, want in model_listeners(snapshot, config).items()
    }


@dataclass
class _Open:
    spec: ListenerSpec
    server: asyncio.base_events.Server
    inode: int


@dataclass(frozen=True)
class WorkerSlot:
    """What one of ``count`` workers shares with the others: the token key, the rate-limit
    table and the connection counts."""

    index: int
    count: int
    token_key: bytes
    table: Table
    connections: Table | None = None


def worker_count(config: Config) -> int:
    """``metadata_workers``, 0 meaning one per CPU (Neutron's option, default 0)."""
    return config.metadata_workers or os.cpu_count() or 1


class MetadataService:
    def __init__(self, config: Config, slot: WorkerSlot | None = None, open_files: int | None = None) -> None:
        self.config = config
        self.slot = slot
        # One service-user token for the feed and for guests' passwords.
        tokens = service_tokens(config)
        endpoints = Endpoints(config.api_endpoints)
        self.follower = FeedFollower(endpoints, self._on_change, tokens=tokens)
        # One "Metadata agent" heartbeat per host: the single process's, or worker 0's.
        self.reporter = (Reporter(config, metadata_rows(config), tokens, endpoints)
                         if slot is None or slot.index == 0 else None)
        limiter = None
        if slot is not None:
            limiter = RateLimiter(config.rate_limiting, time.monotonic, table=slot.table, workers=slot.count,
                                  worker=slot.index)
        self.app = MetadataApp(config, lambda: self.follower.snapshot, ApiPasswordStore(config.api_url, tokens),
                               token_key=slot.token_key if slot is not None else b"", limiter=limiter)
        # Limits, connection caps and the access log of every listener's connections.
        if not config.metadata_connection_caps:
            caps = Caps.unlimited()
        else:
            caps = Caps.from_open_files(open_files) if open_files else Caps()
        shared = None
        if slot is not None and slot.connections is not None:
            shared = SharedCounts(slot.connections, workers=slot.count, worker=slot.index)
            shared.clear()  # a dead worker's connections in this slot died with it
        self.http = HttpShared(caps=ConnectionCaps(caps, port_of=self.app.port_of, shared=shared,
                                                         limited=self.app.over_rate_limit))
        self.open: dict[tuple[str, str], _Open] = {}
        self._wake = asyncio.Event()
        self._status_written: object = None
        self._wanted: dict[tuple[str, str], ListenerSpec] = {}
        self._wanted_for: Snapshot | None = None
        self._last_failure: dict[tuple[str, str], str] = {}
        self.metrics_address = ""

    def _on_change(self, snapshot: Snapshot) -> None:
        self._wake.set()

    async def run(self) -> None:
        endpoint: Endpoint | None = None
        # One endpoint for all workers (worker 0's): the multiprocess registry sums them all.
        if self.config.metadata_metrics_bind and (self.slot is None or self.slot.index == 0):
            endpoint = Endpoint("metadata", self.config.metadata_metrics_bind, self.health)
            self.metrics_address = await endpoint.start()  # before the feed: a probe sees "not synced"
        follower = asyncio.create_task(self.follower.run(), name="feed")
        reporter = asyncio.create_task(self.reporter.run(), name="report") if self.reporter is not None else None
        signed: asyncio.base_events.Server | None = None
        try:
            await self.follower.synced.wait()
            if self.config.metadata_listen:
                # Nova's side of Neutron's contract: signed requests from a
                # neutron-metadata-agent, on an ordinary socket of this host;
                # every worker holds its own SO_REUSEPORT socket, as for guests.
                signed = await asyncio.get_running_loop().create_server(
                    lambda: HttpProtocol(self.app.dispatch, SIGNED, self.http),
                    self.config.metadata_listen, self.config.metadata_listen_port,
                    reuse_port=self.slot is not None,
                )
                log.info("answering signed requests on %s:%d", self.config.metadata_listen,
                         self.config.metadata_listen_port)
            while True:
                self._wake.clear()
                await self.sync_listeners()
                self.http.caps.refusals.flush()  # the last interval's summary, also after a flood
                metrics.flush()
                try:
                    self._write_status()
                except OSError as exc:  # a diagnostics file must never stop serving
                    log.warning("cannot write the metadata status file: %s", exc)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=RECHECK_INTERVAL)
                except asyncio.TimeoutError:
                    pass
        finally:
            if endpoint is not None:
                await endpoint.stop()
            if signed is not None:
                signed.close()
            follower.cancel()
            if reporter is not None:
                reporter.cancel()
            await asyncio.gather(follower, *([reporter] if reporter is not None else []), return_exceptions=True)
            for key in list(self.open):
                await self._close(key)
            await self.app.close()

    async def health(self) -> tuple[str, dict[str, Any]]:
        """ok: every wanted listener is open; degraded: some are not; failing: no feed yet."""
        if not self.follower.synced.is_set():
            return FAILING, {"reason": f"not synced with the API at {self.config.api_url} yet"}
        missing = sorted(spec.namespace for key, spec in self._wanted.items() if key not in self.open)
        details: dict[str, Any] = {"revision": self.follower.snapshot.revision, "listeners": len(self.open),
                                   "wanted": len(self._wanted)}
        if missing:
            details["missing"] = missing[:20]
            return DEGRADED, details
        return OK, details

    def _count_listeners(self) -> None:
        for kind in ("network", "router"):
            metrics.LISTENERS.labels(kind).set(sum(1 for o in self.open.values() if o.spec.context.kind == kind))

    async def sync_listeners(self) -> None:
        snapshot = self.follower.snapshot
        if snapshot is not self._wanted_for:
            # Recomputed per snapshot, not per tick: the tick only re-checks
            # namespaces (a stat each) on the loop that serves guests.
            self._wanted = desired_listeners(snapshot, self.config)
            self._wanted_for = snapshot
        wanted = self._wanted
        for key in list(self.open):
            if key not in wanted or self.open[key].spec != wanted[key]:
                await self._close(key)
        for key, spec in wanted.items():
            inode = netns.namespace_inode(spec.namespace)
            current = self.open.get(key)
            if current is not None and current.inode == inode:
                continue
            if current is not None:
                log.info("namespace %s was re-created: reopening its listener", spec.namespace)
                await self._close(key)
            if inode is None:
                continue  # the agent has not created the namespace yet
            await self._open(key, spec, inode)

    async def _open(self, key: tuple[str, str], spec: ListenerSpec, inode: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Every worker opens its own (SO_REUSEPORT): see run().
            sock: socket.socket = await asyncio.to_thread(
                sockets.listening_socket_in_namespace, spec.namespace, spec.host, spec.port, reuseport=True,
                device=spec.device,
            )
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            message = f"cannot listen in {spec.namespace} on {spec.host}:{spec.port}: {exc}"
            if self._last_failure.get(key) != message:  # once per cause, not every tick
                log.warning("%s", message)
                self._last_failure[key] = message
            return
        self._last_failure.pop(key, None)
        context = spec.context
        try:
            server = await loop.create_server(lambda: HttpProtocol(self.app.dispatch, context, self.http), sock=sock)
        except OSError as exc:
            sock.close()
            log.warning("cannot serve %s:%d in %s: %s", spec.host, spec.port, spec.namespace, exc)
            return
        self.open[key] = _Open(spec, server, inode)
        self._count_listeners()
        log.info("listening in %s on %s:%d", spec.namespace, spec.host, spec.port)

    async def _close(self, key: tuple[str, str]) -> None:
        entry = self.open.pop(key, None)
        if entry is not None:
            entry.server.close()
            self._count_listeners()
            log.info("closed listener in %s", entry.spec.namespace)

    def _write_status(self) -> None:
        """Publish the open listeners and who each one answered (tests, `explain`).

        Written only when something changed, at most every tick: the file is a
        window into this process for operators, never on the request path.
        """
        listeners = [
            {"kind": o.spec.context.kind, "id": o.spec.context.id, "namespace": o.spec.namespace,
             "host": o.spec.host, "port": o.spec.port}
            for o in self.open.values()
        ]
        access = [
            {"kind": kind, "id": ident, "peer": peer, "count": count}
            for (kind, ident, peer), count in sorted(self.http.access_log.counts.items())
        ]
        status = {"pid": os.getpid(), "revision": self.follower.snapshot.revision, "metrics": self.metrics_address,
                  "listeners": sorted(listeners, key=lambda l: (l["kind"], l["id"])), "access": access}
        if status == self._status_written:
            return
        name = "metadata" if self.slot is None else f"metadata-worker-{self.slot.index}"
        write_status(self.config.state_dir, name, status)
        self._status_written = status


def read_status(state_dir: str) -> dict[str, Any] | None:
    """The metadata process's status; with workers, theirs merged.

    Merged: ``listeners`` are those *every* worker has open (a listener is
    up when any connection to it is served), ``access`` counts are summed,
    ``revision`` is the oldest, and ``workers`` lists each worker's own.
    """
    top = read_component_status(state_dir, "metadata")
    if top is None or "workers" not in top:
        return top
    workers = [read_component_status(state_dir, f"metadata-worker-{i}") for i in range(int(top["workers"]))]
    if any(w is None for w in workers):
        return None  # not all workers are up yet
    each = [w for w in workers if w is not None]
    keys = [{(l["kind"], l["id"]) for l in w["listeners"]} for w in each]
    common = set.intersection(*keys) if keys else set()
    counts: dict[tuple[str, str, str], int] = {}
    for w in each:
        for a in w["access"]:
            key = (a["kind"], a["id"], a["peer"])
            counts[key] = counts.get(key, 0) + int(a["count"])
    return {
        "pid": top["pid"],
        "revision": min(int(w["revision"]) for w in each),
        "metrics": next((w["metrics"] for w in each if w.get("metrics")), ""),
        "listeners": [l for l in each[0]["listeners"] if (l["kind"], l["id"]) in common],
        "access": [{"kind": k, "id": i, "peer": p, "count": n} for (k, i, p), n in sorted(counts.items())],
        "workers": each,
    }


def _serve(config: Config, slot: WorkerSlot | None, open_files: int) -> None:
    try:
        import uvloop  # libuv's loop: about 15% more small answers per second here
    except ImportError:
        asyncio.run(MetadataService(config, slot, open_files).run())
    else:
        uvloop.run(MetadataService(config, slot, open_files).run())


def run(config: Config) -> None:
    """Serve every listener from ``metadata_workers`` processes (one: this process).

    Each worker follows the feed and opens its own listening socket in every
    namespace, all bound with ``SO_REUSEPORT``, and the kernel spreads new
    connections over them. Chosen over one socket per namespace passed to
    every worker (inherited or by SCM_RIGHTS) because nothing has to be
    passed at all: a new listener reaches every worker the moment that
    worker sees the change in the feed, exactly as with one process; a
    respawned worker opens its own; and the kernel balances connections by
    hash instead of waking every worker for each one (libuv does not use
    EPOLLEXCLUSIVE). The cost — a dying worker's not-yet-accepted
    connections are reset, and each worker keeps its own snapshot — is
    small next to a worker's own open connections, which die with it either way.

    What must agree across workers is made here, before the fork: the token
    key (a token from one worker is valid at all), the rate-limit table and
    the connection counts behind the caps (shared anonymous mmaps, one
    column per worker, see :mod:`netmeta.model.metadata.ratelimit` and
    :mod:`netmeta.model.metadata.conncount`).
    """
    limit = workers.raise_open_files_limit()
    count = worker_count(config)
    log.info("metadata: %d worker(s), %d open files each", count, limit)
    if count == 1:
        _serve(config, None, limit)
        return
    key = os.urandom(32)
    table = memoryview(workers.shared_memory(table_size(count)))
    connections = memoryview(workers.shared_memory(conncount.table_size(count)))
    for index in range(count):  # a previous run's, until each worker writes its own
        try:
            os.unlink(status_path(config.state_dir, f"metadata-worker-{index}"))
        except FileNotFoundError:
            pass
    write_status(config.state_dir, "metadata", {"pid": os.getpid(), "workers": count})
    workers.supervise(count, lambda index: _serve(config, WorkerSlot(index, count, key, table, connections), limit),
                      on_exit=_forget_metrics)


def _forget_metrics(pid: int) -> None:
    """A worker exited: drop its live gauges (open connections, listeners) from the sums.

    In prometheus_client's multiprocess mode a gauge counts per process
    file; a dead worker's file would keep its last values in every scrape.
    """
    if not os.environ.get(MULTIPROC_ENV):
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except OSError as exc:
        log.warning("cannot drop worker %d's metrics: %s", pid, exc)
