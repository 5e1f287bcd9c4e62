"""What a network's DHCP namespace should hold: pure functions, no I/O.

For every network that serves DHCP the agent needs one ``qdhcp-<net>``
namespace with a tap carrying the DHCP port's addresses (and
``169.254.169.254/32`` when metadata is served there), a dnsmasq command line
and three dnsmasq files (``opts``, ``host``, ``addn_hosts``). This module
computes all of it from a :class:`~netmeta.model.types.Snapshot` and the
settings, so that an agent restart and a live change produce byte-for-byte
the same result — the property Neutron lacked in the seed report, where the
metadata route vanished from the opts file only after a restart.

The rules follow Neutron's DHCP agent (``neutron/agent/linux/dhcp.py``, the
``Dnsmasq`` driver) and its unit tests; where netmeta deliberately differs
the function says so and why.

IPv6 subnets follow their ``ipv6_address_mode``, as in Neutron: ``slaac``
gets no range, no hosts line and no options (the guest never asks);
``dhcpv6-stateful`` gets a static range, ``<mac>,tag:dhcpv6,<fqdn>,[<ip>]``
hosts lines and ``option6:`` options; ``dhcpv6-stateless`` a static range
and options, but no address (the guest forms it from the router
advertisement). A subnet with neither mode is served like a stateful one.
With IPv6 and either metadata option, ``fe80::a9fe:a9fe/128`` goes on the
tap beside ``169.254.169.254/32``.

Ordering: subnets are taken sorted by id (``Snapshot.subnets_of``), which is
also the order Neutron's server hands them to its agent
(``get_network_info`` sorts by id so tags don't move); ports sorted by id.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from netmeta.model import hosting, ipam, names
from netmeta.model.ip import network_of
from netmeta.model.settings import DataPlaneSettings
from netmeta.model.paths import StatePaths
from netmeta.model.types import (
    DEVICE_OWNER_DHCP,
    FixedIP,
    METADATA_CIDR,
    METADATA_V6_CIDR,
    ROUTER_INTERFACE_OWNERS,
    NetworkId,
    Port,
    PortId,
    Snapshot,
    Subnet,
    SubnetId,
)


IPV4_ANY = "0.0.0.0/0"
# dnsmasq's name for option 249, the Microsoft copy of 121 (classless routes).
WIN2K3_STATIC_ROUTE = "249"
# Neutron's dnsmasq_lease_max default: caps the sum of subnet sizes.
DNSMASQ_LEASE_MAX = 2**24
# Owners Neutron leaves out of the hosts files (neutron-lib
# DHCP_CONFIG_NOT_REQUIRED_OWNERS): they never ask for a lease. Router
# interfaces stay in, so their names resolve (traceroutes stay fast).
DHCP_CONFIG_NOT_REQUIRED_OWNERS = frozenset(
    {
        "network:router_ha_interface",
        "network:floatingip",
        DEVICE_OWNER_DHCP,
        "network:distributed",
    }
)
FILE_KINDS = ("opts", "host", "addn_hosts")
# extra_dhcp_opts names that mean option 61, which dnsmasq takes in the hosts line.
CLIENT_ID_NAMES = frozenset({"client-id", "61"})


# --- which subnets, which port ---------------------------------------------


def _dhcp_subnets(snapshot: Snapshot, network_id: NetworkId) -> list[Subnet]:
    """DHCP-enabled IPv4 subnets of a network, sorted by id."""
    return [s for s in snapshot.subnets_of(network_id) if s.enable_dhcp and s.ip_version == 4]


def _served_subnets(snapshot: Snapshot, network_id: NetworkId) -> list[Subnet]:
    """DHCP-enabled subnets of both versions, sorted by id: what dnsmasq and the tap are for."""
    return [s for s in snapshot.subnets_of(network_id) if s.enable_dhcp]


def dhcpv6_served(subnet: Subnet) -> bool:
    """Whether dnsmasq has a DHCPv6 range for an IPv6 subnet (``_build_cmdline_callback``).

    Stateful and stateless yes, and a subnet with neither mode (Neutron keeps
    its older "static" behaviour); ``slaac`` no, and never a prefix shorter
    than /64 (Neutron skips those).
    """
    mode = subnet.ipv6_address_mode
    served = mode in (ipam.DHCPV6_STATEFUL, ipam.DHCPV6_STATELESS) or (mode is None and subnet.ipv6_ra_mode is None)
    return served and network_of(subnet.cidr).prefixlen >= 64


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def is_isolated(snapshot: Snapshot, subnet: Subnet) -> bool:
    """Neutron's isolation test (``Dnsmasq.get_isolated_subnets``).

    Every subnet starts isolated; it stops being isolated only when a port
    owned by a router (any of ``ROUTER_INTERFACE_OWNERS``) holds the subnet's
    gateway IP on that subnet. A subnet without a gateway is therefore always
    isolated, and a router attached on some other address does not count:
    guests send off-link traffic to the gateway, so only a router *there*
    can answer for 169.254.169.254.
    """
    if not subnet.gateway_ip:
        return True
    for port in snapshot.ports_of(subnet.network_id):
        if port.device_owner not in ROUTER_INTERFACE_OWNERS:
            continue
        for fixed in port.fixed_ips:
            if fixed.subnet_id == subnet.id and _same_ip(fixed.ip_address, subnet.gateway_ip):
                return False
    return True


def has_qdhcp(snapshot: Snapshot, network_id: NetworkId) -> bool:
    """Whether the agent makes ``qdhcp-<net>``: admin up, a DHCP port, a DHCP-enabled subnet (either version).

    Neutron's agent skips admin-down networks; without a DHCP port or subnet
    there is nothing for dnsmasq to serve.
    """
    network = snapshot.networks.get(network_id)
    return bool(
        network is not None
        and network.admin_state_up
        and dhcp_port(snapshot, network_id) is not None
        and _served_subnets(snapshot, network_id)
    )


def dhcp_port(snapshot: Snapshot, network_id: NetworkId) -> Port | None:
    """The DHCP port this host serves the network from (:func:`netmeta.model.hosting.local_dhcp_port`).

    On one host (or without agents) the network's only ``network:dhcp`` port
    (lowest id if, oddly, several); seen from a host, the one bound to it.
    """
    return hosting.local_dhcp_port(snapshot, network_id)


# --- metadata decisions -----------------------------------------------------


def dhcp_listener_wanted(snapshot: Snapshot, network_id: NetworkId, config: DataPlaneSettings) -> bool:
    """Whether a metadata listener belongs in ``qdhcp-<net>`` (the behaviour table in docs/architecture.md).

    True whenever ``force_metadata`` or ``enable_isolated_metadata`` is on and
    the network has a DHCP-enabled subnet — isolated or not. This
    differs from Neutron (``Dnsmasq.should_enable_metadata``, which wants an
    isolated subnet unless ``force_metadata``) in one row: a router on the
    gateway with ``enable_isolated_metadata``. Neutron stops its proxy
    there, yet guests that took their lease while the subnet was isolated
    still hold the route ``169.254.169.254/32`` via the DHCP port until they
    renew, and their metadata requests would go unanswered. A listener costs
    netmeta one socket, not a process, so it stays; the tap keeps its
    ``169.254.169.254/32`` anyway (:func:`metadata_address_on_tap`).
    """
    if not (config.force_metadata or config.enable_isolated_metadata):
        return False
    return bool(_served_subnets(snapshot, network_id))


def metadata_address_on_tap(config: DataPlaneSettings) -> bool:
    """``169.254.169.254/32`` sits on the DHCP tap whenever either option is on.

    Neutron adds it whatever the isolation state, so the address never flaps
    while routers come and go; netmeta does the same.
    """
    return config.force_metadata or config.enable_isolated_metadata


# --- the namespace's default route -------------------------------------------


@dataclass(frozen=True)
class DefaultRoute:
    """The qdhcp namespace's IPv4 default route; ``onlink`` when the gateway lies outside its subnet."""

    gateway: str
    onlink: bool = False


def default_route(snapshot: Snapshot, network_id: NetworkId) -> DefaultRoute | None:
    """Neutron's ``DeviceManager._set_default_route`` for IPv4.

    Via the gateway of the first (by id) DHCP-enabled IPv4 subnet that has
    one; a gateway outside that subnet first gets an on-link route. No such
    subnet: no default route. dnsmasq answers on-link clients either way;
    the route is what lets DNS forwarding and replies to routed clients
    (a relay, another subnet behind the router) leave the namespace.
    """
    for subnet in _dhcp_subnets(snapshot, network_id):
        if subnet.gateway_ip is None:
            continue
        try:
            inside = ipaddress.ip_address(subnet.gateway_ip) in network_of(subnet.cidr)
        except ValueError:
            inside = False
        return DefaultRoute(subnet.gateway_ip, onlink=not inside)
    return None


# --- the opts file ----------------------------------------------------------


def _tag(subnet_id: str) -> str:
    return f"tag:subnet-{subnet_id}"


def _dns_any(servers: tuple[str, ...]) -> bool:
    """A single ``0.0.0.0`` means "announce no DNS server" (Neutron's special case)."""
    if len(servers) != 1:
        return False
    try:
        return ipaddress.ip_address(servers[0]) == ipaddress.IPv4Address(0)
    except ValueError:
        return False


def _subnet_opts(
    snapshot: Snapshot,
    subnet: Subnet,
    all_subnets: list[Subnet],
    dhcp_ip: str | None,
    config: DataPlaneSettings,
) -> list[str]:
    """The lines of one DHCP-enabled IPv4 subnet, in Neutron's order.

    dns-server, then classless-static-route and 249 (when there is any
    route), then router — ``_generate_opts_per_subnet`` order today (the
    seed, from an older Neutron, shows dns-server last).
    """
    tag = _tag(subnet.id)
    lines: list[str] = []
    if subnet.dns_nameservers:
        if _dns_any(subnet.dns_nameservers):
            lines.append(f"{tag},option:dns-server")
        else:
            lines.append(f"{tag},option:dns-server,{','.join(subnet.dns_nameservers)}")

    # A default host route stands in for a missing gateway and is otherwise
    # dropped: the default route is appended last, below, via the gateway.
    gateway = subnet.gateway_ip
    routes: list[str] = []
    for route in subnet.host_routes:
        if route.destination == IPV4_ANY:
            if not gateway:
                gateway = route.nexthop
        else:
            routes.append(f"{route.destination},{route.nexthop}")

    # The metadata route. Via the DHCP port when forced or when isolated with
    # enable_isolated_metadata (and only if the port has an address here —
    # Neutron does not fall back to the gateway then). Otherwise via a router
    # on the gateway, whatever the options: without it a guest whose
    # classless routes exist would miss metadata (RFC 3442 clients ignore
    # option 3), Neutron bug #1460793.
    isolated = is_isolated(snapshot, subnet)
    metadata_via: str | None = None
    if config.force_metadata or (isolated and config.enable_isolated_metadata):
        metadata_via = dhcp_ip
    elif not isolated and gateway:
        metadata_via = gateway
    if metadata_via:
        routes.append(f"{METADATA_CIDR},{metadata_via}")

    # Other IPv4 subnets of the network are on-link. Neutron prepends each
    # one in turn, so they come first and in reverse id order. DHCP-disabled
    # subnets count too: they are on the same wire, and it is what Neutron
    # computes after a full resync (its incremental path sees only DHCP
    # subnets — one of the restart-dependent differences netmeta avoids).
    for other in all_subnets:
        if other.ip_version == 4 and other.cidr != subnet.cidr:
            routes.insert(0, f"{other.cidr},0.0.0.0")

    if routes:
        # Clients that accept option 121 ignore option 3, so the default
        # route must be in the list too.
        if gateway:
            routes.append(f"{IPV4_ANY},{gateway}")
        joined = ",".join(routes)
        lines.append(f"{tag},option:classless-static-route,{joined}")
        lines.append(f"{tag},{WIN2K3_STATIC_ROUTE},{joined}")

    # A bare option:router tells dnsmasq to send no router at all, instead
    # of its default of offering itself as the gateway.
    lines.append(f"{tag},option:router,{gateway}" if gateway else f"{tag},option:router")
    return lines


def _literal(ip: str) -> str:
    """dnsmasq's spelling of an IPv6 address in an option: in brackets (``_convert_to_literal_addrs``)."""
    return f"[{ip}]" if ":" in ip else ip


def _subnet_opts_v6(subnet: Subnet, config: DataPlaneSettings) -> list[str]:
    """The lines of one DHCP-enabled IPv6 subnet that is not ``slaac``: DNS servers, domain search.

    IPv6 carries no routes in DHCPv6 (the router advertisement does), so no
    route or router lines — Neutron's IPv6 branch of ``_generate_opts_per_subnet``.
    """
    tag = _tag(subnet.id)
    lines: list[str] = []
    if subnet.dns_nameservers:
        if len(subnet.dns_nameservers) == 1 and _same_ip(subnet.dns_nameservers[0], "::"):
            lines.append(f"{tag},option6:dns-server")
        else:
            lines.append(f"{tag},option6:dns-server,{','.join(_literal(ip) for ip in subnet.dns_nameservers)}")
    if config.dns_domain:
        lines.append(f"{tag},option6:domain-search,{config.dns_domain}")
    return lines


def format_option(ip_version: int, tag: str, option: str, *values: str) -> str:
    """One option line, Neutron's ``Dnsmasq._format_option``.

    Only the first line of the name and of each value is used (a newline can
    never start a second directive). A name may carry its own
    ``tag:<x>,`` prefix, kept after the port's tag. IPv4 options given by name
    become ``option:<name>`` and by number stay bare; IPv6 ones are always
    ``option6:<name or number>``.
    """
    option = option.split("\n", 1)[0]
    extra_tag = ""
    if option.startswith("tag:") and "," in option:
        extra_tag, option = option.rsplit(",", 1)
    if ip_version == 6:
        option = f"option6:{option}"
    elif not option.isdigit():
        option = f"option:{option}"
    parts = [f"tag:{tag}"] + ([extra_tag] if extra_tag else []) + [option]
    return ",".join(parts + [v.split("\n", 1)[0] for v in values])


def _port_opts(port: Port) -> list[str]:
    """A port's ``extra_dhcp_opts`` as ``tag:port-<id>,…`` lines (``_generate_opts_per_port``).

    ``client-id`` is left out (it belongs in the hosts line), and so is an
    option whose ``ip_version`` the port has no address of.
    """
    if not port.extra_dhcp_opts:
        return []
    versions = {6 if ":" in fixed.ip_address else 4 for fixed in port.fixed_ips}
    return [
        format_option(opt.ip_version, _port_tag(port.id), opt.opt_name, opt.opt_value)
        for opt in port.extra_dhcp_opts
        if opt.opt_name not in CLIENT_ID_NAMES and opt.ip_version in versions
    ]


def opts_lines(snapshot: Snapshot, network_id: NetworkId, config: DataPlaneSettings) -> list[str]:
    """The dnsmasq ``--dhcp-optsfile`` of a network, one option per line.

    Per DHCP-enabled IPv4 subnet (sorted by id) the lines of
    :func:`_subnet_opts`; then each port's extra options (:func:`_port_opts`,
    ports by id); then, as in Neutron's ``_generate_opts_per_port``,
    for a subnet without ``dns_nameservers`` served by *several* DHCP ports,
    one ``option:dns-server`` line listing them. With netmeta's single DHCP
    port per network nothing is emitted then, and dnsmasq offers its own
    address as the DNS server, exactly like Neutron with one agent.
    """
    all_subnets = snapshot.subnets_of(network_id)
    port = dhcp_port(snapshot, network_id)
    lines: list[str] = []
    without_nameservers: list[SubnetId] = []
    for subnet in _served_subnets(snapshot, network_id):
        if subnet.ip_version == 6:
            if subnet.ipv6_address_mode == ipam.IPV6_SLAAC:
                continue  # the guest never asks a DHCP server anything
            lines.extend(_subnet_opts_v6(subnet, config))
        else:
            # The metadata route goes via the DHCP port's address on the subnet;
            # with several, the last one: Neutron reads the tap's addresses in
            # order and keeps the last per subnet (_make_subnet_interface_ip_map).
            dhcp_ip = port.last_ip_on(subnet.id) if port is not None else None
            lines.extend(_subnet_opts(snapshot, subnet, all_subnets, dhcp_ip, config))
        if not subnet.dns_nameservers:
            without_nameservers.append(subnet.id)

    dhcp_ips: dict[SubnetId, list[str]] = {}
    for other in snapshot.ports_of(network_id):
        lines.extend(_port_opts(other))
        if other.device_owner != DEVICE_OWNER_DHCP:
            continue
        for fixed in other.fixed_ips:
            if fixed.subnet_id in without_nameservers:
                dhcp_ips.setdefault(fixed.subnet_id, []).append(fixed.ip_address)
    for subnet_id, ips in dhcp_ips.items():
        for version, option in ((4, "option"), (6, "option6")):
            same = [ip for ip in ips if (":" in ip) == (version == 6)]
            if len(same) > 1:
                lines.append(f"{_tag(subnet_id)},{option}:dns-server,{','.join(_literal(ip) for ip in same)}")
    return lines


# --- the hosts files --------------------------------------------------------


def _needs_dhcp_entry(port: Port) -> bool:
    """Neutron's ``port_requires_dhcp_configuration``."""
    return not port.device_owner or port.device_owner not in DHCP_CONFIG_NOT_REQUIRED_OWNERS


def host_name(ip_address: str) -> str:
    """``host-192-168-0-2``: Neutron's generated name for an address."""
    return "host-" + ip_address.replace(".", "-").replace(":", "-")


def _fqdn(hostname: str, domain: str) -> str:
    return f"{hostname}.{domain}" if domain else hostname


def _names(port: Port, ip_address: str, domain: str) -> tuple[str, str]:
    """(hostname, fqdn) of one address: the server's ``dns_assignment`` when it
    names this address, else the agent's own ``host-<ip>[.domain]`` (Neutron's
    ``Dnsmasq._get_dns_assignment``). The server's FQDNs end with a dot, as
    Neutron's ``dns`` extension writes them."""
    for assigned in port.dns_assignment:
        if assigned.ip_address == ip_address:
            return assigned.hostname, assigned.fqdn
    hostname = host_name(ip_address)
    return hostname, _fqdn(hostname, domain)


def _port_tag(port_id: str) -> str:
    return f"port-{port_id}"


def _client_id(port: Port) -> str | None:
    """The value of a ``client-id`` (option 61) extra option, which goes in the hosts line."""
    for opt in port.extra_dhcp_opts:
        if opt.opt_name in CLIENT_ID_NAMES:
            return opt.opt_value
    return None


@dataclass(frozen=True)
class DhcpLease:
    """One line of dnsmasq's leases file."""

    expiry: int
    mac: str
    ip: str
    hostname: str
    client_id: str = ""  # "*": none


def parse_dnsmasq_leases(text: str) -> list[DhcpLease]:
    """dnsmasq's leases file: ``expiry mac ip hostname client-id`` per line (IPv6 lines skipped)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit() or ":" in fields[2]:
            continue
        found.append(DhcpLease(int(fields[0]), fields[1].lower(), fields[2], fields[3],
                               fields[4] if len(fields) > 4 else ""))
    return found


def stale_leases(leases: str, hosts: str) -> list[DhcpLease]:
    """The IPv4 leases dnsmasq holds that no hosts line gives any more: a deleted port, a changed address.

    Neutron's DHCP agent releases them (``dhcp_release``) when it reloads
    dnsmasq, so that the address can be handed to the next port at once
    instead of when the lease expires. ``hosts`` is the hosts file
    (:func:`hosts_lines`): a lease is kept while a line pairs its MAC and
    its address.
    """
    wanted: set[tuple[str, str]] = set()
    for line in hosts.splitlines():
        mac, *rest = line.split(",")
        for value in rest:
            try:
                if ipaddress.ip_address(value).version == 4:
                    wanted.add((mac.lower(), value))
            except ValueError:
                continue
    return [lease for lease in parse_dnsmasq_leases(leases) if (lease.mac, lease.ip) not in wanted]


def hosts_lines(snapshot: Snapshot, network_id: NetworkId, domain: str) -> list[str]:
    """The dnsmasq ``--dhcp-hostsfile``: ``<mac>,<fqdn>,<ip>`` per lease.

    IPv6 (Neutron's ``_iter_hosts``): a port's stateless addresses come
    first; a ``dhcpv6-stateful`` (or mode-less) address is
    ``<mac>,tag:dhcpv6,<fqdn>,[<ip>]`` (the tag keeps the line out of DHCPv4);
    a stateless one has no address to hand out, so only a port with extra
    options gets ``<mac>,tag:dhcpv6,set:port-<id>``; ``slaac`` nothing.

    One line per IPv4 fixed IP on a DHCP-enabled subnet, for every port that
    asks for DHCP (ports sorted by id, fixed IPs in the port's order), named
    by :func:`_names`. A port with extra DHCP options ends its lines with
    ``set:port-<id>``, so that its ``tag:port-<id>`` option lines reach it; a
    ``client-id`` option becomes ``id:<value>`` after the MAC instead (and,
    when it is the only option, no tag is set) — Neutron's
    ``_output_hosts_file``.
    """
    served = {s.id: s for s in _served_subnets(snapshot, network_id)}
    v6 = {s.id: s for s in snapshot.subnets_of(network_id) if s.ip_version == 6}
    lines: list[str] = []
    for port in snapshot.ports_of(network_id):
        if not _needs_dhcp_entry(port):
            continue
        client_id = _client_id(port)
        for fixed in _stateless_first(port, v6):
            tag = ""
            if fixed.subnet_id in v6:
                mode = v6[fixed.subnet_id].ipv6_address_mode
                tag = "tag:dhcpv6,"
                if mode in (ipam.IPV6_SLAAC, ipam.DHCPV6_STATELESS):
                    if mode == ipam.DHCPV6_STATELESS and port.extra_dhcp_opts:
                        lines.append(f"{port.mac_address},{tag}set:{_port_tag(port.id)}")
                    continue
            if fixed.subnet_id not in served:
                continue
            _, fqdn = _names(port, fixed.ip_address, domain)
            head = f"{port.mac_address},{tag}id:{client_id}" if client_id else f"{port.mac_address},{tag}".rstrip(",")
            line = f"{head},{fqdn},{_literal(fixed.ip_address)}"
            if port.extra_dhcp_opts and not (client_id and len(port.extra_dhcp_opts) == 1):
                line += f",set:{_port_tag(port.id)}"
            lines.append(line)
    return lines


def _stateless_first(port: Port, v6: Mapping[SubnetId, Subnet]) -> list[FixedIP]:
    """A port's fixed IPs, DHCPv6-stateless ones first (Neutron's ``_sort_fixed_ips_for_dnsmasq``:
    dnsmasq applies the first hosts line of a MAC, which must be the one that tags the port's options)."""
    return sorted(port.fixed_ips, key=lambda f: not (
        f.subnet_id in v6 and v6[f.subnet_id].ipv6_address_mode == ipam.DHCPV6_STATELESS))


def addn_hosts_lines(snapshot: Snapshot, network_id: NetworkId, domain: str) -> list[str]:
    """The dnsmasq ``--addn-hosts`` file: ``<ip>\\t<fqdn> <hostname>``.

    Unlike the hosts file this lists *every* fixed IP of those ports (also on
    DHCP-disabled subnets), as Neutron does: it is only for name resolution.
    The FQDN comes first so that PTR answers carry it.
    """
    v6 = {s.id: s for s in snapshot.subnets_of(network_id) if s.ip_version == 6}
    lines: list[str] = []
    for port in snapshot.ports_of(network_id):
        if not _needs_dhcp_entry(port):
            continue
        for fixed in _stateless_first(port, v6):
            hostname, fqdn = _names(port, fixed.ip_address, domain)
            lines.append(f"{fixed.ip_address}\t{fqdn} {hostname}")
    return lines


def render_file(lines: list[str]) -> str:
    """File text from lines: each line ends with a newline (empty → "").

    Neutron writes the opts file without a final newline; dnsmasq reads both
    the same, and a trailing newline keeps the files diffable.
    """
    return "".join(line + "\n" for line in lines)


# --- dnsmasq ----------------------------------------------------------------


@dataclass(frozen=True)
class DhcpRange:
    """One ``--dhcp-range``: a subnet served with static leases only."""

    subnet_id: SubnetId
    network_address: str  # "192.168.111.0" / "2001:db8::"
    netmask: str  # "255.255.255.0"; for IPv6 the prefix length, "64"


@dataclass(frozen=True)
class DnsmasqSpec:
    """Everything dnsmasq's command line depends on; equal specs, same argv.

    The agent restarts dnsmasq only when this changes; everything else
    (options, hosts) reaches it through the files and a SIGHUP.
    """

    network_id: NetworkId
    interface: str  # the tap, e.g. "tap25fabc7f-c2"
    files_dir: str  # holds pid, host, addn_hosts, opts, leases
    ranges: tuple[DhcpRange, ...]
    lease_duration: int  # seconds; -1 = infinite
    lease_max: int
    domain: str  # "" = no --domain
    mtu: int  # 0 = not advertised

    def path(self, kind: str) -> str:
        return f"{self.files_dir.rstrip('/')}/{kind}"


def dnsmasq_spec(
    snapshot: Snapshot, network_id: NetworkId, config: DataPlaneSettings, files_dir: str
) -> DnsmasqSpec | None:
    """The dnsmasq of a network, or None without DHCP subnets or DHCP port.

    ``lease_max`` is Neutron's: the summed sizes of the served subnets
    (network and broadcast addresses included — 256 for a /24, as in the
    seed), capped at 2**24.
    """
    network = snapshot.networks.get(network_id)
    port = dhcp_port(snapshot, network_id)
    subnets = _served_subnets(snapshot, network_id)
    if network is None or port is None or not subnets:
        return None
    ranges: list[DhcpRange] = []
    possible = 0
    for subnet in _served_subnets(snapshot, network_id):
        net = network_of(subnet.cidr)
        if net.version == 6:
            if not dhcpv6_served(subnet):
                continue
            ranges.append(DhcpRange(subnet.id, str(net.network_address), str(net.prefixlen)))
        else:
            ranges.append(DhcpRange(subnet.id, str(net.network_address), str(net.netmask)))
        possible += net.num_addresses
    return DnsmasqSpec(
        network_id=network_id,
        interface=names.tap_name(port.id),
        files_dir=files_dir,
        ranges=tuple(ranges),
        lease_duration=config.dhcp_lease_duration,
        lease_max=min(possible, DNSMASQ_LEASE_MAX),
        domain=config.dns_domain,
        mtu=max(network.mtu, 0),
    )


def dnsmasq_argv(spec: DnsmasqSpec) -> list[str]:
    """dnsmasq's argv, in the order of Neutron's ``_build_cmdline_callback``.

    Differences from today's Neutron, each deliberate:

    * ``--interface=<tap> --except-interface=lo`` instead of
      ``--local-service``: the namespace holds exactly one tap, so naming it
      is both tighter and simpler (dnsmasq ignores ``--local-service``
      whenever ``--interface`` is given, and ``--interface`` alone would add
      ``lo``). ``--bind-dynamic`` stays, as in Neutron since 2019: it binds
      per address without the "LOUD WARNING", and picks up addresses added
      later without a restart.
    * no ``--strict-order`` (the seed shows it; Neutron dropped it in 2018,
      bug #1746000) and ``--conf-file=/dev/null`` (Neutron's default), so no
      host configuration leaks in.
    * no ``--dhcp-userclass=set:ipxe6,iPXE``: netmeta serves no DHCPv6.
    """
    lease = "infinite" if spec.lease_duration == -1 else f"{spec.lease_duration}s"
    argv = [
        "dnsmasq",
        "--no-hosts",
        "--no-resolv",
        f"--pid-file={spec.path('pid')}",
        f"--dhcp-hostsfile={spec.path('host')}",
        f"--addn-hosts={spec.path('addn_hosts')}",
        f"--dhcp-optsfile={spec.path('opts')}",
        f"--dhcp-leasefile={spec.path('leases')}",
        "--dhcp-match=set:ipxe,175",
        "--bind-dynamic",
        f"--interface={spec.interface}",
        "--except-interface=lo",
    ]
    for r in spec.ranges:
        argv.append(
            f"--dhcp-range=set:subnet-{r.subnet_id},{r.network_address},static,{r.netmask},{lease}"
        )
    if spec.mtu > 0:
        argv.append(f"--dhcp-option-force=option:mtu,{spec.mtu}")
    argv.append(f"--dhcp-lease-max={spec.lease_max}")
    argv.append("--conf-file=/dev/null")
    if spec.domain:
        argv.append(f"--domain={spec.domain}")
    return argv


# --- the whole qdhcp namespace ----------------------------------------------


@dataclass(frozen=True)
class DhcpNetworkSpec:
    """The desired content of one ``qdhcp-<net>`` namespace."""

    network_id: NetworkId
    namespace: str  # qdhcp-<network_id>
    bridge: str  # brq<network_id[:11]>, where the tap's peer plugs in
    port_id: PortId  # the network:dhcp port
    tap: str  # tap<port_id[:11]>
    mac: str  # the DHCP port's MAC, set on the tap
    mtu: int
    # CIDR strings on the tap, the DHCP port's addresses (both versions) in
    # its fixed_ips order, then "169.254.169.254/32" when metadata_address,
    # and "fe80::a9fe:a9fe/128" too when the network has an IPv6 subnet.
    addresses: tuple[str, ...]
    metadata_address: bool
    dnsmasq: DnsmasqSpec
    # "opts", "host", "addn_hosts" → file text (each line newline-terminated).
    files: Mapping[str, str] = field(default_factory=dict)
    listener_wanted: bool = False
    route: DefaultRoute | None = None

    @property
    def argv(self) -> list[str]:
        return dnsmasq_argv(self.dnsmasq)


def desired_dhcp(
    snapshot: Snapshot, config: DataPlaneSettings, paths: StatePaths
) -> dict[NetworkId, DhcpNetworkSpec]:
    """Every qdhcp namespace that should exist, keyed by network id.

    A network gets one when it is administratively up (Neutron's agent skips
    admin-down networks), has a DHCP-enabled IPv4 subnet and has a
    ``network:dhcp`` port. Everything else — no namespace, so the agent
    removes any it finds.
    """
    out: dict[NetworkId, DhcpNetworkSpec] = {}
    for network_id in sorted(snapshot.networks):
        network = snapshot.networks[network_id]
        if not has_qdhcp(snapshot, network_id):
            continue
        files_dir = paths.dhcp_dir(network_id)
        spec = dnsmasq_spec(snapshot, network_id, config, files_dir)
        port = dhcp_port(snapshot, network_id)
        if spec is None or port is None:
            continue
        served = _served_subnets(snapshot, network_id)
        prefixes = {s.id: network_of(s.cidr).prefixlen for s in served}
        addresses = [
            f"{fixed.ip_address}/{prefixes[fixed.subnet_id]}"
            for fixed in port.fixed_ips
            if fixed.subnet_id in prefixes
        ]
        on_tap = metadata_address_on_tap(config)
        if on_tap:
            addresses.append(METADATA_CIDR)
            # Neutron's need_ipv6_metadata: any IPv6 subnet on the network.
            if any(s.ip_version == 6 for s in snapshot.subnets_of(network_id)):
                addresses.append(METADATA_V6_CIDR)
        files = {
            "opts": render_file(opts_lines(snapshot, network_id, config)),
            "host": render_file(hosts_lines(snapshot, network_id, config.dns_domain)),
            "addn_hosts": render_file(addn_hosts_lines(snapshot, network_id, config.dns_domain)),
        }
        out[network_id] = DhcpNetworkSpec(
            network_id=network_id,
            namespace=names.dhcp_namespace(network_id),
            bridge=names.bridge_name(network_id),
            port_id=port.id,
            tap=names.tap_name(port.id),
            mac=port.mac_address,
            mtu=network.mtu,
            addresses=tuple(addresses),
            metadata_address=on_tap,
            dnsmasq=spec,
            files=files,
            listener_wanted=dhcp_listener_wanted(snapshot, network_id, config),
            route=default_route(snapshot, network_id),
        )
    return out
