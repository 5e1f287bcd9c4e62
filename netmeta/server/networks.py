"""Networks and subnets; the DHCP port follows them (:mod:`netmeta.server.dhcp_port`).

Each function runs inside one store transaction (the serialized writer), so
everything a request causes — the subnet, the network's ``subnets`` list and
``revision_number``, the automatic DHCP port — commits together or not at
all, and each touched object is its own change-feed event.

The DHCP port is the server's job, as Neutron's DHCP agent would do it but
synchronously: a network with at least one DHCP-enabled IPv4 subnet has
exactly one ``network:dhcp`` port holding one address on each such subnet,
taken first from the pool (so ``.1`` on a subnet created with
``--no-gateway``, ``.2`` behind a ``.1`` gateway).
:func:`netmeta.server.dhcp_port.sync_dhcp_port` recomputes it after every
subnet create, update and delete.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from netmeta.model import ipam
from netmeta.model.types import DEVICE_OWNER_DHCP
from netmeta.server import addresses, scheduling, segments
from netmeta.server.dhcp_port import sync_dhcp_port
from netmeta.server.errors import Conflict, invalid
from netmeta.server.standard_attrs import Caller, base, create, get_or_404, new_id, save
from netmeta.server.validation import as_bool, as_int, as_str, as_str_list, common_attrs, project_of
from netmeta.store.database import Txn


# --- networks ------------------------------------------------------------------


def network_attrs(obj: dict[str, Any], body: dict[str, Any]) -> None:
    common_attrs(obj, body)
    if "shared" in body:
        obj["shared"] = as_bool(body["shared"], "shared")
    if "router:external" in body:
        obj["router:external"] = as_bool(body["router:external"], "router:external")
    if "port_security_enabled" in body:
        obj["port_security_enabled"] = as_bool(body["port_security_enabled"], "port_security_enabled")
    if "mtu" in body:
        obj["mtu"] = as_int(body["mtu"], "mtu", 68, 65535)
    if "availability_zone_hints" in body:
        obj["availability_zone_hints"] = as_str_list(body["availability_zone_hints"], "availability_zone_hints")
    if "dns_domain" in body:
        obj["dns_domain"] = as_str(body["dns_domain"], "dns_domain")
    for passive in ("qos_policy_id", "is_default"):
        if passive in body:
            obj[passive] = body[passive]


def create_network(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    project = project_of(body, caller.project_id, caller.project_id)
    obj = base(new_id(), project, txn.now)
    obj.update(
        {
            "admin_state_up": True,
            "status": "ACTIVE",
            "subnets": [],
            "shared": False,
            "mtu": 1500,
            "router:external": False,
            "port_security_enabled": True,
            "availability_zone_hints": [],
            "availability_zones": ["nova"],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "l2_adjacency": True,
            "is_default": False,
            "qos_policy_id": None,
            "dns_domain": "",
            "provider:network_type": "local",
            "provider:physical_network": None,
            "provider:segmentation_id": None,
        }
    )
    network_attrs(obj, body)
    segments.assign(txn, obj, body)
    return create(txn, "networks", obj)


def update_network(txn: Txn, net_id: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = get_or_404(txn, "networks", net_id)
    segments.check_update(obj, body)
    network_attrs(obj, body)
    return save(txn, "networks", obj)


def delete_network(txn: Txn, net_id: str) -> None:
    """Refuse while real ports remain; DHCP ports and subnets go with it."""
    net = get_or_404(txn, "networks", net_id)
    ports = txn.select("ports", network_id=net_id)
    busy = [p["id"] for p in ports if p["device_owner"] != DEVICE_OWNER_DHCP]
    if busy:
        raise Conflict(
            f"Unable to complete operation on network {net_id}. There are one or more ports still in use "
            f"on the network.",
            "NetworkInUse",
        )
    for port in ports:
        txn.remove("ports", port)
    for subnet in txn.select("subnets", network_id=net_id):
        txn.release_subnet(subnet["id"])
        txn.remove("subnets", subnet)
    segments.release(txn, net_id)
    scheduling.remove_network_bindings(txn, net_id)
    txn.remove("networks", net)


# --- subnets -------------------------------------------------------------------


def subnet_attrs(obj: dict[str, Any], body: dict[str, Any], net: ipam.IPNetwork) -> None:
    """Everything but CIDR, gateway and pools, which depend on each other."""
    common_attrs(obj, body)
    try:
        if "enable_dhcp" in body:
            obj["enable_dhcp"] = as_bool(body["enable_dhcp"], "enable_dhcp")
        if "dns_nameservers" in body:
            obj["dns_nameservers"] = ipam.validate_ip_list(body["dns_nameservers"] or [], "nameserver")
        if "host_routes" in body:
            obj["host_routes"] = ipam.validate_host_routes(body["host_routes"] or [])
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc
    if "service_types" in body:
        obj["service_types"] = as_str_list(body["service_types"], "service_types")
    for passive in ("dns_publish_fixed_ip", "segment_id"):
        if passive in body:
            obj[passive] = body[passive]


def _gateway(net: ipam.IPNetwork, body: dict[str, Any], current: str | None, creating: bool) -> str | None:
    if "gateway_ip" not in body:
        return ipam.default_gateway(net) if creating else current
    if body["gateway_ip"] is None:
        return None
    try:
        return ipam.validate_gateway(net, body["gateway_ip"])
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc


def create_subnet(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    if "network_id" not in body:
        raise invalid("network_id is required to create a subnet")
    network = get_or_404(txn, "networks", as_str(body["network_id"], "network_id") or "")
    if body.get("subnetpool_id") is not None or body.get("use_default_subnetpool"):
        raise invalid("subnet pools are not supported; give a cidr")
    if "cidr" not in body:
        raise invalid("cidr is required to create a subnet")
    version = as_int(body.get("ip_version", 4), "ip_version", 4, 6)
    if version not in (4, 6):
        raise invalid(f"{version} is not in [4, 6]")
    try:
        net = ipam.parse_cidr(body["cidr"], version)
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc
    siblings = txn.select("subnets", network_id=network["id"])
    for other in siblings:
        if ipam.overlaps(other["cidr"], str(net)):
            raise invalid(
                f"Requested subnet with cidr: {net} for network: {network['id']} overlaps with another subnet"
            )
    gateway = _gateway(net, body, None, creating=True)
    try:
        if body.get("allocation_pools") is not None:
            pools = ipam.validate_pools(net, body["allocation_pools"], gateway)
        else:
            pools = ipam.default_pools(net, gateway)
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc
    project = project_of(body, caller.project_id, caller.project_id)
    obj = base(new_id(), project, txn.now)
    obj.update(
        {
            "network_id": network["id"],
            "ip_version": version,
            "cidr": str(net),
            "gateway_ip": gateway,
            "allocation_pools": [p.as_api() for p in pools],
            "enable_dhcp": True,
            "dns_nameservers": [],
            "host_routes": [],
            "subnetpool_id": None,
            "ipv6_ra_mode": body.get("ipv6_ra_mode"),
            "ipv6_address_mode": body.get("ipv6_address_mode"),
            "service_types": [],
            "segment_id": None,
            "dns_publish_fixed_ip": False,
        }
    )
    subnet_attrs(obj, body, net)
    try:
        ipam.validate_ipv6_modes(version, obj["ipv6_ra_mode"], obj["ipv6_address_mode"], obj["enable_dhcp"], str(net))
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc
    create(txn, "subnets", obj)
    network["subnets"] = network["subnets"] + [obj["id"]]
    save(txn, "networks", network)
    sync_dhcp_port(txn, network, random.randbytes)
    if addresses.is_auto(obj):
        _add_auto_addresses(txn, obj)
    return obj


def _add_auto_addresses(txn: Txn, subnet: dict[str, Any]) -> None:
    """A new SLAAC/stateless subnet: every port already there gets its EUI-64 address on it (Neutron's
    ``add_auto_addrs_on_network_ports``; router interfaces excepted)."""
    for port in txn.select("ports", network_id=subnet["network_id"]):
        if any(f["subnet_id"] == subnet["id"] for f in port["fixed_ips"]):
            continue  # the DHCP port, just synced
        fixed = addresses.add_auto_addresses(txn, port, [subnet], port["fixed_ips"])
        if fixed != port["fixed_ips"]:
            port["fixed_ips"] = fixed
            save(txn, "ports", port)


def update_subnet(txn: Txn, subnet_id: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = get_or_404(txn, "subnets", subnet_id)
    net = ipaddress.ip_network(obj["cidr"])
    if "enable_dhcp" in body and not as_bool(body["enable_dhcp"], "enable_dhcp") and (
            obj["ipv6_ra_mode"] is not None or obj["ipv6_address_mode"] is not None):
        raise invalid("Cannot disable enable_dhcp with ipv6 attributes set")
    gateway = _gateway(net, body, obj["gateway_ip"], creating=False)
    try:
        if "allocation_pools" in body:
            pools = ipam.validate_pools(net, body["allocation_pools"] or [], gateway)
        else:
            pools = [ipam.Pool(p["start"], p["end"]) for p in obj["allocation_pools"]]
            if gateway is not None and gateway != obj["gateway_ip"] and ipam.in_pools(net, pools, gateway):
                raise ipam.GatewayConflictWithAllocationPools(
                    f"Gateway ip {gateway} conflicts with allocation pool"
                )
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc
    subnet_attrs(obj, body, net)
    obj["gateway_ip"] = gateway
    obj["allocation_pools"] = [p.as_api() for p in pools]
    save(txn, "subnets", obj)
    sync_dhcp_port(txn, get_or_404(txn, "networks", obj["network_id"]), random.randbytes)
    return obj


def delete_subnet(txn: Txn, subnet_id: str) -> None:
    obj = get_or_404(txn, "subnets", subnet_id)
    for port in txn.select("ports", network_id=obj["network_id"]):
        if port["device_owner"] == DEVICE_OWNER_DHCP:
            continue
        if any(f["subnet_id"] == subnet_id for f in port["fixed_ips"]):
            raise Conflict(
                f"Unable to complete operation on subnet {subnet_id}: One or more ports have an IP "
                f"allocation from this subnet.",
                "SubnetInUse",
            )
    network = get_or_404(txn, "networks", obj["network_id"])
    txn.remove("subnets", obj)
    network["subnets"] = [s for s in network["subnets"] if s != subnet_id]
    save(txn, "networks", network)
    sync_dhcp_port(txn, network, random.randbytes)
    txn.release_subnet(subnet_id)


__all__ = [
    "create_network",
    "update_network",
    "delete_network",
    "create_subnet",
    "update_subnet",
    "delete_subnet",
]
