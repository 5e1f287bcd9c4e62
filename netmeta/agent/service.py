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

from netmeta.agent.reconciler import PassReport, Reconciler
from netmeta.config import Config
from netmeta.feed import FeedFollower
from netmeta.model.types import Snapshot
from netmeta.status import read_status as read_component_status
from netmeta.status import write_status

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: Config, *, resync_interval: float = 5.0, full_resync_interval: float = 60.0) -> None:
        self.config = config
        self.reconciler = Reconciler(config)
        self.follower = FeedFollower(config.api_url, self._on_change)
        self.resync_interval = resync_interval
        self.full_resync_interval = full_resync_interval
        self._wake = asyncio.Event()
        self._full_due = True  # the first pass always reads the kernel
        self.last_report: PassReport | None = None
        self.converged_revision = -1
        self.passes = 0

    def _on_change(self, snapshot: Snapshot) -> None:
        self._wake.set()

    async def run(self) -> None:
        follower = asyncio.create_task(self.follower.run(), name="feed")
        try:
            await self.follower.synced.wait()
            await self._loop()
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    async def _loop(self) -> None:
        last_full = 0.0
        while True:
            snapshot = self.follower.snapshot
            full = self._full_due or time.monotonic() - last_full >= self.full_resync_interval
            self._wake.clear()
            try:
                report = await asyncio.to_thread(self.reconciler.converge, snapshot, full=full)
            except Exception as exc:  # noqa: BLE001 - e.g. the fabric namespace vanished
                # A failure outside any one network (the fabric itself) must not
                # end the agent: everything keeps serving; retry with a full pass.
                log.warning("pass at revision %d failed: %s; retrying with a full pass", snapshot.revision, exc)
                self._full_due = True
                await asyncio.sleep(1.0)
                continue
            if full:
                last_full = time.monotonic()
                self._full_due = False
            self.last_report = report
            self.converged_revision = snapshot.revision
            self.passes += 1
            try:
                self._write_status(report, full)
            except OSError as exc:  # a diagnostics file must never stop the agent
                log.warning("cannot write the agent status file: %s", exc)
            if report.changed or report.failed:
                log.info(
                    "revision %d: applied %d, removed %d, signalled %d, spawned %d, failed %d",
                    snapshot.revision, len(report.applied), len(report.removed),
                    len(report.signalled), len(report.spawned), len(report.failed),
                )
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.resync_interval if not report.failed else 1.0)
            except asyncio.TimeoutError:
                pass

    def _write_status(self, report: PassReport, full: bool) -> None:
        """Tell the world (tests, the demo, `explain`) what the last pass did."""
        status = {
            "pid": os.getpid(),
            "revision": self.converged_revision,
            "passes": self.passes,
            "last_pass_full": full,
            "last_pass_ms": round(1000 * (time.monotonic() - report.started), 1),
            "applied": report.applied,
            "removed": report.removed,
            "signalled": report.signalled,
            "spawned": report.spawned,
            "failed": report.failed,
        }
        write_status(self.config.state_dir, "agent", status)


def read_status(state_dir: str) -> dict[str, Any] | None:
    return read_component_status(state_dir, "agent")


def run(config: Config) -> None:
    asyncio.run(Agent(config).run())
