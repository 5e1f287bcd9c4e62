"""VXLAN between hosts: model.l2's table and the agent's transcripts (no root).

What Neutron's linuxbridge agent with l2population holds, per VXLAN network
on a host: ``vxlan-<vni>`` on the bridge over ``local_ip``, a flood entry
per other host with a port on the network and one entry per such port's
MAC — changed at once, and only the entries, when ports come and go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from netmeta.agent.reconciler import Reconciler
from netmeta.config import Config
from netmeta.model import l2, names
from netmeta.model.types import Agent, AgentId, Network, NetworkId, Snapshot
from tests.builders import merge, port, tenant_network, world
from tests.fake_host import FakeHost

ZERO = l2.FLOOD_MAC
L2 = ("ensure_bridge", "ensure_vxlan", "replace_fdb", "delete_link")  # the calls that touch layer 2
IPS = {"host-1": "198.18.0.11", "host-2": "198.18.0.12", "host-3": "198.18.0.13"}


def cfg(host: str = "host-1", **kw: object) -> Config:
    return Config(state_dir="/state", fabric_namespace="fabric", host=host, local_ip=IPS.get(host, ""), **kw)  # type: ignore[arg-type]


def agents(*hosts: str) -> Snapshot:
    rows = {AgentId(f"l2-{h}"): Agent(AgentId(f"l2-{h}"), "Linux bridge agent", h, binary="neutron-linuxbridge-agent",
                                      configurations={"tunneling_ip": IPS[h], "tunnel_types": ["vxlan"]})
            for h in hosts}
    return Snapshot(agents=rows)


def vxlan_net(n: int, vni: int, **kw: object) -> Snapshot:
    """tenant_network(n) as a VXLAN network (mtu 1450), its DHCP port bound to host-2."""
    snap = tenant_network(n, mtu=1450)
    net = snap.networks[NetworkId(f"net{n}")]
    dhcp = snap.ports[next(iter(snap.ports))]
    return dataclasses.replace(
        snap,
        networks={net.id: dataclasses.replace(net, network_type="vxlan", segmentation_id=vni, **kw)},
        ports={dhcp.id: dataclasses.replace(dhcp, binding_host_id="host-2")},
    )


def with_agents(snap: Snapshot, *hosts: str) -> Snapshot:
    return dataclasses.replace(snap, agents=agents(*hosts).agents)


def guest(n: int, pid: str, host: str, mac: str) -> Snapshot:
    return world(ports=[port(pid, f"net{n}", [(f"sub{n}", f"10.{n}.0.{10 + len(pid)}")], mac=mac,
                             owner="compute:nova", binding_host_id=host)])


CLOUD = with_agents(vxlan_net(1, 101), "host-1", "host-2", "host-3")


def test_entries_point_at_every_other_host_with_a_port() -> None:
    snap = merge(CLOUD, guest(1, "g1", "host-1", "fa:16:3e:00:00:11"), guest(1, "g3", "host-3", "fa:16:3e:00:00:33"))
    snap = dataclasses.replace(snap, agents=CLOUD.agents)
    spec = l2.desired_vxlan(snap, cfg("host-1"))[NetworkId("net1")]
    assert (spec.device, spec.vni, spec.local_ip, spec.bridge, spec.mtu, spec.port) == (
        "vxlan-101", 101, "198.18.0.11", names.bridge_name("net1"), 1450, 0)
    # host-2 holds the DHCP port, host-3 a guest; host-1's own guest needs no entry.
    assert spec.fdb == tuple(sorted([(ZERO, "198.18.0.12"), ("fa:16:3e:dd:00:01", "198.18.0.12"),
                                     (ZERO, "198.18.0.13"), ("fa:16:3e:00:00:33", "198.18.0.13")]))
    # Seen from host-2: host-1 and host-3, not itself.
    spec2 = l2.desired_vxlan(snap, cfg("host-2"))[NetworkId("net1")]
    assert {ip for _, ip in spec2.fdb} == {"198.18.0.11", "198.18.0.13"}


@pytest.mark.parametrize("case", ["no local_ip", "not vxlan", "no vni"])
def test_no_vxlan_device(case: str) -> None:
    snap = CLOUD
    config = cfg("host-1")
    if case == "no local_ip":
        config = config.replace(local_ip="")
    net = snap.networks[NetworkId("net1")]
    if case == "not vxlan":
        snap = dataclasses.replace(snap, networks={net.id: dataclasses.replace(net, network_type="local")})
    if case == "no vni":
        snap = dataclasses.replace(snap, networks={net.id: dataclasses.replace(net, segmentation_id=None)})
    assert l2.desired_vxlan(snap, config) == {}


def test_a_host_without_an_agent_row_or_address_gets_no_entry() -> None:
    snap = dataclasses.replace(merge(CLOUD, guest(1, "g9", "host-9", "fa:16:3e:00:00:99")), agents=CLOUD.agents)
    spec = l2.desired_vxlan(snap, cfg("host-2"))[NetworkId("net1")]
    assert spec.fdb == ()  # host-9 reports no tunneling_ip: nowhere to send


def test_local_networks_only_where_this_host_has_a_port() -> None:
    other = dataclasses.replace(vxlan_net(2, 102), agents=CLOUD.agents)  # DHCP on host-2 only
    empty = world(networks=[Network(NetworkId("net3"), "net3", "p"), Network(NetworkId("net4"), "net4", "p")])
    unbound = world(ports=[port("u4", "net4", [], mac="fa:16:3e:00:00:44")])  # any host may be about to plug it
    snap = dataclasses.replace(merge(CLOUD, other, empty, unbound), agents=CLOUD.agents)
    # net3 has no port at all: built nowhere (Neutron builds a bridge where a port is bound).
    assert l2.local_networks(snap, "host-2") == ["net1", "net2", "net4"]
    assert l2.local_networks(snap, "host-1") == ["net4"]
    with_guest = dataclasses.replace(merge(snap, guest(2, "g1", "host-1", "fa:16:3e:00:00:11")), agents=CLOUD.agents)
    assert l2.local_networks(with_guest, "host-1") == ["net2", "net4"]
    # One host, no agents registered: every network, as before.
    assert l2.local_networks(dataclasses.replace(snap, agents={}), "host-1") == ["net1", "net2", "net3", "net4"]


# --- the agent ------------------------------------------------------------------


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def agent2(host: FakeHost) -> Iterator[Reconciler]:
    reconciler = Reconciler(cfg("host-2", enable_isolated_metadata=True), host, workers=4)
    yield reconciler
    reconciler.close()


def test_first_pass_makes_the_device_on_the_bridge_then_the_entries(agent2: Reconciler, host: FakeHost) -> None:
    snap = dataclasses.replace(merge(CLOUD, guest(1, "g1", "host-1", "fa:16:3e:00:00:11")), agents=CLOUD.agents)
    report = agent2.converge(snap, full=True)
    assert not report.failed, report.failed
    bridge = names.bridge_name("net1")
    calls = host.calls("ensure_bridge", "ensure_vxlan", "replace_fdb", "remember")
    assert ("ensure_bridge", bridge, 1450) in calls
    assert ("ensure_vxlan", "vxlan-101", 101, "198.18.0.12", bridge, 1450, 0) in calls
    assert ("replace_fdb", "vxlan-101", ((ZERO, "198.18.0.11"), ("fa:16:3e:00:00:11", "198.18.0.11"))) in calls
    assert calls.index(("ensure_bridge", bridge, 1450)) < calls.index(("ensure_vxlan", "vxlan-101", 101, "198.18.0.12", bridge, 1450, 0))
    assert "vxlan-101" in host.ledger_links
    host.clear()
    # Nothing changed: nothing done, also on a full pass over the intact host.
    assert not agent2.converge(snap).changed
    assert not agent2.converge(snap, full=True).changed
    assert host.calls("ensure_vxlan", "replace_fdb") == []
    # The full pass read the devices from its one look at the fabric, not one by one.
    assert host.calls("observe_vxlan") == []


def test_entries_changed_by_hand_are_put_back_on_the_full_pass(agent2: Reconciler, host: FakeHost) -> None:
    snap = dataclasses.replace(merge(CLOUD, guest(1, "g1", "host-1", "fa:16:3e:00:00:11")), agents=CLOUD.agents)
    agent2.converge(snap, full=True)
    host.fdb["vxlan-101"].discard(("fa:16:3e:00:00:11", "198.18.0.11"))
    host.clear()
    agent2.converge(snap)
    assert host.calls(*L2) == []  # between full passes the kernel is not read again
    agent2.converge(snap, full=True)
    assert host.calls(*L2) == [("replace_fdb", "vxlan-101", ((ZERO, "198.18.0.11"), ("fa:16:3e:00:00:11", "198.18.0.11")))]


def test_a_port_coming_and_going_on_another_host_changes_only_the_entries(agent2: Reconciler, host: FakeHost) -> None:
    agent2.converge(CLOUD, full=True)
    assert host.fdb["vxlan-101"] == set()  # DHCP here, nobody elsewhere yet
    host.clear()
    snap = dataclasses.replace(merge(CLOUD, guest(1, "g3", "host-3", "fa:16:3e:00:00:33"), revision=2),
                               agents=CLOUD.agents)
    agent2.converge(snap)
    assert host.calls(*L2) == [("replace_fdb", "vxlan-101", ((ZERO, "198.18.0.13"), ("fa:16:3e:00:00:33", "198.18.0.13")))]
    host.clear()
    agent2.converge(dataclasses.replace(CLOUD, revision=3))
    assert host.calls(*L2) == [("replace_fdb", "vxlan-101", ())]


def test_a_device_deleted_by_hand_is_made_again_on_the_full_pass(agent2: Reconciler, host: FakeHost) -> None:
    snap = dataclasses.replace(merge(CLOUD, guest(1, "g1", "host-1", "fa:16:3e:00:00:11")), agents=CLOUD.agents)
    agent2.converge(snap, full=True)
    del host.links["fabric"]["vxlan-101"]
    host.fdb.pop("vxlan-101")
    host.clear()
    agent2.converge(snap, full=True)
    assert [c[0] for c in host.calls("ensure_vxlan", "replace_fdb")] == ["ensure_vxlan", "replace_fdb"]


def test_a_gone_network_takes_its_device_with_it(agent2: Reconciler, host: FakeHost) -> None:
    agent2.converge(CLOUD, full=True)
    host.clear()
    agent2.converge(dataclasses.replace(agents(), agents=CLOUD.agents, revision=5))
    assert ("delete_link", None, "vxlan-101") in host.calls()
    assert "vxlan-101" not in host.ledger_links


def test_a_network_leaving_this_host_loses_bridge_and_device(host: FakeHost) -> None:
    """host-1 has no port on net1 (DHCP on host-2): no bridge, no device there."""
    reconciler = Reconciler(cfg("host-1"), host, workers=2)
    try:
        reconciler.converge(CLOUD, full=True)
        assert names.bridge_name("net1") not in host.links.get("fabric", {})
        assert host.calls("ensure_vxlan") == []
        reconciler.converge(dataclasses.replace(merge(CLOUD, guest(1, "g1", "host-1", "fa:16:3e:00:00:11")),
                                                agents=CLOUD.agents, revision=2))
        assert "vxlan-101" in host.links["fabric"]
        host.clear()
        reconciler.converge(dataclasses.replace(CLOUD, revision=3))
        assert ("delete_link", None, "vxlan-101") in host.calls() and ("delete_link", None, names.bridge_name("net1")) in host.calls()
    finally:
        reconciler.close()
