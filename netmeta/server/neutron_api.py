"""The Neutron v2.0 REST API, as the ``openstack`` CLI and openstacksdk use it.

Routes map one-to-one onto the resource modules (:mod:`.networks`,
:mod:`.ports`, :mod:`.routers`); each write is exactly one store
transaction. Lists without filters, ``fields`` or sorting are answered by
joining the stored JSON documents without parsing them, which is what keeps
a 10,000-port list far under the half-second budget.

Version discovery (``GET /``) answers exactly as Neutron does, because
keystoneauth's endpoint discovery reads it even with ``--os-auth-type none``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from aiohttp import web
from sqlalchemy import Connection

from netmeta.model.types import NEUTRON_KINDS
from netmeta.server import dhcp_port, filters, networks, policy, ports, routers
from netmeta.server import security_groups as sg
from netmeta.server.context import ctx, dump, json_body, raw_json
from netmeta.server.errors import BadRequest, invalid
from netmeta.server.standard_attrs import Caller, get_or_404, save
from netmeta.server.validation import SINGULAR, as_str_list, bulk_bodies, resource_body
from netmeta.store.database import Txn, load_bodies, load_one

CREATE: dict[str, Callable[[Txn, dict[str, Any], Caller], dict[str, Any]]] = {
    "networks": networks.create_network,
    "subnets": networks.create_subnet,
    "ports": ports.create_port,
    "routers": routers.create_router,
}
UPDATE: dict[str, Callable[[Txn, str, dict[str, Any]], dict[str, Any]]] = {
    "networks": networks.update_network,
    "subnets": networks.update_subnet,
    "ports": ports.update_port,
    "routers": routers.update_router,
}
DELETE: dict[str, Callable[[Txn, str], None]] = {
    "networks": networks.delete_network,
    "subnets": networks.delete_subnet,
    "ports": dhcp_port.delete_port,
    "routers": routers.delete_router,
}
EXTENSIONS = [
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 networks"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, port, router, network", "Enables to set tag on resources with standard attribute."),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("router_availability_zone", "Router Availability Zone", "Availability zone support for router."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("extraroute-atomic", "Atomically add/remove extra routes", "Edit extra routes of a router on server side by atomically adding/removing extra routes"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)"),
    ("dns-integration", "DNS Integration", "Provides integration with DNS."),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter parameters."),
    ("fields-query", "Fields query", "Allows the fields parameter in list and show queries."),
    ("security-group", "security-group", "The security groups extension."),
    ("port-security", "Port Security", "Provides port security"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("agent", "agent", "The agent management extension."),
    ("dhcp_agent_scheduler", "DHCP Agent Scheduler", "Schedule networks among dhcp agents"),
    ("l3_agent_scheduler", "L3 Agent Scheduler", "Schedule routers among l3 agents"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
]
# URL path segment → internal kind (the store's table name).
SG_KINDS = {"security-groups": "security_groups", "security-group-rules": "security_group_rules"}


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def versions(request: web.Request) -> web.Response:
    href = f"{_base_url(request)}/v2.0/"
    return dump({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}]})


async def resources_index(request: web.Request) -> web.Response:
    base = _base_url(request)
    return dump(
        {
            "resources": [
                {"name": SINGULAR[k], "collection": k,
                 "links": [{"href": f"{base}/v2.0/{k.replace('_', '-')}", "rel": "self"}]}
                for k in (*NEUTRON_KINDS, "security_groups", "security_group_rules")
            ]
        }
    )


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "updated": "2013-01-01T00:00:00-00:00",
            "links": []}


async def list_extensions(request: web.Request) -> web.Response:
    return dump({"extensions": [_extension(*e) for e in EXTENSIONS]})


async def show_extension(request: web.Request) -> web.Response:
    alias = request.match_info["alias"]
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return dump({"extension": _extension(*ext)})
    raise web.HTTPNotFound()


def _prefilter(kind: str, wanted: dict[str, list[str]]) -> dict[str, str]:
    """Filters the database can apply through an index (single values only)."""
    out: dict[str, str] = {}
    for column in ("network_id", "device_id"):
        if column in wanted and len(wanted[column]) == 1 and (
            (kind == "subnets" and column == "network_id") or kind == "ports"
        ):
            out[column] = wanted[column][0]
    return out


def _reader(conn: Connection) -> policy.Lookup:
    return lambda kind, obj_id: load_one(conn, kind, obj_id)


def _writer(txn: Txn) -> policy.Lookup:
    return lambda kind, obj_id: txn.get(kind, obj_id)


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    return SG_KINDS.get(kind, kind)


async def list_resources(request: web.Request) -> web.Response:
    kind = _kind(request)
    if kind == "security_groups":
        # Neutron makes a project's default group on its first look at the list.
        caller = ctx(request).caller(request)
        await ctx(request).write(lambda txn: sg.default_group(txn, caller.project_id))
    wanted, controls = filters.parse(kind, list(request.query.items()))
    pre = _prefilter(kind, wanted)
    caller = ctx(request).caller(request)

    def read(conn: Connection) -> list[str]:
        bodies = load_bodies(conn, kind, **pre)
        if caller.sees_all:
            return bodies
        networks = load_bodies(conn, "networks") if kind in ("subnets", "ports") else []
        return policy.hide_admin_fields_raw(caller, kind, policy.visible_bodies(caller, kind, bodies, networks))

    bodies = await ctx(request).db.read(read)
    if not wanted and not controls:
        return raw_json('{"%s":[%s]}' % (kind, ",".join(bodies)))
    if not controls:
        # Filter on parsed documents but answer with the stored text: no re-encoding.
        kept = [raw for raw in bodies if filters.apply((json.loads(raw),), wanted)]
        return raw_json('{"%s":[%s]}' % (kind, ",".join(kept)))
    objs = filters.apply((json.loads(b) for b in bodies), wanted)
    objs, links = filters.sort_and_page(kind, objs, controls, f"{_base_url(request)}{request.path}")
    fields = filters.field_list(controls)
    out: dict[str, Any] = {kind: [filters.select_fields(o, fields) for o in objs]}
    if links:
        out[f"{kind}_links"] = links
    return dump(out)


async def show_resource(request: web.Request) -> web.Response:
    kind, obj_id = _kind(request), request.match_info["id"]
    _, controls = filters.parse(kind, [(k, v) for k, v in request.query.items() if k == "fields"])
    caller = ctx(request).caller(request)

    def read(conn: Connection) -> dict[str, Any]:
        obj = load_one(conn, kind, obj_id)
        policy.check_read(caller, kind, obj, obj_id, _reader(conn))
        assert obj is not None
        return obj

    obj = await ctx(request).db.read(read)
    obj = policy.hide_admin_fields(caller, kind, obj)
    return dump({SINGULAR[kind]: filters.select_fields(obj, filters.field_list(controls))})


def _fixed_ips_within_limit(kind: str, body: dict[str, Any], limit: int) -> None:
    # Before any lookup: each address becomes a dnsmasq host line.
    if kind == "ports" and isinstance(body.get("fixed_ips"), list) and len(body["fixed_ips"]) > limit:
        raise invalid("Exceeded maximum amount of fixed ips per port")


async def create_resource(request: web.Request) -> web.Response:
    """One resource, or Neutron's bulk create (``{"networks": [...]}``): one transaction either way."""
    kind = request.match_info["kind"]
    raw = await json_body(request)
    bulk = bulk_bodies(raw, kind)
    bodies = bulk if bulk is not None else [resource_body(raw, kind, creating=True)]
    server = ctx(request)
    for body in bodies:
        _fixed_ips_within_limit(kind, body, server.config.max_fixed_ips_per_port)
    create, caller = CREATE[kind], server.caller(request)

    def write(txn: Txn) -> list[dict[str, Any]]:
        made = []
        for body in bodies:  # an error in any item rolls back every one (Neutron: atomic bulk)
            policy.check_create(caller, kind, body, _writer(txn))
            made.append(create(txn, body, caller))
        return made

    objs = [policy.hide_admin_fields(caller, kind, obj) for obj in await server.write(write)]
    if bulk is None:
        return dump({SINGULAR[kind]: objs[0]}, status=201)
    return dump({kind: objs}, status=201)


async def update_resource(request: web.Request) -> web.Response:
    kind, obj_id = request.match_info["kind"], request.match_info["id"]
    body = resource_body(await json_body(request), kind, creating=False)
    _fixed_ips_within_limit(kind, body, ctx(request).config.max_fixed_ips_per_port)
    caller = ctx(request).caller(request)

    def write(txn: Txn) -> dict[str, Any]:
        policy.check_update(caller, kind, txn.get(kind, obj_id), obj_id, body, _writer(txn))
        return UPDATE[kind](txn, obj_id, body)

    obj = await ctx(request).write(write)
    return dump({SINGULAR[kind]: policy.hide_admin_fields(caller, kind, obj)})


async def delete_resource(request: web.Request) -> web.Response:
    kind, obj_id = request.match_info["kind"], request.match_info["id"]
    caller = ctx(request).caller(request)

    def write(txn: Txn) -> None:
        policy.check_change(caller, kind, txn.get(kind, obj_id), obj_id, _writer(txn), "delete")
        DELETE[kind](txn, obj_id)

    await ctx(request).write(write)
    return web.Response(status=204)


async def router_extraroutes(request: web.Request) -> web.Response:
    router_id, action = request.match_info["id"], request.match_info["action"]
    body = await json_body(request)
    adding = action == "add_extraroutes"
    caller = ctx(request).caller(request)

    def write(txn: Txn) -> dict[str, Any]:
        policy.check_change(caller, "routers", txn.get("routers", router_id), router_id, _writer(txn), action)
        return routers.extraroutes(txn, router_id, body, adding)

    router = await ctx(request).write(write)
    return dump({"router": router})


# --- availability zones and quotas (read-only, as netmeta has one zone and no quotas) ---

AZ_RESOURCES = ("network", "router")


async def list_availability_zones(request: web.Request) -> web.Response:
    """Neutron's ``availability_zone`` extension: one zone, ``nova``, for networks and routers.

    Filters on ``name``, ``resource`` and ``state`` work as on any list.
    """
    zones = [{"name": "nova", "resource": r, "state": "available"} for r in AZ_RESOURCES]
    for key, value in request.query.items():
        if key not in ("name", "resource", "state", "fields"):
            raise BadRequest(f"{key} is invalid attribute for availability_zone", "HTTPBadRequest")
        if key != "fields":
            zones = [z for z in zones if z[key] == value]
    return dump({"availability_zones": zones})


# Resources and their limits. netmeta enforces no quota; -1 is how Neutron
# spells "unlimited", so this is the truth, in Neutron's shape.
QUOTA_RESOURCES = ("network", "subnet", "port", "router", "floatingip", "security_group",
                   "security_group_rule", "rbac_policy", "subnetpool")


def _quota() -> dict[str, int]:
    return {r: -1 for r in QUOTA_RESOURCES}


async def list_quotas(request: web.Request) -> web.Response:
    """Projects with non-default quotas: none."""
    return dump({"quotas": []})


async def show_quota(request: web.Request) -> web.Response:
    project_id = request.match_info["project_id"]
    caller = ctx(request).caller(request)
    if project_id != caller.project_id and not caller.sees_all:
        raise policy.denied("rule:get_quota")
    if request.match_info.get("what") == "details.json" or request.match_info.get("what") == "details":
        counts = await ctx(request).db.read(lambda conn: {
            kind: sum(1 for raw in load_bodies(conn, kind) if json.loads(raw).get("project_id") == project_id)
            for kind in ("networks", "subnets", "ports", "routers")
        })
        used = {"network": counts["networks"], "subnet": counts["subnets"], "port": counts["ports"],
                "router": counts["routers"]}
        return dump({"quota": {r: {"limit": -1, "used": used.get(r, 0), "reserved": 0} for r in QUOTA_RESOURCES}})
    return dump({"quota": _quota()})


def _group_for_change(caller: Caller, txn: Txn, group_id: object) -> None:
    """A rule is changed as part of its group: visible and the caller's, or refused."""
    if isinstance(group_id, str):
        group = txn.get("security_groups", group_id)
        if group is None or not policy.owns(caller, group):
            raise sg.group_not_found(group_id)
        if not caller.may_write:
            raise policy.denied("rule:update_security_group")


async def create_security_resource(request: web.Request) -> web.Response:
    kind = _kind(request)
    raw = await json_body(request)
    server = ctx(request)
    caller = server.caller(request)
    if kind == "security_groups":
        body = sg.group_body(raw, creating=True)

        def create_group(txn: Txn) -> dict[str, Any]:
            policy.check_create(caller, kind, body, _writer(txn))
            return sg.create_group(txn, body, caller)

        obj = await server.write(create_group)
    else:
        body = sg.rule_body(raw)

        def create_rule(txn: Txn) -> dict[str, Any]:
            policy.check_create(caller, kind, body, _writer(txn))
            _group_for_change(caller, txn, body.get("security_group_id"))
            remote = body.get("remote_group_id")
            if isinstance(remote, str):
                found = txn.get("security_groups", remote)
                if found is None or not policy.visible(caller, "security_groups", found, _writer(txn)):
                    raise sg.group_not_found(remote)
            return sg.create_rule(txn, body, caller)

        obj = await server.write(create_rule)
    return dump({SINGULAR[kind]: obj}, status=201)


async def update_security_group(request: web.Request) -> web.Response:
    obj_id = request.match_info["id"]
    body = sg.group_body(await json_body(request), creating=False)
    caller = ctx(request).caller(request)

    def update(txn: Txn) -> dict[str, Any]:
        policy.check_update(caller, "security_groups", txn.get("security_groups", obj_id), obj_id, body, _writer(txn))
        return sg.update_group(txn, obj_id, body)

    obj = await ctx(request).write(update)
    return dump({"security_group": obj})


async def delete_security_resource(request: web.Request) -> web.Response:
    kind, obj_id = _kind(request), request.match_info["id"]
    caller = ctx(request).caller(request)

    def delete(txn: Txn) -> None:
        policy.check_change(caller, kind, txn.get(kind, obj_id), obj_id, _writer(txn), "delete")
        (sg.delete_group if kind == "security_groups" else sg.delete_rule)(txn, obj_id)

    await ctx(request).write(delete)
    return web.Response(status=204)


async def router_interface(request: web.Request) -> web.Response:
    router_id, action = request.match_info["id"], request.match_info["action"]
    body = await json_body(request)
    fn = routers.add_interface if action == "add_router_interface" else routers.remove_interface
    caller = ctx(request).caller(request)

    def write(txn: Txn) -> dict[str, Any]:
        policy.check_interface(caller, txn.get("routers", router_id), router_id, body, _writer(txn))
        return fn(txn, router_id, body)

    info = await ctx(request).write(write)
    return dump(info)


# --- tags (Neutron's tag extension; openstack ... --tag uses it) ---------------


def _set_tags(txn: Txn, kind: str, obj_id: str, tags: list[str], caller: Caller) -> list[str]:
    policy.check_change(caller, kind, txn.get(kind, obj_id), obj_id, _writer(txn))
    obj = get_or_404(txn, kind, obj_id)
    if obj.get("tags") != tags:
        obj["tags"] = tags
        save(txn, kind, obj)
    return tags


async def replace_tags(request: web.Request) -> web.Response:
    kind, obj_id = request.match_info["kind"], request.match_info["id"]
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"tags"}:
        raise BadRequest('Body must be {"tags": [...]}', "HTTPBadRequest")
    tags = sorted(set(as_str_list(body["tags"], "tags")))
    caller = ctx(request).caller(request)
    await ctx(request).write(lambda txn: _set_tags(txn, kind, obj_id, tags, caller))
    return dump({"tags": tags})


async def show_tags(request: web.Request) -> web.Response:
    kind, obj_id = request.match_info["kind"], request.match_info["id"]
    caller = ctx(request).caller(request)

    def read(conn: Connection) -> dict[str, Any]:
        obj = load_one(conn, kind, obj_id)
        policy.check_read(caller, kind, obj, obj_id, _reader(conn))
        assert obj is not None
        return obj

    obj = await ctx(request).db.read(read)
    return dump({"tags": obj.get("tags", [])})


async def one_tag(request: web.Request) -> web.Response:
    kind, obj_id, tag = request.match_info["kind"], request.match_info["id"], request.match_info["tag"]
    caller = ctx(request).caller(request)

    def change(txn: Txn) -> None:
        policy.check_change(caller, kind, txn.get(kind, obj_id), obj_id, _writer(txn))
        obj = get_or_404(txn, kind, obj_id)
        tags = set(obj.get("tags", []))
        if request.method == "PUT":
            _set_tags(txn, kind, obj_id, sorted(tags | {tag}), caller)
        elif tag not in tags:
            raise web.HTTPNotFound()
        else:
            _set_tags(txn, kind, obj_id, sorted(tags - {tag}), caller)

    await ctx(request).write(change)
    return web.Response(status=201 if request.method == "PUT" else 204)


async def clear_tags(request: web.Request) -> web.Response:
    kind, obj_id = request.match_info["kind"], request.match_info["id"]
    caller = ctx(request).caller(request)
    await ctx(request).write(lambda txn: _set_tags(txn, kind, obj_id, [], caller))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", versions)
    r.add_get("/v2.0", resources_index)
    r.add_get("/v2.0/", resources_index)
    r.add_get("/v2.0/extensions", list_extensions)
    r.add_get("/v2.0/extensions/{alias}", show_extension)
    collection = f"/v2.0/{{kind:{'|'.join(NEUTRON_KINDS)}}}"
    member = collection + "/{id}"
    r.add_get(collection, list_resources)
    r.add_post(collection, create_resource)
    r.add_get(member, show_resource)
    r.add_put(member, update_resource)
    r.add_delete(member, delete_resource)
    r.add_put("/v2.0/routers/{id}/{action:add_router_interface|remove_router_interface}", router_interface)
    r.add_put("/v2.0/routers/{id}/{action:add_extraroutes|remove_extraroutes}", router_extraroutes)
    r.add_get("/v2.0/availability_zones", list_availability_zones)
    r.add_get("/v2.0/quotas", list_quotas)
    r.add_get("/v2.0/quotas/{project_id}", show_quota)
    r.add_get("/v2.0/quotas/{project_id}/{what:default|details|details.json}", show_quota)
    sg_collection = "/v2.0/{kind:security-groups|security-group-rules}"
    r.add_get(sg_collection, list_resources)
    r.add_post(sg_collection, create_security_resource)
    r.add_get(sg_collection + "/{id}", show_resource)
    r.add_put("/v2.0/{kind:security-groups}/{id}", update_security_group)
    r.add_delete(sg_collection + "/{id}", delete_security_resource)
    r.add_get(member + "/tags", show_tags)
    r.add_put(member + "/tags", replace_tags)
    r.add_delete(member + "/tags", clear_tags)
    r.add_put(member + "/tags/{tag}", one_tag)
    r.add_delete(member + "/tags/{tag}", one_tag)
