"""``netmeta agent``: follow the change feed and converge the host, forever.

Changes are coalesced: while one pass runs, newer snapshots only mark the
agent dirty, and the next pass uses the newest one — a burst of a hundred
port creates costs a few passes, not a hundred. Besides the feed, a timer
runs a cheap pass every ``resync_interval`` seconds (liveness of dnsmasq,
like Neutron's process monitor) and a full pass that re-reads the kernel
every ``full_resync_interval`` seconds.

Stopping the agent leaves everything in place: namespaces, links and every
dnsmasq keep serving, and the next agent adopts them without re-creating
anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from netmeta.agent import metrics
from netmeta.agent.reconciler import PassReport, Reconciler
from netmeta.config import Config
from netmeta.credentials import service_tokens
from netmeta.endpoints import Endpoints
from netmeta.feed import FeedFollower
from netmeta.metrics import DEGRADED, FAILING, OK, Endpoint
from netmeta.model.types import Snapshot
from netmeta.reporting import Reporter, agent_rows
from netmeta.status import read_status as read_component_status
from netmeta.status import write_status

log = logging.getLogger(__name__)

# How long a pass waits for its units before reporting the slow ones as
# pending and moving on (a change to another object must not wait for them).
PASS_WAIT = 0.5
# How long start-up waits for the first heartbeat before following the feed anyway.
REGISTER_WAIT = 5.0
# Passes follow each other no closer than this, or than PASS_SPACING times
# what the last one cost (rendering and handing out units): a stream of changes (a thousand networks made in
# a minute) is taken in a few large passes instead of one per change, each
# of which renders every network's desired state again; an isolated change
# after a quiet moment still starts its pass at once.
MIN_PASS_INTERVAL = 0.2
PASS_SPACING = 2.0


class Agent:
    def __init__(self, config: Config, *, resync_interval: float = 5.0, full_resync_interval: float = 60.0) -> None:
        self.config = config
        self.reconciler = Reconciler(config, on_done=self._unit_done)
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        tokens = service_tokens(config)
        endpoints = Endpoints(config.api_endpoints)
        self.follower = FeedFollower(endpoints, self._on_change, tokens=tokens)
        # The DHCP, L3 and Linux bridge agents' heartbeats (netmeta.reporting).
        self.reporter = Reporter(config, agent_rows(config), tokens, endpoints)
        self.resync_interval = resync_interval
        self.full_resync_interval = full_resync_interval
        self._wake = asyncio.Event()
        self._full_due = True  # the first pass always reads the kernel
        self.last_report: PassReport | None = None
        self.converged_revision = -1
        self.passes = 0
        self.metrics_address = ""
        # Seconds from this object's creation to each start-up step (status
        # "startup": what an agent restart spends before and in its first pass).
        self._created = time.monotonic()
        self.startup: dict[str, float] = {}

    def _on_change(self, snapshot: Snapshot) -> None:
        self._wake.set()

    def _unit_done(self) -> None:
        """A unit a pass left running has finished (called from its worker thread)."""
        if self._loop_ref is not None and not self._loop_ref.is_closed():
            self._loop_ref.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        endpoint: Endpoint | None = None
        if self.config.agent_metrics_bind:
            endpoint = Endpoint("agent", self.config.agent_metrics_bind, self.health)
            self.metrics_address = await endpoint.start()
        reporter = asyncio.create_task(self.reporter.run(), name="report")
        # Registered before the first list, when the server answers at once:
        # that list then already holds what the server scheduled onto us.
        try:
            await asyncio.wait_for(self.reporter.reported.wait(), timeout=REGISTER_WAIT)
        except asyncio.TimeoutError:
            pass
        self._step("registered")
        follower = asyncio.create_task(self.follower.run(), name="feed")
        try:
            await self.follower.synced.wait()
            self._step("synced")
            await self._loop()
        finally:
            follower.cancel()
            reporter.cancel()
            await asyncio.gather(follower, reporter, return_exceptions=True)
            await asyncio.to_thread(self.reconciler.close)
            if endpoint is not None:
                await endpoint.stop()

    async def health(self) -> tuple[str, dict[str, Any]]:
        """ok: converged; degraded: some objects failing or behind; failing: no feed or no pass yet."""
        if not self.follower.synced.is_set():
            return FAILING, {"reason": f"not synced with the API at {self.config.api_url} yet"}
        report = self.last_report
        if report is None:
            return FAILING, {"reason": "no pass finished yet"}
        seen = self.follower.snapshot.revision
        details: dict[str, Any] = {"revision_seen": seen, "revision_applied": self.converged_revision,
                                   "passes": self.passes}
        if report.failed:
            details["failed"] = dict(sorted(report.failed.items())[:20])
            return DEGRADED, details
        return OK, details

    async def _loop(self) -> None:
        last_full = 0.0
        # A *round* gathers passes until no unit is left running: only then has
        # the host converged on a revision, and the status file says so.
        round_report: PassReport | None = None
        first = True
        next_pass = 0.0  # monotonic time before which a change does not start a pass
        while True:
            delay = next_pass - time.monotonic()
            if delay > 0 and not self._full_due:
                await asyncio.sleep(delay)  # changes meanwhile coalesce into this pass
            started = time.monotonic()
            snapshot = self.follower.snapshot
            full = self._full_due or time.monotonic() - last_full >= self.full_resync_interval
            self._wake.clear()
            # The first pass waits for every unit: at start-up nothing else can be
            # delayed, and its status tells what adopting the host took.
            wait = None if first else PASS_WAIT
            try:
                report = await asyncio.to_thread(self.reconciler.converge, snapshot, full=full, wait=wait)
            except Exception as exc:  # noqa: BLE001 - e.g. the fabric namespace vanished
                # A failure outside any one object (the fabric itself) must not
                # end the agent: everything keeps serving; retry with a full pass.
                log.warning("pass at revision %d failed: %s; retrying with a full pass", snapshot.revision, exc)
                self._full_due = True
                await asyncio.sleep(1.0)
                continue
            if first:
                self._step("first_pass")
            first = False
            if full:
                last_full = time.monotonic()
                self._full_due = False
            if round_report is None:
                round_report = report
            else:
                round_report.merge(report)
                round_report.pending = report.pending
            self.passes += 1
            if not report.pending:
                self.converged_revision = snapshot.revision
            self._count(report, full)
            self.last_report = round_report
            try:
                self._write_status(round_report, full)
            except OSError as exc:  # a diagnostics file must never stop the agent
                log.warning("cannot write the agent status file: %s", exc)
            if report.changed or report.failed:
                log.info(
                    "revision %d: applied %d, removed %d, signalled %d, spawned %d, failed %d, pending %d",
                    snapshot.revision, len(report.applied), len(report.removed),
                    len(report.signalled), len(report.spawned), len(report.failed), len(report.pending),
                )
            if not report.pending:
                round_report = None
            next_pass = started + max(MIN_PASS_INTERVAL, PASS_SPACING * report.cost)
            timeout = self.resync_interval
            retry = self.reconciler.next_retry()
            if retry is not None:
                timeout = min(timeout, max(retry, 0.05))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass

    def _step(self, name: str) -> None:
        self.startup[name] = round(time.monotonic() - self._created, 3)

    def _count(self, report: PassReport, full: bool) -> None:
        """The pass in the metrics (see :mod:`netmeta.agent.metrics`)."""
        kind = "full" if full else "quick"
        metrics.PASS_DURATION.labels(kind).observe(time.monotonic() - report.started)
        result = "failed" if report.failed else "changed" if report.changed else "unchanged"
        metrics.PASSES.labels(kind, result).inc()
        changed = 0
        for action, items in (("applied", report.applied), ("removed", report.removed),
                              ("signalled", report.signalled), ("spawned", report.spawned)):
            if items:
                metrics.OBJECTS_CHANGED.labels(action).inc(len(items))
            changed += len(items)
        metrics.PASS_CHANGES.observe(changed)
        seen = self.follower.snapshot.revision
        metrics.REVISION_SEEN.set(seen)
        metrics.REVISION_APPLIED.set(self.converged_revision)
        metrics.REVISION_LAG.set(max(0, seen - self.converged_revision))

    def _write_status(self, report: PassReport, full: bool) -> None:
        """Tell the world (tests, the demo, `explain`) what the last pass did."""
        status = {
            "pid": os.getpid(),
            "metrics": self.metrics_address,
            "revision": self.converged_revision,
            "passes": self.passes,
            "last_pass_full": full,
            "last_pass_ms": round(1000 * (time.monotonic() - report.started), 1),
            "startup": self.startup,
            "applied": report.applied,
            "removed": report.removed,
            "signalled": report.signalled,
            "spawned": report.spawned,
            "failed": report.failed,
            "pending": report.pending,
            "waiting": {
                f"{kind} {ident}": {"error": r.error, "permanent": r.permanent, "attempts": r.attempts}
                for (kind, ident), r in self.reconciler.waiting()
            },
        }
        write_status(self.config.state_dir, "agent", status)


def read_status(state_dir: str) -> dict[str, Any] | None:
    return read_component_status(state_dir, "agent")


def run(config: Config) -> None:
    from netmeta.drivers import dnsmasq

    paths = config.paths
    stopped = dnsmasq.adopt_layout(paths.dhcp_link, paths.dhcp_root)
    if stopped:
        log.warning("moved dnsmasq's files from %s to %s: restarting dnsmasq for %d network(s) (%s)",
                    paths.dhcp_link, paths.dhcp_root, len(stopped), ", ".join(stopped))
    asyncio.run(Agent(config).run())
