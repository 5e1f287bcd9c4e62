"""Links, addresses and routes inside named namespaces, over netlink.

Every call opens a netlink session bound to one namespace
(:func:`netmeta.drivers.netns.netlink`: netmeta's own small rtnetlink client,
:mod:`netmeta.drivers.rtnl`, which answers as pyroute2's ``IPRoute`` would
but decodes only what is read here), does its work and closes it; nothing
is cached, so a namespace re-created under the same name is never confused
with the old one.

The topology the agent builds per port is a veth pair: the *inner* end sits
in a service namespace (``tap…`` in qdhcp, ``qr-…`` in qrouter, ``eth0`` in a
test guest) with the port's MAC, and the *outer* end sits in the fabric
namespace, enslaved to the network's bridge (``brq…``). Names are given by
the caller (see ``netmeta.model.names``); this module only checks that the
kernel accepts them (≤ 15 bytes, no '/' or whitespace).

The fabric side (``ensure_bridge``, the ``outer_ns`` of ``ensure_veth_into``,
``delete_link``, the readers) also accepts ``None`` for the host's own
namespace, for ``fabric_namespace = ""`` deployments; an empty string is
always refused. Service namespaces (``inner_ns``, addresses) must be named.

All ``ensure_*`` functions follow pyroute2's ``ensure()`` contract: read the
state, change only what differs, succeed if it already matches; deletes treat
"already gone" as success.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
import time
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError, translate
from netmeta.drivers.netns import namespace_path, netlink, netlink_socket

IFNAMSIZ = 15
_IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_GONE = (errno.ENODEV, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ESRCH)
RouteDict = dict[str, Any]


def check_ifname(name: str) -> str:
    """Return ``name`` if the kernel accepts it as an interface name."""
    if not isinstance(name, str) or not _IFNAME_RE.match(name) or name in (".", ".."):
        raise PermanentDriverError(f"invalid interface name {name!r} (max {IFNAMSIZ} bytes)")
    return name


def _check_mac(mac: str) -> str:
    mac = mac.lower()
    if not _MAC_RE.match(mac):
        raise PermanentDriverError(f"invalid MAC address {mac!r}")
    return mac


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _lookup(ipr: Any, ifname: str) -> Any:
    """The link message for ``ifname``, or None if absent (an rtnl.Message, typed Any)."""
    return _get_link(ipr, ifname=ifname)


def _lookup_index(ipr: Any, index: int) -> Any:
    """The link message with ``index``, or None if absent."""
    return _get_link(ipr, index=index)


def _get_link(ipr: Any, **which: Any) -> Any:
    try:
        return ipr.link("get", **which)[0]
    except NetlinkError as exc:
        if exc.code in _GONE:
            return None
        raise


def _describe(ipr: Any, msg: Any, names: dict[int, str]) -> dict[str, Any]:
    master = msg.get_attr("IFLA_MASTER")
    return {
        "name": msg.get_attr("IFLA_IFNAME"),
        "index": msg["index"],
        "kind": _kind(msg),
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "up": bool(msg["flags"] & 1),
        "state": msg.get_attr("IFLA_OPERSTATE"),
        "master": names.get(master) if master else None,
        # ifindex of the veth peer (in the peer's own namespace)
        "peer_index": msg.get_attr("IFLA_LINK"),
    }


def list_links(ns: str | None) -> list[str]:
    """Names of all links in the namespace, sorted."""
    return sorted(link["name"] for link in describe_links(ns))


def describe_links(ns: str | None) -> list[dict[str, Any]]:
    """All links in the namespace as plain dicts (name, index, kind, mac, …)."""
    with netlink(ns) as ipr:
        try:
            msgs = list(ipr.link("dump"))
        except NetlinkError as exc:
            raise translate(exc, f"list links in {ns}") from exc
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
        return [_describe(ipr, m, names) for m in msgs]


def observe(ns: str | None) -> dict[str, dict[str, Any]]:
    """Every link of a namespace with its addresses, in one netlink session.

    The agent's full pass compares this with the desired state and calls the
    ``ensure_*`` functions only where something differs: one observation
    instead of four ensures is what keeps a 200-network resync short.
    Each value is :func:`describe_links`'s dict plus ``addresses`` (a set of
    ``"a.b.c.d/len"`` and ``"2001:db8::1/64"``, those :func:`ensure_addresses`
    manages); a VXLAN device also carries ``vni``, ``local``, ``port`` and
    ``learning``.
    """
    return observe_namespace(ns)[0]


# netmeta's routes as a namespace shows them: (destination CIDR, nexthops, device).
SeenRoute = tuple[str, tuple[str, ...], "str | None"]
NTF_SELF = 0x02


def observe_namespace(
    ns: str | None, *, routes: bool = False, fdb: bool = False,
) -> tuple[dict[str, dict[str, Any]], tuple[SeenRoute, ...] | None, dict[str, set[tuple[str, str]]] | None]:
    """(links as :func:`observe`, netmeta's IPv4 and IPv6 routes, VXLAN devices' remote entries), one netlink session.

    ``routes``: the routes :func:`ensure_routes` manages (``ROUTE_PROTO``,
    main table), nexthops sorted. ``fdb``: per VXLAN device, its own
    (``self``) forwarding entries that name a remote VTEP, as ``(MAC, VTEP)``
    — one dump of the namespace's forwarding database instead of one per
    device. Either is None when not asked for.
    """
    with netlink(ns) as ipr:
        try:
            msgs = list(ipr.link("dump"))
            addrs = [a for a in ipr.addr("dump") if a["family"] in (socket.AF_INET, socket.AF_INET6) and _managed(a)]
            route_msgs = ([*ipr.route("dump", family=socket.AF_INET), *ipr.route("dump", family=socket.AF_INET6)]
                          if routes else None)
        except NetlinkError as exc:
            raise translate(exc, f"observe links in {ns}") from exc
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
    links = {}
    for m in msgs:
        link = _describe(None, m, names)
        if link["kind"] == "vxlan":
            link.update(vxlan_settings(m))
        link["addresses"] = set()
        links[link["name"]] = link
    for a in addrs:
        name = names.get(a["index"])
        if name in links:
            links[name]["addresses"].add(_cidr(a))
    seen_routes = None
    if route_msgs is not None:
        seen_routes = tuple(sorted(_seen_route(m, names) for m in route_msgs
                                   if m["proto"] == ROUTE_PROTO and (m.get_attr("RTA_TABLE") or m["table"]) == 254))
    entries: dict[str, set[tuple[str, str]]] | None = None
    if fdb:
        devices = {link["index"]: name for name, link in links.items() if link["kind"] == "vxlan"}
        by_index = remote_fdb(ns, wanted=set(devices))
        entries = {name: by_index.get(index, set()) for index, name in devices.items()}
    return links, seen_routes, entries


RTM_GETNEIGH = 30
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NDA_DST, NDA_LLADDR = 1, 2
SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12


def remote_fdb(ns: str | None, *, ifindex: int = 0, wanted: set[int] | None = None) -> dict[int, set[tuple[str, str]]]:
    """Forwarding entries that name a remote address (a VXLAN device's own), by device index.

    Read with one raw ``RTM_GETNEIGH`` dump of the bridge family and only
    the messages of the devices asked for decoded: a fabric of a few
    hundred bridges holds thousands of entries (every port's own MAC), and
    decoding them all through pyroute2 cost ~50 ms a look. With ``ifindex``
    the kernel itself sends only that device's (strict checking, Linux ≥
    4.20; older kernels send all and they are skipped here). Only
    ``self`` entries (``NTF_SELF``) with an ``NDA_DST`` count.
    """
    keep = {ifindex} if ifindex else wanted
    fd = netlink_socket(ns) if ns is not None else None
    sock = socket.socket(fileno=fd) if fd is not None else socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    found: dict[int, set[tuple[str, str]]] = {}
    try:
        if ifindex:
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            except OSError:
                pass  # an older kernel: it sends every entry, filtered below
        sock.bind((0, 0))
        ndm = struct.pack("=BxxxiHBB", socket.AF_BRIDGE, ifindex, 0, 0, 0)
        sock.send(struct.pack("=LHHLL", 16 + len(ndm), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + ndm)
        while True:
            data = sock.recv(1 << 17)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=LH", data, offset)
                if length < 16:
                    raise TemporaryDriverError(f"forwarding entries in {ns}: a malformed netlink message")
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    if code:
                        raise translate(OSError(-code, os.strerror(-code)), f"forwarding entries in {ns}")
                else:
                    _fdb_message(data, offset + 16, offset + length, keep, found)
                offset += (length + 3) & ~3
    except OSError as exc:
        raise translate(exc, f"forwarding entries in {ns}") from exc
    finally:
        sock.close()


def _fdb_message(data: bytes, start: int, end: int, keep: set[int] | None, found: dict[int, set[tuple[str, str]]]) -> None:
    _family, index, _state, flags, _type = struct.unpack_from("=BxxxiHBB", data, start)
    if (keep is not None and index not in keep) or not flags & NTF_SELF:
        return
    mac = dst = None
    at = start + 12
    while at + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, at)
        if alen < 4:
            break
        value = data[at + 4:at + alen]
        atype &= 0x3FFF
        if atype == NDA_LLADDR and len(value) == 6:
            mac = ":".join(f"{b:02x}" for b in value)
        elif atype == NDA_DST and len(value) in (4, 16):
            dst = str(ipaddress.ip_address(value))
        at += (alen + 3) & ~3
    if mac and dst:
        found.setdefault(index, set()).add((mac, dst))


def vxlan_settings(msg: Any) -> dict[str, Any]:
    """A VXLAN link message's settings: vni, local (underlay address), port, learning."""
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    get = (lambda name: data.get_attr(name)) if data is not None else (lambda name: None)
    return {
        "vni": get("IFLA_VXLAN_ID"),
        "local": get("IFLA_VXLAN_LOCAL"),
        "port": get("IFLA_VXLAN_PORT"),
        "learning": bool(get("IFLA_VXLAN_LEARNING")),
    }


def _seen_route(m: Any, names: dict[int, str]) -> SeenRoute:
    destination = _route_key(m["family"], m.get_attr("RTA_DST"), m["dst_len"])
    gateway = m.get_attr("RTA_GATEWAY")
    hops = [gateway] if gateway else []
    for hop in m.get_attr("RTA_MULTIPATH") or ():
        if hop.get_attr("RTA_GATEWAY"):
            hops.append(hop.get_attr("RTA_GATEWAY"))
    oif = m.get_attr("RTA_OIF")
    return destination, tuple(sorted(hops)), names.get(oif) if oif else None


def get_link(ns: str | None, name: str) -> dict[str, Any] | None:
    """One link as a dict, or None if absent."""
    for link in describe_links(ns):
        if link["name"] == name:
            return link
    return None


def link_exists(ns: str | None, name: str) -> bool:
    """True if ``name`` exists in ``ns``."""
    check_ifname(name)
    with netlink(ns) as ipr:
        try:
            return _lookup(ipr, name) is not None
        except NetlinkError as exc:
            raise translate(exc, f"look up {name} in {ns}") from exc


def delete_link(ns: str | None, name: str, *, kind: str | None = None) -> bool:
    """Delete a link (a veth takes its peer with it); False if already gone.

    With ``kind``, only a link of that kind (``vxlan``, ``bridge``, …): a
    device of another kind under the name is left alone, and False.
    """
    check_ifname(name)
    with netlink(ns) as ipr:
        try:
            msg = _lookup(ipr, name)
            if msg is None or (kind is not None and _kind(msg) != kind):
                return False
            ipr.link("del", index=msg["index"])
        except NetlinkError as exc:
            if exc.code in _GONE:
                return False
            raise translate(exc, f"delete {name} in {ns}") from exc
    return True


def ensure_bridge(ns: str | None, name: str, mtu: int = 1500) -> int:
    """A learning bridge without STP and with forward delay 0, up; its ifindex.

    STP off and no forward delay: ports must forward the first DHCPDISCOVER a
    guest sends, not 30 s later. An existing bridge keeps its ifindex; only
    MTU and state are corrected.
    """
    check_ifname(name)
    with netlink(ns) as ipr:
        try:
            msg = _lookup(ipr, name)
            if msg is None:
                ipr.link(
                    "add", ifname=name, kind="bridge", mtu=mtu,
                    br_stp_state=0, br_forward_delay=0,
                )
                msg = _lookup(ipr, name)
            elif _kind(msg) != "bridge":
                raise PermanentDriverError(f"{name} in {ns} exists but is a {_kind(msg)}")
            index: int = msg["index"]
            changes: dict[str, Any] = {}
            if msg.get_attr("IFLA_MTU") != mtu:
                changes["mtu"] = mtu
            if not msg["flags"] & 1:
                changes["state"] = "up"
            if changes:
                ipr.link("set", index=index, **changes)
            return index
        except NetlinkError as exc:
            raise translate(exc, f"ensure bridge {name} in {ns}") from exc


def ensure_veth_into(
    inner_ns: str,
    inner_name: str,
    outer_ns: str | None,
    outer_name: str,
    bridge: str,
    mac: str,
    mtu: int = 1500,
) -> int:
    """A veth pair: inner end in ``inner_ns`` with ``mac``, outer end on ``bridge``.

    Returns the inner end's ifindex. If both ends exist and are each other's
    peer, only MAC, master, MTU and up-state are corrected (the ifindex, and
    so any address or listener on it, survives). A half-present or mismatched
    pair is deleted and re-created: the peers of a veth cannot be re-paired.
    The pair is created from the outer namespace with the peer placed straight
    into ``inner_ns`` (``IFLA_NET_NS_FD``), so no end ever appears elsewhere —
    in particular never in the root namespace.
    """
    check_ifname(inner_name)
    check_ifname(outer_name)
    check_ifname(bridge)
    mac = _check_mac(mac)
    with netlink(outer_ns) as outer, netlink(inner_ns) as inner:
        try:
            br = _lookup(outer, bridge)
            if br is None or _kind(br) != "bridge":
                raise TemporaryDriverError(f"bridge {bridge} missing in {outer_ns}")
            out = _lookup(outer, outer_name)
            inn = _lookup(inner, inner_name)
            paired = (
                out is not None
                and inn is not None
                and _kind(out) == "veth"
                and _kind(inn) == "veth"
                and out.get_attr("IFLA_LINK") == inn["index"]
                and inn.get_attr("IFLA_LINK") == out["index"]
            )
            if not paired:
                for ipr, msg in ((outer, out), (inner, inn)):
                    if msg is not None:
                        try:
                            ipr.link("del", index=msg["index"])
                        except NetlinkError as exc:
                            if exc.code not in _GONE:  # peer already took it
                                raise
                fd = os.open(namespace_path(inner_ns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    outer.link(
                        "add", ifname=outer_name, kind="veth", mtu=mtu,
                        peer={"ifname": inner_name, "net_ns_fd": fd, "address": mac, "mtu": mtu},
                    )
                finally:
                    os.close(fd)
                out = _lookup(outer, outer_name)
                inn = _lookup(inner, inner_name)
                if out is None or inn is None:
                    raise TemporaryDriverError(f"veth {outer_name}/{inner_name} vanished")
            _converge(outer, out, {"master": br["index"], "mtu": mtu})
            _converge(inner, inn, {"address": mac, "mtu": mtu})
            return int(inn["index"])
        except NetlinkError as exc:
            raise translate(exc, f"ensure veth {outer_name}@{outer_ns}/{inner_name}@{inner_ns}") from exc


def _converge(ipr: Any, msg: Any, wanted: dict[str, Any]) -> None:
    current = {
        "master": msg.get_attr("IFLA_MASTER"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "address": msg.get_attr("IFLA_ADDRESS"),
    }
    changes = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not msg["flags"] & 1:
        changes["state"] = "up"
    if changes:
        ipr.link("set", index=msg["index"], **changes)


Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# IFA_F_NODAD: an address netmeta sets is usable at once, not "tentative" for
# a second of duplicate address detection (the addresses are the API's; two
# ports never hold one).
IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80


def _interfaces(cidrs: set[str]) -> set[Interface]:
    out: set[Interface] = set()
    for cidr in cidrs:
        try:
            out.add(ipaddress.ip_interface(cidr))
        except ValueError as exc:
            raise PermanentDriverError(f"invalid address {cidr!r}") from exc
    return out


def _managed(msg: Any) -> bool:
    """Addresses netmeta owns on a device: all IPv4, and IPv6 that the kernel did not make itself.

    The kernel's own link-local (fe80::/64 from the MAC) and SLAAC addresses
    are not permanent; everything netmeta adds is (``fe80::a9fe:a9fe/128``
    included), so only those are compared and removed.
    """
    if msg["family"] == socket.AF_INET:
        return True
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    return bool(flags & IFA_F_PERMANENT) and not (
        msg["prefixlen"] == 64 and str(msg.get_attr("IFA_ADDRESS") or "").startswith("fe80:"))


def _cidr(msg: Any) -> str:
    local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return f"{ipaddress.ip_address(local)}/{msg['prefixlen']}"


def _index(ipr: Any, ns: str, ifname: str) -> int:
    msg = _lookup(ipr, check_ifname(ifname))
    if msg is None:
        raise TemporaryDriverError(f"{ifname} does not exist in {ns}")
    return int(msg["index"])


def get_addresses(ns: str, ifname: str) -> set[str]:
    """The addresses netmeta manages on ``ifname`` (IPv4, and IPv6 but the kernel's own) as CIDR strings."""
    with netlink(ns) as ipr:
        try:
            index = _index(ipr, ns, ifname)
            return {_cidr(m) for m in ipr.addr("dump", index=index) if _managed(m)}
        except NetlinkError as exc:
            raise translate(exc, f"addresses of {ifname} in {ns}") from exc


def ensure_addresses(ns: str, ifname: str, cidrs: set[str]) -> bool:
    """Make the managed addresses on ``ifname`` exactly ``cidrs``; True if changed.

    Missing ones are added (IPv4 with the subnet broadcast, as ``ip addr add
    brd +`` would; IPv6 with ``nodad``), extra ones removed. The kernel's own
    IPv6 addresses (the link-local from the MAC) are left alone.
    ``"10.0.0.2/24"`` and ``"10.0.0.2/32"`` are different addresses: a prefix
    change removes and re-adds.
    """
    wanted = _interfaces(cidrs)
    with netlink(ns) as ipr:
        try:
            index = _index(ipr, ns, ifname)
            present = {ipaddress.ip_interface(_cidr(m)) for m in ipr.addr("dump", index=index) if _managed(m)}
            changed = False
            for iface in sorted(present - wanted, key=str):
                try:
                    ipr.addr("del", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
                    changed = True
                except NetlinkError as exc:
                    if exc.code not in _GONE:
                        raise
            for iface in sorted(wanted - present, key=str):
                extra: dict[str, Any] = {}
                if iface.version == 6:
                    extra["flags"] = IFA_F_NODAD
                elif iface.network.prefixlen < 31:
                    extra["broadcast"] = str(iface.network.broadcast_address)
                try:
                    ipr.addr("add", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen, **extra)
                    changed = True
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
            return changed
        except NetlinkError as exc:
            raise translate(exc, f"ensure addresses on {ifname} in {ns}") from exc


IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08


def ipv6_addresses(ns: str, ifname: str) -> list[tuple[str, bool]]:
    """Every IPv6 address on ``ifname`` (the kernel's too) as ``("addr/len", usable)``.

    ``usable``: neither tentative (duplicate address detection still running)
    nor failed — what a guest waits for before it can send from the address.
    """
    with netlink(ns) as ipr:
        try:
            index = _index(ipr, ns, ifname)
            out = []
            for m in ipr.addr("dump", index=index, family=socket.AF_INET6):
                flags = m.get_attr("IFA_FLAGS")
                flags = m["flags"] if flags is None else flags
                out.append((_cidr(m), not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)))
            return out
        except NetlinkError as exc:
            raise translate(exc, f"IPv6 addresses of {ifname} in {ns}") from exc


def wait_ipv6(ns: str, ifname: str, prefix: str, timeout: float) -> str:
    """Wait until ``ifname`` has a usable IPv6 address inside ``prefix`` (e.g. ``fe80::/64``); that address."""
    network = ipaddress.ip_network(prefix, strict=False)
    deadline = time.monotonic() + timeout
    while True:
        for cidr, usable in ipv6_addresses(ns, ifname):
            if usable and ipaddress.ip_interface(cidr).ip in network:
                return cidr.split("/")[0]
        if time.monotonic() >= deadline:
            raise TemporaryDriverError(f"{ifname} in {ns} has no usable address in {prefix} after {timeout}s")
        time.sleep(0.05)


def get_routes(ns: str, table: int = 254) -> list[RouteDict]:
    """IPv4 routes of one table (main by default) as dicts.

    Each dict has ``dst`` (``"default"`` or ``"a.b.c.d/len"``), ``gateway``
    (None when on-link), ``dev``, ``proto`` and ``scope`` — the fields tests
    and ``netmeta explain`` compare.
    """
    with netlink(ns) as ipr:
        try:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")}
            routes = []
            for m in ipr.route("dump", family=socket.AF_INET):
                if (m.get_attr("RTA_TABLE") or m["table"]) != table:
                    continue
                dst = m.get_attr("RTA_DST")
                routes.append({
                    "dst": f"{dst}/{m['dst_len']}" if dst else "default",
                    "gateway": m.get_attr("RTA_GATEWAY"),
                    "dev": names.get(m.get_attr("RTA_OIF")),
                    "proto": m["proto"],
                    "scope": m["scope"],
                })
            return routes
        except NetlinkError as exc:
            raise translate(exc, f"routes in {ns}") from exc


# Routes netmeta sets carry this protocol number (the kernel's RTPROT_STATIC),
# so a pass can tell them from the kernel's own link routes and prune only
# its own: a route of any other protocol is never touched.
ROUTE_PROTO = 4


def _route_key(family: int, dst: str | None, dst_len: int) -> str:
    if not dst:
        return "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
    return f"{ipaddress.ip_address(dst)}/{dst_len}"  # one spelling, whoever wrote the address


def ensure_routes(ns: str, routes: list[tuple[str, tuple[str, ...], str | None]]) -> list[str]:
    """Make netmeta's IPv4 and IPv6 routes in ``ns`` exactly ``routes``; returns the ones that failed.

    Each route is ``(destination CIDR, nexthops, device)``: one nexthop is a
    plain route via it, several one multipath (ECMP) route; no nexthop with a
    device is an on-link route to the destination there. Routes are replaced
    in place; netmeta routes (``ROUTE_PROTO``) not asked for are deleted, in
    either family. A route the kernel refuses (its nexthop on no link of the
    namespace, e.g. behind an admin-down interface) is skipped and reported,
    as Neutron's L3 agent skips it: the others still go in.
    """
    failed: list[str] = []
    with netlink(ns) as ipr:
        try:
            index = {m.get_attr("IFLA_IFNAME"): m["index"] for m in ipr.link("dump")}
            wanted: set[str] = set()
            for destination, nexthops, device in routes:
                net = ipaddress.ip_network(destination, strict=False)
                family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
                spec: dict[str, Any] = {"family": family, "dst_len": net.prefixlen, "proto": ROUTE_PROTO}
                if net.prefixlen:
                    spec["dst"] = str(net.network_address)
                if len(nexthops) > 1:
                    spec["multipath"] = [{"gateway": hop} for hop in nexthops]
                elif nexthops:
                    spec["gateway"] = nexthops[0]
                if device is not None:
                    if device not in index:
                        failed.append(destination)
                        continue
                    spec["oif"] = index[device]
                    if not nexthops:
                        spec["scope"] = 253  # RT_SCOPE_LINK
                wanted.add(_route_key(family, spec.get("dst"), net.prefixlen))
                try:
                    ipr.route("replace", **spec)
                except NetlinkError as exc:
                    if exc.code not in (errno.ENETUNREACH, errno.EINVAL, errno.ENODEV, errno.EHOSTUNREACH):
                        raise
                    failed.append(destination)
            for m in [*ipr.route("dump", family=socket.AF_INET), *ipr.route("dump", family=socket.AF_INET6)]:
                if m["proto"] != ROUTE_PROTO or (m.get_attr("RTA_TABLE") or m["table"]) != 254:
                    continue
                key = _route_key(m["family"], m.get_attr("RTA_DST"), m["dst_len"])
                if key in wanted:
                    continue
                kwargs: dict[str, Any] = {"family": m["family"], "dst_len": m["dst_len"], "proto": ROUTE_PROTO}
                if m.get_attr("RTA_DST"):
                    kwargs["dst"] = m.get_attr("RTA_DST")
                try:
                    ipr.route("del", **kwargs)
                except NetlinkError as exc:
                    if exc.code != errno.ESRCH:
                        raise
            return failed
        except NetlinkError as exc:
            raise translate(exc, f"ensure routes in {ns}") from exc
