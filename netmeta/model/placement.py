"""Where a guest's parts live on a cloud of several hosts, and which of their agents are alive.

The pure half of what ``netmeta explain`` and ``netmeta status`` say about
hosts: the host a port is bound to (``binding:host_id``), the DHCP agents
that host its network and the L3 agent of its router (the schedulers'
bindings in the snapshot), each with the ``alive`` and ``admin_state_up``
the server reports on ``/v2.0/agents`` — which the snapshot leaves out, so
they come in as :class:`AgentState` values.

A down agent that hosts the guest's network or router is a *problem*
finding: its namespace may still answer for a while (dnsmasq and the
listeners outlive the agent), but nothing keeps it in step with the API,
and once ``agent_down_time`` has passed the server moves the network to
another agent (``allow_automatic_dhcp_failover``) or leaves the router
where it is (``allow_automatic_l3agent_failover`` is off by default).

A snapshot without agents (one host, no agent ever registered) has nothing
to place: no finding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from netmeta.model.diagnosis import NOTE, OK, PROBLEM, Explanation, Finding, Observations, explain
from netmeta.model.types import (
    AGENT_DHCP, AGENT_L2, AGENT_L3, DEVICE_OWNER_DHCP, ROUTER_INTERFACE_OWNERS, NetworkId, Port, RouterId, Snapshot,
)


@dataclass(frozen=True)
class AgentState:
    """One agent as ``/v2.0/agents`` shows it (the parts placement reads)."""

    id: str
    agent_type: str
    host: str
    alive: bool
    admin_state_up: bool = True

    @property
    def working(self) -> bool:
        return self.alive and self.admin_state_up

    @property
    def state(self) -> str:
        if not self.alive:
            return "DOWN"
        return "alive" if self.admin_state_up else "alive, disabled"


def agent_states(rows: list[Mapping[str, object]]) -> dict[str, AgentState]:
    """``/v2.0/agents`` rows → states by agent id (fields Neutron's; anything missing reads as down)."""
    out: dict[str, AgentState] = {}
    for row in rows:
        ident = str(row.get("id") or "")
        if ident:
            out[ident] = AgentState(ident, str(row.get("agent_type") or ""), str(row.get("host") or ""),
                                    row.get("alive") is True, row.get("admin_state_up") is not False)
    return out


def network_dhcp_agents(snapshot: Snapshot, network_id: str) -> list[tuple[str, str]]:
    """(agent id, host) of every DHCP agent bound to the network, by host."""
    return sorted(((b.agent_id, b.host) for b in snapshot.bindings.values() if b.network_id == network_id),
                  key=lambda pair: (pair[1], pair[0]))


def router_l3_agents(snapshot: Snapshot, router_id: str) -> list[tuple[str, str]]:
    """(agent id, host) of the L3 agent(s) bound to the router."""
    return sorted(((b.agent_id, b.host) for b in snapshot.bindings.values() if b.router_id == router_id),
                  key=lambda pair: (pair[1], pair[0]))


def routers_of_network(snapshot: Snapshot, network_id: str) -> list[RouterId]:
    """The routers with an interface on the network."""
    return sorted({RouterId(p.device_id) for p in snapshot.ports_of(NetworkId(network_id))
                   if p.device_owner in ROUTER_INTERFACE_OWNERS and p.device_id})


def namespace_host(snapshot: Snapshot, owner: Port) -> str | None:
    """The host holding the namespace behind a next-hop port; None when the snapshot places nothing.

    A DHCP port's namespace is on the host it is bound to (each DHCP agent
    has its own port); a router interface's, on the router's L3 agent.
    """
    if owner.device_owner == DEVICE_OWNER_DHCP:
        if not snapshot.has_agents(AGENT_DHCP):
            return None
        return owner.binding_host_id or ""
    if not snapshot.has_agents(AGENT_L3):
        return None
    hosts = sorted(snapshot.router_hosts(RouterId(owner.device_id)))
    return hosts[0] if hosts else ""


def _down(agent_id: str, states: Mapping[str, AgentState]) -> bool:
    """Whether a bound agent does not work: down, disabled, or gone from a list that was read.

    With no states at all (``/v2.0/agents`` could not be read) nothing is called down.
    """
    if not states:
        return False
    state = states.get(agent_id)
    return state is None or not state.working


def _named(pairs: list[tuple[str, str]], states: Mapping[str, AgentState]) -> str:
    return ", ".join(f"{host} ({states[aid].state if aid in states else 'unknown'})" for aid, host in pairs)


def placement_findings(snapshot: Snapshot, port: Port | None, network_id: str, states: Mapping[str, AgentState],
                       *, uses_router: bool | None = None) -> list[Finding]:
    """Where the guest's port, its network's DHCP agents and its router's L3 agent are; which are down.

    ``uses_router``: whether the guest's metadata path goes through the
    router (a down L3 agent is then a problem, otherwise worth a note);
    None when that is not known (a port explained without its guest).
    """
    if not snapshot.agents:
        return []
    out: list[Finding] = []
    label = snapshot.networks[NetworkId(network_id)].name if NetworkId(network_id) in snapshot.networks else ""
    network = f"network {label or network_id}"
    if port is not None:
        host = port.binding_host_id
        if host:
            out.append(Finding(OK, "port-host", f"port {port.id} is bound to host {host}"))
            for agent in snapshot.agents_of_type(AGENT_L2):
                state = states.get(agent.id)
                if agent.host == host and state is not None and not state.working:
                    out.append(Finding(PROBLEM, "l2-agent-down",
                                       f"the Linux bridge agent on {host}, where the port is bound, is {state.state}: "
                                       "nothing keeps that host's bridge and VXLAN entries for the network"))
        else:
            out.append(Finding(NOTE, "port-unbound", f"port {port.id} is bound to no host (binding:host_id is empty)"))
    has_dhcp = any(s.enable_dhcp for s in snapshot.subnets_of(NetworkId(network_id)))
    dhcp = network_dhcp_agents(snapshot, network_id)
    if dhcp:
        out.append(Finding(OK, "dhcp-agents", f"{network} is hosted by the DHCP agent(s) on {_named(dhcp, states)}"))
        for aid, host in dhcp:
            state = states.get(aid)
            if _down(aid, states):
                how = state.state if state is not None else "not registered"
                out.append(Finding(PROBLEM, "dhcp-agent-down",
                                   f"the DHCP agent on {host}, which hosts {network}, is {how}: its dnsmasq and "
                                   "listener get no changes, and its leases are not renewed once it stops; see "
                                   f"`openstack network agent list --network {network_id}`"))
    elif has_dhcp and snapshot.has_agents(AGENT_DHCP):
        out.append(Finding(PROBLEM, "no-dhcp-agent", f"{network} has a subnet with DHCP but no DHCP agent hosts it"))
    for router_id in routers_of_network(snapshot, network_id):
        l3 = router_l3_agents(snapshot, router_id)
        router = snapshot.routers.get(router_id)
        name = f"router {router.name or router_id}" if router is not None else f"router {router_id}"
        if not l3:
            if snapshot.has_agents(AGENT_L3):
                out.append(Finding(PROBLEM if uses_router else NOTE, "no-l3-agent", f"no L3 agent hosts {name}"))
            continue
        out.append(Finding(OK, "l3-agent", f"{name} is hosted by the L3 agent on {_named(l3, states)}"))
        for aid, host in l3:
            state = states.get(aid)
            if _down(aid, states):
                how = state.state if state is not None else "not registered"
                out.append(Finding(PROBLEM if uses_router is not False else NOTE, "l3-agent-down",
                                   f"the L3 agent on {host}, which hosts {name}, is {how}: its qrouter namespace "
                                   "gets no changes"))
    return out


def guest_port(snapshot: Snapshot, network_id: str, ip: str, instance_id: str) -> Port | None:
    """The guest's port: the instance's port on the network holding its address."""
    for port in snapshot.ports_of(NetworkId(network_id)):
        if port.device_id == instance_id and (not ip or any(f.ip_address == ip for f in port.fixed_ips)):
            return port
    return None


def explain_on_hosts(snapshot: Snapshot, obs: Observations, states: Mapping[str, AgentState], *,
                     metadata_port: int = 9697) -> Explanation:
    """:func:`~netmeta.model.diagnosis.explain`, led by where the guest's parts are and which agents are down."""
    out = explain(snapshot, obs, metadata_port=metadata_port)
    port = guest_port(snapshot, obs.network_id, obs.guest_ip, obs.instance_id)
    out.findings[0:0] = placement_findings(snapshot, port, obs.network_id, states,
                                           uses_router=out.path == "router" if out.path != "none" else None)
    return out


def explain_port(snapshot: Snapshot, port: Port, states: Mapping[str, AgentState]) -> Explanation:
    """A port explained from anywhere (its guest is on some host): only where its parts are."""
    out = Explanation(guest=port.name or port.id)
    out.findings = placement_findings(snapshot, port, port.network_id, states)
    if not out.findings:
        out.add(NOTE, "one-host", "no agent has registered: everything is on one host (run `netmeta explain` "
                                  "with the guest's name where it runs)")
    return out
