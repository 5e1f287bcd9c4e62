"""Routers and their interfaces.

A router interface is nothing but a port with ``device_owner =
network:router_interface`` and ``device_id = <router id>``; that port holding
a subnet's gateway address is what makes the subnet *routed* instead of
isolated for the agent and the metadata process. So adding and removing
interfaces is port bookkeeping, done in one transaction with the router's own
``revision_number`` bump, as Neutron does.

Neutron's choices kept here: the interface-by-subnet port takes the subnet's
``gateway_ip`` (400 when the subnet has none); a router may not have two
interfaces on one subnet or on overlapping subnets (400 ``BadRequest``, see
:mod:`netmeta.server.errors`); an interface-by-port port must have a fixed
IP and no owner (409 ``PortInUse`` otherwise); a router with interfaces
cannot be deleted (409 ``RouterInUse``); removing an interface deletes its
port.
"""

from __future__ import annotations

import random
from typing import Any

from netmeta.model import ipam
from netmeta.model.types import DEVICE_OWNER_ROUTER_INTF, ROUTER_INTERFACE_OWNERS
from netmeta.server import addresses
from netmeta.server.errors import BadRequest, Conflict, NotFound, invalid
from netmeta.server.ports import new_port, remove_port
from netmeta.server.standard_attrs import Caller, base, create, get_or_404, new_id, save
from netmeta.server.validation import as_bool, as_str_list, common_attrs, project_of
from netmeta.store.database import Txn


def _router_attrs(obj: dict[str, Any], body: dict[str, Any]) -> None:
    common_attrs(obj, body)
    if "external_gateway_info" in body and body["external_gateway_info"] not in (None, {}):
        raise invalid("external gateways are not supported by netmeta")
    if "routes" in body:
        try:
            obj["routes"] = ipam.validate_host_routes(body["routes"] or [])
        except ipam.IpamError as exc:
            raise addresses.ipam_error(exc) from exc
    for flag in ("distributed", "ha", "enable_ndp_proxy"):
        if flag in body:
            obj[flag] = as_bool(body[flag], flag)
    if "availability_zone_hints" in body:
        obj["availability_zone_hints"] = as_str_list(body["availability_zone_hints"], "availability_zone_hints")
    if "flavor_id" in body:
        obj["flavor_id"] = body["flavor_id"]


def create_router(txn: Txn, body: dict[str, Any], caller: Caller) -> dict[str, Any]:
    obj = base(new_id(), project_of(body, caller.project_id, caller.project_id), txn.now)
    obj.update(
        {
            "admin_state_up": True,
            "status": "ACTIVE",
            "external_gateway_info": None,
            "routes": [],
            "distributed": False,
            "ha": False,
            "flavor_id": None,
            "availability_zone_hints": [],
            "availability_zones": ["nova"],
            "enable_ndp_proxy": False,
        }
    )
    _router_attrs(obj, body)
    return create(txn, "routers", obj)


def update_router(txn: Txn, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = get_or_404(txn, "routers", router_id)
    _router_attrs(obj, body)
    return save(txn, "routers", obj)


def interface_ports(txn: Txn, router_id: str) -> list[dict[str, Any]]:
    return [p for p in txn.select("ports", device_id=router_id) if p["device_owner"] in ROUTER_INTERFACE_OWNERS]


def delete_router(txn: Txn, router_id: str) -> None:
    obj = get_or_404(txn, "routers", router_id)
    if interface_ports(txn, router_id):
        raise Conflict(f"Router {router_id} still has ports", "RouterInUse")
    txn.remove("routers", obj)


def _interface_body(raw: object) -> tuple[str | None, str | None]:
    if not isinstance(raw, dict):
        raise BadRequest("Body must be an object with subnet_id or port_id", "HTTPBadRequest")
    unknown = set(raw) - {"subnet_id", "port_id"}
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(sorted(unknown))}'", "HTTPBadRequest")
    subnet_id, port_id = raw.get("subnet_id"), raw.get("port_id")
    for value in (subnet_id, port_id):
        if value is not None and not isinstance(value, str):
            raise invalid(f"'{value}' is not a valid id")
    return subnet_id, port_id


def _check_duplicate_subnets(txn: Txn, router_id: str, new_subnets: list[dict[str, Any]]) -> None:
    held: list[dict[str, Any]] = []
    for port in interface_ports(txn, router_id):
        for fixed in port["fixed_ips"]:
            subnet = txn.get("subnets", fixed["subnet_id"])
            if subnet is not None:
                held.append(subnet)
    for new in new_subnets:
        for old in held:
            if old["id"] == new["id"]:
                raise BadRequest(f"Router already has a port on subnet {new['id']}.", "BadRequest")
            if ipam.overlaps(old["cidr"], new["cidr"]):
                raise BadRequest(
                    f"Cidr {new['cidr']} of subnet {new['id']} overlaps with cidr {old['cidr']} of subnet "
                    f"{old['id']}.",
                    "BadRequest",
                )


def _info(router: dict[str, Any], port: dict[str, Any]) -> dict[str, Any]:
    subnet_ids = [f["subnet_id"] for f in port["fixed_ips"]]
    return {
        "id": router["id"],
        "tenant_id": router["project_id"],
        "project_id": router["project_id"],
        "port_id": port["id"],
        "network_id": port["network_id"],
        "subnet_id": subnet_ids[0] if subnet_ids else None,
        "subnet_ids": subnet_ids,
    }


def add_interface(txn: Txn, router_id: str, raw: object) -> dict[str, Any]:
    router = get_or_404(txn, "routers", router_id)
    subnet_id, port_id = _interface_body(raw)
    if subnet_id and port_id:
        raise BadRequest("Cannot specify both subnet-id and port-id", "BadRequest")
    if port_id:
        port = get_or_404(txn, "ports", port_id)
        if port["device_owner"] or port["device_id"]:
            raise Conflict(
                f"Unable to complete operation on port {port_id} for network {port['network_id']}. "
                f"Port already has an attached device {port['device_id']}.",
                "PortInUse",
            )
        if not port["fixed_ips"]:
            raise BadRequest("Router port must have at least one fixed IP", "BadRequest")
        subnets = [get_or_404(txn, "subnets", f["subnet_id"]) for f in port["fixed_ips"]]
        _check_duplicate_subnets(txn, router_id, subnets)
        port["device_owner"] = DEVICE_OWNER_ROUTER_INTF
        port["device_id"] = router_id
        save(txn, "ports", port)
    elif subnet_id:
        subnet = get_or_404(txn, "subnets", subnet_id)
        if not subnet["gateway_ip"]:
            raise BadRequest(f"Bad router request: Subnet {subnet_id} does not have a gateway IP.", "BadRequest")
        _check_duplicate_subnets(txn, router_id, [subnet])
        network = get_or_404(txn, "networks", subnet["network_id"])
        port = new_port(new_id(), network, txn.now, random.randbytes, router["project_id"])
        port["fixed_ips"] = [
            {"subnet_id": subnet_id, "ip_address": addresses.claim_exact(txn, subnet, port["id"], subnet["gateway_ip"])}
        ]
        port["device_owner"] = DEVICE_OWNER_ROUTER_INTF
        port["device_id"] = router_id
        create(txn, "ports", port)
    else:
        raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.", "BadRequest")
    save(txn, "routers", router)
    return _info(router, port)


def remove_interface(txn: Txn, router_id: str, raw: object) -> dict[str, Any]:
    router = get_or_404(txn, "routers", router_id)
    subnet_id, port_id = _interface_body(raw)
    ports = interface_ports(txn, router_id)
    if port_id:
        port = next((p for p in ports if p["id"] == port_id), None)
        if port is None:
            raise NotFound(
                f"Router {router_id} does not have an interface with id {port_id}", "RouterInterfaceNotFound"
            )
        if subnet_id and all(f["subnet_id"] != subnet_id for f in port["fixed_ips"]):
            raise Conflict(f"Subnet {subnet_id} is not on port {port_id}", "SubnetMismatchForPort")
    elif subnet_id:
        get_or_404(txn, "subnets", subnet_id)
        port = next((p for p in ports if any(f["subnet_id"] == subnet_id for f in p["fixed_ips"])), None)
        if port is None:
            raise NotFound(
                f"Router {router_id} has no interface on subnet {subnet_id}",
                "RouterInterfaceNotFoundForSubnet",
            )
    else:
        raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.", "BadRequest")
    info = _info(router, port)
    if subnet_id and not port_id and len(port["fixed_ips"]) > 1:
        # Only this subnet leaves the router; the port keeps its other addresses.
        port["fixed_ips"] = [f for f in port["fixed_ips"] if f["subnet_id"] != subnet_id]
        txn.release(port["id"], subnet_id)
        save(txn, "ports", port)
        info["subnet_id"], info["subnet_ids"] = subnet_id, [subnet_id]
    else:
        remove_port(txn, port)
    save(txn, "routers", router)
    return info
