"""Converge this host's kernel and processes on the desired state.

The agent is level-triggered: whatever happened before, it computes the
desired host state from the current snapshot (pure, in ``model``), compares
it with what it last applied, and applies only the difference. The kernel is
re-inspected in full on start-up and periodically, so that drift — a link
deleted by hand, a dnsmasq that died — is repaired; between those passes a
change costs only the work for the objects whose desired spec changed, which
is what keeps "router attached → opts rewritten and dnsmasq signalled" fast.

Every step is idempotent (drivers turn "exists" into "verify"), so a crashed
agent simply runs everything again. Each network and router is applied on
its own: one that fails is retried on the next pass and never stalls the
others.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from netmeta.agent.ledger import Ledger
from netmeta.config import Config
from netmeta.drivers import dnsmasq, iptables, links, netns, processes
from netmeta.model import names
from netmeta.model.dhcp import FILE_KINDS, DhcpNetworkSpec, desired_dhcp
from netmeta.model.l3 import RouterSpec, desired_routers, normalize_saved
from netmeta.model.types import NetworkId, RouterId, Snapshot

log = logging.getLogger(__name__)

# Beside dnsmasq's files: a digest of the files it has last read (start or SIGHUP).
LOADED_MARKER = "loaded"


@dataclass
class PassReport:
    """What one convergence pass did, for logs, tests and benchmarks."""

    started: float = field(default_factory=time.monotonic)
    applied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signalled: list[str] = field(default_factory=list)
    spawned: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.removed or self.signalled or self.spawned)


class Reconciler:
    """Holds what was applied; :meth:`converge` moves the host to a snapshot."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # None: bridges in the host's own namespace (fabric_namespace = ""),
        # for plugging real VM taps; drivers refuse "" so it cannot happen by accident.
        self.fabric: str | None = config.fabric_namespace or None
        self.dhcp_root = os.path.join(config.state_dir, "dhcp")
        self.ledger = Ledger.load(config.state_dir)
        self.applied_dhcp: dict[str, DhcpNetworkSpec] = {}
        self.applied_routers: dict[str, RouterSpec] = {}
        self.bridges: dict[str, int] = {}
        # The fabric's links as observed at the start of a full pass (else None).
        self._fabric_view: dict[str, dict[str, Any]] | None = None

    # --- the pass -------------------------------------------------------
    def converge(self, snapshot: Snapshot, *, full: bool = False) -> PassReport:
        report = PassReport()
        if full:
            self.applied_dhcp.clear()
            self.applied_routers.clear()
            self.bridges.clear()
        self._ensure_fabric()
        self._fabric_view = links.observe(self.fabric) if full else None
        wanted_dhcp = desired_dhcp(snapshot, self.config, self.config.state_dir)
        wanted_routers = desired_routers(snapshot, self.config)

        self._converge_bridges(snapshot, report)
        for net_id, spec in wanted_dhcp.items():
            self._guarded(report, f"network {net_id}", self._apply_dhcp, spec, report)
        for router_id, rspec in wanted_routers.items():
            self._guarded(report, f"router {router_id}", self._apply_router, rspec, report)
        self._remove_unwanted(wanted_dhcp, wanted_routers, snapshot, report)
        return report

    def _guarded(self, report: PassReport, what: str, step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the pass
            log.warning("%s: %s (retrying on the next pass)", what, exc)
            report.failed[what] = str(exc)

    # --- fabric ---------------------------------------------------------
    def _ensure_fabric(self) -> None:
        if self.fabric and self.fabric not in self.ledger.namespaces:
            self.ledger.remember(namespace=self.fabric)
        if self.fabric and not netns.namespace_exists(self.fabric):
            netns.ensure_namespace(self.fabric)

    def _converge_bridges(self, snapshot: Snapshot, report: PassReport) -> None:
        for net_id, network in snapshot.networks.items():
            if self.bridges.get(net_id) != network.mtu:
                self._guarded(report, f"bridge of {net_id}", self._ensure_bridge, net_id, network.mtu, report)

    def _ensure_bridge(self, net_id: str, mtu: int, report: PassReport) -> None:
        bridge = names.bridge_name(net_id)
        self.ledger.remember(fabric_link=bridge)
        seen = (self._fabric_view or {}).get(bridge)
        if not (seen and seen["kind"] == "bridge" and seen["up"] and seen["mtu"] == mtu):
            links.ensure_bridge(self.fabric, bridge, mtu)
        self.bridges[net_id] = mtu
        report.applied.append(bridge)

    # --- DHCP namespaces --------------------------------------------------
    def _apply_dhcp(self, spec: DhcpNetworkSpec, report: PassReport) -> None:
        files_dir = spec.dnsmasq.files_dir
        pid_file = spec.dnsmasq.path("pid")
        previous = self.applied_dhcp.get(spec.network_id)
        if previous == spec:
            if self._dhcp_intact(spec, pid_file):
                return
            # dnsmasq died, or the namespace went (deleted by hand, or made
            # again): apply the whole spec again, as on a first pass.
            log.warning("network %s: dnsmasq or its namespace is gone; repairing", spec.network_id)
            previous = None
        # Files first: a router attach or a new port changes only the files,
        # and guests should see the new options as soon as possible.
        _make_readable_dir(files_dir)
        for kind in FILE_KINDS:
            dnsmasq.write_file_atomic(spec.dnsmasq.path(kind), spec.files[kind])
        if previous is None or _plumbing(previous) != _plumbing(spec):
            outer = names.dhcp_outer_name(spec.port_id)
            self.ledger.remember(namespace=spec.namespace, fabric_link=outer)
            inner = self._observed(spec.namespace)
            if not _veth_in_sync(inner, spec.tap, self._fabric_view, outer, spec.bridge, spec.mac, spec.mtu, spec.addresses):
                netns.ensure_namespace(spec.namespace)
                links.ensure_veth_into(spec.namespace, spec.tap, self.fabric, outer, spec.bridge, spec.mac, spec.mtu)
                links.ensure_addresses(spec.namespace, spec.tap, set(spec.addresses))
        argv = spec.argv
        pid = dnsmasq.running_pid(pid_file, spec.network_id)
        if pid is not None and dnsmasq.cmdline(pid) != argv:
            # The command line must change (interface, ranges): only then restart.
            dnsmasq.stop(pid)
            pid = None
        if pid is not None and processes.network_namespace_inode(pid) != netns.namespace_inode(spec.namespace):
            # The namespace was deleted and made again: this dnsmasq serves a
            # namespace nobody can reach any more.
            log.warning("dnsmasq %d for %s runs in an old namespace: restarting it", pid, spec.network_id)
            dnsmasq.stop(pid)
            pid = None
        # Whether dnsmasq has read these files is remembered beside them, not
        # inferred from "the write changed something": a pass (or an agent)
        # that died between writing and signalling must still signal next time.
        loaded = spec.dnsmasq.path(LOADED_MARKER)
        digest = _files_digest(spec.files)
        if pid is None:
            dnsmasq.start(spec.namespace, argv, pid_file)
            dnsmasq.write_file_atomic(loaded, digest)
            report.spawned.append(spec.network_id)
        elif _read(loaded) != digest:
            dnsmasq.reload(pid)
            dnsmasq.write_file_atomic(loaded, digest)
            report.signalled.append(spec.network_id)
        self.applied_dhcp[spec.network_id] = spec
        report.applied.append(spec.namespace)

    def _dhcp_intact(self, spec: DhcpNetworkSpec, pid_file: str) -> bool:
        """The cheap check of every pass: dnsmasq alive, in the namespace of that name."""
        pid = dnsmasq.running_pid(pid_file, spec.network_id)
        inode = netns.namespace_inode(spec.namespace)
        return pid is not None and inode is not None and processes.network_namespace_inode(pid) == inode

    # --- router namespaces -----------------------------------------------
    def _apply_router(self, spec: RouterSpec, report: PassReport) -> None:
        previous = self.applied_routers.get(spec.router_id)
        if previous == spec:
            return
        inner = None
        if previous is None:
            self.ledger.remember(namespace=spec.namespace)
            inner = self._observed(spec.namespace)
            if inner is None:
                netns.ensure_namespace(spec.namespace)
            netns.set_sysctl(spec.namespace, "net.ipv4.ip_forward", "1")
        # Between full passes only the interfaces that changed are touched: a
        # router with many interfaces must not re-verify all of them per change.
        before = {i.port_id: i for i in previous.interfaces} if previous else {}
        for intf in spec.interfaces:
            if before.get(intf.port_id) == intf:
                continue
            outer = names.router_outer_name(intf.port_id)
            self.ledger.remember(fabric_link=outer)
            if _veth_in_sync(inner, intf.device, self._fabric_view, outer, intf.bridge, intf.mac, intf.mtu, intf.addresses):
                continue
            links.ensure_veth_into(spec.namespace, intf.device, self.fabric, outer, intf.bridge, intf.mac, intf.mtu)
            links.ensure_addresses(spec.namespace, intf.device, set(intf.addresses))
        wanted_devices = {i.device for i in spec.interfaces}
        stale = (
            [d for d in (inner if inner is not None else _router_devices(spec.namespace))
             if d.startswith(names.ROUTER_PORT_PREFIX) and d not in wanted_devices]
            if previous is None
            else [i.device for i in previous.interfaces if i.device not in wanted_devices]
        )
        for device in stale:
            links.delete_link(spec.namespace, device)
            report.removed.append(f"{spec.namespace}/{device}")
        if previous is None or previous.iptables != spec.iptables:
            # Re-applied only when the kernel's rules differ from the payload.
            if normalize_saved(iptables.save(spec.namespace)) != normalize_saved(spec.iptables):
                iptables.restore(spec.namespace, spec.iptables)
        self.applied_routers[spec.router_id] = spec
        report.applied.append(spec.namespace)

    def _observed(self, namespace: str) -> dict[str, dict[str, Any]] | None:
        """The namespace's links, during a full pass and if it exists; else None."""
        if self._fabric_view is None or not netns.namespace_exists(namespace):
            return None
        return links.observe(namespace)

    # --- removal ----------------------------------------------------------
    def _remove_unwanted(
        self,
        wanted_dhcp: Mapping[NetworkId, DhcpNetworkSpec],
        wanted_routers: Mapping[RouterId, RouterSpec],
        snapshot: Snapshot,
        report: PassReport,
    ) -> None:
        keep_ns = {s.namespace for s in wanted_dhcp.values()} | {s.namespace for s in wanted_routers.values()}
        if self.fabric:
            keep_ns.add(self.fabric)
        for ns in sorted(self.ledger.namespaces - keep_ns):
            self._guarded(report, f"removing {ns}", self._remove_namespace, ns, report)
        for net_id in list(self.applied_dhcp):
            if net_id not in wanted_dhcp:
                del self.applied_dhcp[net_id]
        for router_id in list(self.applied_routers):
            if router_id not in wanted_routers:
                del self.applied_routers[router_id]
        # dnsmasq files of networks that are gone (also from before a restart)
        if os.path.isdir(self.dhcp_root):
            for net_id in os.listdir(self.dhcp_root):
                if net_id not in wanted_dhcp:
                    self._guarded(report, f"removing dnsmasq files of {net_id}", self._remove_dhcp_files, net_id)
        keep_links = {names.bridge_name(n) for n in snapshot.networks}
        keep_links |= {names.dhcp_outer_name(s.port_id) for s in wanted_dhcp.values()}
        keep_links |= {names.router_outer_name(i.port_id) for s in wanted_routers.values() for i in s.interfaces}
        for link in sorted(self.ledger.fabric_links - keep_links):
            self._guarded(report, f"removing {link}", self._remove_fabric_link, link, report)
        for net_id in list(self.bridges):
            if net_id not in snapshot.networks:
                del self.bridges[net_id]

    def _remove_namespace(self, ns: str, report: PassReport) -> None:
        if ns.startswith(names.DHCP_NS_PREFIX):
            self._stop_dnsmasq(ns[len(names.DHCP_NS_PREFIX):])
        netns.delete_namespace(ns)
        self.ledger.forget(namespace=ns)
        report.removed.append(ns)

    def _remove_dhcp_files(self, net_id: str) -> None:
        self._stop_dnsmasq(net_id)
        shutil.rmtree(os.path.join(self.dhcp_root, net_id), ignore_errors=True)

    def _remove_fabric_link(self, link: str, report: PassReport) -> None:
        links.delete_link(self.fabric, link)
        self.ledger.forget(fabric_link=link)
        report.removed.append(f"{self.fabric or 'host'}/{link}")

    def _stop_dnsmasq(self, net_id: str) -> None:
        pid = dnsmasq.running_pid(os.path.join(self.dhcp_root, net_id, "pid"), net_id)
        if pid is not None:
            dnsmasq.stop(pid)


def _router_devices(namespace: str) -> list[str]:
    """The qr- devices present in a router namespace (kernel truth, not memory)."""
    return [name for name in links.list_links(namespace) if name.startswith(names.ROUTER_PORT_PREFIX)]


def _veth_in_sync(
    inner: dict[str, dict[str, Any]] | None,
    inner_name: str,
    fabric: dict[str, dict[str, Any]] | None,
    outer_name: str,
    bridge: str,
    mac: str,
    mtu: int,
    addresses: tuple[str, ...],
) -> bool:
    """Whether an observed veth pair already is exactly what is wanted."""
    if inner is None or fabric is None:
        return False
    inn, out = inner.get(inner_name), fabric.get(outer_name)
    if not inn or not out or not inner.get("lo", {}).get("up"):
        return False
    return bool(
        inn["kind"] == out["kind"] == "veth"
        and inn["peer_index"] == out["index"]
        and out["peer_index"] == inn["index"]
        and inn["mac"] == mac.lower()
        and inn["mtu"] == out["mtu"] == mtu
        and inn["up"] and out["up"]
        and out["master"] == bridge
        and inn["addresses"] == set(addresses)
    )


def _files_digest(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for kind in FILE_KINDS:
        digest.update(files[kind].encode() + b"\0")
    return digest.hexdigest() + "\n"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _plumbing(spec: DhcpNetworkSpec) -> tuple[object, ...]:
    """The parts of a qdhcp spec that live in the kernel (not in files)."""
    return (spec.namespace, spec.tap, spec.port_id, spec.mac, spec.mtu, spec.bridge, spec.addresses)


def _make_readable_dir(path: str) -> None:
    # dnsmasq drops to "nobody" and re-reads its files on SIGHUP as that user:
    # the directory chain must be world-readable.
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    os.chmod(os.path.dirname(path), 0o755)
