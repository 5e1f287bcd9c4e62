"""The resources netmeta reasons about, as frozen values.

Every consumer of the server's data (the agent, the metadata process, the
guest tooling) receives Neutron-shaped JSON from the change feed and turns it
into these values once, with :func:`snapshot_from_state`. Everything in
``model`` then works on them without I/O: a :class:`Snapshot` is one
consistent view of the world at one global revision.

Field names are Neutron's (and, for instances, Nova's) so that the code reads
the way an operator thinks about the cloud.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, NewType

NetworkId = NewType("NetworkId", str)
SubnetId = NewType("SubnetId", str)
PortId = NewType("PortId", str)
RouterId = NewType("RouterId", str)
InstanceId = NewType("InstanceId", str)
SecurityGroupId = NewType("SecurityGroupId", str)
AgentId = NewType("AgentId", str)

METADATA_IPV4 = "169.254.169.254"
METADATA_CIDR = "169.254.169.254/32"
# Neutron's METADATA_V6_IP / METADATA_V6_CIDR: the same service for IPv6 guests, on the link.
METADATA_IPV6 = "fe80::a9fe:a9fe"
METADATA_V6_CIDR = "fe80::a9fe:a9fe/128"

DEVICE_OWNER_DHCP = "network:dhcp"
DEVICE_OWNER_ROUTER_INTF = "network:router_interface"
# Every owner Neutron counts as "a router holds this subnet's gateway".
ROUTER_INTERFACE_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:ha_router_replicated_interface",
        "network:router_interface_distributed",
    }
)
COMPUTE_OWNER_PREFIX = "compute:"

# Neutron's agent types, as /v2.0/agents shows them.
AGENT_DHCP = "DHCP agent"
AGENT_L3 = "L3 agent"
AGENT_L2 = "Linux bridge agent"
AGENT_METADATA = "Metadata agent"


@dataclass(frozen=True)
class HostRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True)
class FixedIP:
    subnet_id: SubnetId
    ip_address: str


@dataclass(frozen=True)
class ExtraDhcpOpt:
    """One of a port's ``extra_dhcp_opts``: an option by name or number, for IPv4 or IPv6."""

    opt_name: str
    opt_value: str
    ip_version: int = 4


@dataclass(frozen=True)
class DnsAssignment:
    """The server's name for one fixed IP (Neutron's ``dns_assignment`` entry)."""

    ip_address: str
    hostname: str
    fqdn: str


@dataclass(frozen=True)
class Network:
    id: NetworkId
    name: str
    project_id: str
    mtu: int = 1500
    admin_state_up: bool = True
    dns_domain: str = ""
    # The provider extension: "local" (one host, today's default), "flat" or
    # "vxlan" with its VNI in segmentation_id.
    network_type: str = "local"
    segmentation_id: int | None = None
    physical_network: str | None = None


@dataclass(frozen=True)
class Subnet:
    id: SubnetId
    network_id: NetworkId
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[HostRoute, ...] = ()
    name: str = ""
    project_id: str = ""
    ipv6_address_mode: str | None = None
    ipv6_ra_mode: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True)
class AddressPair:
    """One of a port's ``allowed_address_pairs``: an address or a CIDR, and a MAC."""

    ip_address: str
    mac_address: str


@dataclass(frozen=True)
class Port:
    id: PortId
    network_id: NetworkId
    mac_address: str
    fixed_ips: tuple[FixedIP, ...] = ()
    device_id: str = ""
    device_owner: str = ""
    project_id: str = ""
    name: str = ""
    admin_state_up: bool = True
    extra_dhcp_opts: tuple[ExtraDhcpOpt, ...] = ()
    dns_name: str = ""
    dns_assignment: tuple[DnsAssignment, ...] = ()
    port_security_enabled: bool = True
    allowed_address_pairs: tuple[AddressPair, ...] = ()
    security_groups: tuple[SecurityGroupId, ...] = ()
    # Neutron's binding:host_id: the host whose agent plugs the port ("" = none).
    binding_host_id: str = ""

    def ip_on(self, subnet_id: SubnetId) -> str | None:
        for fixed in self.fixed_ips:
            if fixed.subnet_id == subnet_id:
                return fixed.ip_address
        return None

    def last_ip_on(self, subnet_id: SubnetId) -> str | None:
        """The last of the port's addresses on a subnet (the one configured last on its device)."""
        found = None
        for fixed in self.fixed_ips:
            if fixed.subnet_id == subnet_id:
                found = fixed.ip_address
        return found


@dataclass(frozen=True)
class SecurityGroupRule:
    """Neutron's rule, with the protocol as a number (None: any) and the prefix normalised."""

    id: str
    direction: str  # "ingress" | "egress"
    ethertype: str  # "IPv4" | "IPv6"
    protocol: int | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: SecurityGroupId | None = None


@dataclass(frozen=True)
class SecurityGroup:
    id: SecurityGroupId
    name: str
    project_id: str
    rules: tuple[SecurityGroupRule, ...] = ()


@dataclass(frozen=True)
class Router:
    id: RouterId
    name: str
    project_id: str = ""
    admin_state_up: bool = True
    routes: tuple[HostRoute, ...] = ()  # extra routes, installed in the qrouter


@dataclass(frozen=True)
class Instance:
    id: InstanceId
    name: str
    hostname: str
    project_id: str
    availability_zone: str = "nova"
    flavor: str = "m1.small"
    user_data: str | None = None  # base64, as stored and served
    key_name: str | None = None
    public_key: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    launch_index: int = 0
    created_at: str = ""
    password: str | None = None
    # Its ports in attach order (the server's instance "ports" list).
    port_ids: tuple[PortId, ...] = ()


@dataclass(frozen=True)
class Agent:
    """One row of Neutron's ``/v2.0/agents``, without what changes on every heartbeat.

    ``alive`` and ``heartbeat_timestamp`` are the server's to compute; the
    state document leaves them out so that a heartbeat is not a change.
    """

    id: AgentId
    agent_type: str
    host: str
    binary: str = ""
    topic: str = ""
    admin_state_up: bool = True
    configurations: Mapping[str, Any] = field(default_factory=dict)
    availability_zone: str | None = None

    @property
    def tunneling_ip(self) -> str:
        """The underlay address a Linux bridge agent reports (Neutron's ``[vxlan] local_ip``)."""
        value = self.configurations.get("tunneling_ip") or ""
        return str(value)


@dataclass(frozen=True)
class Binding:
    """Which agent hosts a network (a DHCP agent) or a router (an L3 agent).

    Neutron's ``networkdhcpagentbindings`` and ``routerl3agentbindings``
    rows; exactly one of ``network_id`` and ``router_id`` is set.
    """

    id: str
    agent_id: AgentId
    host: str
    network_id: NetworkId | None = None
    router_id: RouterId | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything the server holds, at one global revision."""

    revision: int = 0
    networks: Mapping[NetworkId, Network] = field(default_factory=dict)
    subnets: Mapping[SubnetId, Subnet] = field(default_factory=dict)
    ports: Mapping[PortId, Port] = field(default_factory=dict)
    routers: Mapping[RouterId, Router] = field(default_factory=dict)
    instances: Mapping[InstanceId, Instance] = field(default_factory=dict)
    security_groups: Mapping[SecurityGroupId, SecurityGroup] = field(default_factory=dict)
    agents: Mapping[AgentId, Agent] = field(default_factory=dict)
    bindings: Mapping[str, Binding] = field(default_factory=dict)
    # Whose point of view decides which qdhcp/qrouter namespaces this
    # snapshot asks for (netmeta.model.hosting): "" means every one, as on
    # one host before any agent registered. Set with for_host().
    local_host: str = ""

    def for_host(self, host: str) -> "Snapshot":
        """The same data, seen from one host: only its networks and routers are built there.

        Made once per snapshot and host, and sharing the indexes already
        built (they do not depend on the point of view): the agent asks on
        every pass, and a pass on an unchanged snapshot must stay cheap.
        """
        if host == self.local_host:
            return self
        views: dict[str, Snapshot] = self.__dict__.setdefault("_views", {})
        view = views.get(host)
        if view is None:
            view = views[host] = dataclasses.replace(self, local_host=host)
            for name in _SHARED_INDEXES:
                if name in self.__dict__:
                    view.__dict__[name] = self.__dict__[name]
        return view

    # Indexes, built once per snapshot on first use: the agent asks these
    # questions several times per network on every pass, and a scan of every
    # port for each question made a pass O(networks × ports).
    @cached_property
    def _subnets_by_network(self) -> dict[NetworkId, list[Subnet]]:
        index: dict[NetworkId, list[Subnet]] = {}
        for subnet in sorted(self.subnets.values(), key=lambda s: s.id):
            index.setdefault(subnet.network_id, []).append(subnet)
        return index

    @cached_property
    def _ports_by_network(self) -> dict[NetworkId, list[Port]]:
        index: dict[NetworkId, list[Port]] = {}
        for port in sorted(self.ports.values(), key=lambda p: p.id):
            index.setdefault(port.network_id, []).append(port)
        return index

    @cached_property
    def _ports_by_device(self) -> dict[str, list[Port]]:
        index: dict[str, list[Port]] = {}
        for port in sorted(self.ports.values(), key=lambda p: p.id):
            index.setdefault(port.device_id, []).append(port)
        return index

    def subnets_of(self, network_id: NetworkId) -> list[Subnet]:
        return list(self._subnets_by_network.get(network_id, ()))

    def ports_of(self, network_id: NetworkId) -> list[Port]:
        return list(self._ports_by_network.get(network_id, ()))

    def router_ports(self, router_id: RouterId) -> list[Port]:
        return [p for p in self._ports_by_device.get(router_id, ()) if p.device_owner in ROUTER_INTERFACE_OWNERS]

    def ports_of_device(self, device_id: str) -> list[Port]:
        return list(self._ports_by_device.get(device_id, ()))

    # --- several hosts (see netmeta.model.hosting) ---------------------------

    @cached_property
    def _router_hosts(self) -> dict[RouterId, set[str]]:
        index: dict[RouterId, set[str]] = {}
        for binding in self.bindings.values():
            if binding.router_id:
                index.setdefault(binding.router_id, set()).add(binding.host)
        return index

    def router_hosts(self, router_id: RouterId) -> set[str]:
        """The hosts whose L3 agent hosts the router (one, for netmeta's legacy routers)."""
        return set(self._router_hosts.get(router_id, ()))

    @cached_property
    def _agent_types(self) -> frozenset[str]:
        return frozenset(a.agent_type for a in self.agents.values())

    def has_agents(self, agent_type: str) -> bool:
        return agent_type in self._agent_types

    def agents_of_type(self, agent_type: str) -> list[Agent]:
        return sorted((a for a in self.agents.values() if a.agent_type == agent_type), key=lambda a: a.id)

    def tunnel_endpoints(self) -> dict[str, str]:
        """Every host's underlay address, from its Linux bridge agent's ``tunneling_ip``."""
        return {a.host: a.tunneling_ip for a in self.agents_of_type(AGENT_L2) if a.tunneling_ip}

    def hosts_with_ports(self, network_id: NetworkId) -> set[str]:
        """The hosts that hold a port of the network (what l2population sends FDB entries for)."""
        return {p.binding_host_id for p in self.ports_of(network_id) if p.binding_host_id}


# Snapshot's cached indexes that do not depend on local_host (for_host shares them).
_SHARED_INDEXES = ("_subnets_by_network", "_ports_by_network", "_ports_by_device", "_router_hosts", "_agent_types")


# --- parsing the server's JSON -------------------------------------------


def _routes(raw: Any) -> tuple[HostRoute, ...]:
    return tuple(HostRoute(r["destination"], r["nexthop"]) for r in raw or ())


def network_from_api(d: Mapping[str, Any]) -> Network:
    return Network(
        id=NetworkId(d["id"]),
        name=d.get("name") or "",
        project_id=d.get("project_id") or "",
        mtu=int(d.get("mtu") or 1500),
        admin_state_up=bool(d.get("admin_state_up", True)),
        dns_domain=d.get("dns_domain") or "",
        network_type=d.get("provider:network_type") or "local",
        segmentation_id=(int(d["provider:segmentation_id"])
                         if d.get("provider:segmentation_id") is not None else None),
        physical_network=d.get("provider:physical_network"),
    )


def subnet_from_api(d: Mapping[str, Any]) -> Subnet:
    return Subnet(
        id=SubnetId(d["id"]),
        network_id=NetworkId(d["network_id"]),
        cidr=d["cidr"],
        ip_version=int(d.get("ip_version", 4)),
        gateway_ip=d.get("gateway_ip"),
        enable_dhcp=bool(d.get("enable_dhcp", True)),
        dns_nameservers=tuple(d.get("dns_nameservers") or ()),
        host_routes=_routes(d.get("host_routes")),
        name=d.get("name") or "",
        project_id=d.get("project_id") or "",
        ipv6_address_mode=d.get("ipv6_address_mode"),
        ipv6_ra_mode=d.get("ipv6_ra_mode"),
    )


def port_from_api(d: Mapping[str, Any]) -> Port:
    return Port(
        id=PortId(d["id"]),
        network_id=NetworkId(d["network_id"]),
        mac_address=d["mac_address"],
        fixed_ips=tuple(
            FixedIP(SubnetId(f["subnet_id"]), f["ip_address"]) for f in d.get("fixed_ips") or ()
        ),
        device_id=d.get("device_id") or "",
        device_owner=d.get("device_owner") or "",
        project_id=d.get("project_id") or "",
        name=d.get("name") or "",
        admin_state_up=bool(d.get("admin_state_up", True)),
        extra_dhcp_opts=tuple(
            ExtraDhcpOpt(str(o["opt_name"]), str(o["opt_value"]), int(o.get("ip_version") or 4))
            for o in d.get("extra_dhcp_opts") or ()
        ),
        dns_name=d.get("dns_name") or "",
        dns_assignment=tuple(
            DnsAssignment(a["ip_address"], a["hostname"], a["fqdn"]) for a in d.get("dns_assignment") or ()
        ),
        port_security_enabled=bool(d.get("port_security_enabled", True)),
        allowed_address_pairs=tuple(
            AddressPair(p["ip_address"], p.get("mac_address") or d["mac_address"])
            for p in d.get("allowed_address_pairs") or ()
        ),
        security_groups=tuple(SecurityGroupId(g) for g in d.get("security_groups") or ()),
        binding_host_id=d.get("binding:host_id") or "",
    )


# Neutron's protocol names, as the API accepts them, and their numbers.
PROTOCOL_NUMBERS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58, "igmp": 2, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43,
    "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}


def protocol_number(value: object) -> int | None:
    """A rule's protocol (name, digits or None for any) as its IP protocol number."""
    if value is None or value in ("", "any"):
        return None
    text = str(value).lower()
    return PROTOCOL_NUMBERS[text] if text in PROTOCOL_NUMBERS else int(text)


def rule_from_api(d: Mapping[str, Any]) -> SecurityGroupRule:
    prefix = d.get("remote_ip_prefix")
    return SecurityGroupRule(
        id=d["id"],
        direction=d["direction"],
        ethertype=d.get("ethertype") or "IPv4",
        protocol=protocol_number(d.get("protocol")),
        port_range_min=d.get("port_range_min"),
        port_range_max=d.get("port_range_max"),
        remote_ip_prefix=str(ipaddress.ip_network(prefix, strict=False)) if prefix else None,
        remote_group_id=SecurityGroupId(d["remote_group_id"]) if d.get("remote_group_id") else None,
    )


def security_group_from_api(d: Mapping[str, Any]) -> SecurityGroup:
    return SecurityGroup(
        id=SecurityGroupId(d["id"]),
        name=d.get("name") or "",
        project_id=d.get("project_id") or "",
        rules=tuple(rule_from_api(r) for r in sorted(d.get("security_group_rules") or (), key=lambda r: r["id"])),
    )


def router_from_api(d: Mapping[str, Any]) -> Router:
    return Router(
        id=RouterId(d["id"]),
        name=d.get("name") or "",
        project_id=d.get("project_id") or "",
        admin_state_up=bool(d.get("admin_state_up", True)),
        routes=_routes(d.get("routes")),
    )


def instance_from_api(d: Mapping[str, Any]) -> Instance:
    return Instance(
        id=InstanceId(d["id"]),
        name=d.get("name") or "",
        hostname=d.get("hostname") or d.get("name") or "",
        project_id=d.get("project_id") or "",
        availability_zone=d.get("availability_zone") or "nova",
        flavor=d.get("flavor") or "m1.small",
        user_data=d.get("user_data"),
        key_name=d.get("key_name"),
        public_key=d.get("public_key"),
        meta=dict(d.get("meta") or {}),
        launch_index=int(d.get("launch_index") or 0),
        created_at=d.get("created_at") or "",
        password=d.get("password"),
        port_ids=tuple(PortId(p) for p in d.get("ports") or ()),
    )


def agent_from_api(d: Mapping[str, Any]) -> Agent:
    return Agent(
        id=AgentId(d["id"]),
        agent_type=d.get("agent_type") or "",
        host=d.get("host") or "",
        binary=d.get("binary") or "",
        topic=d.get("topic") or "",
        admin_state_up=bool(d.get("admin_state_up", True)),
        configurations=dict(d.get("configurations") or {}),
        availability_zone=d.get("availability_zone"),
    )


def binding_from_api(d: Mapping[str, Any]) -> Binding:
    return Binding(
        id=d["id"],
        agent_id=AgentId(d["agent_id"]),
        host=d.get("host") or "",
        network_id=NetworkId(d["network_id"]) if d.get("network_id") else None,
        router_id=RouterId(d["router_id"]) if d.get("router_id") else None,
    )


# The resource kinds: Neutron's, served under /v2.0, then netmeta's own. Also
# the order of the state document and of the feed (RESOURCE_KINDS).
NEUTRON_KINDS = ("networks", "subnets", "ports", "routers")
RESOURCE_KINDS = (*NEUTRON_KINDS, "instances", "security_groups", "agents", "bindings")
# The state document also lists each rule on its own (the feed reads them in their group).
STATE_KINDS = (*RESOURCE_KINDS, "security_group_rules")

PARSERS = {
    "networks": network_from_api,
    "subnets": subnet_from_api,
    "ports": port_from_api,
    "routers": router_from_api,
    "instances": instance_from_api,
    "security_groups": security_group_from_api,
    "agents": agent_from_api,
    "bindings": binding_from_api,
}


def snapshot_from_state(state: Mapping[str, Any]) -> Snapshot:
    """Build a :class:`Snapshot` from the server's ``/netmeta/v1/state`` body."""
    parsed: dict[str, dict[Any, Any]] = {}
    for kind, parse in PARSERS.items():
        objs: dict[Any, Any] = {}
        for raw in state.get(kind) or ():
            obj: Any = parse(raw)
            objs[obj.id] = obj
        parsed[kind] = objs
    return Snapshot(
        revision=int(state.get("revision", 0)),
        networks=parsed["networks"],
        subnets=parsed["subnets"],
        ports=parsed["ports"],
        routers=parsed["routers"],
        instances=parsed["instances"],
        security_groups=parsed["security_groups"],
        agents=parsed["agents"],
        bindings=parsed["bindings"],
    )
