"""What each host builds, as pure data: the seed's network on three DHCP agents, a router on one L3 agent."""

from __future__ import annotations

import dataclasses

import pytest

from netmeta.config import Config
from netmeta.model.dhcp import desired_dhcp, opts_lines
from netmeta.model.l3 import desired_routers
from netmeta.model.listeners import desired_listeners
from netmeta.model.paths import StatePaths
from netmeta.model.types import (
    AGENT_DHCP, AGENT_L2, AGENT_L3, Agent, AgentId, Binding, Network, NetworkId, Router, RouterId, Snapshot,
    snapshot_from_state,
)
from tests.builders import port, subnet, world

NET = NetworkId("18b28e2a-30a2-4374-83e1-54bdfeda66a3")
ROUTER = RouterId("28120946-9f6a-4638-9747-603977b49816")
HOSTS = ("controller-0", "controller-1", "controller-2")
CONFIG = Config(enable_isolated_metadata=True)
PATHS = StatePaths("/var/lib/netmeta")


def seed() -> Snapshot:
    """192.168.111.0/24 without gateway, one DHCP port per controller (.1, .3, .2 as in the seed)."""
    dhcp = [port(f"p{i}", NET, [("s1", ip)], owner="network:dhcp", binding_host_id=host, mac=f"fa:16:3e:00:00:0{i}")
            for i, (host, ip) in enumerate(zip(HOSTS, ("192.168.111.1", "192.168.111.3", "192.168.111.2")))]
    snap = world(networks=[Network(NET, "test-metadata-in-dhcp", "p")],
                 subnets=[subnet("s1", NET, "192.168.111.0/24")], ports=dhcp,
                 routers=[Router(ROUTER, "r", "p")])
    agents = {AgentId(f"{t}-{h}"): Agent(AgentId(f"{t}-{h}"), t, h, configurations={"tunneling_ip": f"10.0.0.{i}"})
              for i, h in enumerate(HOSTS) for t in (AGENT_DHCP, AGENT_L3, AGENT_L2)}
    bindings = {"b": Binding("b", AgentId(f"{AGENT_L3}-controller-1"), "controller-1", router_id=ROUTER)}
    return dataclasses.replace(snap, agents=agents, bindings=bindings)


@pytest.mark.parametrize("host", HOSTS)
def test_each_host_serves_from_its_own_dhcp_port_and_lists_all_three(host: str) -> None:
    snap = seed().for_host(host)
    (spec,) = desired_dhcp(snap, CONFIG, PATHS).values()
    own = next(p for p in snap.ports.values() if p.binding_host_id == host)
    assert spec.port_id == own.id and spec.addresses[0] == f"{own.fixed_ips[0].ip_address}/24"
    lines = opts_lines(snap, NET, CONFIG)
    # The metadata route goes via this host's own port, as each Neutron agent's dnsmasq does.
    assert f"tag:subnet-s1,option:classless-static-route,169.254.169.254/32,{own.fixed_ips[0].ip_address}" in lines
    assert "tag:subnet-s1,option:dns-server,192.168.111.1,192.168.111.3,192.168.111.2" in lines


def test_a_router_is_built_on_its_l3_agent_host_only() -> None:
    assert [h for h in HOSTS if desired_routers(seed().for_host(h), CONFIG)] == ["controller-1"]
    listeners = {h: sorted(k[0] for k in desired_listeners(seed().for_host(h), CONFIG)) for h in HOSTS}
    assert listeners == {"controller-0": ["network"], "controller-1": ["network", "router"],
                         "controller-2": ["network"]}


def test_a_host_without_agents_bindings_builds_nothing_but_no_agents_means_everything() -> None:
    assert desired_dhcp(seed().for_host("compute-9"), CONFIG, PATHS) == {}
    assert desired_routers(seed().for_host("compute-9"), CONFIG) == {}
    bare = dataclasses.replace(seed(), agents={}, bindings={})
    assert len(desired_dhcp(bare.for_host("compute-9"), CONFIG, PATHS)) == 1  # one host, as before agents
    assert len(desired_routers(bare.for_host("compute-9"), CONFIG)) == 1
    assert len(desired_dhcp(seed(), CONFIG, PATHS)) == 1  # no point of view: everything


def test_the_state_document_carries_agents_bindings_hosts_and_segments() -> None:
    snap = snapshot_from_state({
        "revision": 3,
        "networks": [{"id": "n", "provider:network_type": "vxlan", "provider:segmentation_id": 1001}],
        "ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "binding:host_id": "h2"}],
        "agents": [{"id": "a", "agent_type": AGENT_L2, "host": "h2", "configurations": {"tunneling_ip": "10.1.0.2"}},
                   {"id": "d", "agent_type": AGENT_DHCP, "host": "h2", "configurations": {}}],
        "bindings": [{"id": "b", "agent_id": "d", "host": "h2", "network_id": "n", "router_id": None}],
    })
    assert (snap.networks[NetworkId("n")].network_type, snap.networks[NetworkId("n")].segmentation_id) == (
        "vxlan", 1001)
    assert snap.tunnel_endpoints() == {"h2": "10.1.0.2"}
    assert snap.hosts_with_ports(NetworkId("n")) == {"h2"}
    assert snap.bindings["b"].network_id == "n" and snap.bindings["b"].router_id is None


def test_port_security_rules_only_for_ports_this_host_may_plug() -> None:
    """Each host filters its own taps (Neutron's firewall driver): ports bound here, or bound nowhere."""
    from netmeta.model.portsec import filtered_ports

    guests = [port(f"g{i}", NET, [("s1", f"192.168.111.{10 + i}")], owner="compute:nova", binding_host_id=host,
                   mac=f"fa:16:3e:00:01:0{i}") for i, host in enumerate(("controller-0", "controller-1", ""))]
    snap = dataclasses.replace(seed(), ports={**seed().ports, **{p.id: p for p in guests}})
    assert [p.id for p in filtered_ports(snap.for_host("controller-0"))] == ["g0", "g2"]
    assert [p.id for p in filtered_ports(snap.for_host("controller-1"))] == ["g1", "g2"]
    # No point of view, or no agents registered: every guest port, as on one host.
    assert [p.id for p in filtered_ports(snap)] == ["g0", "g1", "g2"]
    assert [p.id for p in filtered_ports(dataclasses.replace(snap, agents={}).for_host("controller-0"))] == ["g0", "g1", "g2"]
