"""netmeta's small rtnetlink client, checked against pyroute2's own encoder and decoder (no root needed).

What it sends must be what pyroute2 reads as the same request, and what the
kernel (here: pyroute2's encoder) sends must decode to the same fields; a
malformed answer is an error, never a crash or a hang.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netmeta.drivers import rtnl


class FakeSocket:
    """Records what is sent; answers with the given messages (each ``(type, flags, payload)``)."""

    def __init__(self, answers: list[list[tuple[int, int, bytes]]]) -> None:
        self.sent: list[bytes] = []
        self.answers = answers

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        seq = struct.unpack_from("=L", self.sent[-1], 8)[0]
        batch = self.answers.pop(0)
        return b"".join(struct.pack("=LHHLL", 16 + len(p), t, f, seq, 0) + p for t, f, p in batch)

    def close(self) -> None:
        pass


def client(answers: list[list[tuple[int, int, bytes]]]) -> tuple[rtnl.Rtnl, FakeSocket]:
    ipr = rtnl.Rtnl.__new__(rtnl.Rtnl)
    fake = FakeSocket(answers)
    ipr.sock = fake  # type: ignore[assignment]
    ipr.seq = 0
    return ipr, fake


ACK = [(rtnl.NLMSG_ERROR, 0, struct.pack("=i", 0) + b"\0" * 16)]


def decoded(parser: Any, data: bytes) -> Any:
    msg = parser(data)
    msg.decode()
    return msg


def test_a_veth_pair_request_is_what_pyroute2_reads_as_one() -> None:
    ipr, fake = client([ACK])
    ipr.link("add", ifname="tapabc", kind="veth", mtu=1450,
             peer={"ifname": "ns-abc", "net_ns_fd": 9, "address": "fa:16:3e:00:00:01", "mtu": 1450})
    msg = decoded(ifinfmsg, fake.sent[0])
    assert msg["header"]["type"] == rtnl.RTM_NEWLINK
    assert msg["header"]["flags"] & rtnl.NLM_F_CREATE and msg["header"]["flags"] & rtnl.NLM_F_EXCL
    assert msg.get_attr("IFLA_IFNAME") == "tapabc" and msg.get_attr("IFLA_MTU") == 1450
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "ns-abc" and peer.get_attr("IFLA_NET_NS_FD") == 9
    assert peer.get_attr("IFLA_ADDRESS") == "fa:16:3e:00:00:01"


def test_a_vxlan_and_a_bridge_request() -> None:
    ipr, fake = client([ACK, ACK, ACK])
    ipr.link("add", ifname="vxlan-77", kind="vxlan", vxlan_id=77, vxlan_local="10.99.0.1", vxlan_learning=0,
             vxlan_port=4789, mtu=1450, net_ns_fd=5)
    data = decoded(ifinfmsg, fake.sent[0]).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_LOCAL"), data.get_attr("IFLA_VXLAN_LEARNING"),
            data.get_attr("IFLA_VXLAN_PORT")) == (77, "10.99.0.1", 0, 4789)
    ipr.link("add", ifname="brq1", kind="bridge", mtu=1450, br_stp_state=0, br_forward_delay=0)
    br = decoded(ifinfmsg, fake.sent[1]).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert br.get_attr("IFLA_BR_STP_STATE") == 0 and br.get_attr("IFLA_BR_FORWARD_DELAY") == 0
    ipr.link("set", index=12, master=3, state="up", mtu=1400)
    up = decoded(ifinfmsg, fake.sent[2])
    assert (up["index"], up["flags"] & 1, up["change"] & 1, up.get_attr("IFLA_MASTER"), up.get_attr("IFLA_MTU")) == \
        (12, 1, 1, 3, 1400)


def test_address_and_route_requests() -> None:
    ipr, fake = client([ACK, ACK, ACK])
    ipr.addr("add", index=4, address="fe80::a9fe:a9fe", prefixlen=128, flags=0x02)
    msg = decoded(ifaddrmsg, fake.sent[0])
    assert (msg["family"], msg["prefixlen"], msg["index"], msg.get_attr("IFA_ADDRESS"), msg.get_attr("IFA_FLAGS")) == \
        (socket.AF_INET6, 128, 4, "fe80::a9fe:a9fe", 0x02)
    ipr.route("replace", family=socket.AF_INET, dst="10.1.0.0", dst_len=16, proto=4,
              multipath=[{"gateway": "10.0.0.1"}, {"gateway": "10.0.0.2"}])
    route = decoded(rtmsg, fake.sent[1])
    assert (route["dst_len"], route["proto"], route["table"], route.get_attr("RTA_DST")) == (16, 4, 254, "10.1.0.0")
    assert [hop.get_attr("RTA_GATEWAY") for hop in route.get_attr("RTA_MULTIPATH")] == ["10.0.0.1", "10.0.0.2"]
    assert route["header"]["flags"] & rtnl.NLM_F_REPLACE
    ipr.route("del", family=socket.AF_INET, dst="10.1.0.0", dst_len=16, proto=4)
    gone = decoded(rtmsg, fake.sent[2])
    assert gone["header"]["type"] == rtnl.RTM_DELROUTE and gone["scope"] == rtnl.RT_SCOPE_NOWHERE


def test_a_dump_decodes_what_pyroute2_encodes_and_stops_at_done() -> None:
    link = ifinfmsg()
    link["index"], link["flags"] = 7, 1
    link["attrs"] = [("IFLA_IFNAME", "vxlan-5"), ("IFLA_MTU", 1450), ("IFLA_MASTER", 3),
                     ("IFLA_ADDRESS", "fa:16:3e:00:00:01"), ("IFLA_OPERSTATE", "UP"),
                     ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": [
                         ("IFLA_VXLAN_ID", 5), ("IFLA_VXLAN_LOCAL", "10.0.0.1"), ("IFLA_VXLAN_LEARNING", 0),
                         ("IFLA_VXLAN_PORT", 4789)]})]})]
    link.encode()
    body = bytes(link.data)[16:]
    ipr, _ = client([[(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI, body)] * 2, [(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, b"\0" * 4)]])
    msgs = ipr.link("dump")
    assert len(msgs) == 2
    m = msgs[0]
    assert (m["index"], m["flags"], m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MTU"), m.get_attr("IFLA_MASTER"),
            m.get_attr("IFLA_ADDRESS"), m.get_attr("IFLA_OPERSTATE")) == (7, 1, "vxlan-5", 1450, 3,
                                                                         "fa:16:3e:00:00:01", "UP")
    data = m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "vxlan"
    assert (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_LOCAL"), data.get_attr("IFLA_VXLAN_PORT")) == \
        (5, "10.0.0.1", 4789)

    addr = ifaddrmsg()
    addr["family"], addr["prefixlen"], addr["index"] = socket.AF_INET, 24, 7
    addr["attrs"] = [("IFA_ADDRESS", "10.0.0.2"), ("IFA_LOCAL", "10.0.0.2"), ("IFA_FLAGS", 0x80)]
    addr.encode()
    ipr, _ = client([[(rtnl.RTM_NEWADDR, rtnl.NLM_F_MULTI, bytes(addr.data)[16:]), (rtnl.NLMSG_DONE, 2, b"\0" * 4)]])
    [a] = ipr.addr("dump", index=7)
    assert (a["family"], a["prefixlen"], a.get_attr("IFA_LOCAL"), a.get_attr("IFA_FLAGS")) == (2, 24, "10.0.0.2", 0x80)


def test_errors_are_netlink_errors_with_the_errno() -> None:
    ipr, _ = client([[(rtnl.NLMSG_ERROR, 0, struct.pack("=i", -errno.EEXIST) + b"\0" * 16)]])
    with pytest.raises(NetlinkError) as caught:
        ipr.link("add", ifname="x", kind="bridge")
    assert caught.value.code == errno.EEXIST
    ipr, _ = client([[(rtnl.NLMSG_ERROR, 0, struct.pack("=i", -errno.ENODEV) + b"\0" * 16)]])
    assert ipr.link_lookup(ifname="missing") == []


def test_garbage_from_the_socket_is_an_error_or_ignored_never_a_crash() -> None:
    # A header claiming more bytes than arrived.
    ipr, fake = client([])
    fake.recv = lambda size: struct.pack("=LHHLL", 400, rtnl.RTM_NEWLINK, 0, 1, 0)  # type: ignore[method-assign]
    with pytest.raises(NetlinkError) as caught:
        ipr.link("dump")
    assert caught.value.code == errno.EBADMSG
    # Attributes that run past their message, or claim less than a header: dropped, the rest decoded.
    body = struct.pack("=BxHiII", 0, 0, 3, 0, 0) + struct.pack("=HH", 9, rtnl.IFLA_IFNAME) + b"eth0\0" + b"\0" * 3
    body += struct.pack("=HH", 200, rtnl.IFLA_MTU) + b"\0" * 4
    msg = rtnl._decode_link(body, 0, len(body))
    assert msg["index"] == 3 and msg.get_attr("IFLA_IFNAME") == "eth0" and msg.get_attr("IFLA_MTU") is None
    # An answer to an older request (another sequence number) is skipped.
    ipr, fake = client([])
    stale = struct.pack("=LHHLL", 36, rtnl.NLMSG_ERROR, 0, 99, 0) + struct.pack("=i", -1) + b"\0" * 16
    fake.recv = lambda size: stale + struct.pack("=LHHLL", 36, rtnl.NLMSG_ERROR, 0, 1, 0) + b"\0" * 20  # type: ignore
    assert ipr.link("del", index=4) == []
