"""Where a guest's parts are on several hosts, and which agents are down (netmeta.model.placement).

Pure: a snapshot with agents and bindings as the schedulers leave them, the
agents' alive/admin state as ``/v2.0/agents`` reports it, and the findings
``netmeta explain`` leads with. Also: a namespace on another host is named,
not called missing (netmeta.model.diagnosis).
"""

from __future__ import annotations

from dataclasses import replace

from netmeta.model.diagnosis import NOTE, OK, PROBLEM, Observations
from netmeta.model.placement import (
    AgentState, agent_states, explain_on_hosts, explain_port, namespace_host, placement_findings,
)
from netmeta.model.types import (
    AGENT_DHCP, AGENT_L2, AGENT_L3, Agent, AgentId, Binding, Instance, InstanceId, Network, NetworkId, PortId, Router,
    RouterId, Snapshot, SubnetId,
)
from tests.builders import port, router_port_at, subnet, world

NET, SUB, ROUTER, VM = NetworkId("net-1"), SubnetId("sub-1"), RouterId("rtr-1"), InstanceId("vm-1")
HOSTS = ("host-1", "host-2", "host-3")
GW, VM_IP = "10.0.0.1", "10.0.0.9"


def cloud(*, routed: bool = False) -> Snapshot:
    """net-1 served by DHCP agents on host-2 and host-3; the guest's port on host-1; the router on host-3."""
    ports = [port(f"dhcp-{h}", NET, [(SUB, f"10.0.0.{2 + i}")], owner="network:dhcp", binding_host_id=h,
                  device_id=f"dhcp{h}") for i, h in enumerate(HOSTS[1:])]
    ports.append(port("vmport", NET, [(SUB, VM_IP)], device_id=VM, owner="compute:nova", binding_host_id="host-1",
                      project_id="p"))
    if routed:
        ports.append(router_port_at("rtrport", NET, SUB, GW, ROUTER))
    snap = world(networks=[Network(NET, "blue", "p")], subnets=[subnet(SUB, NET, "10.0.0.0/24", gateway_ip=GW)],
                 ports=ports, routers=[Router(ROUTER, "r1")] * routed, instances=[Instance(VM, "vm1", "vm1", "p")])
    agents = {AgentId(f"{t}@{h}"): Agent(AgentId(f"{t}@{h}"), t, h) for h in HOSTS for t in (AGENT_DHCP, AGENT_L3, AGENT_L2)}
    bindings = {f"b-{h}": Binding(f"b-{h}", AgentId(f"{AGENT_DHCP}@{h}"), h, network_id=NET) for h in HOSTS[1:]}
    if routed:
        bindings["b-r"] = Binding("b-r", AgentId(f"{AGENT_L3}@host-3"), "host-3", router_id=ROUTER)
    return replace(snap, agents=agents, bindings=bindings)


def states(*down: str, disabled: tuple[str, ...] = ()) -> dict[str, AgentState]:
    """Every agent alive except those named ``type@host``."""
    return {f"{t}@{h}": AgentState(f"{t}@{h}", t, h, f"{t}@{h}" not in down, f"{t}@{h}" not in disabled)
            for h in HOSTS for t in (AGENT_DHCP, AGENT_L3, AGENT_L2)}


def by_code(findings: list) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {f.code: (f.severity, f.text) for f in findings}


def test_every_part_is_named_with_its_host_when_all_agents_are_alive() -> None:
    snap = cloud(routed=True)
    found = by_code(placement_findings(snap, snap.ports[PortId("vmport")], NET, states(), uses_router=True))
    assert found["port-host"] == (OK, "port vmport is bound to host host-1")
    assert found["dhcp-agents"] == (OK, "network blue is hosted by the DHCP agent(s) on host-2 (alive), host-3 (alive)")
    assert found["l3-agent"] == (OK, "router r1 is hosted by the L3 agent on host-3 (alive)")
    assert not [code for code, (severity, _) in found.items() if severity == PROBLEM]


def test_a_down_dhcp_agent_hosting_the_network_is_the_problem() -> None:
    snap = cloud()
    found = by_code(placement_findings(snap, snap.ports[PortId("vmport")], NET, states(f"{AGENT_DHCP}@host-3")))
    assert found["dhcp-agents"][1].endswith("host-2 (alive), host-3 (DOWN)")
    severity, text = found["dhcp-agent-down"]
    assert severity == PROBLEM and text.startswith("the DHCP agent on host-3, which hosts network blue, is DOWN")
    # A down agent elsewhere (host-1's DHCP agent hosts nothing here) is nobody's problem in this story.
    assert "dhcp-agent-down" not in by_code(placement_findings(snap, None, NET, states(f"{AGENT_DHCP}@host-1")))


def test_a_disabled_agent_counts_as_not_working() -> None:
    snap = cloud()
    found = by_code(placement_findings(snap, None, NET, states(disabled=(f"{AGENT_DHCP}@host-2",))))
    assert found["dhcp-agent-down"][1].startswith("the DHCP agent on host-2, which hosts network blue, is alive, disabled")


def test_a_down_l3_agent_is_a_problem_only_on_the_router_path() -> None:
    snap = cloud(routed=True)
    down = states(f"{AGENT_L3}@host-3")
    assert by_code(placement_findings(snap, None, NET, down, uses_router=True))["l3-agent-down"][0] == PROBLEM
    assert by_code(placement_findings(snap, None, NET, down, uses_router=False))["l3-agent-down"][0] == NOTE


def test_the_port_hosts_bridge_agent_down_and_an_unbound_port() -> None:
    snap = cloud()
    found = by_code(placement_findings(snap, snap.ports[PortId("vmport")], NET, states(f"{AGENT_L2}@host-1")))
    assert found["l2-agent-down"][0] == PROBLEM and "on host-1, where the port is bound" in found["l2-agent-down"][1]
    unbound = replace(snap.ports[PortId("vmport")], binding_host_id="")
    assert by_code(placement_findings(snap, unbound, NET, states()))["port-unbound"][0] == NOTE


def test_a_network_no_dhcp_agent_hosts_and_a_snapshot_without_agents() -> None:
    snap = replace(cloud(), bindings={})
    assert by_code(placement_findings(snap, None, NET, states()))["no-dhcp-agent"][0] == PROBLEM
    assert placement_findings(replace(cloud(), agents={}, bindings={}), None, NET, {}) == []  # one host: nothing to place


def test_agent_rows_from_the_api() -> None:
    rows = [{"id": "a", "agent_type": AGENT_DHCP, "host": "h", "alive": True, "admin_state_up": True},
            {"id": "b", "agent_type": AGENT_L3, "host": "h", "alive": "yes"}, {"host": "no id"}]
    got = agent_states(rows)  # type: ignore[arg-type]
    assert got["a"].working and not got["b"].alive and set(got) == {"a", "b"}


def test_the_namespace_behind_the_next_hop_is_on_its_agents_host() -> None:
    snap = cloud(routed=True)
    assert namespace_host(snap, snap.ports[PortId("dhcp-host-2")]) == "host-2"
    assert namespace_host(snap, snap.ports[PortId("rtrport")]) == "host-3"
    bare = replace(snap, agents={}, bindings={})
    assert namespace_host(bare, bare.ports[PortId("rtrport")]) is None


def test_explain_on_another_host_names_the_namespace_there_instead_of_missing() -> None:
    snap = cloud()
    hop = "10.0.0.3"  # host-3's DHCP port
    obs = Observations(
        guest_name="vm1", guest_ip=VM_IP, instance_id=VM, network_id=NET, route_gateway=hop, route_found=True,
        dhcp_routes=f"32 169 254 169 254 {hop.replace('.', ' ')}", namespace=None, namespace_host="host-3",
        opts_lines=(f"tag:subnet-{SUB},option:classless-static-route,169.254.169.254/32,{hop}",),
        fetch_status=200, fetch_body="{}")
    result = explain_on_hosts(snap, obs, states())
    found = by_code(result.findings)
    assert result.consistent, result.findings
    assert found["namespace-elsewhere"][0] == NOTE and "is on host host-3, not this one" in found["namespace-elsewhere"][1]
    assert "namespace-missing" not in found
    assert [f.code for f in result.findings][:2] == ["port-host", "dhcp-agents"]
    # The same with host-3's DHCP agent down: the explanation names it as the problem.
    broken = explain_on_hosts(snap, obs, states(f"{AGENT_DHCP}@host-3"))
    assert [f.code for f in broken.problems] == ["dhcp-agent-down"]
    # Without a host to name (one host), a namespace not seen is missing, as before.
    alone = explain_on_hosts(replace(snap, agents={}, bindings={}), replace(obs, namespace_host=""), {})
    assert "namespace-missing" in by_code(alone.findings)


def test_a_port_explained_from_anywhere() -> None:
    snap = cloud()
    result = explain_port(snap, snap.ports[PortId("vmport")], states(f"{AGENT_DHCP}@host-2"))
    assert [f.code for f in result.problems] == ["dhcp-agent-down"] and result.guest == "vmport"


def test_agents_whose_state_could_not_be_read_are_named_unknown_not_down() -> None:
    """``/v2.0/agents`` unreadable (no admin, the server away): nothing is called down, nothing is a problem."""
    snap = cloud(routed=True)
    found = by_code(placement_findings(snap, snap.ports[PortId("vmport")], NET, {}, uses_router=True))
    assert found["dhcp-agents"][1].endswith("host-2 (unknown), host-3 (unknown)")
    assert not [code for code, (severity, _) in found.items() if severity == PROBLEM]
    # Read, but an agent bound to the network is no longer in the list: deleted, so nothing serves from it.
    gone = {k: v for k, v in states().items() if k != f"{AGENT_DHCP}@host-2"}
    assert "not registered" in by_code(placement_findings(snap, None, NET, gone))["dhcp-agent-down"][1]
