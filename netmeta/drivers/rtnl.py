"""A small rtnetlink client: the part of pyroute2's ``IPRoute`` that netmeta's drivers use.

Why not pyroute2 itself: from 0.9 every ``IPRoute`` runs its calls on an
asyncio event loop of its own (a selector, futures, a queue per request),
and decodes every attribute of every message it receives. A few hundred
networks make tens of thousands of netlink calls, and at 1,000 networks
that framework — not the kernel — was most of the agent's CPU (the agent
creating a network's veth cost ~20 ms of Python; a full pass decoded the
statistics of ~2,000 links it never reads).

This client sends a request on a plain ``NETLINK_ROUTE`` socket, reads the
answer, and decodes only the attributes :mod:`netmeta.drivers.links` and
:mod:`netmeta.drivers.vxlan` read (``IFLA_IFNAME``, ``IFLA_MTU``, the
VXLAN settings …; link statistics are not even sent: ``IFLA_EXT_MASK``
asks the kernel to skip them). Messages answer ``msg["index"]`` and
``msg.get_attr("IFLA_MTU")`` exactly as pyroute2's do, and an error is
pyroute2's ``NetlinkError`` with the errno as ``code``, so callers are
written the same either way.

Sockets are made by the caller (:func:`netmeta.drivers.netns.netlink`,
inside the wanted namespace) and handed over by descriptor.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Iterable

from pyroute2.netlink.exceptions import NetlinkError

# Message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_ERROR, NLMSG_DONE = 2, 3
# Flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
IFF_UP = 0x1

# Link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_EXT_MASK = 16, 18, 28, 29
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 4, 7, 15
RTEXT_FILTER_SKIP_STATS = 1 << 3
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
# Address attributes
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
# Route attributes
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 9, 15
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_NOWHERE = 254, 1, 255
# Neighbour (forwarding entry) attributes
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT, NTF_SELF = 0x40, 0x80, 0x02

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_NLMSG = struct.Struct("=LHHLL")  # length, type, flags, seq, pid
_RTNH = struct.Struct("=HBBi")  # length, flags, hops, ifindex
_ATTR = struct.Struct("=HH")

LINK_NAMES = {IFLA_ADDRESS: "IFLA_ADDRESS", IFLA_IFNAME: "IFLA_IFNAME", IFLA_MTU: "IFLA_MTU",
              IFLA_LINK: "IFLA_LINK", IFLA_MASTER: "IFLA_MASTER", IFLA_OPERSTATE: "IFLA_OPERSTATE",
              IFLA_LINKINFO: "IFLA_LINKINFO"}
ADDR_NAMES = {IFA_ADDRESS: "IFA_ADDRESS", IFA_LOCAL: "IFA_LOCAL", IFA_FLAGS: "IFA_FLAGS"}
ROUTE_NAMES = {RTA_DST: "RTA_DST", RTA_OIF: "RTA_OIF", RTA_GATEWAY: "RTA_GATEWAY", RTA_MULTIPATH: "RTA_MULTIPATH",
               RTA_TABLE: "RTA_TABLE"}


class Message:
    """One decoded message: header fields by name (``msg["index"]``), attributes by ``get_attr``."""

    __slots__ = ("fields", "attrs")

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        self.fields = fields
        self.attrs = attrs

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)

    def __repr__(self) -> str:
        return f"Message({self.fields!r}, {self.attrs!r})"


def _attrs(data: bytes, start: int, end: int) -> Iterable[tuple[int, bytes]]:
    at = start
    while at + 4 <= end:
        length, kind = _ATTR.unpack_from(data, at)
        if length < 4 or at + length > end:
            return
        yield kind & 0x3FFF, data[at + 4:at + length]
        at += (length + 3) & ~3


def _u32(value: bytes) -> int:
    return int(struct.unpack("=I", value[:4])[0])


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def _ip(value: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(value) == 16 else socket.AF_INET, value)


def _decode_link(data: bytes, start: int, end: int) -> Message:
    family, type_, index, flags, change = _IFINFO.unpack_from(data, start)
    attrs: dict[str, Any] = {}
    for kind, value in _attrs(data, start + _IFINFO.size, end):
        if kind == IFLA_IFNAME:
            attrs["IFLA_IFNAME"] = _text(value)
        elif kind in (IFLA_MTU, IFLA_LINK, IFLA_MASTER):
            attrs[LINK_NAMES[kind]] = _u32(value)
        elif kind == IFLA_ADDRESS:
            attrs["IFLA_ADDRESS"] = _mac(value)
        elif kind == IFLA_OPERSTATE and value:
            attrs["IFLA_OPERSTATE"] = OPERSTATES[value[0]] if value[0] < len(OPERSTATES) else str(value[0])
        elif kind == IFLA_LINKINFO:
            attrs["IFLA_LINKINFO"] = _decode_linkinfo(value)
    return Message({"family": family, "ifi_type": type_, "index": index, "flags": flags, "change": change}, attrs)


def _decode_linkinfo(value: bytes) -> Message:
    info: dict[str, Any] = {}
    data = b""
    for kind, inner in _attrs(value, 0, len(value)):
        if kind == IFLA_INFO_KIND:
            info["IFLA_INFO_KIND"] = _text(inner)
        elif kind == IFLA_INFO_DATA:
            data = inner
    if data and info.get("IFLA_INFO_KIND") == "vxlan":
        settings: dict[str, Any] = {}
        for kind, inner in _attrs(data, 0, len(data)):
            if kind == IFLA_VXLAN_ID:
                settings["IFLA_VXLAN_ID"] = _u32(inner)
            elif kind == IFLA_VXLAN_LOCAL and len(inner) == 4:
                settings["IFLA_VXLAN_LOCAL"] = _ip(inner)
            elif kind == IFLA_VXLAN_LEARNING and inner:
                settings["IFLA_VXLAN_LEARNING"] = inner[0]
            elif kind == IFLA_VXLAN_PORT and len(inner) >= 2:
                settings["IFLA_VXLAN_PORT"] = struct.unpack(">H", inner[:2])[0]
        info["IFLA_INFO_DATA"] = Message({}, settings)
    return Message({}, info)


def _decode_addr(data: bytes, start: int, end: int) -> Message:
    family, prefixlen, flags, scope, index = _IFADDR.unpack_from(data, start)
    attrs: dict[str, Any] = {}
    for kind, value in _attrs(data, start + _IFADDR.size, end):
        if kind in (IFA_ADDRESS, IFA_LOCAL):
            attrs[ADDR_NAMES[kind]] = _ip(value)
        elif kind == IFA_FLAGS:
            attrs["IFA_FLAGS"] = _u32(value)
    return Message({"family": family, "prefixlen": prefixlen, "flags": flags, "scope": scope, "index": index}, attrs)


def _decode_route(data: bytes, start: int, end: int) -> Message:
    family, dst_len, src_len, tos, table, proto, scope, type_, flags = _RTMSG.unpack_from(data, start)
    attrs: dict[str, Any] = {}
    for kind, value in _attrs(data, start + _RTMSG.size, end):
        if kind in (RTA_DST, RTA_GATEWAY):
            attrs[ROUTE_NAMES[kind]] = _ip(value)
        elif kind in (RTA_OIF, RTA_TABLE):
            attrs[ROUTE_NAMES[kind]] = _u32(value)
        elif kind == RTA_MULTIPATH:
            attrs["RTA_MULTIPATH"] = _decode_hops(value)
    return Message({"family": family, "dst_len": dst_len, "src_len": src_len, "tos": tos, "table": table,
                    "proto": proto, "scope": scope, "type": type_, "flags": flags}, attrs)


def _decode_hops(value: bytes) -> list[Message]:
    hops = []
    at = 0
    while at + _RTNH.size <= len(value):
        length, flags, hops_, oif = _RTNH.unpack_from(value, at)
        if length < _RTNH.size:
            break
        attrs = {ROUTE_NAMES[k]: _ip(v) for k, v in _attrs(value, at + _RTNH.size, at + length) if k == RTA_GATEWAY}
        hops.append(Message({"flags": flags, "hops": hops_, "oif": oif}, attrs))
        at += (length + 3) & ~3
    return hops


def attr(kind: int, value: bytes, nested: bool = False) -> bytes:
    """One attribute, padded to 4 bytes."""
    head = _ATTR.pack(4 + len(value), kind | (NLA_F_NESTED if nested else 0))
    return head + value + b"\0" * (-len(value) % 4)


def _u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def _name_attr(kind: int, name: str) -> bytes:
    return attr(kind, name.encode() + b"\0")


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _ip_bytes(address: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return family, socket.inet_pton(family, address)


class Rtnl:
    """A NETLINK_ROUTE socket answering pyroute2-style calls (see the module docstring)."""

    def __init__(self, fileno: int | None = None) -> None:
        if fileno is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                      socket.NETLINK_ROUTE)
        else:
            self.sock = socket.socket(fileno=fileno)
        try:
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # errors without the request echoed
            except OSError:
                pass
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the exchange -------------------------------------------------------
    def request(self, kind: int, flags: int, body: bytes, decode: Any = None) -> list[Message]:
        """Send one message; the decoded answers (a dump's messages), or NetlinkError."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body)
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        out: list[Message] = []
        while True:
            data = self.sock.recv(1 << 16)
            at = 0
            while at + _NLMSG.size <= len(data):
                length, mtype, mflags, mseq, _pid = _NLMSG.unpack_from(data, at)
                if length < _NLMSG.size or at + length > len(data):
                    raise NetlinkError(errno.EBADMSG, "malformed netlink message")
                end = at + length
                if mseq != seq:
                    at += (length + 3) & ~3
                    continue  # an answer to an earlier request that gave up
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, at + _NLMSG.size)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return out  # the ACK
                if decode is not None:
                    out.append(decode(data, at + _NLMSG.size, end))
                if not dump and not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return out
                at += (length + 3) & ~3

    # --- links --------------------------------------------------------------
    def link(self, command: str, **kw: Any) -> list[Message]:
        skip_stats = _u32_attr(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
        if command == "dump":
            return self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0) + skip_stats, _decode_link)
        if command == "get":
            index = int(kw.get("index") or 0)
            attrs = skip_stats + (_name_attr(IFLA_IFNAME, kw["ifname"]) if not index else b"")
            return self.request(RTM_GETLINK, 0, _IFINFO.pack(0, 0, index, 0, 0) + attrs, _decode_link)
        if command == "del":
            return self.request(RTM_DELLINK, NLM_F_ACK, _IFINFO.pack(0, 0, int(kw["index"]), 0, 0))
        if command == "set":
            flags = change = 0
            if "state" in kw:
                change = IFF_UP
                flags = IFF_UP if kw["state"] == "up" else 0
            body = _IFINFO.pack(0, 0, int(kw["index"]), flags, change) + self._link_attrs(kw)
            return self.request(RTM_NEWLINK, NLM_F_ACK, body)
        if command == "add":
            body = _IFINFO.pack(0, 0, 0, 0, 0) + _name_attr(IFLA_IFNAME, kw["ifname"]) + self._link_attrs(kw)
            body += attr(IFLA_LINKINFO, self._linkinfo(kw), nested=True)
            return self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
        raise ValueError(f"link command {command!r} is not supported")

    def link_lookup(self, ifname: str) -> list[int]:
        try:
            return [msg["index"] for msg in self.link("get", ifname=ifname)]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return []
            raise

    @staticmethod
    def _link_attrs(kw: dict[str, Any]) -> bytes:
        out = b""
        if kw.get("mtu") is not None:
            out += _u32_attr(IFLA_MTU, int(kw["mtu"]))
        if kw.get("address") is not None:
            out += attr(IFLA_ADDRESS, _mac_bytes(kw["address"]))
        if kw.get("master") is not None:
            out += _u32_attr(IFLA_MASTER, int(kw["master"]))
        if kw.get("net_ns_fd") is not None:
            out += _u32_attr(IFLA_NET_NS_FD, int(kw["net_ns_fd"]))
        return out

    def _linkinfo(self, kw: dict[str, Any]) -> bytes:
        kind = kw["kind"]
        data = b""
        if kind == "bridge":
            if "br_forward_delay" in kw:
                data += _u32_attr(IFLA_BR_FORWARD_DELAY, int(kw["br_forward_delay"]))
            if "br_stp_state" in kw:
                data += _u32_attr(IFLA_BR_STP_STATE, int(kw["br_stp_state"]))
        elif kind == "veth" and kw.get("peer"):
            peer = dict(kw["peer"])
            inner = _IFINFO.pack(0, 0, 0, 0, 0) + _name_attr(IFLA_IFNAME, peer["ifname"]) + self._link_attrs(peer)
            data += attr(VETH_INFO_PEER, inner, nested=True)
        elif kind == "vxlan":
            data += _u32_attr(IFLA_VXLAN_ID, int(kw["vxlan_id"]))
            if kw.get("vxlan_local"):
                data += attr(IFLA_VXLAN_LOCAL, socket.inet_aton(kw["vxlan_local"]))
            if "vxlan_learning" in kw:
                data += attr(IFLA_VXLAN_LEARNING, bytes([int(kw["vxlan_learning"])]))
            if kw.get("vxlan_port"):
                data += attr(IFLA_VXLAN_PORT, struct.pack(">H", int(kw["vxlan_port"])))
        info = _name_attr(IFLA_INFO_KIND, kind)
        return info + (attr(IFLA_INFO_DATA, data, nested=True) if data else b"")

    # --- addresses ----------------------------------------------------------
    def addr(self, command: str, **kw: Any) -> list[Message]:
        if command == "dump":
            family = int(kw.get("family") or 0)
            msgs = self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(family, 0, 0, 0, 0), _decode_addr)
            index = kw.get("index")
            return [m for m in msgs if (index is None or m["index"] == index) and (not family or m["family"] == family)]
        family, packed = _ip_bytes(kw["address"])
        flags = int(kw.get("flags") or 0)
        body = _IFADDR.pack(family, int(kw["prefixlen"]), flags & 0xFF, 0, int(kw["index"]))
        body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        if kw.get("broadcast"):
            body += attr(IFA_BROADCAST, _ip_bytes(kw["broadcast"])[1])
        if flags:
            body += _u32_attr(IFA_FLAGS, flags)
        if command == "add":
            return self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
        if command == "del":
            return self.request(RTM_DELADDR, NLM_F_ACK, body)
        raise ValueError(f"addr command {command!r} is not supported")

    # --- routes -------------------------------------------------------------
    def route(self, command: str, **kw: Any) -> list[Message]:
        family = int(kw.get("family") or socket.AF_INET)
        if command == "dump":
            return self.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), _decode_route)
        dst_len = int(kw.get("dst_len") or 0)
        proto = int(kw.get("proto") or 0)
        attrs = _u32_attr(RTA_TABLE, RT_TABLE_MAIN)
        if kw.get("dst"):
            attrs += attr(RTA_DST, _ip_bytes(kw["dst"])[1])
        if command == "del":
            body = _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, proto, RT_SCOPE_NOWHERE, 0, 0) + attrs
            return self.request(RTM_DELROUTE, NLM_F_ACK, body)
        if command != "replace":
            raise ValueError(f"route command {command!r} is not supported")
        if kw.get("gateway"):
            attrs += attr(RTA_GATEWAY, _ip_bytes(kw["gateway"])[1])
        if kw.get("oif") is not None:
            attrs += _u32_attr(RTA_OIF, int(kw["oif"]))
        if kw.get("multipath"):
            hops = b""
            for hop in kw["multipath"]:
                inner = attr(RTA_GATEWAY, _ip_bytes(hop["gateway"])[1])
                hops += _RTNH.pack(_RTNH.size + len(inner), 0, 0, int(hop.get("oif") or 0)) + inner
            attrs += attr(RTA_MULTIPATH, hops)
        scope = int(kw.get("scope") or 0)
        body = _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST, 0) + attrs
        return self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)

    # --- forwarding entries (bridge fdb … self permanent) -------------------
    def fdb(self, command: str, **kw: Any) -> list[Message]:
        body = _NDMSG.pack(socket.AF_BRIDGE, int(kw["ifindex"]), NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0)
        body += attr(NDA_LLADDR, _mac_bytes(kw["lladdr"]))
        if kw.get("dst"):
            body += attr(NDA_DST, _ip_bytes(kw["dst"])[1])
        if command == "append":
            return self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, body)
        if command == "del":
            return self.request(RTM_DELNEIGH, NLM_F_ACK, body)
        raise ValueError(f"fdb command {command!r} is not supported")
