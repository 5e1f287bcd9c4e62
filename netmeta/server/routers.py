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
port. A network's IPv6 subnets share one router port: a second IPv6 subnet
of a network the router already has an IPv6 address on is added to that
port's fixed IPs (the reply names that port and the new subnet), and
removing one of them leaves the port with the others.

Extra routes (Neutron's ``extraroute`` and ``extraroute-atomic``
extensions): ``routes`` on update replaces the list, ``add_extraroutes``
merges into it and ``remove_extraroutes`` takes out exact matches. Every
nexthop must lie in a subnet of one of the router's interfaces and must not be
one of the router's own addresses (400 ``InvalidRoutes``), at most
``MAX_ROUTES`` routes (400 ``RoutesExhausted``), and an interface a route's
nexthop depends on cannot be removed (409 ``RouterInterfaceInUseByRoute``).
The agent installs the routes in the qrouter namespace.

``ha`` and ``distributed`` are not supported: netmeta advertises neither
the ``l3-ha`` nor the ``dvr`` extension, and a router shows both ``false``.
Asking for ``false`` is accepted (it is what the router is); asking for
``true`` is refused with the 400 Neutron gives for an attribute its loaded
extensions do not know.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from netmeta.model import ipam
from netmeta.model.types import DEVICE_OWNER_ROUTER_INTF, ROUTER_INTERFACE_OWNERS
from netmeta.server import addresses, scheduling
from netmeta.server.errors import BadRequest, Conflict, NotFound, invalid
from netmeta.server.ports import new_port, remove_port
from netmeta.server.standard_attrs import Caller, base, create, get_or_404, new_id, save
from netmeta.server.validation import as_bool, as_str_list, common_attrs, project_of
from netmeta.store.database import Txn


def _router_attrs(obj: dict[str, Any], body: dict[str, Any]) -> None:
    common_attrs(obj, body)
    if "external_gateway_info" in body and body["external_gateway_info"] not in (None, {}):
        raise invalid("external gateways are not supported by netmeta")
    for flag in ("distributed", "ha"):
        if flag in body and as_bool(body[flag], flag):
            raise BadRequest(f"Unrecognized attribute(s) '{flag}'", "HTTPBadRequest")
    if "enable_ndp_proxy" in body:
        obj["enable_ndp_proxy"] = as_bool(body["enable_ndp_proxy"], "enable_ndp_proxy")
    if "availability_zone_hints" in body:
        obj["availability_zone_hints"] = as_str_list(body["availability_zone_hints"], "availability_zone_hints")
    if "flavor_id" in body:
        obj["flavor_id"] = body["flavor_id"]


MAX_ROUTES = 30  # Neutron's max_routes default


def _parse_routes(raw: object) -> list[dict[str, str]]:
    try:
        return ipam.validate_host_routes(raw if raw is not None else [])
    except ipam.IpamError as exc:
        raise addresses.ipam_error(exc) from exc


def _invalid_routes(routes: list[dict[str, str]], reason: str) -> BadRequest:
    return BadRequest(f"Invalid format for routes: {routes}, {reason}.", "InvalidRoutes")


def _check_routes(txn: Txn, router_id: str, routes: list[dict[str, str]]) -> None:
    """Neutron's ``_validate_routes``: count, then every nexthop on-link and not ours."""
    if len(routes) > MAX_ROUTES:
        raise BadRequest(
            f"Unable to complete operation for {router_id}. The number of routes exceeds the maximum "
            f"{MAX_ROUTES}.",
            "RoutesExhausted",
        )
    nets: list[ipam.IPNetwork] = []
    own: set[str] = set()
    for port in txn.select("ports", device_id=router_id):
        for fixed in port["fixed_ips"]:
            subnet = txn.get("subnets", fixed["subnet_id"])
            if subnet is not None:
                nets.append(ipaddress.ip_network(subnet["cidr"]))
            own.add(str(ipaddress.ip_address(fixed["ip_address"])))
    for route in routes:
        nexthop = ipaddress.ip_address(route["nexthop"])
        if not any(nexthop.version == net.version and nexthop in net for net in nets):
            raise _invalid_routes(routes, "the nexthop is not connected with router")
        if str(nexthop) in own:
            raise _invalid_routes(routes, "the nexthop is used by router")


def _set_routes(txn: Txn, router: dict[str, Any], routes: list[dict[str, str]]) -> None:
    _check_routes(txn, router["id"], routes)
    router["routes"] = routes


def extraroutes(txn: Txn, router_id: str, raw: object, adding: bool) -> dict[str, Any]:
    """``PUT /v2.0/routers/{id}/add_extraroutes`` and ``remove_extraroutes``."""
    router = get_or_404(txn, "routers", router_id)
    if not isinstance(raw, dict) or set(raw) != {"router"} or not isinstance(raw["router"], dict):
        raise BadRequest("Body must be {\"router\": {\"routes\": [...]}}", "HTTPBadRequest")
    unknown = sorted(set(raw["router"]) - {"routes"})
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    if "routes" not in raw["router"]:
        raise BadRequest("Failed to parse request. Required attribute 'routes' not specified", "HTTPBadRequest")
    given = _parse_routes(raw["router"]["routes"])
    old = list(router["routes"])
    if adding:
        new = old + [r for i, r in enumerate(given) if r not in old and r not in given[:i]]
        _set_routes(txn, router, new)
    else:
        router["routes"] = [r for r in old if r not in given]
    if router["routes"] != old:
        save(txn, "routers", router)
    return router


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
    if "routes" in body:
        _set_routes(txn, obj, _parse_routes(body["routes"]))
    create(txn, "routers", obj)
    scheduling.schedule_router(txn, obj["id"])
    return obj


def update_router(txn: Txn, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
    obj = get_or_404(txn, "routers", router_id)
    _router_attrs(obj, body)
    if "routes" in body:
        _set_routes(txn, obj, _parse_routes(body["routes"]))
    return save(txn, "routers", obj)


def interface_ports(txn: Txn, router_id: str) -> list[dict[str, Any]]:
    return [p for p in txn.select("ports", device_id=router_id) if p["device_owner"] in ROUTER_INTERFACE_OWNERS]


def delete_router(txn: Txn, router_id: str) -> None:
    obj = get_or_404(txn, "routers", router_id)
    if interface_ports(txn, router_id):
        raise Conflict(f"Router {router_id} still has ports", "RouterInUse")
    scheduling.remove_router_bindings(txn, router_id)
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
    for new in new_subnets:
        # Neutron's _validate_subnet_address_mode: such a subnet's RAs come from another router.
        if new["ip_version"] == 6 and new.get("ipv6_ra_mode") is None and new.get("ipv6_address_mode") is not None:
            raise BadRequest(f"Bad router request: IPv6 subnet {new['id']} configured to receive RAs from an "
                             "external router cannot be added to Neutron Router.", "BadRequest")
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


def _ipv6_port_on_network(txn: Txn, router_id: str, subnet: dict[str, Any]) -> dict[str, Any] | None:
    """The router's own interface port on ``subnet``'s network that already has an IPv6 address."""
    for port in interface_ports(txn, router_id):
        if (port["device_owner"] == DEVICE_OWNER_ROUTER_INTF and port["network_id"] == subnet["network_id"]
                and any(":" in f["ip_address"] for f in port["fixed_ips"])):
            return port
    return None


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
        port["binding:host_id"] = scheduling.router_host(txn, router_id) or port.get("binding:host_id", "")
        save(txn, "ports", port)
    elif subnet_id:
        subnet = get_or_404(txn, "subnets", subnet_id)
        if not subnet["gateway_ip"]:
            raise BadRequest(f"Bad router request: Subnet {subnet_id} does not have a gateway IP.", "BadRequest")
        _check_duplicate_subnets(txn, router_id, [subnet])
        shared = _ipv6_port_on_network(txn, router_id, subnet) if subnet["ip_version"] == 6 else None
        if shared is not None:
            # Neutron's _add_interface_by_subnet: a network's IPv6 subnets share one router port.
            shared["fixed_ips"] = [*shared["fixed_ips"], {
                "subnet_id": subnet_id,
                "ip_address": addresses.claim_exact(txn, subnet, shared["id"], subnet["gateway_ip"])}]
            save(txn, "ports", shared)
            save(txn, "routers", router)
            info = _info(router, shared)
            info["subnet_id"], info["subnet_ids"] = subnet_id, [subnet_id]
            return info
        network = get_or_404(txn, "networks", subnet["network_id"])
        port = new_port(new_id(), network, txn.now, random.randbytes, router["project_id"])
        port["fixed_ips"] = [
            {"subnet_id": subnet_id, "ip_address": addresses.claim_exact(txn, subnet, port["id"], subnet["gateway_ip"])}
        ]
        port["device_owner"] = DEVICE_OWNER_ROUTER_INTF
        port["device_id"] = router_id
        port["binding:host_id"] = scheduling.router_host(txn, router_id)
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
    leaving = [f["subnet_id"] for f in port["fixed_ips"] if not subnet_id or port_id or f["subnet_id"] == subnet_id]
    _check_routes_survive(txn, router, leaving)
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


def _check_routes_survive(txn: Txn, router: dict[str, Any], leaving: list[str]) -> None:
    """Neutron's ``_confirm_router_interface_not_in_use`` for extra routes."""
    for subnet_id in leaving:
        subnet = txn.get("subnets", subnet_id)
        if subnet is None:
            continue
        net = ipaddress.ip_network(subnet["cidr"])
        for route in router["routes"]:
            nexthop = ipaddress.ip_address(route["nexthop"])
            if nexthop.version == net.version and nexthop in net:
                raise Conflict(
                    f"Router interface for subnet {subnet_id} on router {router['id']} cannot be deleted, "
                    f"as it is required by one or more routes.",
                    "RouterInterfaceInUseByRoute",
                )
