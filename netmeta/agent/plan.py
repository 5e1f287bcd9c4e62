"""The agent's decisions: desired, recorded and observed state in, actions out.

Pure, like kopf's cause detection or mitmproxy's layers (events in, commands
out): nothing here touches the kernel, a file or a clock, so every decision
is tested with tables and transcripts (``tests/unit/test_agent_plan.py``) on a
fake host, without root. For each object of the host — a network's bridge,
a network's ``qdhcp`` namespace, a router's ``qrouter`` namespace, and the
leftovers of objects that are gone — a ``plan_*`` function takes

* **desired**: the spec ``model`` computes from the snapshot;
* **recorded**: the spec this agent last applied for the object (None after
  a start, a full pass or a failure: then everything is verified again);
* **observed**: what the host showed just before (an ``*Seen`` value);

and returns the list of :class:`Action` values that brings the host there,
in order. :mod:`netmeta.agent.reconciler` observes, calls the planner,
performs the actions through a :class:`~netmeta.agent.host.Host`, and
records. A new kind of kernel object plugs in with one ``Action`` subclass
(its :meth:`Action.apply` calls one new ``Host`` method), one ``plan_*``
function here, and one line in the reconciler that runs it as a unit — see
docs/architecture.md, "Adding a kind of kernel object".
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from netmeta.agent.host import Host, LinkView, RouteView
from netmeta.model import names
from netmeta.model.dhcp import FILE_KINDS, DhcpNetworkSpec, stale_leases
from netmeta.model.l2 import VxlanSpec
from netmeta.model.l3 import RouterSpec, normalize_saved
from netmeta.model.portsec import Ruleset

# Beside dnsmasq's files: a digest of the files it has last read (start or SIGHUP).
LOADED_MARKER = "loaded"


# --- actions --------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One idempotent step on the host. ``outcome`` files it in the pass report."""

    # "spawned", "signalled" or "removed": the report list the subject goes to.
    outcome: ClassVar[str | None] = None
    # A step that only records or re-asserts (the ledger, files dnsmasq has
    # already loaded, a sysctl): a unit made only of these changed nothing
    # worth reporting, so a full pass over an intact host reports (and logs)
    # nothing.
    quiet: ClassVar[bool] = False

    @property
    def subject(self) -> str:
        return ""

    def apply(self, host: Host) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Remember(Action):
    """Write a namespace or fabric link into the ledger *before* creating it."""

    namespace: str = ""
    fabric_link: str = ""

    quiet: ClassVar[bool] = True

    def apply(self, host: Host) -> None:
        host.remember(namespace=self.namespace, fabric_link=self.fabric_link)


@dataclass(frozen=True)
class Forget(Action):
    namespace: str = ""
    fabric_link: str = ""

    def apply(self, host: Host) -> None:
        host.forget(namespace=self.namespace, fabric_link=self.fabric_link)


@dataclass(frozen=True)
class EnsureNamespace(Action):
    namespace: str

    def apply(self, host: Host) -> None:
        host.ensure_namespace(self.namespace)


@dataclass(frozen=True)
class DeleteNamespace(Action):
    namespace: str
    outcome: ClassVar[str | None] = "removed"

    @property
    def subject(self) -> str:
        return self.namespace

    def apply(self, host: Host) -> None:
        host.delete_namespace(self.namespace)


@dataclass(frozen=True)
class EnsureBridge(Action):
    """A bridge in the fabric namespace."""

    name: str
    mtu: int

    def apply(self, host: Host) -> None:
        host.ensure_bridge(self.name, self.mtu)


@dataclass(frozen=True)
class EnsureVeth(Action):
    """A veth from ``namespace`` (``device``, with addresses) to ``bridge`` (``outer``)."""

    namespace: str
    device: str
    outer: str
    bridge: str
    mac: str
    mtu: int
    addresses: tuple[str, ...]

    def apply(self, host: Host) -> None:
        host.ensure_veth(self.namespace, self.device, self.outer, self.bridge, self.mac, self.mtu, self.addresses)


@dataclass(frozen=True)
class DeleteLink(Action):
    """Delete a link; ``namespace`` None means the fabric namespace."""

    namespace: str | None
    device: str
    outcome: ClassVar[str | None] = "removed"

    @property
    def subject(self) -> str:
        return f"{self.namespace or 'fabric'}/{self.device}"

    def apply(self, host: Host) -> None:
        host.delete_link(self.namespace, self.device)


@dataclass(frozen=True)
class SetSysctl(Action):
    namespace: str
    key: str
    value: str

    quiet: ClassVar[bool] = True

    def apply(self, host: Host) -> None:
        host.set_sysctl(self.namespace, self.key, self.value)


@dataclass(frozen=True)
class WriteFiles(Action):
    """Write dnsmasq's files (atomically, readable by ``nobody``) into ``directory``."""

    directory: str
    files: tuple[tuple[str, str], ...]  # (file name, text)

    quiet: ClassVar[bool] = True

    def apply(self, host: Host) -> None:
        host.write_files(self.directory, self.files)


@dataclass(frozen=True)
class RemoveFiles(Action):
    directory: str

    def apply(self, host: Host) -> None:
        host.remove_files(self.directory)


@dataclass(frozen=True)
class StartDnsmasq(Action):
    """Start dnsmasq, then record that it has read the files with ``digest``."""

    network_id: str
    namespace: str
    argv: tuple[str, ...]
    pid_file: str
    marker: str
    digest: str
    outcome: ClassVar[str | None] = "spawned"

    @property
    def subject(self) -> str:
        return self.network_id

    def apply(self, host: Host) -> None:
        host.start_dnsmasq(self.namespace, self.argv, self.pid_file)
        host.write_file(self.marker, self.digest)


@dataclass(frozen=True)
class ReloadDnsmasq(Action):
    """SIGHUP: dnsmasq re-reads hosts and opts files; then record the digest."""

    network_id: str
    pid: int
    marker: str
    digest: str
    outcome: ClassVar[str | None] = "signalled"

    @property
    def subject(self) -> str:
        return self.network_id

    def apply(self, host: Host) -> None:
        host.reload_dnsmasq(self.pid)
        host.write_file(self.marker, self.digest)


@dataclass(frozen=True)
class ReleaseLeases(Action):
    """``dhcp_release`` the leases no hosts line gives any more (a port deleted, an address changed).

    Neutron's DHCP agent does the same on every reload: without it dnsmasq
    keeps the address leased to the gone port's MAC until the lease expires,
    and refuses it to the next port that is given it. Which leases are stale
    is :func:`netmeta.model.dhcp.stale_leases` of the leases file read now.
    """

    network_id: str
    namespace: str
    tap: str
    leases_file: str
    hosts: str  # the hosts file just written

    @property
    def subject(self) -> str:
        return self.network_id

    def apply(self, host: Host) -> None:
        for lease in stale_leases(host.read_file(self.leases_file) or "", self.hosts):
            host.release_lease(self.namespace, self.tap, lease.ip, lease.mac, lease.client_id)


@dataclass(frozen=True)
class StopDnsmasq(Action):
    """Stop ``pid``, or (pid None) whatever dnsmasq the pid file names, if ours."""

    network_id: str
    pid_file: str
    pid: int | None = None
    reason: str = ""

    def apply(self, host: Host) -> None:
        host.stop_dnsmasq(self.pid_file, self.network_id, self.pid)


@dataclass(frozen=True)
class RestoreIptables(Action):
    namespace: str
    payload: str

    def apply(self, host: Host) -> None:
        host.restore_iptables(self.namespace, self.payload)


@dataclass(frozen=True)
class RestoreIp6tables(Action):
    namespace: str
    payload: str

    def apply(self, host: Host) -> None:
        host.restore_ip6tables(self.namespace, self.payload)


@dataclass(frozen=True)
class StartRadvd(Action):
    """Start a router's radvd (its configuration is written first, by WriteFiles)."""

    router_id: str
    namespace: str
    argv: tuple[str, ...]
    pid_file: str
    outcome: ClassVar[str | None] = "spawned"

    @property
    def subject(self) -> str:
        return f"radvd {self.router_id}"

    def apply(self, host: Host) -> None:
        host.start_radvd(self.namespace, self.argv, self.pid_file)


@dataclass(frozen=True)
class ReloadRadvd(Action):
    """SIGHUP: radvd re-reads its configuration (a prefix or mode changed)."""

    router_id: str
    pid: int
    outcome: ClassVar[str | None] = "signalled"

    @property
    def subject(self) -> str:
        return f"radvd {self.router_id}"

    def apply(self, host: Host) -> None:
        host.reload_radvd(self.pid)


@dataclass(frozen=True)
class StopRadvd(Action):
    """Stop ``pid``, or (pid None) whatever radvd the pid file names, if ours."""

    router_id: str
    pid_file: str
    pid: int | None = None

    def apply(self, host: Host) -> None:
        host.stop_radvd(self.pid_file, self.router_id, self.pid)


# A route as the host takes it: (destination CIDR, nexthops, device or None).
Route = tuple[str, tuple[str, ...], "str | None"]


@dataclass(frozen=True)
class EnsureRoutes(Action):
    """netmeta's routes in a namespace, exactly (the qdhcp default route, a router's extra routes)."""

    namespace: str
    routes: tuple[Route, ...]
    # Planned when the routes were not observed in place: replacing a route
    # that is already there changes nothing, so it does not count as work.
    quiet: ClassVar[bool] = True

    def apply(self, host: Host) -> None:
        host.ensure_routes(self.namespace, self.routes)


def dhcp_routes(spec: DhcpNetworkSpec) -> tuple[Route, ...]:
    """The qdhcp default route (Neutron's DeviceManager), on-link route to the gateway first when it needs one."""
    route = spec.route
    if route is None:
        return ()
    onlink: tuple[Route, ...] = ((f"{route.gateway}/32", (), spec.tap),) if route.onlink else ()
    return (*onlink, ("0.0.0.0/0", (route.gateway,), spec.tap))


def router_routes(spec: RouterSpec) -> tuple[Route, ...]:
    return tuple((r.destination, r.nexthops, None) for r in spec.routes)

@dataclass(frozen=True)
class ReplaceNftables(Action):
    """The fabric's port security tables, replaced whole (see model.portsec)."""

    payload: str
    tables_wanted: bool

    @property
    def subject(self) -> str:
        return "nftables port security"

    def apply(self, host: Host) -> None:
        host.replace_nftables(self.payload, self.tables_wanted)


@dataclass(frozen=True)
class EnsureVxlan(Action):
    """A network's VXLAN device on its bridge, its socket on the underlay address (see drivers.vxlan)."""

    device: str
    vni: int
    local_ip: str
    bridge: str
    mtu: int
    port: int

    @property
    def subject(self) -> str:
        return self.device

    def apply(self, host: Host) -> None:
        host.ensure_vxlan(self.device, self.vni, self.local_ip, self.bridge, self.mtu, self.port)


@dataclass(frozen=True)
class ReplaceFdb(Action):
    """The device's remote forwarding entries, exactly (l2population's flood and per-port entries)."""

    device: str
    entries: tuple[tuple[str, str], ...]

    def apply(self, host: Host) -> None:
        host.replace_fdb(self.device, self.entries)


# --- observations ---------------------------------------------------------------


@dataclass(frozen=True)
class VxlanSeen:
    """A VXLAN device in the fabric as the host shows it (None: absent or not VXLAN)."""

    device: Mapping[str, object] | None  # vni, local, port, learning, mtu, up, master
    fdb: frozenset[tuple[str, str]] | None = None


@dataclass(frozen=True)
class DhcpSeen:
    """A qdhcp namespace and its dnsmasq as the host shows them."""

    namespace_inode: int | None  # None: no namespace of that name
    pid: int | None  # the dnsmasq the pid file names, if it runs and is ours
    argv: tuple[str, ...] = ()  # its command line
    pid_namespace_inode: int | None = None  # the namespace it runs in
    loaded: str | None = None  # the digest marker beside the files
    links: LinkView | None = None  # the namespace's links (full passes only)
    fabric: LinkView | None = None  # the fabric's links (full passes only)
    routes: RouteView | None = None  # netmeta's routes in the namespace (full passes only)

    @property
    def intact(self) -> bool:
        """dnsmasq alive, in the namespace of that name (not an old one)."""
        return self.pid is not None and self.namespace_inode is not None and self.pid_namespace_inode == self.namespace_inode


@dataclass(frozen=True)
class RouterSeen:
    """A qrouter namespace as the host shows it (only what the plan needs)."""

    exists: bool
    links: LinkView | None = None  # full passes only
    devices: tuple[str, ...] = ()  # its qr- devices, when there is no link view
    iptables: str | None = None  # iptables-save, when the rules may need applying
    fabric: LinkView | None = None
    ip6tables: str | None = None  # ip6tables-save, likewise
    radvd_pid: int | None = None  # the radvd the pid file names, if it runs and is ours
    radvd_in_namespace: bool = False  # ... in the namespace of that name (not an old one)
    routes: RouteView | None = None  # netmeta's routes in the namespace (full passes only)

    @property
    def radvd_intact(self) -> bool:
        return self.radvd_pid is not None and self.radvd_in_namespace


# --- planners --------------------------------------------------------------------


def plan_bridge(network_id: str, mtu: int, recorded: int | None, fabric: LinkView | None) -> list[Action]:
    """A network's bridge in the fabric: recorded MTU equal → nothing."""
    if recorded == mtu:
        return []
    bridge = names.bridge_name(network_id)
    seen = (fabric or {}).get(bridge)
    actions: list[Action] = [Remember(fabric_link=bridge)]
    if not (seen and seen["kind"] == "bridge" and seen["up"] and seen["mtu"] == mtu):
        actions.append(EnsureBridge(bridge, mtu))
    return actions


def _vxlan_in_sync(seen: Mapping[str, object] | None, want: VxlanSpec) -> bool:
    return bool(
        seen
        and seen.get("vni") == want.vni
        and seen.get("local") == want.local_ip
        and (not want.port or seen.get("port") == want.port)
        and not seen.get("learning")
        and seen.get("mtu") == want.mtu
        and seen.get("up")
        and seen.get("master") == want.bridge
    )


def plan_vxlan(want: VxlanSpec, recorded: VxlanSpec | None, seen: VxlanSeen) -> list[Action]:
    """A network's VXLAN device and its forwarding entries; recorded equal → nothing.

    A port coming or going on another host changes only ``fdb``: then only
    the entries are replaced, the device (and traffic through it) stays.
    """
    if recorded == want:
        return []
    actions: list[Action] = []
    made = False
    if recorded is None or (recorded.device, recorded.vni, recorded.local_ip, recorded.bridge, recorded.mtu,
                            recorded.port) != (want.device, want.vni, want.local_ip, want.bridge, want.mtu, want.port):
        actions.append(Remember(fabric_link=want.device))
        if not _vxlan_in_sync(seen.device, want):
            actions.append(EnsureVxlan(want.device, want.vni, want.local_ip, want.bridge, want.mtu, want.port))
            made = True
    if made or seen.fdb is None or seen.fdb != frozenset(want.fdb):
        actions.append(ReplaceFdb(want.device, want.fdb))
    return actions


def files_digest(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for kind in FILE_KINDS:
        digest.update(files[kind].encode() + b"\0")
    return digest.hexdigest() + "\n"


def _plumbing(spec: DhcpNetworkSpec) -> tuple[object, ...]:
    """The parts of a qdhcp spec that live in the kernel (not in files)."""
    return (spec.namespace, spec.tap, spec.port_id, spec.mac, spec.mtu, spec.bridge, spec.addresses)


def plan_dhcp(want: DhcpNetworkSpec, recorded: DhcpNetworkSpec | None, seen: DhcpSeen) -> list[Action]:
    """A qdhcp namespace, its tap, dnsmasq's files and dnsmasq itself.

    Files first: a router attach or a new port changes only the files, and
    guests should see the new options as soon as possible; dnsmasq is then
    signalled (SIGHUP), and restarted only when its command line must change
    or it runs in a namespace that was deleted and made again.
    """
    if recorded == want and seen.intact:
        return []
    if recorded == want:
        recorded = None  # dnsmasq died or the namespace went: verify everything, as on a first pass
    files = tuple((kind, want.files[kind]) for kind in FILE_KINDS)
    actions: list[Action] = [WriteFiles(want.dnsmasq.files_dir, files)]
    in_place = False  # the tap observed exactly as wanted (a full pass over an intact host)
    if recorded is None or _plumbing(recorded) != _plumbing(want):
        outer = names.dhcp_outer_name(want.port_id)
        actions.append(Remember(namespace=want.namespace, fabric_link=outer))
        in_place = veth_in_sync(seen.links, want.tap, seen.fabric, outer, want.bridge, want.mac, want.mtu,
                                want.addresses)
        if not in_place:
            actions.append(EnsureNamespace(want.namespace))
            # Neutron's DeviceManager.setup: no router advertisements in the namespace, set before
            # the tap is plugged (it could take an RA at once): the agent sets its addresses itself.
            actions.append(SetSysctl(want.namespace, "net.ipv6.conf.default.accept_ra", "0"))
            actions.append(EnsureVeth(want.namespace, want.tap, outer, want.bridge, want.mac, want.mtu, want.addresses))
        # And on the tap itself, which an older agent may have made with RAs on.
        actions.append(SetSysctl(want.namespace, f"net.ipv6.conf.{want.tap}.accept_ra", "0"))
    if recorded is None or _plumbing(recorded) != _plumbing(want) or recorded.route != want.route:
        if not (recorded is None and in_place and routes_in_sync(seen.routes, dhcp_routes(want))):
            actions.append(EnsureRoutes(want.namespace, dhcp_routes(want)))
    argv = tuple(want.argv)
    pid_file = want.dnsmasq.path("pid")
    pid = seen.pid
    if pid is not None and seen.argv != argv:
        actions.append(StopDnsmasq(want.network_id, pid_file, pid, "its command line changed"))
        pid = None
    if pid is not None and seen.pid_namespace_inode != seen.namespace_inode:
        # The namespace was deleted (and perhaps made again): this dnsmasq
        # serves a namespace nobody can reach any more.
        actions.append(StopDnsmasq(want.network_id, pid_file, pid, "it runs in an old namespace"))
        pid = None
    # Whether dnsmasq has read these files is remembered beside them, not
    # inferred from "the write changed something": a pass (or an agent) that
    # died between writing and signalling must still signal next time.
    marker = want.dnsmasq.path(LOADED_MARKER)
    digest = files_digest(want.files)
    if pid is None:
        actions.append(StartDnsmasq(want.network_id, want.namespace, argv, pid_file, marker, digest))
    elif seen.loaded != digest:
        actions.append(ReloadDnsmasq(want.network_id, pid, marker, digest))
        actions.append(ReleaseLeases(want.network_id, want.namespace, want.tap, want.dnsmasq.path("leases"),
                                     want.files.get("host", "")))
    return actions


def plan_router(want: RouterSpec, recorded: RouterSpec | None, seen: RouterSeen) -> list[Action]:
    """A qrouter namespace: forwarding on, one veth per interface, the rules.

    Between full passes only the interfaces that changed are touched: a router
    with many interfaces must not re-verify all of them per change. The rules
    are restored only when the kernel's differ from the payload.
    """
    if recorded == want and (seen.radvd_intact or not want.radvd):
        return []
    actions: list[Action] = []
    if recorded is None:
        actions.append(Remember(namespace=want.namespace))
        if seen.links is None:
            actions.append(EnsureNamespace(want.namespace))
        actions.append(SetSysctl(want.namespace, "net.ipv4.ip_forward", "1"))
        # Neutron's RouterNamespace.create: answer ARP only on the device that
        # holds the address, so a router with two ports on one network (its
        # IPv4 and its IPv6 interface) never answers for the gateway from both.
        actions.append(SetSysctl(want.namespace, "net.ipv4.conf.all.arp_ignore", "1"))
        actions.append(SetSysctl(want.namespace, "net.ipv4.conf.all.arp_announce", "2"))
        # IPv6 forwarding in this namespace only (Neutron's configure_ipv6_forwarding on 'all').
        actions.append(SetSysctl(want.namespace, "net.ipv6.conf.all.forwarding", "1"))
    before = {i.port_id: i for i in recorded.interfaces} if recorded else {}
    in_place = True  # every interface observed exactly as wanted (a full pass over an intact host)
    for intf in want.interfaces:
        if before.get(intf.port_id) == intf:
            continue
        outer = names.router_outer_name(intf.port_id)
        actions.append(Remember(fabric_link=outer))
        if veth_in_sync(seen.links, intf.device, seen.fabric, outer, intf.bridge, intf.mac, intf.mtu, intf.addresses):
            continue
        in_place = False
        actions.append(EnsureVeth(want.namespace, intf.device, outer, intf.bridge, intf.mac, intf.mtu, intf.addresses))
    wanted_devices = {i.device for i in want.interfaces}
    if recorded is not None:
        present: list[str] = [i.device for i in recorded.interfaces]
    elif seen.links is not None:
        present = list(seen.links)
    else:
        present = list(seen.devices)
    for device in present:
        if device.startswith(names.ROUTER_PORT_PREFIX) and device not in wanted_devices:
            actions.append(DeleteLink(want.namespace, device))
    if recorded is None or recorded.routes != want.routes or recorded.interfaces != want.interfaces:
        # After the interfaces: a nexthop must be on a link. Interfaces
        # changing re-checks them too (a route behind one that came back up).
        if not (recorded is None and in_place and routes_in_sync(seen.routes, router_routes(want))):
            actions.append(EnsureRoutes(want.namespace, router_routes(want)))
    if recorded is None or recorded.iptables != want.iptables:
        if normalize_saved(seen.iptables or "") != normalize_saved(want.iptables):
            actions.append(RestoreIptables(want.namespace, want.iptables))
    if want.ip6tables and (recorded is None or recorded.ip6tables != want.ip6tables):
        if normalize_saved(seen.ip6tables or "") != normalize_saved(want.ip6tables):
            actions.append(RestoreIp6tables(want.namespace, want.ip6tables))
    actions.extend(_plan_radvd(want, recorded, seen))
    return actions


def _plan_radvd(want: RouterSpec, recorded: RouterSpec | None, seen: RouterSeen) -> list[Action]:
    """radvd last, once the qr- devices carry their addresses: written, then started or signalled.

    Supervised like dnsmasq: a dead radvd, or one left in a namespace that
    was made again, is started again on the next pass.
    """
    pid_file = want.radvd_path("pid")
    pid = seen.radvd_pid
    if not want.radvd:
        return [StopRadvd(want.router_id, pid_file, pid)] if pid is not None else []
    actions: list[Action] = []
    changed = recorded is None or recorded.radvd != want.radvd
    if changed or not seen.radvd_intact:
        actions.append(WriteFiles(want.ra_dir, ((f"{want.router_id}.radvd.conf", want.radvd),)))
    if pid is not None and not seen.radvd_in_namespace:
        actions.append(StopRadvd(want.router_id, pid_file, pid))
        pid = None
    if pid is None:
        actions.append(StartRadvd(want.router_id, want.namespace, want.radvd_argv, pid_file))
    elif changed:
        actions.append(ReloadRadvd(want.router_id, pid))
    return actions


def plan_gone_namespace(namespace: str, pid_file: str | None) -> list[Action]:
    """A recorded namespace nothing wants: its dnsmasq (qdhcp) or radvd (qrouter) first, then it."""
    actions: list[Action] = []
    if namespace.startswith(names.DHCP_NS_PREFIX) and pid_file:
        actions.append(StopDnsmasq(namespace[len(names.DHCP_NS_PREFIX):], pid_file))
    if namespace.startswith(names.ROUTER_NS_PREFIX) and pid_file:
        actions.append(StopRadvd(namespace[len(names.ROUTER_NS_PREFIX):], pid_file))
    return actions + [DeleteNamespace(namespace), Forget(namespace=namespace)]


def plan_gone_files(network_id: str, directory: str, pid_file: str) -> list[Action]:
    """dnsmasq files of a network that is gone (also from before a restart)."""
    return [StopDnsmasq(network_id, pid_file), RemoveFiles(directory)]


def plan_gone_link(link: str) -> list[Action]:
    return [DeleteLink(None, link), Forget(fabric_link=link)]


def routes_in_sync(seen: RouteView | None, wanted: tuple[Route, ...]) -> bool:
    """Whether netmeta's observed routes in a namespace are exactly ``wanted`` (None: not observed).

    A wanted route without a device (a router's extra route) matches on
    destination and nexthops alone: the kernel names the device it chose.
    """
    if seen is None:
        return False
    try:
        want = {str(ipaddress.ip_network(d, strict=False)): (tuple(sorted(h)), dev) for d, h, dev in wanted}
        have = {str(ipaddress.ip_network(d, strict=False)): (tuple(sorted(h)), dev) for d, h, dev in seen}
    except ValueError:
        return False
    if len(have) != len(seen) or want.keys() != have.keys():
        return False
    return all(have[k][0] == hops and (dev is None or have[k][1] == dev) for k, (hops, dev) in want.items())


def veth_in_sync(
    inner: LinkView | None,
    inner_name: str,
    fabric: LinkView | None,
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


def plan_portsec(want: Ruleset, recorded: str | None | bool, seen: tuple[str | None, bool] | None) -> list[Action]:
    """The fabric's nftables: replaced only when the kernel's digest is not the wanted one.

    ``recorded`` is the digest last applied (False: nothing recorded yet,
    None: "no tables" applied); ``seen`` the kernel's (digest, any table),
    observed on a full pass or when nothing is recorded. Equal digests mean
    equal rules, so an agent restart changes nothing (handles and counters
    stay).
    """
    if seen is None:
        if recorded is not False and recorded == want.digest:
            return []
    elif seen == (want.digest, want.digest is not None):
        return []
    return [ReplaceNftables(want.payload, want.digest is not None)]
