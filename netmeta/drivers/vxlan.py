"""VXLAN devices on the network bridges, and their forwarding entries (netlink, drivers.rtnl).

What Neutron's linuxbridge agent does per VXLAN network, for the bridges in
netmeta's fabric namespace: a device ``vxlan-<vni>`` enslaved to the
network's ``brq…`` bridge, sending over the host's underlay address
(``local_ip``), with learning off and l2population's static entries in its
forwarding database:

* one *flood* entry ``00:00:00:00:00:00 dst <vtep>`` per other host with a
  port on the network (broadcast, unknown unicast and multicast go to each:
  head-end replication);
* one entry ``<port MAC> dst <vtep>`` per port on another host.

**Where the device is created matters.** A VXLAN device's UDP socket lives
in the namespace the device was created *from*, not the one it ends up in.
So the device is created over a netlink socket of the namespace holding the
underlay address (``underlay_ns``; None: the agent's own namespace, where
``local_ip`` lives on a real host) and placed straight into the fabric
namespace (``IFLA_NET_NS_FD``): its bridge side is in the fabric, its
encapsulated packets leave from the host's own address. A device found in
the fabric with the wrong VNI, local address or port is deleted and made
again (those are fixed at creation).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError, translate
from netmeta.drivers.links import (
    _GONE, _kind, _lookup, _lookup_index, check_ifname, delete_link, remote_fdb, vxlan_settings,
)
from netmeta.drivers.netns import namespace_path, netlink

FLOOD_MAC = "00:00:00:00:00:00"
# (MAC, remote VTEP address)
FdbEntry = tuple[str, str]


def _device(ipr: Any, msg: Any) -> dict[str, Any]:
    master = msg.get_attr("IFLA_MASTER")
    master_name = None
    if master:
        # The bridge by its index: one message, not a dump of the fabric's every link.
        found = _lookup_index(ipr, master)
        master_name = found.get_attr("IFLA_IFNAME") if found is not None else None
    return {**vxlan_settings(msg), "mtu": msg.get_attr("IFLA_MTU"), "up": bool(msg["flags"] & 1),
            "master": master_name, "index": msg["index"]}


def get_vxlan(fabric_ns: str | None, name: str) -> dict[str, Any] | None:
    """The device's VXLAN settings and link state (None if absent or not VXLAN)."""
    with netlink(fabric_ns) as ipr:
        try:
            msg = _lookup(ipr, check_ifname(name))
            if msg is None or _kind(msg) != "vxlan":
                return None
            return _device(ipr, msg)
        except NetlinkError as exc:
            raise translate(exc, f"look up {name} in {fabric_ns}") from exc


def observe(fabric_ns: str | None, name: str) -> tuple[dict[str, Any] | None, set[FdbEntry] | None]:
    """The device (as :func:`get_vxlan`) and its remote entries; (None, None) if absent."""
    device = get_vxlan(fabric_ns, name)
    if device is None:
        return None, None
    return device, remote_fdb(fabric_ns, ifindex=device["index"]).get(device["index"], set())


def ensure_vxlan(
    underlay_ns: str | None,
    fabric_ns: str | None,
    name: str,
    vni: int,
    local_ip: str,
    bridge: str,
    mtu: int,
    port: int = 0,
) -> int:
    """``name`` (VNI ``vni``, over ``local_ip``, learning off) up on ``bridge``; its ifindex in the fabric.

    ``port`` 0 keeps the kernel's default destination port (8472), as
    Neutron's ``udp_dstport`` unset does.
    """
    check_ifname(name)
    check_ifname(bridge)
    if not 1 <= vni <= 0xFFFFFF:
        raise PermanentDriverError(f"VXLAN id {vni} is out of range 1..16777215")
    try:
        socket.inet_aton(local_ip)
    except OSError as exc:
        raise PermanentDriverError(f"local_ip {local_ip!r} is not an IPv4 address") from exc
    current = get_vxlan(fabric_ns, name)
    if current is not None and (current["vni"] != vni or current["local"] != local_ip
                                or (port and current["port"] != port) or current["learning"]):
        _delete(fabric_ns, name)
        current = None
    if current is None:
        _create(underlay_ns, fabric_ns, name, vni, local_ip, mtu, port)
    with netlink(fabric_ns) as ipr:
        try:
            br = _lookup(ipr, bridge)
            if br is None or _kind(br) != "bridge":
                raise TemporaryDriverError(f"bridge {bridge} missing in {fabric_ns}")
            msg = _lookup(ipr, name)
            if msg is None:
                raise TemporaryDriverError(f"{name} vanished from {fabric_ns}")
            changes: dict[str, Any] = {}
            if msg.get_attr("IFLA_MASTER") != br["index"]:
                changes["master"] = br["index"]
            if msg.get_attr("IFLA_MTU") != mtu:
                changes["mtu"] = mtu
            if not msg["flags"] & 1:
                changes["state"] = "up"
            if changes:
                ipr.link("set", index=msg["index"], **changes)
            return int(msg["index"])
        except NetlinkError as exc:
            raise translate(exc, f"ensure {name} on {bridge} in {fabric_ns}") from exc


def _create(underlay_ns: str | None, fabric_ns: str | None, name: str, vni: int, local_ip: str, mtu: int,
            port: int) -> None:
    spec: dict[str, Any] = {"ifname": name, "kind": "vxlan", "vxlan_id": vni, "vxlan_local": local_ip,
                            "vxlan_learning": 0, "mtu": mtu}
    if port:
        spec["vxlan_port"] = port
    fd = None
    if fabric_ns is not None and fabric_ns != underlay_ns:
        try:
            fd = os.open(namespace_path(fabric_ns), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise TemporaryDriverError(f"namespace {fabric_ns} does not exist") from exc
        spec["net_ns_fd"] = fd
    try:
        with netlink(underlay_ns) as ipr:
            try:
                ipr.link("add", **spec)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    # A device of that name where the socket is made (a VNI
                    # already taken there, or a leftover): not ours to touch.
                    raise PermanentDriverError(
                        f"cannot create {name} (VNI {vni}): a device of that name or VNI exists "
                        f"in {underlay_ns or 'the agent namespace'} or {fabric_ns}") from exc
                raise translate(exc, f"create {name} (VNI {vni}) over {local_ip}") from exc
    finally:
        if fd is not None:
            os.close(fd)


def _delete(ns: str | None, name: str) -> None:
    with netlink(ns) as ipr:
        try:
            msg = _lookup(ipr, name)
            if msg is not None:
                ipr.link("del", index=msg["index"])
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise translate(exc, f"delete {name} in {ns}") from exc


def observe_fdb(fabric_ns: str | None, name: str) -> set[FdbEntry] | None:
    """The device's own (``self``) forwarding entries that name a remote VTEP; None if no device."""
    with netlink(fabric_ns) as ipr:
        try:
            msg = _lookup(ipr, check_ifname(name))
        except NetlinkError as exc:
            raise translate(exc, f"forwarding entries of {name} in {fabric_ns}") from exc
    if msg is None:
        return None
    index = int(msg["index"])
    return remote_fdb(fabric_ns, ifindex=index).get(index, set())


def ensure_fdb(fabric_ns: str | None, name: str, wanted: Iterable[FdbEntry]) -> bool:
    """Make the device's remote entries exactly ``wanted``; True if anything changed.

    Extra entries go first (a MAC that moved to another host must not reach
    both), then missing ones are appended: the flood MAC has one entry per
    remote VTEP, which only ``append`` (not ``add``) allows.
    """
    want = {(mac.lower(), dst) for mac, dst in wanted}
    present = observe_fdb(fabric_ns, name)
    if present is None:
        raise TemporaryDriverError(f"{name} does not exist in {fabric_ns}")
    if present == want:
        return False
    with netlink(fabric_ns) as ipr:
        try:
            index = _lookup(ipr, name)["index"]
            for mac, dst in sorted(present - want):
                try:
                    ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
                except NetlinkError as exc:
                    if exc.code not in _GONE:
                        raise
            for mac, dst in sorted(want - present):
                try:
                    ipr.fdb("append", ifindex=index, lladdr=mac, dst=dst)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
        except (NetlinkError, TypeError) as exc:
            if isinstance(exc, TypeError):
                raise TemporaryDriverError(f"{name} vanished from {fabric_ns}") from exc
            raise translate(exc, f"forwarding entries of {name} in {fabric_ns}") from exc
    return True


def delete_vxlan(fabric_ns: str | None, name: str) -> bool:
    """Delete the device (its entries go with it); False if it was already gone."""
    return delete_link(fabric_ns, name, kind="vxlan")
