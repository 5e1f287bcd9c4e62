"""Neutron's default policy, for the resources netmeta serves.

Who sees what (anything not visible is answered 404, as Neutron does, so a
project cannot even learn that another's resource exists):

* ``admin`` and ``service`` callers see everything (:attr:`Caller.sees_all`);
* a network is visible to its project, and to everyone when ``shared`` or
  ``router:external``; a subnet when its network is;
* a port to its project and to the owner of its network;
* a router and an instance to their project only;
* the change feed (``/netmeta/v1/state``, ``watch``: every project's data,
  passwords included) to ``admin`` and ``service`` only (403).

Who changes what (visible but not allowed is 403 ``PolicyNotAuthorized``):

* ``reader`` changes nothing; a ``member`` changes its own project's
  resources; admin everything;
* only admin (or the service role, acting for a project it serves) may give
  a ``project_id`` other than the caller's (400, Neutron's message);
* ``shared``, ``router:external`` and ``provider:*`` are admin-only;
* a subnet is added only by the network's owner; on a network it does not
  own (a shared one) a port may not choose its MAC, its IP address or a
  ``network:*`` device owner, and ``binding:*`` is for admin and service.

These functions take a ``lookup(kind, id)`` so the same rules serve a write
transaction and a read snapshot.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

from netmeta.server.errors import BadRequest, Forbidden, not_found
from netmeta.server.standard_attrs import Caller

Lookup = Callable[[str, str], "dict[str, Any] | None"]
ADMIN_NETWORK_ATTRS = ("shared", "router:external", "provider:network_type", "provider:physical_network",
                       "provider:segmentation_id", "is_default")
SINGULAR = {"networks": "network", "subnets": "subnet", "ports": "port", "routers": "router",
            "instances": "instance", "security_groups": "security_group",
            "security_group_rules": "security_group_rule"}


# Attributes Neutron shows only to admins (get_network:provider:*, get_port:binding:*):
# they name the cloud's hosts and segments. The agents' service role sees them too.
ADMIN_ONLY_FIELDS = {
    "networks": ("provider:network_type", "provider:physical_network", "provider:segmentation_id"),
    "ports": ("binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details"),
}


def hide_admin_fields(caller: Caller, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    hidden = ADMIN_ONLY_FIELDS.get(kind)
    if caller.sees_all or not hidden:
        return obj
    return {k: v for k, v in obj.items() if k not in hidden}


def hide_admin_fields_raw(caller: Caller, kind: str, bodies: list[str]) -> list[str]:
    """The same on stored documents (parsed only for callers who may not see them)."""
    if caller.sees_all or kind not in ADMIN_ONLY_FIELDS:
        return bodies
    return [json.dumps(hide_admin_fields(caller, kind, json.loads(b)), separators=(",", ":")) for b in bodies]


def denied(rule: str) -> Forbidden:
    return Forbidden(f"({rule}) is disallowed by policy", "PolicyNotAuthorized")


def owns(caller: Caller, obj: Mapping[str, Any]) -> bool:
    return caller.sees_all or obj.get("project_id") == caller.project_id


def network_visible(caller: Caller, net: Mapping[str, Any]) -> bool:
    return owns(caller, net) or bool(net.get("shared")) or bool(net.get("router:external"))


def visible(caller: Caller, kind: str, obj: Mapping[str, Any], lookup: Lookup) -> bool:
    if owns(caller, obj):
        return True
    if kind == "networks":
        return network_visible(caller, obj)
    if kind in ("subnets", "ports"):
        net = lookup("networks", str(obj.get("network_id")))
        if net is None:
            return False
        return network_visible(caller, net) if kind == "subnets" else net.get("project_id") == caller.project_id
    return False


def may_change(caller: Caller, kind: str, obj: Mapping[str, Any], lookup: Lookup) -> bool:
    if not caller.may_write:
        return False
    if owns(caller, obj):
        return True
    if kind == "ports":
        net = lookup("networks", str(obj.get("network_id")))
        return net is not None and net.get("project_id") == caller.project_id
    return False


def check_read(caller: Caller, kind: str, obj: Mapping[str, Any] | None, obj_id: str, lookup: Lookup) -> None:
    if obj is None or not visible(caller, kind, obj, lookup):
        raise not_found(kind, obj_id)


def check_change(caller: Caller, kind: str, obj: Mapping[str, Any] | None, obj_id: str, lookup: Lookup,
                 action: str = "update") -> None:
    check_read(caller, kind, obj, obj_id, lookup)
    assert obj is not None
    if not may_change(caller, kind, obj, lookup):
        raise denied(f"rule:{action}_{SINGULAR[kind]}")


def _project_in(caller: Caller, body: Mapping[str, Any]) -> None:
    for key in ("project_id", "tenant_id"):
        value = body.get(key)
        if value is not None and value != caller.project_id and not caller.sees_all:
            raise BadRequest("Specifying 'project_id' or 'tenant_id' other than the authenticated project in "
                             "request requires admin privileges", "HTTPBadRequest")


def _admin_attrs(caller: Caller, kind: str, body: Mapping[str, Any], action: str) -> None:
    if caller.is_admin:
        return
    if kind == "networks":
        for attr in ADMIN_NETWORK_ATTRS:
            if body.get(attr):
                raise denied(f"rule:{action}_network:{attr}")


def _port_attrs(caller: Caller, body: Mapping[str, Any], network: Mapping[str, Any] | None, action: str) -> None:
    if caller.sees_all:
        return
    for attr in ("binding:host_id", "binding:profile"):
        if body.get(attr):
            raise denied(f"rule:{action}_port:{attr}")
    if network is not None and network.get("project_id") == caller.project_id:
        return
    if body.get("mac_address") is not None:
        raise denied(f"rule:{action}_port:mac_address")
    fixed = body.get("fixed_ips")
    if isinstance(fixed, list) and any(isinstance(f, dict) and f.get("ip_address") is not None for f in fixed):
        raise denied(f"rule:{action}_port:fixed_ips:ip_address")
    owner = body.get("device_owner")
    if isinstance(owner, str) and owner.startswith("network:"):
        raise denied(f"rule:{action}_port:device_owner")


def _network_for(caller: Caller, body: Mapping[str, Any], lookup: Lookup) -> dict[str, Any] | None:
    net_id = body.get("network_id")
    if not isinstance(net_id, str):
        return None  # the resource code answers a missing or mistyped id
    net = lookup("networks", net_id)
    if net is None or not network_visible(caller, net):
        raise not_found("networks", net_id)
    return net


def check_create(caller: Caller, kind: str, body: Mapping[str, Any], lookup: Lookup) -> None:
    if not caller.may_write:
        raise denied(f"rule:create_{SINGULAR[kind]}")
    _project_in(caller, body)
    _admin_attrs(caller, kind, body, "create")
    if kind == "subnets":
        net = _network_for(caller, body, lookup)
        if net is not None and not owns(caller, net):
            raise denied("rule:create_subnet")
    elif kind == "ports":
        _port_attrs(caller, body, _network_for(caller, body, lookup), "create")


def check_update(caller: Caller, kind: str, obj: Mapping[str, Any] | None, obj_id: str, body: Mapping[str, Any],
                 lookup: Lookup) -> None:
    check_change(caller, kind, obj, obj_id, lookup)
    assert obj is not None
    _admin_attrs(caller, kind, body, "update")
    if kind == "ports":
        _port_attrs(caller, body, lookup("networks", str(obj.get("network_id"))), "update")


def check_interface(caller: Caller, router: Mapping[str, Any] | None, router_id: str, body: Any,
                    lookup: Lookup) -> None:
    check_change(caller, "routers", router, router_id, lookup, "add_router_interface")
    if not isinstance(body, dict):
        return
    for key, kind in (("subnet_id", "subnets"), ("port_id", "ports")):
        ref = body.get(key)
        obj = lookup(kind, ref) if isinstance(ref, str) else None
        if obj is None:
            continue  # the router code answers a missing one
        allowed = visible(caller, kind, obj, lookup) if kind == "subnets" else may_change(caller, kind, obj, lookup)
        if not allowed:
            raise not_found(kind, str(ref))


def check_instance_create(caller: Caller, raw: Any, lookup: Lookup) -> None:
    if not caller.may_write:
        raise denied("rule:create_instance")
    body = raw.get("instance") if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        return
    _project_in(caller, body)
    networks = body.get("networks")
    for item in networks if isinstance(networks, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("uuid"), str):
            net = lookup("networks", item["uuid"])
            if net is None or not network_visible(caller, net):
                raise not_found("networks", item["uuid"])
        if isinstance(item.get("port"), str):
            port = lookup("ports", item["port"])
            if port is None or not may_change(caller, "ports", port, lookup):
                raise not_found("ports", item["port"])


def check_instance(caller: Caller, obj: Mapping[str, Any] | None, instance_id: str, change: bool = False) -> None:
    if obj is None or not owns(caller, obj):
        raise not_found("instances", instance_id)
    if change and not caller.may_write:
        raise denied("rule:update_instance")


def check_feed(caller: Caller) -> None:
    if not caller.sees_all:
        raise denied("rule:get_change_feed")


def visible_bodies(caller: Caller, kind: str, bodies: list[str], networks: Iterable[str]) -> list[str]:
    """The stored documents ``caller`` may see, still unparsed.

    A document can only be visible if it names the caller's project or a
    network that makes it visible; that substring test comes first, and
    only the candidates are parsed and checked properly.
    """
    if caller.sees_all:
        return bodies
    nets = {n["id"]: n for n in (json.loads(b) for b in networks)}
    markers = ['"project_id":' + json.dumps(caller.project_id)]
    if kind == "networks":
        markers += ['"shared":true', '"router:external":true']
    elif kind == "subnets":
        markers += ['"network_id":' + json.dumps(i) for i, n in nets.items() if network_visible(caller, n)]
    elif kind == "ports":
        markers += ['"network_id":' + json.dumps(i) for i, n in nets.items()
                    if n.get("project_id") == caller.project_id]

    def lookup(which: str, obj_id: str) -> dict[str, Any] | None:
        return nets.get(obj_id) if which == "networks" else None

    own = json.dumps(caller.project_id)
    out = []
    for raw in bodies:
        # A '"project_id":' before any nested '{' is the document's own (the
        # store writes it among the first keys; inside a string a quote is
        # always escaped). Anything less plain is parsed and checked.
        at = raw.find('"project_id":')
        nested = raw.find("{", 1)
        if at >= 0 and (nested < 0 or at < nested) and raw.startswith(own, at + 13):
            out.append(raw)
        elif any(m in raw for m in markers) and visible(caller, kind, json.loads(raw), lookup):
            out.append(raw)
    return out
