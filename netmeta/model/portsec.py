"""Port security and security groups as one nftables ruleset for the fabric namespace.

Which kernel filtering, and why (measured on this kernel, 6.18, nft 1.0.6):

* **Anti-spoofing is stateless, in a ``bridge`` family table.** A bridge-family
  chain sees every frame a port sends *as the port's device* (``iifname
  "g-…"``), before the bridge learns the source MAC or floods the frame, and
  sees ARP, which no IP-family hook does. One chain per port, keyed by its
  device: MAC source, ARP sender (MAC, IP), IPv4/IPv6 source (MAC, IP) pairs,
  no DHCP/DHCPv6 server replies, no router advertisements or redirects,
  nothing but IPv4, IPv6 and ARP.
* **Security groups are stateful, in an ``inet`` family table, through
  br_netfilter.** ``ct`` in a bridge-family table needs the kernel's bridge
  conntrack (``CONFIG_NF_CONNTRACK_BRIDGE``), which this kernel lacks: loading
  ``table bridge … ct state established accept`` fails with "Protocol error".
  br_netfilter *is* built in, and with ``net.bridge.bridge-nf-call-iptables``
  /``ip6tables`` (1 by default, per namespace) bridged IP packets also pass
  the inet hooks, conntrack included. There the devices are the bridge, not
  the port, so the bridge chains tell the inet chains who is talking with the
  packet mark: the sending port's number in the high 16 bits (set in bridge
  ``prerouting``) and the receiving port's in the low 16 bits (set in bridge
  ``forward`` at priority -200, before br_netfilter's IP forward hook at -1).
  A mark never leaves the fabric namespace: a veth into another namespace
  scrubs it.
* **One conntrack zone per network** (``ct zone set`` in inet prerouting,
  before conntrack): two networks may use the same addresses, and without
  zones a flow allowed on one would count as "established" on the other.

Per guest port with port security on (egress = from the guest, ingress = to it):

* egress: DHCP (UDP 68→67, 546→547), the metadata service
  (TCP 169.254.169.254:80) and IPv6 neighbour discovery always pass; then the
  port's groups' egress rules; else drop;
* ingress: DHCP replies (UDP 67→68, 547→546), neighbour discovery /
  router advertisements and netmeta's own access ports (``netmeta:*``
  owners, the host's SSH path into a VM) always pass; then the groups' ingress rules, a
  remote group meaning "from any address of a port in that group" (fixed IPs
  and allowed address pairs, as Neutron counts them); else drop;
* replies of allowed connections pass (``ct state established,related``).

DHCP ports and router interfaces (``network:*`` owners) are netmeta's own and
are never filtered; a port with port security off is not filtered at all.

Everything here is pure: snapshot in, ruleset text out. Port numbers, zone
numbers and the order of every chain and set come from sorted ids, so the
same snapshot always renders the same text (an agent restart finds nothing to
change). The driver applies the text with one ``nft -f`` (both tables
replaced in one transaction) and only when its digest changed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from netmeta.model import hosting, ipam, names
from netmeta.model.types import (
    METADATA_IPV4,
    Port,
    SecurityGroupId,
    SecurityGroupRule,
    Snapshot,
)

TABLE = "netmeta"
MAX_PORTS = 0xFFFF  # one 16-bit half of the mark each
DIGEST_PREFIX = "netmeta-sha256:"
DIGEST_CHAIN = "digest"  # an empty chain whose comment is the digest

# ICMPv6 that IPv6 needs to work at all (RFC 4890): always allowed.
ND_EGRESS = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert", "mld-listener-report",
             "mld2-listener-report")
ND_INGRESS = ("nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert", "mld-listener-query")


ACCESS_OWNER_PREFIX = "netmeta:"  # netmeta's own access ports (``netmeta vm exec`` into a VM: netmeta:ssh)


def trusted(port: Port) -> bool:
    """netmeta's own ports (DHCP, router interfaces): never filtered."""
    return port.device_owner.startswith("network:")


def filtered(port: Port) -> bool:
    return port.port_security_enabled and not trusted(port)


def device(port: Port) -> str:
    """The port's device on its bridge: what its chains are keyed by."""
    return names.guest_outer_name(port.id)


def link_local(mac: str) -> str:
    """The EUI-64 link-local address a MAC gives (RFC 4291, U/L bit flipped)."""
    return ipam.link_local_address(mac)


def zone(network_id: str) -> int:
    """A stable conntrack zone for a network (1..65535) from its id."""
    return int(hashlib.sha256(network_id.encode()).hexdigest()[:4], 16) % 0xFFFF + 1


@dataclass(frozen=True)
class Allowed:
    """What one port may send as: (MAC, address or CIDR) per family."""

    macs: tuple[str, ...]
    ipv4: tuple[tuple[str, str], ...]
    ipv6: tuple[tuple[str, str], ...]


def allowed(port: Port) -> Allowed:
    mac = port.mac_address.lower()
    pairs: list[tuple[str, str]] = [(mac, f.ip_address) for f in port.fixed_ips]
    pairs += [(p.mac_address.lower(), str(ipaddress.ip_network(p.ip_address, strict=False))
               if "/" in p.ip_address else p.ip_address) for p in port.allowed_address_pairs]
    pairs.append((mac, link_local(mac)))
    macs = sorted({mac, *(m for m, _ in pairs)})
    v4 = sorted({(m, a) for m, a in pairs if ":" not in a})
    v6 = sorted({(m, a) for m, a in pairs if ":" in a})
    return Allowed(tuple(macs), tuple(v4), tuple(v6))


def _set(items: list[str] | tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    # Always braced: nft refuses a concatenation against a single value.
    return "{ " + ", ".join(f"{m} . {a}" for m, a in pairs) + " }"


def _from_port_chain(port: Port, number: int) -> list[str]:
    """Anti-spoofing for frames the port sends (bridge family)."""
    a = allowed(port)
    lines = [
        f"meta mark set {number << 16:#010x}",
        f"ether saddr != {_set(a.macs)} counter drop comment \"not the port's MAC\"",
        # ARP: sender (MAC, IP) must be the port's; 0.0.0.0 is an address probe (RFC 5227).
        f"arp saddr ether . arp saddr ip {_pairs(a.ipv4 + tuple((m, '0.0.0.0') for m in a.macs))} accept",
        "ether type arp counter drop comment \"ARP for an address not the port's\"",
        "udp sport { 67, 547 } counter drop comment \"a guest is no DHCP server\"",
        "icmpv6 type { nd-router-advert, nd-redirect } counter drop comment \"a guest is no router\"",
        "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
    ]
    if a.ipv4:
        lines.append(f"ether type ip ether saddr . ip saddr {_pairs(a.ipv4)} accept")
    lines.append("ether type ip counter drop comment \"IPv4 from an address not the port's\"")
    lines.append("ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept")
    lines.append(f"ether type ip6 ether saddr . ip6 saddr {_pairs(a.ipv6)} accept")
    lines.append("counter drop comment \"neither the port's IPv6, IPv4 nor ARP\"")
    return lines


def _members(snapshot: Snapshot, group_id: SecurityGroupId, version: int) -> list[str]:
    """Every address of every port in the group, as Neutron's remote group counts them."""
    found: set[str] = set()
    for port in snapshot.ports.values():
        if group_id not in port.security_groups or not port.port_security_enabled:
            continue
        addresses = [f.ip_address for f in port.fixed_ips] + [p.ip_address for p in port.allowed_address_pairs]
        for address in addresses:
            net = ipaddress.ip_network(address, strict=False)
            if net.version == version:
                found.add(str(net) if net.prefixlen != net.max_prefixlen else str(net.network_address))
    return sorted(found, key=lambda a: (ipaddress.ip_network(a, strict=False), a))


Members = dict[tuple[SecurityGroupId, int], list[str]]


def member_set(group_id: SecurityGroupId, version: int) -> str:
    """The named set (inet table) holding a remote group's addresses of one family."""
    return f"rg{version}-{group_id}"


def rule_match(snapshot: Snapshot, rule: SecurityGroupRule, members: Members | None = None) -> str | None:
    """One rule as an nft match (inet family), or None when it can match nothing.

    A remote group is a named set of its members' addresses, filled once per
    render in ``members`` (the table declares it): every port of a 200-port
    group names the same set instead of carrying 200 addresses itself.
    """
    version = 6 if rule.ethertype == "IPv6" else 4
    ip = "ip6" if version == 6 else "ip"
    peer = "saddr" if rule.direction == "ingress" else "daddr"
    parts = [f"meta nfproto ipv{version}"]
    if rule.remote_ip_prefix is not None:
        parts.append(f"{ip} {peer} {rule.remote_ip_prefix}")
    elif rule.remote_group_id is not None:
        key = (rule.remote_group_id, version)
        cache = members if members is not None else {}
        if key not in cache:
            cache[key] = _members(snapshot, rule.remote_group_id, version)
        if not cache[key]:
            return None  # an empty group allows no one
        parts.append(f"{ip} {peer} @{member_set(rule.remote_group_id, version)}")
    protocol = rule.protocol
    if protocol == 1 and version == 6:
        protocol = 58  # Neutron reads "icmp" on an IPv6 rule as ICMPv6
    if protocol is not None:
        parts.append(f"meta l4proto {protocol}")
        low, high = rule.port_range_min, rule.port_range_max
        if protocol in (1, 58):
            kind = "icmp" if protocol == 1 else "icmpv6"
            if low is not None:
                parts.append(f"{kind} type {low}")
                if high is not None:
                    parts.append(f"{kind} code {high}")
        elif low is not None:
            high = low if high is None else high
            parts.append(f"th dport {low}" if low == high else f"th dport {low}-{high}")
    return " ".join(parts)


def _group_rules(snapshot: Snapshot, port: Port, direction: str, members: Members) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for group_id in port.security_groups:
        group = snapshot.security_groups.get(group_id)
        if group is None:
            continue  # a group deleted under the port: it allows nothing
        for rule in group.rules:
            if rule.direction != direction:
                continue
            match = rule_match(snapshot, rule, members)
            if match is not None and match not in seen:
                seen.add(match)
                lines.append(match)
    return lines


def _egress_chain(snapshot: Snapshot, port: Port, members: Members) -> list[str]:
    lines = [
        "udp sport 68 udp dport 67 return comment \"DHCP\"",
        "udp sport 546 udp dport 547 return comment \"DHCPv6\"",
        f"ip daddr {METADATA_IPV4} tcp dport 80 return comment \"metadata\"",
        f"icmpv6 type {_set(ND_EGRESS)} return",
    ]
    lines += [f"{match} return" for match in _group_rules(snapshot, port, "egress", members)]
    lines.append("counter drop comment \"no egress rule allows it\"")
    return lines


def _access_addresses(snapshot: Snapshot, port: Port) -> list[str]:
    """Fixed IPs of netmeta's own access ports on the port's network (SSH from the host)."""
    found = {f.ip_address for p in snapshot.ports_of(port.network_id)
             if p.device_owner.startswith(ACCESS_OWNER_PREFIX) for f in p.fixed_ips if ":" not in f.ip_address}
    return sorted(found, key=ipaddress.ip_address)


def _ingress_chain(snapshot: Snapshot, port: Port, members: Members) -> list[str]:
    lines = [
        "udp sport 67 udp dport 68 accept comment \"DHCP\"",
        "udp sport 547 udp dport 546 accept comment \"DHCPv6\"",
        f"icmpv6 type {_set(ND_INGRESS)} accept",
    ]
    access = _access_addresses(snapshot, port)
    if access:
        # The host's own way into a VM (netmeta vm exec), like DHCP and
        # metadata: never subject to the guest's groups.
        lines.append(f"ip saddr {_set(access)} accept comment \"netmeta's access port\"")
    lines += [f"{match} accept" for match in _group_rules(snapshot, port, "ingress", members)]
    lines.append("counter drop comment \"no ingress rule allows it\"")
    return lines


def filtered_ports(snapshot: Snapshot) -> list[Port]:
    """Guest ports with port security on that this host may plug, by id (their numbers follow this order)."""
    ports = sorted((p for p in snapshot.ports.values() if filtered(p) and hosting.plugs_port(snapshot, p)),
                   key=lambda p: p.id)
    return ports[:MAX_PORTS]


def _chain(name: str, lines: list[str], hook: str | None = None) -> list[str]:
    out = [f"\tchain {name} {{"]
    if hook is not None:
        out.append(f"\t\t{hook}")
    out += [f"\t\t{line}" for line in lines]
    out.append("\t}")
    return out


def _vmap(selector: str, entries: list[tuple[str, str]]) -> list[str]:
    if not entries:
        return []
    return [f"{selector} vmap {{ " + ", ".join(f"{k} : jump {v}" for k, v in entries) + " }"]


def render_tables(snapshot: Snapshot) -> str:
    """Both tables, without the replace preamble; empty when no port is filtered."""
    ports = filtered_ports(snapshot)
    if not ports:
        return ""
    numbered = [(index + 1, port, device(port)) for index, port in enumerate(ports)]
    bridge: list[str] = [f"table bridge {TABLE} {{"]
    bridge += _chain("prerouting", _vmap("iifname", [(f'"{dev}"', f"from-{dev}") for _, _, dev in numbered]),
                     "type filter hook prerouting priority -200; policy accept;")
    bridge += _chain("forward", _vmap("oifname", [(f'"{dev}"', f"to-{dev}") for _, _, dev in numbered]),
                     "type filter hook forward priority -200; policy accept;")
    for number, port, dev in numbered:
        bridge += _chain(f"from-{dev}", _from_port_chain(port, number))
        bridge += _chain(f"to-{dev}", [f"meta mark set meta mark or {number:#x}"])
    bridge.append("}")

    networks = sorted({p.network_id for p in ports})
    inet: list[str] = [f"table inet {TABLE} {{"]
    inet += _chain("zone", [f'iifname "{names.bridge_name(n)}" ct zone set {zone(n)}' for n in networks],
                   "type filter hook prerouting priority -300; policy accept;")
    forward = [
        "meta mark 0 accept",
        "ct state established,related accept",
        "ct state invalid counter drop",
    ]
    forward += _vmap("meta mark and 0xffff0000", [(f"{n << 16:#010x}", f"egress-{dev}") for n, _, dev in numbered])
    forward += _vmap("meta mark and 0x0000ffff", [(f"{n:#x}", f"ingress-{dev}") for n, _, dev in numbered])
    inet += _chain("forward", forward, "type filter hook forward priority 0; policy accept;")
    members: Members = {}
    chains: list[str] = []
    for _, port, dev in numbered:
        chains += _chain(f"egress-{dev}", _egress_chain(snapshot, port, members))
        chains += _chain(f"ingress-{dev}", _ingress_chain(snapshot, port, members))
    for (group_id, version), addresses in sorted(members.items()):
        if addresses:
            kind = "ipv6_addr" if version == 6 else "ipv4_addr"
            inet += [f"\tset {member_set(group_id, version)} {{", f"\t\ttype {kind}; flags interval;",
                     f"\t\telements = {{ {', '.join(addresses)} }}", "\t}"]
    inet += chains
    inet.append("}")
    return "\n".join(bridge + inet) + "\n"


def digest(tables: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(tables.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Ruleset:
    payload: str  # for ``nft -f -``
    digest: str | None  # None: no port is filtered, no tables wanted


def ruleset(snapshot: Snapshot) -> Ruleset:
    """The ``nft -f`` payload: replace both tables whole, in one transaction.

    ``table X`` then ``delete table X`` makes the delete safe when the table
    does not exist yet; the new tables follow in the same transaction, so a
    packet sees either the old ruleset or the new one, never neither. The
    bridge table carries the digest as its comment: the driver compares it
    instead of parsing the kernel's rendering back.
    """
    tables = render_tables(snapshot)
    out = [f"table bridge {TABLE}", f"delete table bridge {TABLE}",
           f"table inet {TABLE}", f"delete table inet {TABLE}"]
    mark = None
    if tables:
        mark = digest(tables)
        # Also in a chain of its own: listing that chain is how the driver
        # reads the digest without listing hundreds of port chains.
        tables = tables.replace(f"table bridge {TABLE} {{\n", f"table bridge {TABLE} {{\n\tcomment \"{mark}\"\n"
                                f"\tchain {DIGEST_CHAIN} {{\n\t\tcomment \"{mark}\"\n\t}}\n", 1)
        out.append(tables.rstrip("\n"))
    return Ruleset("\n".join(out) + "\n", mark)
