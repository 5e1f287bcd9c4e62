"""Converge this host's kernel and processes on the desired state.

The agent is level-triggered: whatever happened before, it computes the
desired host state from the current snapshot (pure, in ``model``), and for
each object of the host — a network's bridge, a qdhcp namespace, a qrouter
namespace, a leftover to remove — runs one *unit*:

    observe (through the Host) → plan (pure, netmeta.agent.plan) → perform → record

The kernel is re-inspected in full on start-up and periodically (a *full*
pass forgets what was recorded), so that drift — a link deleted by hand, a
dnsmasq that died — is repaired; between those passes a change costs only
the work for the objects whose desired spec changed, which is what keeps
"router attached → opts rewritten and dnsmasq signalled" fast.

Units run on a small thread pool, at most ``workers`` at once, and each
object has at most one unit in flight: a network whose dnsmasq takes 10 s to
start holds one worker, never the others, and a pass does not wait for it
longer than ``wait`` — it is reported as pending and finishes on its own
(``on_done`` then wakes the agent for the next pass).

Failures are handled by kind (:mod:`netmeta.drivers.errors`), per object:

* temporary (a race, a missing namespace, a slow start): the object is
  retried after a delay that doubles on each failure (1, 2, 4 … 60 s),
  while every other object converges normally; a changed spec retries at once;
* permanent (dnsmasq refuses its options, a name the kernel rejects): reported
  once, and not retried until the object's spec changes (or the agent restarts);
* anything else is a bug somewhere, treated as temporary so nothing stops.

Every step is idempotent (drivers turn "exists" into "verify"), so a crashed
agent simply runs everything again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from netmeta.agent import metrics
from netmeta.agent.driver_host import DriverHost
from netmeta.agent.host import FdbView, Host, LinkView
from netmeta.agent.plan import (
    Action,
    LOADED_MARKER,
    DhcpSeen,
    RouterSeen,
    StartDnsmasq,
    VxlanSeen,
    plan_bridge,
    plan_dhcp,
    plan_gone_files,
    plan_gone_link,
    plan_gone_namespace,
    plan_portsec,
    plan_router,
    plan_vxlan,
)
from netmeta.config import Config
from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError
from netmeta.model import names
from netmeta.model.dhcp import DhcpNetworkSpec, desired_dhcp
from netmeta.model.l2 import VxlanSpec, desired_vxlan, local_networks
from netmeta.model.l3 import RouterSpec, desired_routers
from netmeta.model.portsec import Ruleset, ruleset
from netmeta.model.types import NetworkId, RouterId, Snapshot

log = logging.getLogger(__name__)

# The first retry of a temporary failure comes after the error's own delay
# hint (1 s by default), each further one after twice the last, up to this.
MAX_BACKOFF = 60.0
# How many objects are worked on at once: enough that a slow dnsmasq start
# does not hold up the others, few enough for a 2-core host.
WORKERS = 4

Key = tuple[str, str]  # ("network", id), ("router", id), ("bridge", id), ("link", name), ("namespace", name)


@dataclass
class PassReport:
    """What one convergence pass did, for logs, tests and benchmarks."""

    started: float = field(default_factory=time.monotonic)
    applied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signalled: list[str] = field(default_factory=list)
    spawned: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Objects whose unit is still running when the pass returns (a slow start).
    pending: list[str] = field(default_factory=list)
    # Seconds the pass itself took to render the desired state and hand out its
    # units (not the wait for them): what the agent paces its passes by.
    cost: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.removed or self.signalled or self.spawned)

    def merge(self, other: "PassReport") -> None:
        self.applied += other.applied
        self.removed += other.removed
        self.signalled += other.signalled
        self.spawned += other.spawned
        self.failed.update(other.failed)


@dataclass
class Retry:
    """Why an object is not being worked on right now."""

    spec: Hashable  # the desired spec that failed; a different one retries at once
    error: str
    permanent: bool
    attempts: int = 1
    due: float = math.inf  # monotonic time of the next attempt


@dataclass
class _Unit:
    key: Key
    what: str  # for logs and reports: "network <id>", "removing qdhcp-…"
    spec: Hashable  # what the object should be (None: gone)
    observe_and_plan: Callable[[], list[Action]]
    record: Callable[[], None] | None = None  # after every action succeeded
    subject: str = ""  # the name for report.applied, "" for none


class Reconciler:
    """Holds what was applied; :meth:`converge` moves the host to a snapshot."""

    def __init__(
        self,
        config: Config,
        host: Host | None = None,
        *,
        workers: int = WORKERS,
        clock: Callable[[], float] = time.monotonic,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.fabric: str | None = config.fabric_namespace or None
        self.paths = config.paths
        self.host: Host = host if host is not None else DriverHost(self.paths, self.fabric)
        self.clock = clock
        self.on_done = on_done
        # Recorded state: the spec last applied per object (None = verify again).
        self.applied_dhcp: dict[str, DhcpNetworkSpec] = {}
        self.applied_routers: dict[str, RouterSpec] = {}
        self.bridges: dict[str, int] = {}
        self.applied_vxlan: dict[str, VxlanSpec] = {}
        # The port security digest last applied (False: none yet; None: "no tables").
        self.applied_portsec: str | None | bool = False
        self._ruleset: tuple[Snapshot, Ruleset] | None = None  # rendered once per snapshot
        self.retries: dict[Key, Retry] = {}
        self._lock = threading.Lock()  # recorded state, retries, running, done
        self._running: dict[Key, Future[None]] = {}
        self._done: list[PassReport] = []  # reports of units finished since the last pass
        self._late: set[Key] = set()  # units the last pass left running
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="agent-unit")

    def close(self) -> None:
        """Let running units finish; start no more."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- the pass -------------------------------------------------------
    def converge(self, snapshot: Snapshot, *, full: bool = False, wait: float | None = None) -> PassReport:
        """One pass: start every due unit, wait up to ``wait`` s (None: all) for them."""
        report = PassReport()
        # Only what this host's agents are bound to (netmeta.model.hosting).
        snapshot = snapshot.for_host(self.config.host)
        with self._lock:
            if full:
                self.applied_dhcp.clear()
                self.applied_routers.clear()
                self.bridges.clear()
                self.applied_vxlan.clear()
                self.applied_portsec = False
        self.host.ensure_fabric()
        # A full pass looks at the fabric once (its links, every VXLAN device's
        # entries) and at each service namespace once, not per object.
        fabric, fdb = self.host.observe_fabric() if full else (None, None)
        wanted_dhcp = desired_dhcp(snapshot, self.config, self.paths)
        wanted_routers = desired_routers(snapshot, self.config, self.paths)
        local = local_networks(snapshot, self.config.host)
        wanted_vxlan = desired_vxlan(snapshot, self.config)

        # Bridges first and inline: every veth below plugs into one, and
        # creating a bridge is a single quick netlink call.
        for net_id in local:
            self._run_inline(self._bridge_unit(net_id, snapshot.networks[net_id].mtu, fabric), report)
        units = [self._vxlan_unit(spec, fabric, fdb) for spec in wanted_vxlan.values()]
        units += [self._dhcp_unit(spec, fabric, full) for spec in wanted_dhcp.values()]
        units += [self._router_unit(spec, fabric, full) for spec in wanted_routers.values()]
        if self.fabric:
            units.append(self._portsec_unit(snapshot))
        units += self._removal_units(wanted_dhcp, wanted_routers, local, wanted_vxlan)
        deadline = None if wait is None else time.monotonic() + wait
        # A unit still running from an earlier pass works on an older spec:
        # its object is submitted again once that unit is done.
        behind = [unit for unit in units if not self._submit(unit)]
        report.cost = time.monotonic() - report.started
        with self._lock:
            # Retries of objects nothing wants any more (a deleted network's bridge).
            live = {u.key for u in units} | {("bridge", n) for n in local}
            for key in [k for k in self.retries if k not in live]:
                del self.retries[key]
        self._wait(deadline)
        if behind:
            behind = [unit for unit in behind if not self._submit(unit)]
            self._wait(deadline)
        with self._lock:
            for done in self._done:
                report.merge(done)
            self._done.clear()
            late = {key for key, f in self._running.items() if not f.done()} | {u.key for u in behind}
            self._late = late
            report.pending = sorted(f"{kind} {ident}" for kind, ident in late)
        return report

    def next_retry(self) -> float | None:
        """Seconds until the earliest temporary retry is due, if any."""
        now = self.clock()
        with self._lock:
            due = [r.due for r in self.retries.values() if not r.permanent]
        return max(0.0, min(due) - now) if due else None

    def waiting(self) -> list[tuple[Key, Retry]]:
        """Objects not being worked on now (backing off, or parked on a permanent error)."""
        with self._lock:
            return sorted(self.retries.items())

    @property
    def busy(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._running.values())

    # --- running units ----------------------------------------------------
    def _due(self, unit: _Unit) -> bool:
        retry = self.retries.get(unit.key)
        if retry is None:
            return True
        if retry.spec != unit.spec:
            del self.retries[unit.key]  # the object changed: whatever failed may now work
            return True
        return not retry.permanent and self.clock() >= retry.due

    def _wait(self, deadline: float | None) -> None:
        with self._lock:
            running = [f for f in self._running.values() if not f.done()]
        if running:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait_futures(running, timeout=timeout)

    def _submit(self, unit: _Unit) -> bool:
        """Start ``unit`` if due; False only if its object's last unit still runs."""
        with self._lock:
            running = self._running.get(unit.key)
            if running is not None and not running.done():
                return False  # one unit per object at a time
            if not self._due(unit):
                return True
            future = self._pool.submit(self._run_and_file, unit)
            self._running[unit.key] = future
        future.add_done_callback(lambda f: self._finished(unit.key, f))
        return True

    def _finished(self, key: Key, future: Future[None]) -> None:
        with self._lock:
            if self._running.get(key) is future:
                del self._running[key]
            late = key in self._late
            self._late.discard(key)
        if late and self.on_done is not None:
            self.on_done()  # a unit the last pass left pending: its result wants a pass

    def _run_and_file(self, unit: _Unit) -> None:
        report = PassReport()
        self._run(unit, report)
        with self._lock:
            self._done.append(report)

    def _run_inline(self, unit: _Unit, report: PassReport) -> None:
        with self._lock:
            due = self._due(unit)
        if due:
            self._run(unit, report)

    def _run(self, unit: _Unit, report: PassReport) -> None:
        """Observe, plan, perform, record; a failure is filed by its kind."""
        done: list[Action] = []
        try:
            actions = unit.observe_and_plan()
            for action in actions:
                action.apply(self.host)
                done.append(action)
            if unit.record is not None:
                with self._lock:
                    unit.record()
        except Exception as exc:  # noqa: BLE001 - one object's failure must never stop the others
            self._failed(unit, exc, report)
        else:
            with self._lock:
                self.retries.pop(unit.key, None)
            if unit.subject and any(not action.quiet for action in actions):
                report.applied.append(unit.subject)
        finally:
            for action in done:
                if action.outcome is not None:
                    getattr(report, action.outcome).append(action.subject)
                if isinstance(action, StartDnsmasq):
                    metrics.DNSMASQ_STARTS.inc()

    def _failed(self, unit: _Unit, exc: Exception, report: PassReport) -> None:
        report.failed[unit.what] = str(exc)
        kind, ident = unit.key
        metrics.ERRORS.labels(ident if kind in ("network", "bridge", "router") else "host").inc()
        with self._lock:
            if isinstance(exc, PermanentDriverError):
                self.retries[unit.key] = Retry(unit.spec, str(exc), permanent=True)
                log.error("%s: %s (not retried until its spec changes)", unit.what, exc)
                return
            previous = self.retries.get(unit.key)
            attempts = previous.attempts + 1 if previous is not None and previous.spec == unit.spec else 1
            first = exc.delay if isinstance(exc, TemporaryDriverError) else 1.0
            delay = min(MAX_BACKOFF, first * 2 ** (attempts - 1))
            self.retries[unit.key] = Retry(unit.spec, str(exc), False, attempts, self.clock() + delay)
        log.warning("%s: %s (attempt %d; retrying in %.0f s)", unit.what, exc, attempts, delay)

    # --- the units ----------------------------------------------------------
    def _bridge_unit(self, net_id: str, mtu: int, fabric: LinkView | None) -> _Unit:
        def plan() -> list[Action]:
            with self._lock:
                recorded = self.bridges.get(net_id)
            return plan_bridge(net_id, mtu, recorded, fabric)

        def record() -> None:
            self.bridges[net_id] = mtu

        return _Unit(("bridge", net_id), f"bridge of {net_id}", mtu, plan, record, names.bridge_name(net_id))

    def _vxlan_unit(self, spec: VxlanSpec, fabric: LinkView | None, fdb: FdbView | None) -> _Unit:
        """A VXLAN network's device on its bridge and l2population's entries (after the bridges)."""

        def plan() -> list[Action]:
            with self._lock:
                recorded = self.applied_vxlan.get(spec.network_id)
            if recorded == spec:
                return []
            if fabric is not None and fdb is not None:  # a full pass: the fabric as observed at its start
                link = fabric.get(spec.device)
                device = link if link is not None and link.get("kind") == "vxlan" else None
                return plan_vxlan(spec, recorded, VxlanSeen(device, fdb.get(spec.device) if device else None))
            device, entries = self.host.observe_vxlan(spec.device)
            return plan_vxlan(spec, recorded, VxlanSeen(device, entries))

        def record() -> None:
            self.applied_vxlan[spec.network_id] = spec

        return _Unit(("vxlan", spec.network_id), f"VXLAN of {spec.network_id}", spec, plan, record, spec.device)

    def _dhcp_unit(self, spec: DhcpNetworkSpec, fabric: LinkView | None, full: bool) -> _Unit:
        def plan() -> list[Action]:
            with self._lock:
                recorded = self.applied_dhcp.get(spec.network_id)
            seen = self._observe_dhcp(spec, fabric if full else None, brief=recorded == spec)
            if recorded == spec and seen.intact:
                return []
            if recorded == spec:
                seen = self._observe_dhcp(spec, None, brief=False)
                log.warning("network %s: dnsmasq or its namespace is gone; repairing", spec.network_id)
                if seen.pid is None:
                    metrics.DNSMASQ_RESPAWNS.inc()
            return plan_dhcp(spec, recorded, seen)

        def record() -> None:
            self.applied_dhcp[spec.network_id] = spec

        return _Unit(("network", spec.network_id), f"network {spec.network_id}", spec, plan, record, spec.namespace)

    def _observe_dhcp(self, spec: DhcpNetworkSpec, fabric: LinkView | None, *, brief: bool) -> DhcpSeen:
        """What the plan needs; ``brief``: only whether dnsmasq is intact (every pass's check)."""
        host = self.host
        inode = host.namespace_inode(spec.namespace)
        pid = host.dnsmasq_pid(spec.dnsmasq.path("pid"), spec.network_id)
        if brief:
            ns_of_pid = host.process_namespace_inode(pid) if pid is not None else None
            return DhcpSeen(inode, pid, pid_namespace_inode=ns_of_pid)
        links, routes = host.observe_namespace(spec.namespace) if fabric is not None and inode is not None else (None, None)
        return DhcpSeen(
            namespace_inode=inode,
            pid=pid,
            argv=host.process_argv(pid) if pid is not None else (),
            pid_namespace_inode=host.process_namespace_inode(pid) if pid is not None else None,
            loaded=host.read_file(spec.dnsmasq.path(LOADED_MARKER)),
            links=links,
            fabric=fabric,
            routes=routes,
        )

    def _router_unit(self, spec: RouterSpec, fabric: LinkView | None, full: bool) -> _Unit:
        def plan() -> list[Action]:
            with self._lock:
                recorded = self.applied_routers.get(spec.router_id)
            if recorded == spec and (not spec.radvd or self._radvd_seen(spec) == (True, True)):
                return []
            if recorded == spec:
                log.warning("router %s: radvd is gone; starting it again", spec.router_id)
            return plan_router(spec, recorded, self._observe_router(spec, recorded, fabric if full else None))

        def record() -> None:
            self.applied_routers[spec.router_id] = spec

        return _Unit(("router", spec.router_id), f"router {spec.router_id}", spec, plan, record, spec.namespace)

    def _portsec_unit(self, snapshot: Snapshot) -> _Unit:
        """Port security for every guest port: one ruleset for the fabric namespace."""
        if self._ruleset is None or self._ruleset[0] is not snapshot:
            self._ruleset = (snapshot, ruleset(snapshot))
        want = self._ruleset[1]

        def plan() -> list[Action]:
            with self._lock:
                recorded = self.applied_portsec
            seen = None if recorded is not False else self.host.observe_nftables()
            return plan_portsec(want, recorded, seen)

        def record() -> None:
            self.applied_portsec = want.digest

        return _Unit(("fabric", "port-security"), "port security", want.digest, plan, record, "nftables netmeta")

    def _observe_router(self, spec: RouterSpec, recorded: RouterSpec | None, fabric: LinkView | None) -> RouterSeen:
        host = self.host
        exists = host.namespace_inode(spec.namespace) is not None
        links, routes = (host.observe_namespace(spec.namespace) if exists and recorded is None and fabric is not None
                         else (None, None))
        devices = host.router_devices(spec.namespace) if exists and recorded is None and links is None else ()
        rules_may_change = recorded is None or recorded.iptables != spec.iptables
        saved = host.save_iptables(spec.namespace) if exists and rules_may_change else None
        rules6_may_change = bool(spec.ip6tables) and (recorded is None or recorded.ip6tables != spec.ip6tables)
        saved6 = host.save_ip6tables(spec.namespace) if exists and rules6_may_change else None
        pid = host.radvd_pid(spec.radvd_path("pid"), spec.router_id)
        in_namespace = pid is not None and host.process_namespace_inode(pid) == host.namespace_inode(spec.namespace)
        return RouterSeen(exists, links, devices, saved, fabric, saved6, pid, in_namespace, routes)

    def _radvd_seen(self, spec: RouterSpec) -> tuple[bool, bool]:
        """(radvd runs, in the namespace of that name): every pass's check, two reads of /proc."""
        pid = self.host.radvd_pid(spec.radvd_path("pid"), spec.router_id)
        if pid is None:
            return (False, False)
        inode = self.host.namespace_inode(spec.namespace)
        return (True, inode is not None and self.host.process_namespace_inode(pid) == inode)

    def _removal_units(
        self,
        wanted_dhcp: Mapping[NetworkId, DhcpNetworkSpec],
        wanted_routers: Mapping[RouterId, RouterSpec],
        local: list[NetworkId],
        wanted_vxlan: Mapping[NetworkId, VxlanSpec],
    ) -> list[_Unit]:
        """Whatever the ledger or the state directory holds that nothing wants.

        One unit per object (a gone network's namespace *and* its files), so
        a removal never runs beside a unit still applying the same object.
        """
        gone: dict[Key, list[Action]] = {}
        namespaces, fabric_links = self.host.recorded()
        keep_ns = {s.namespace for s in wanted_dhcp.values()} | {s.namespace for s in wanted_routers.values()}
        if self.fabric:
            keep_ns.add(self.fabric)
        for ns in sorted(namespaces - keep_ns):
            key = _owner(ns)
            pid_file = (self.paths.dhcp_file(key[1], "pid") if key[0] == "network"
                        else self.paths.radvd_file(key[1], "pid") if key[0] == "router" else None)
            gone.setdefault(key, []).extend(plan_gone_namespace(ns, pid_file))
        with self._lock:
            for net_id in [n for n in self.applied_dhcp if n not in wanted_dhcp]:
                del self.applied_dhcp[net_id]
            for router_id in [r for r in self.applied_routers if r not in wanted_routers]:
                del self.applied_routers[router_id]
            for net_id in [n for n in self.bridges if n not in local]:
                del self.bridges[net_id]
            for net_id in [n for n in self.applied_vxlan if n not in wanted_vxlan]:
                del self.applied_vxlan[net_id]
        for net_id in self.host.list_dirs(self.paths.dhcp_root):
            if net_id not in wanted_dhcp:
                gone.setdefault(("network", net_id), []).extend(
                    plan_gone_files(net_id, self.paths.dhcp_dir(net_id), self.paths.dhcp_file(net_id, "pid"))
                )
        keep_links = {names.bridge_name(n) for n in local}
        keep_links |= {s.device for s in wanted_vxlan.values()}
        keep_links |= {names.dhcp_outer_name(s.port_id) for s in wanted_dhcp.values()}
        keep_links |= {names.router_outer_name(i.port_id) for s in wanted_routers.values() for i in s.interfaces}
        for link in sorted(fabric_links - keep_links):
            gone[("link", link)] = plan_gone_link(link)
        return [_Unit(key, f"removing {key[0]} {key[1]}", None, _fixed(actions)) for key, actions in gone.items()]


def _owner(namespace: str) -> Key:
    """The object a namespace belongs to: one unit per object at a time."""
    if namespace.startswith(names.DHCP_NS_PREFIX):
        return ("network", namespace[len(names.DHCP_NS_PREFIX):])
    if namespace.startswith(names.ROUTER_NS_PREFIX):
        return ("router", namespace[len(names.ROUTER_NS_PREFIX):])
    return ("namespace", namespace)


def _fixed(actions: list[Action]) -> Callable[[], list[Action]]:
    return lambda: actions
