"""Turning a port's ``fixed_ips`` request into recorded allocations.

The rules (all Neutron's):

* no ``fixed_ips`` given: one address from the first IPv4 subnet of the
  network that has a free pool address (and likewise one IPv6), and
  ``IpAddressGenerationFailure`` (409) when there were subnets but none had
  room;
* ``{"subnet_id"}``: the first free pool address of that subnet;
* ``{"ip_address"}`` (with or without ``subnet_id``): that address, which may
  lie outside the pools (it must be a host address of the subnet) —
  ``IpAddressInUse`` (409) if another port holds it.

IPv6 subnets in ``slaac`` or ``dhcpv6-stateless`` mode (*auto-address*
subnets) are different: every port that is not a router interface gets the
EUI-64 address of its MAC on *every* such subnet of its network, asked for or
not; a requested address there must be exactly that one
(``AllocationOnAutoAddressSubnet``, 400), and a MAC change moves it. A router
interface takes what it is given (the gateway). Creating an auto-address
subnet gives the existing ports their EUI-64 address on it.

The arithmetic is :mod:`netmeta.model.ipam`; this module only asks the store
what is taken and records the choice.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netmeta.model import ipam
from netmeta.model.types import ROUTER_INTERFACE_OWNERS
from netmeta.server.errors import BadRequest, Conflict, NeutronError, invalid, not_found
from netmeta.store.database import AddressTaken, Txn

OFFSET_CEILING = 2**62 - 1  # what the offset column can hold; see store.schema


def ipam_error(exc: ipam.IpamError) -> NeutronError:
    if isinstance(exc, (ipam.GatewayConflictWithAllocationPools, ipam.OverlappingAllocationPools)):
        return Conflict(str(exc), exc.kind)
    if isinstance(exc, ipam.InvalidAttributeValue):
        return BadRequest(str(exc), exc.kind)
    if exc.kind == "InvalidInput":
        return invalid(str(exc))
    return BadRequest(str(exc), exc.kind)


def network_of(subnet: dict[str, Any]) -> ipam.IPNetwork:
    return ipaddress.ip_network(subnet["cidr"])


def exhausted(subnet_id: str) -> Conflict:
    return Conflict(
        f"No more IP addresses available for subnet {subnet_id}.", "IpAddressGenerationFailure"
    )


def allocate_next(txn: Txn, subnet: dict[str, Any], port_id: str) -> str | None:
    """Claim the lowest free pool address of ``subnet``; None when full."""
    net = network_of(subnet)
    pools = [ipam.Pool(p["start"], p["end"]) for p in subnet["allocation_pools"]]
    for lo, hi in sorted(ipam.pool_offsets(net, pools)):
        hi = min(hi, OFFSET_CEILING)
        if lo > hi:
            continue
        count, highest = txn.range_usage(subnet["id"], lo, hi)
        offset = ipam.dense_next(lo, hi, count, highest)
        if offset is None and count < hi - lo + 1:
            offset = ipam.first_free([(lo, hi)], txn.taken_offsets(subnet["id"], lo, hi))
        if offset is not None:
            ip = ipam.address_at(net, offset)
            txn.claim(subnet["id"], subnet["network_id"], port_id, ip, offset, known_free=True)
            return ip
    return None


def claim_exact(txn: Txn, subnet: dict[str, Any], port_id: str, ip: str) -> str:
    net = network_of(subnet)
    try:
        ip = ipam.validate_fixed_ip(net, ip)
    except ipam.IpamError as exc:
        raise ipam_error(exc) from exc
    try:
        txn.claim(subnet["id"], subnet["network_id"], port_id, ip, ipam.offset_of(net, ipaddress.ip_address(ip)))
    except AddressTaken as exc:
        raise Conflict(
            f"IP address {ip} already allocated in subnet {subnet['id']}", "IpAddressInUse"
        ) from exc
    return ip


def is_auto(subnet: dict[str, Any]) -> bool:
    return subnet["ip_version"] == 6 and ipam.is_auto_address(subnet.get("ipv6_ra_mode"),
                                                                subnet.get("ipv6_address_mode"))


def takes_eui64(device_owner: str) -> bool:
    """Every port but a router interface gets its EUI-64 address on auto-address subnets."""
    return device_owner not in ROUTER_INTERFACE_OWNERS


def add_auto_addresses(txn: Txn, port: dict[str, Any], subnets: list[dict[str, Any]],
                       fixed: list[dict[str, str]]) -> list[dict[str, str]]:
    """``fixed`` plus the port's EUI-64 address on each auto-address subnet it has none on."""
    if not takes_eui64(port.get("device_owner") or ""):
        return fixed
    have = {f["subnet_id"] for f in fixed}
    out = list(fixed)
    for subnet in subnets:
        if is_auto(subnet) and subnet["id"] not in have:
            ip = ipam.eui64_address(subnet["cidr"], port["mac_address"])
            out.append({"subnet_id": subnet["id"], "ip_address": claim_exact(txn, subnet, port["id"], ip)})
    return out


def move_eui64(txn: Txn, port: dict[str, Any], old_mac: str, subnets: list[dict[str, Any]]) -> None:
    """After a MAC change: every EUI-64 address of the old MAC becomes the new MAC's (Neutron's update_port)."""
    by_id = {s["id"]: s for s in subnets}
    out: list[dict[str, str]] = []
    for fixed in port["fixed_ips"]:
        subnet = by_id.get(fixed["subnet_id"])
        if subnet is not None and is_auto(subnet) and fixed["ip_address"] == ipam.eui64_address(subnet["cidr"], old_mac):
            txn.release(port["id"], subnet["id"], fixed["ip_address"])
            ip = ipam.eui64_address(subnet["cidr"], port["mac_address"])
            fixed = {"subnet_id": subnet["id"], "ip_address": claim_exact(txn, subnet, port["id"], ip)}
        out.append(fixed)
    port["fixed_ips"] = out


def _subnet_for_ip(subnets: list[dict[str, Any]], ip: str, network_id: str) -> dict[str, Any]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise invalid(f"'{ip}' is not a valid IP address") from exc
    for subnet in subnets:
        if addr in network_of(subnet):
            return subnet
    raise BadRequest(
        f"IP address {ip} is not a valid IP for any of the subnets on network {network_id}.",
        "InvalidIpForNetwork",
    )


def parse_requests(raw: object, subnets: list[dict[str, Any]], txn: Txn, network_id: str,
                   mac: str = "", device_owner: str = "") -> list[tuple[dict[str, Any], str | None]]:
    """Validate a ``fixed_ips`` list into (subnet, wanted address or None) pairs.

    On an auto-address subnet a port (not a router interface) may ask only
    for its own EUI-64 address, and a bare ``subnet_id`` there is dropped:
    :func:`add_auto_addresses` gives it that address anyway.
    """
    if not isinstance(raw, list):
        raise invalid(f"Invalid data format for fixed IP: '{raw}'")
    by_id = {s["id"]: s for s in subnets}
    out: list[tuple[dict[str, Any], str | None]] = []
    for item in raw:
        if not isinstance(item, dict) or not item or set(item) - {"subnet_id", "ip_address"}:
            raise invalid(f"Invalid data format for fixed IP: '{item}'")
        subnet_id, ip = item.get("subnet_id"), item.get("ip_address")
        if subnet_id is not None and not isinstance(subnet_id, str):
            raise invalid(f"'{subnet_id}' is not a valid subnet id")
        if ip is not None and not isinstance(ip, str):
            raise invalid(f"'{ip}' is not a valid IP address")
        if subnet_id is not None:
            if subnet_id not in by_id:
                if txn.get("subnets", subnet_id) is None:
                    raise not_found("subnets", subnet_id)
                raise invalid(
                    f"Failed to create port on network {network_id}, because fixed_ips included "
                    f"invalid subnet {subnet_id}"
                )
            subnet = by_id[subnet_id]
        elif ip is not None:
            subnet = _subnet_for_ip(subnets, ip, network_id)
        else:
            raise invalid(f"Invalid data format for fixed IP: '{item}'")
        if ip is not None:
            try:
                ip = ipam.validate_fixed_ip(network_of(subnet), ip)
            except ipam.IpamError as exc:
                raise ipam_error(exc) from exc
        if is_auto(subnet) and takes_eui64(device_owner):
            if ip is None:
                continue
            if mac and ip != ipam.eui64_address(subnet["cidr"], mac):
                raise BadRequest(
                    f"IPv6 address {ip} cannot be directly assigned to a port on subnet {subnet['id']} as the "
                    "subnet is configured for automatic addresses",
                    "AllocationOnAutoAddressSubnet",
                )
        out.append((subnet, ip))
    wanted = [(s["id"], ip) for s, ip in out if ip is not None]
    if len(set(wanted)) != len(wanted):
        raise invalid("Duplicate IP address in fixed_ips")
    return out


def assign(txn: Txn, port_id: str, requests: list[tuple[dict[str, Any], str | None]]) -> list[dict[str, str]]:
    """Claim explicit addresses first so automatic ones never take them."""
    result: list[dict[str, str] | None] = [None] * len(requests)
    for index, (subnet, ip) in enumerate(requests):
        if ip is not None:
            result[index] = {"subnet_id": subnet["id"], "ip_address": claim_exact(txn, subnet, port_id, ip)}
    for index, (subnet, ip) in enumerate(requests):
        if ip is None:
            got = allocate_next(txn, subnet, port_id)
            if got is None:
                raise exhausted(subnet["id"])
            result[index] = {"subnet_id": subnet["id"], "ip_address": got}
    return [r for r in result if r is not None]


def assign_default(txn: Txn, port_id: str, subnets: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One IPv4 and one stateful IPv6 address, each from the first subnet with room.

    (Auto-address subnets are :func:`add_auto_addresses`' business.)
    """
    fixed: list[dict[str, str]] = []
    for version in (4, 6):
        candidates = [s for s in subnets if s["ip_version"] == version and not is_auto(s)]
        if not candidates:
            continue
        for subnet in candidates:
            got = allocate_next(txn, subnet, port_id)
            if got is not None:
                fixed.append({"subnet_id": subnet["id"], "ip_address": got})
                break
        else:
            raise exhausted(candidates[0]["id"])
    return fixed


def reassign(
    txn: Txn, port: dict[str, Any], requests: list[tuple[dict[str, Any], str | None]]
) -> list[dict[str, str]]:
    """Replace a port's addresses, keeping those asked for again."""
    current = {(f["subnet_id"], f["ip_address"]) for f in port["fixed_ips"]}
    keep = {(s["id"], ip) for s, ip in requests if ip is not None and (s["id"], ip) in current}
    for subnet_id, ip in current - keep:
        txn.release(port["id"], subnet_id, ip)
    fresh = [(s, ip) for s, ip in requests if not (ip is not None and (s["id"], ip) in keep)]
    added = iter(assign(txn, port["id"], fresh))
    out: list[dict[str, str]] = []
    for subnet, ip in requests:
        if ip is not None and (subnet["id"], ip) in keep:
            out.append({"subnet_id": subnet["id"], "ip_address": ip})
        else:
            out.append(next(added))
    return out
