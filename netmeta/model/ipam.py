"""IP address management, as pure functions from values to values.

The server decides every address here and only *records* the outcome in the
store, so the rules Neutron applies (the gateway is the first host unless
asked otherwise, pools never hold the gateway, the network and broadcast
addresses are never handed out, the DHCP port takes the first free pool
address) can be tested with tables and no database.

Addresses inside a subnet are handled as integer *offsets* from the network
address: they are small, sortable and fit a database integer column even for
IPv6, which is how the store finds the first free address without loading
every allocation.

Errors are :class:`IpamError` subclasses named after the Neutron exception
they become at the API boundary; the server translates them, so this module
needs nothing from it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAC_PREFIX = "fa:16:3e"  # Neutron's default base_mac, what operators expect


class IpamError(ValueError):
    """Base of every IPAM refusal; ``kind`` is the Neutron error type."""

    kind = "InvalidInput"


class InvalidCidr(IpamError):
    kind = "InvalidInput"


class InvalidGateway(IpamError):
    kind = "InvalidInput"


class InvalidAllocationPool(IpamError):
    kind = "InvalidAllocationPool"


class OutOfBoundsAllocationPool(IpamError):
    kind = "OutOfBoundsAllocationPool"


class OverlappingAllocationPools(IpamError):
    kind = "OverlappingAllocationPools"


class GatewayConflictWithAllocationPools(IpamError):
    kind = "GatewayConflictWithAllocationPools"


class InvalidIpForSubnet(IpamError):
    kind = "InvalidIpForSubnet"


class InvalidAttributeValue(IpamError):
    """An attribute outside its allowed values; the text is already Neutron's whole message."""

    kind = "InvalidInput"


class AllocationOnAutoAddressSubnet(IpamError):
    """A fixed IP other than the port's EUI-64 one on a SLAAC/stateless subnet (400)."""

    kind = "AllocationOnAutoAddressSubnet"


@dataclass(frozen=True)
class Pool:
    """An inclusive range of addresses, as Neutron's ``{"start", "end"}``."""

    start: str
    end: str

    def as_api(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end}


def parse_cidr(cidr: object, ip_version: int | None = None) -> IPNetwork:
    """Validate a subnet CIDR the way Neutron does.

    Host bits must be zero (Neutron answers "'10.0.0.5/24' isn't a recommended
    CIDR, '10.0.0.0/24' is recommended"), the version must match when given,
    and the prefix must leave at least one usable host address.
    """
    if not isinstance(cidr, str) or "/" not in cidr:
        raise InvalidCidr(f"'{cidr}' is not a valid IP subnet")
    try:
        iface = ipaddress.ip_interface(cidr.strip())
    except ValueError as exc:
        raise InvalidCidr(f"'{cidr}' is not a valid IP subnet") from exc
    net = iface.network
    if iface.ip != net.network_address:
        raise InvalidCidr(f"'{cidr}' isn't a recommended CIDR, '{net}' is recommended")
    if ip_version is not None and net.version != ip_version:
        raise InvalidCidr(f"Cidr {cidr} does not match IP version {ip_version}")
    if host_count(net) < 1:
        raise InvalidCidr(f"'{cidr}' has no usable host address")
    return net


def host_bounds(net: IPNetwork) -> tuple[int, int]:
    """Offsets of the first and last usable host.

    IPv4 skips the network and broadcast address; IPv6 skips only the
    subnet-router anycast address (offset 0), as Neutron does.
    """
    size = net.num_addresses
    if net.version == 4:
        if size <= 2:
            return (1, 0)  # empty range
        return (1, size - 2)
    return (1, size - 1)


def host_count(net: IPNetwork) -> int:
    first, last = host_bounds(net)
    return max(0, last - first + 1)


def offset_of(net: IPNetwork, ip: IPAddress) -> int:
    return int(ip) - int(net.network_address)


def address_at(net: IPNetwork, offset: int) -> str:
    return str(ipaddress.ip_address(int(net.network_address) + offset))


def parse_ip(value: object) -> IPAddress:
    if not isinstance(value, str):
        raise IpamError(f"'{value}' is not a valid IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise IpamError(f"'{value}' is not a valid IP address") from exc


def default_gateway(net: IPNetwork) -> str:
    """Neutron's default gateway: the first host address."""
    return address_at(net, host_bounds(net)[0])


def validate_gateway(net: IPNetwork, gateway: object) -> str:
    """A gateway must be a usable host address inside the subnet."""
    ip = parse_ip(gateway)
    if ip.version != net.version or ip not in net:
        raise InvalidGateway(f"Gateway ip {gateway} conflicts with the subnet {net}: outside it")
    first, last = host_bounds(net)
    if not first <= offset_of(net, ip) <= last:
        raise InvalidGateway(f"Gateway ip {gateway} is the network or broadcast address of {net}")
    return str(ip)


def default_pools(net: IPNetwork, gateway: str | None) -> list[Pool]:
    """All usable hosts, split around the gateway so it is never allocated."""
    first, last = host_bounds(net)
    if gateway is None:
        return [Pool(address_at(net, first), address_at(net, last))] if first <= last else []
    gw = offset_of(net, ipaddress.ip_address(gateway))
    pools: list[Pool] = []
    if first <= gw - 1:
        pools.append(Pool(address_at(net, first), address_at(net, min(gw - 1, last))))
    if gw + 1 <= last:
        pools.append(Pool(address_at(net, max(gw + 1, first)), address_at(net, last)))
    return pools


def pool_offsets(net: IPNetwork, pools: Iterable[Pool]) -> list[tuple[int, int]]:
    return [
        (offset_of(net, ipaddress.ip_address(p.start)), offset_of(net, ipaddress.ip_address(p.end)))
        for p in pools
    ]


def validate_pools(net: IPNetwork, raw: object, gateway: str | None) -> list[Pool]:
    """Check user-given pools: well-formed, inside the hosts, disjoint, no gateway."""
    if not isinstance(raw, list):
        raise InvalidAllocationPool("allocation_pools must be a list of {start, end}")
    pools: list[Pool] = []
    first, last = host_bounds(net)
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"start", "end"}:
            raise InvalidAllocationPool(f"The allocation pool {item} is not valid")
        try:
            start, end = parse_ip(item["start"]), parse_ip(item["end"])
        except IpamError as exc:
            raise InvalidAllocationPool(f"The allocation pool {item} is not valid") from exc
        if start.version != net.version or end.version != net.version or int(start) > int(end):
            raise InvalidAllocationPool(f"The allocation pool {item['start']}-{item['end']} is not valid")
        if start not in net or end not in net:
            raise OutOfBoundsAllocationPool(
                f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}"
            )
        if offset_of(net, start) < first or offset_of(net, end) > last:
            raise OutOfBoundsAllocationPool(
                f"The allocation pool {start}-{end} includes the network or broadcast address of {net}"
            )
        pools.append(Pool(str(start), str(end)))
    ranges = sorted(pool_offsets(net, pools))
    for (_, end_a), (start_b, _) in zip(ranges, ranges[1:]):
        if start_b <= end_a:
            raise OverlappingAllocationPools(f"Found overlapping allocation pools in subnet {net}")
    if gateway is not None and in_pools(net, pools, gateway):
        raise GatewayConflictWithAllocationPools(
            f"Gateway ip {gateway} conflicts with allocation pool"
        )
    return pools


def in_pools(net: IPNetwork, pools: Iterable[Pool], ip: str) -> bool:
    off = offset_of(net, ipaddress.ip_address(ip))
    return any(lo <= off <= hi for lo, hi in pool_offsets(net, pools))


def first_free(ranges: Sequence[tuple[int, int]], taken: Iterable[int]) -> int | None:
    """The lowest offset inside ``ranges`` that is not ``taken``, or None."""
    used = set(taken)
    for lo, hi in sorted(ranges):
        off = lo
        while off <= hi:
            if off not in used:
                return off
            off += 1
    return None


def dense_next(lo: int, hi: int, count: int, highest: int | None) -> int | None:
    """Shortcut for the common case: allocations in ``[lo, hi]`` fill it from ``lo``.

    With ``count`` allocations whose highest is ``highest``, the range is dense
    exactly when ``highest == lo + count - 1``; then the first free address is
    the next one and no scan is needed. Returns None when that is unknown (the
    caller then scans) or when the range is full.
    """
    if count == 0:
        return lo if lo <= hi else None
    if highest is not None and highest == lo + count - 1:
        return highest + 1 if highest + 1 <= hi else None
    return None


def validate_fixed_ip(net: IPNetwork, ip: str) -> str:
    """An explicitly requested address: inside the subnet and a usable host.

    Neutron allows any host address, inside the pools or not (that is how a
    port is given the gateway address before ``router add port``).
    """
    addr = parse_ip(ip)
    if addr.version != net.version or addr not in net:
        raise InvalidIpForSubnet(f"IP address {ip} is not a valid IP for the specified subnet.")
    first, last = host_bounds(net)
    if not first <= offset_of(net, addr) <= last:
        raise InvalidIpForSubnet(f"IP address {ip} is not a valid IP for the specified subnet.")
    return str(addr)


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a), ipaddress.ip_network(b)
    if isinstance(na, ipaddress.IPv4Network) and isinstance(nb, ipaddress.IPv4Network):
        return na.overlaps(nb)
    if isinstance(na, ipaddress.IPv6Network) and isinstance(nb, ipaddress.IPv6Network):
        return na.overlaps(nb)
    return False


def validate_ip_list(raw: object, what: str) -> list[str]:
    if not isinstance(raw, list):
        raise IpamError(f"Invalid data format for {what}: '{raw}' is not a list")
    out = []
    for value in raw:
        out.append(str(parse_ip(value)))
    if len(set(out)) != len(out):
        raise IpamError(f"Duplicate {what} in list '{raw}'")
    return out


def validate_host_routes(raw: object) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise IpamError(f"Invalid data format for hostroute: '{raw}' is not a list")
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"destination", "nexthop"}:
            raise IpamError(f"Invalid data format for hostroute: '{item}'")
        dest = item["destination"]
        try:
            dest_net = ipaddress.ip_network(dest) if isinstance(dest, str) else None
        except ValueError:
            dest_net = None
        if dest_net is None:
            raise IpamError(f"'{dest}' is not a valid IP subnet")
        nexthop = parse_ip(item["nexthop"])
        out.append({"destination": str(dest_net), "nexthop": str(nexthop)})
    return out


def generate_mac(randbytes: Callable[[int], bytes]) -> str:
    """A MAC under Neutron's ``fa:16:3e`` prefix from an injected random source."""
    tail = randbytes(3)
    return MAC_PREFIX + "".join(f":{b:02x}" for b in tail)


def validate_mac(value: object) -> str:
    if not isinstance(value, str):
        raise IpamError(f"'{value}' is not a valid MAC address")
    parts = value.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise IpamError(f"'{value}' is not a valid MAC address")
    if int(parts[0], 16) & 1 or value.lower() == "00:00:00:00:00:00":
        raise IpamError(f"'{value}' is not a valid unicast MAC address")
    return value.lower()


# --- IPv6: address modes and EUI-64 --------------------------------------------

IPV6_SLAAC = "slaac"
DHCPV6_STATEFUL = "dhcpv6-stateful"
DHCPV6_STATELESS = "dhcpv6-stateless"
# neutron-lib IPV6_MODES, in its order (the API's error lists no values).
IPV6_MODES: tuple[str, ...] = (DHCPV6_STATEFUL, DHCPV6_STATELESS, IPV6_SLAAC)
# Subnets whose hosts pick their own address from the prefix and their MAC.
AUTO_ADDRESS_MODES = frozenset({IPV6_SLAAC, DHCPV6_STATELESS})


def is_auto_address(ra_mode: str | None, address_mode: str | None) -> bool:
    """Neutron's ``is_auto_address_subnet``: either mode is slaac or dhcpv6-stateless."""
    return ra_mode in AUTO_ADDRESS_MODES or address_mode in AUTO_ADDRESS_MODES


def eui64_address(cidr: str, mac: str) -> str:
    """The modified EUI-64 address of ``mac`` in the /64 ``cidr`` (RFC 4291 appendix A).

    The MAC's universal/local bit is flipped and ``ff:fe`` goes in its middle;
    the result is what a SLAAC guest forms itself, and what Neutron's
    ``get_ipv6_addr_by_EUI64`` records for the port.
    """
    net = ipaddress.ip_network(cidr, strict=False)
    if net.version != 6:
        raise InvalidCidr(f"'{cidr}' is not an IPv6 prefix")
    octets = [int(part, 16) for part in validate_mac(mac).split(":")]
    octets[0] ^= 0x02
    iid = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    host = int.from_bytes(iid, "big")
    return str(ipaddress.IPv6Address(int(net.network_address) | host))


def link_local_address(mac: str) -> str:
    """``fe80::/64`` plus the MAC's modified EUI-64 interface id: a guest's own link-local address."""
    return eui64_address("fe80::/64", mac)


def is_eui64(ip: str) -> bool:
    """Neutron's ``is_eui64_address``: an IPv6 address with ``ff:fe`` in the middle of its interface id."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.version == 6 and (int(addr) & 0xFFFF000000) == 0xFFFE000000


def validate_ipv6_modes(
    ip_version: int, ra_mode: object, address_mode: object, enable_dhcp: bool, cidr: str
) -> None:
    """Neutron's checks of a new subnet's ``ipv6_ra_mode``/``ipv6_address_mode``.

    Each mode is one of :data:`IPV6_MODES` or None; neither may be set on an
    IPv4 subnet, nor with DHCP disabled; both set must be equal; an
    auto-address subnet must be a /64 (EUI-64 fills the other 64 bits).
    Raises :class:`IpamError` (400 ``InvalidInput``) with Neutron's text.
    """
    if ra_mode is None and address_mode is None and ip_version == 4:
        return
    for name, value in (("ipv6_ra_mode", ra_mode), ("ipv6_address_mode", address_mode)):
        if value is not None and value not in IPV6_MODES:
            raise InvalidAttributeValue(f"Invalid input for {name}. Reason: {value} is not in valid_values.")
    if ip_version == 4:
        if ra_mode is not None:
            raise IpamError("ipv6_ra_mode is not valid when ip_version is 4")
        if address_mode is not None:
            raise IpamError("ipv6_address_mode is not valid when ip_version is 4")
        return
    if (ra_mode is not None or address_mode is not None) and not enable_dhcp:
        raise IpamError("ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False")
    if ra_mode is not None and address_mode is not None and ra_mode != address_mode:
        raise IpamError(
            f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to '{address_mode}' is not valid. "
            "If both attributes are set, they must be the same value"
        )
    if is_auto_address(_mode(ra_mode), _mode(address_mode)) and ipaddress.ip_network(cidr).prefixlen != 64:
        raise IpamError(
            f"Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, "
            "which requires the prefix to be /64"
        )


def _mode(value: object) -> str | None:
    return value if isinstance(value, str) else None
