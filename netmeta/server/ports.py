"""Ports: create, update, delete, with Neutron's address and ownership rules.

A port's shape is defined once in :func:`new_port`; the DHCP port, router
interface ports and instance ports are all made from it, so every consumer
sees the same fields whatever created the port.

Ownership rules enforced here (Neutron's):

* a port owned by a router interface cannot be deleted through the port API
  (409 ``ServicePortInUse``); remove the router interface instead;
* a MAC address is unique on its network (409 ``MacAddressInUse``);
* deleting an instance's port also drops it from the instance's ``ports``.

Deleting the DHCP port directly is allowed, as in Neutron, but the network
still wants one: the API's delete is :func:`netmeta.server.dhcp_port.delete_port`,
which makes a fresh one in the same transaction.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from netmeta.model import ipam
from netmeta.model.types import COMPUTE_OWNER_PREFIX, ROUTER_INTERFACE_OWNERS
from netmeta.server import addresses, port_dns, portsec
from netmeta.server.errors import Conflict, invalid
from netmeta.server.standard_attrs import Caller, base, create, get_or_404, new_id, save
from netmeta.server.validation import as_bool, as_str, common_attrs, project_of
from netmeta.store.database import Txn

# Where MAC addresses' randomness comes from (random.randbytes; tests pass their own).
RandBytes = Callable[[int], bytes]


def new_port(port_id: str, network: dict[str, Any], now: str, randbytes: RandBytes,
             project_id: str | None = None) -> dict[str, Any]:
    obj = base(port_id, project_id if project_id is not None else network["project_id"], now)
    obj.update(
        {
            "network_id": network["id"],
            "admin_state_up": True,
            "status": "ACTIVE",
            "mac_address": ipam.generate_mac(randbytes),
            "fixed_ips": [],
            "device_id": "",
            "device_owner": "",
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "security_groups": [],
            # Neutron: a port takes its network's setting unless it says otherwise.
            "port_security_enabled": bool(network.get("port_security_enabled", True)),
            "binding:host_id": "",
            "binding:vnic_type": "normal",
            "binding:vif_type": "unbound",
            "binding:vif_details": {},
            "binding:profile": {},
            "dns_name": "",
            "dns_assignment": [],
            "qos_policy_id": None,
            "propagate_uplink_status": False,
        }
    )
    return obj


def _mac_taken(txn: Txn, network_id: str, mac: str, port_id: str) -> bool:
    return any(found != port_id for found in txn.find_ids("ports", network_id=network_id, mac_address=mac))


def _port_attrs(txn: Txn, obj: dict[str, Any], body: dict[str, Any]) -> None:
    common_attrs(obj, body)
    if "dns_name" in body:
        obj["dns_name"] = port_dns.validate_dns_name(body["dns_name"], txn.dns_domain)
    if "extra_dhcp_opts" in body:
        given = port_dns.parse_extra_dhcp_opts(body["extra_dhcp_opts"])
        creating = txn.get("ports", obj["id"]) is None
        obj["extra_dhcp_opts"] = (
            port_dns.created_opts(given) if creating else port_dns.merged_opts(obj["extra_dhcp_opts"], given)
        )
    for key in ("device_id", "device_owner", "binding:host_id", "binding:vnic_type"):
        if key in body:
            obj[key] = as_str(body[key], key) if body[key] is not None else ""
    if "port_security_enabled" in body:
        obj["port_security_enabled"] = as_bool(body["port_security_enabled"], "port_security_enabled")
    if "mac_address" in body:
        try:
            mac = ipam.validate_mac(body["mac_address"])
        except ipam.IpamError as exc:
            raise invalid(str(exc)) from exc
        if _mac_taken(txn, obj["network_id"], mac, obj["id"]):
            raise Conflict(
                f"Unable to complete operation for network {obj['network_id']}. The mac address {mac} is in use.",
                "MacAddressInUse",
            )
        obj["mac_address"] = mac
    for passive in ("binding:profile",
                    "qos_policy_id", "data_plane_status", "numa_affinity_policy", "propagate_uplink_status"):
        if passive in body:
            obj[passive] = body[passive]


def create_port(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    if "network_id" not in body:
        raise invalid("network_id is required to create a port")
    network = get_or_404(txn, "networks", as_str(body["network_id"], "network_id") or "")
    project = project_of(body, caller.project_id, caller.project_id)
    obj = new_port(new_id(), network, txn.now, random.randbytes, project)
    while _mac_taken(txn, network["id"], obj["mac_address"], obj["id"]):
        obj["mac_address"] = ipam.generate_mac(random.randbytes)
    _port_attrs(txn, obj, body)
    subnets = txn.select("subnets", network_id=network["id"])
    if "fixed_ips" in body:
        requests = addresses.parse_requests(body["fixed_ips"], subnets, txn, network["id"],
                                            obj["mac_address"], obj["device_owner"])
        obj["fixed_ips"] = addresses.assign(txn, obj["id"], requests)
    else:
        obj["fixed_ips"] = addresses.assign_default(txn, obj["id"], subnets)
    obj["fixed_ips"] = addresses.add_auto_addresses(txn, obj, subnets, obj["fixed_ips"])
    portsec.apply(txn, obj, body, creating=True)
    return create(txn, "ports", obj)


def update_port(txn: Txn, port_id: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = get_or_404(txn, "ports", port_id)
    old_mac = obj["mac_address"]
    _port_attrs(txn, obj, body)
    subnets = txn.select("subnets", network_id=obj["network_id"])
    if obj["mac_address"] != old_mac:
        addresses.move_eui64(txn, obj, old_mac, subnets)
    if "fixed_ips" in body:
        requests = addresses.parse_requests(body["fixed_ips"], subnets, txn, obj["network_id"],
                                            obj["mac_address"], obj["device_owner"])
        if addresses.takes_eui64(obj["device_owner"]):
            # EUI-64 addresses are not the caller's to change: they stay (a
            # request for one was checked to be exactly it) and missing ones
            # are added, as Neutron's update_port does.
            auto = [f for f in obj["fixed_ips"] if addresses.is_auto(_subnet(subnets, f["subnet_id"]))]
            obj["fixed_ips"] = [f for f in obj["fixed_ips"] if f not in auto]
            requests = [(s, ip) for s, ip in requests if not addresses.is_auto(s)]
            obj["fixed_ips"] = addresses.reassign(txn, obj, requests) + auto
            obj["fixed_ips"] = addresses.add_auto_addresses(txn, obj, subnets, obj["fixed_ips"])
        else:
            obj["fixed_ips"] = addresses.reassign(txn, obj, requests)
    portsec.apply(txn, obj, body, creating=False)
    return save(txn, "ports", obj)


def _subnet(subnets: list[dict[str, Any]], subnet_id: str) -> dict[str, Any]:
    return next((s for s in subnets if s["id"] == subnet_id), {"ip_version": 4})


def delete_port(txn: Txn, port_id: str) -> None:
    obj = get_or_404(txn, "ports", port_id)
    if obj["device_owner"] in ROUTER_INTERFACE_OWNERS:
        raise Conflict(
            f"Port {port_id} cannot be deleted directly via the port API: has device owner "
            f"{obj['device_owner']}.",
            "ServicePortInUse",
        )
    remove_port(txn, obj)


def remove_port(txn: Txn, obj: dict[str, Any]) -> None:
    """Delete a port and keep its instance's ``ports`` list true."""
    txn.remove("ports", obj)
    if obj["device_owner"].startswith(COMPUTE_OWNER_PREFIX) and obj["device_id"]:
        instance = txn.get("instances", obj["device_id"])
        if instance is not None and obj["id"] in instance["ports"]:
            instance["ports"] = [p for p in instance["ports"] if p != obj["id"]]
            instance["_created_ports"] = [p for p in instance.get("_created_ports", []) if p != obj["id"]]
            save(txn, "instances", instance)
