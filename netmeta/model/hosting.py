"""Which networks and routers this host builds: the schedulers' answer, read from a snapshot.

The server binds every network to its DHCP agents and every router to one
L3 agent (``netmeta/server/scheduling.py``); the snapshot carries the
bindings, and each DHCP agent's own ``network:dhcp`` port with
``binding:host_id`` set to its host. Seen from a host
(:meth:`Snapshot.for_host`):

* a network's qdhcp namespace is built here when a DHCP port of the network
  is bound to this host — and it is *that* port's tap and addresses, so each
  host's dnsmasq advertises the metadata route via its own port, as
  Neutron's agents do;
* a router's qrouter namespace is built here when its L3 agent is here.

Without a point of view (``local_host`` empty), or while the snapshot holds
no agent of that type (a server that never saw an agent, every unit test
that builds a snapshot by hand), every network and router is built, with
the network's one DHCP port — exactly one host's behaviour before agents.
"""

from __future__ import annotations

from netmeta.model.types import AGENT_DHCP, AGENT_L2, AGENT_L3, DEVICE_OWNER_DHCP, NetworkId, Port, RouterId, Snapshot


def dhcp_ports(snapshot: Snapshot, network_id: NetworkId) -> list[Port]:
    """Every ``network:dhcp`` port of the network, by id (one per hosting DHCP agent)."""
    return [p for p in snapshot.ports_of(network_id) if p.device_owner == DEVICE_OWNER_DHCP]


def scheduled(snapshot: Snapshot, agent_type: str) -> bool:
    """Whether this snapshot's point of view follows the bindings for that agent type."""
    return bool(snapshot.local_host) and snapshot.has_agents(agent_type)


def local_dhcp_port(snapshot: Snapshot, network_id: NetworkId) -> Port | None:
    """The DHCP port this host's dnsmasq serves from, or None when the network is not hosted here."""
    ports = dhcp_ports(snapshot, network_id)
    if not scheduled(snapshot, AGENT_DHCP):
        return ports[0] if ports else None
    for port in ports:
        if port.binding_host_id == snapshot.local_host:
            return port
    return None


def hosts_router(snapshot: Snapshot, router_id: RouterId) -> bool:
    """Whether this host's L3 agent hosts the router."""
    if not scheduled(snapshot, AGENT_L3):
        return True
    return snapshot.local_host in snapshot.router_hosts(router_id)


def plugs_port(snapshot: Snapshot, port: Port) -> bool:
    """Whether a guest port may be plugged on this host: bound here, or not bound anywhere.

    Its port security rules are this host's to keep (Neutron's firewall
    driver filters the taps of its own host only); a port bound to another
    host has no device here.
    """
    if not scheduled(snapshot, AGENT_L2):
        return True
    return port.binding_host_id in (snapshot.local_host, "")
