"""Agents: registration and heartbeats, ``/v2.0/agents`` and the scheduler extensions.

Every netmeta agent process reports its rows the way Neutron's agents call
``report_state`` over RPC, here as ``POST /netmeta/v1/report_state``
``{"agent_state": {agent_type, binary, host, topic, configurations,
availability_zone, start_flag}}`` (the service role or admin). The first
report of an (agent_type, host) pair registers the agent (Neutron's unique
key); later ones are heartbeats. A heartbeat only rewrites the row's
``heartbeat_at`` column — no revision, no event, so reports never wake the
watchers; a changed configuration or a restart (``start_flag``, which sets
``started_at``) is an ordinary change. An agent that registers, restarts or
comes back to life gets whatever has no host (:mod:`.scheduling`).

``/v2.0/agents`` is Neutron's agent extension, admin only as there: list
(with filters, ``alive`` among them), show, update (``admin_state_up``,
``description``), delete. ``alive`` is computed when asked: a heartbeat at
most ``agent_down_time`` seconds old. The scheduler extensions:
``/v2.0/agents/{id}/dhcp-networks`` (GET, POST ``{"network_id"}``,
DELETE ``…/{network_id}``), ``/v2.0/networks/{id}/dhcp-agents``,
``/v2.0/agents/{id}/l3-routers`` (GET, POST ``{"router_id"}``, DELETE) and
``/v2.0/routers/{id}/l3-agents``, with Neutron's errors.
"""

from __future__ import annotations

import random
import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from sqlalchemy import Connection, select

from netmeta.model.types import AGENT_DHCP, AGENT_L3
from netmeta.server import filters, policy, scheduling
from netmeta.server.context import ctx, dump, json_body
from netmeta.server.errors import BadRequest, Conflict, NotFound, invalid
from netmeta.server.standard_attrs import Caller, new_id
from netmeta.server.validation import as_bool, as_str
from netmeta.store import schema
from netmeta.store.database import Txn, load_one

log = logging.getLogger("netmeta.server.agents")

# Neutron's topics for the agents netmeta runs; "N/A" where Neutron has none.
TOPICS = {AGENT_DHCP: "dhcp_agent", AGENT_L3: "l3_agent"}
# The agent types a report may name, and the binary Neutron gives each.
BINARIES = {
    AGENT_DHCP: "neutron-dhcp-agent",
    AGENT_L3: "neutron-l3-agent",
    "Linux bridge agent": "neutron-linuxbridge-agent",
    "Metadata agent": "neutron-metadata-agent",
}
STATE_KEYS = {"agent_type", "binary", "host", "topic", "configurations", "availability_zone", "start_flag",
              "resource_versions", "description"}


def neutron_time(epoch: float) -> str:
    """Neutron's agent timestamps: ``2026-12-02 00:31:12`` (UTC, no zone)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def agent_not_found(agent_id: str) -> NotFound:
    return NotFound(f"Agent {agent_id} could not be found.", "AgentNotFound")


def check_admin(caller: Caller, action: str) -> None:
    """Neutron's policy: agents and their scheduling are the admin's."""
    if not caller.is_admin:
        raise policy.denied(f"rule:{action}")


# --- report_state ------------------------------------------------------------------


def _parse_state(raw: Any) -> dict[str, Any]:
    body = raw.get("agent_state") if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        raise BadRequest("Body must be {\"agent_state\": {...}}", "HTTPBadRequest")
    unknown = sorted(set(body) - STATE_KEYS)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'", "HTTPBadRequest")
    agent_type = as_str(body.get("agent_type"), "agent_type")
    if agent_type not in BINARIES:
        raise invalid(f"agent_type '{agent_type}' is not one of {', '.join(sorted(BINARIES))}")
    host = as_str(body.get("host"), "host") or ""
    if not host.strip() or any(c.isspace() for c in host):
        raise invalid("host must be a host name")
    configurations = body.get("configurations", {})
    if not isinstance(configurations, dict) or len(json.dumps(configurations)) > 16384:
        raise invalid("configurations must be an object (at most 16 KiB)")
    zone = body.get("availability_zone")
    return {
        "agent_type": agent_type,
        "host": host,
        "binary": as_str(body.get("binary", BINARIES[agent_type]), "binary"),
        "topic": as_str(body.get("topic", TOPICS.get(agent_type, "N/A")), "topic"),
        "configurations": configurations,
        "availability_zone": as_str(zone, "availability_zone", allow_none=True),
        "start_flag": as_bool(body.get("start_flag", False), "start_flag"),
    }


def report(txn: Txn, state: dict[str, Any], at: float) -> dict[str, Any]:
    """Register or refresh one agent; see the module docstring."""
    found = txn.select("agents", agent_type=state["agent_type"], host=state["host"])
    stamp = neutron_time(at)
    if not found:
        obj = {
            "id": new_id(), "agent_type": state["agent_type"], "binary": state["binary"], "topic": state["topic"],
            "host": state["host"], "admin_state_up": True, "created_at": stamp, "started_at": stamp,
            "configurations": state["configurations"], "availability_zone": state["availability_zone"],
            "description": None, "resources_synced": None,
        }
        txn.add("agents", obj, heartbeat_at=repr(at))
        scheduling.on_agent_available(txn, obj)
        return obj
    obj = found[0]
    previous = txn.column_values("agents", "heartbeat_at").get(obj["id"])
    was_alive = scheduling.is_alive(previous, at, scheduling.down_time(txn))
    txn.set_columns("agents", obj["id"], heartbeat_at=repr(at))
    changed = {k: state[k] for k in ("binary", "topic", "configurations", "availability_zone") if obj.get(k) != state[k]}
    if state["start_flag"]:
        changed["started_at"] = stamp
    if changed:
        obj.update(changed)
        txn.update("agents", obj)
    if state["start_flag"] or not was_alive:
        scheduling.on_agent_available(txn, obj)
    return obj


async def report_state(request: web.Request) -> web.Response:
    server = ctx(request)
    caller = server.caller(request)
    if not caller.sees_all:
        raise policy.denied("rule:report_state")
    state = _parse_state(await json_body(request))
    at = scheduling.now()
    obj = await server.write(lambda txn: report(txn, state, at))
    return dump({"agent": public(obj, at, at, server.config.agent_down_time)})


# --- /v2.0/agents ----------------------------------------------------------------


def public(obj: dict[str, Any], heartbeat: Any, at: float, down_time: float) -> dict[str, Any]:
    out = dict(obj)
    try:
        out["heartbeat_timestamp"] = neutron_time(float(heartbeat))
    except (TypeError, ValueError):
        out["heartbeat_timestamp"] = None
    out["alive"] = scheduling.is_alive(heartbeat, at, down_time)
    return out


def _all_agents(conn: Connection) -> list[tuple[dict[str, Any], Any]]:
    table = schema.agents
    rows = conn.execute(select(table.c.body, table.c.heartbeat_at).order_by(table.c.created_rev))
    return [(json.loads(r[0]), r[1]) for r in rows]


async def _agents(request: web.Request, keep: Any = None) -> list[dict[str, Any]]:
    server = ctx(request)
    rows = await server.db.read(_all_agents)
    at = scheduling.now()
    return [public(obj, beat, at, server.config.agent_down_time) for obj, beat in rows
            if keep is None or keep(obj)]


def _answer(request: web.Request, agents: list[dict[str, Any]]) -> web.Response:
    wanted, controls = filters.parse("agents", list(request.query.items()))
    objs = filters.apply(agents, wanted)
    objs, links = filters.sort_and_page("agents", objs, controls, f"{request.scheme}://{request.host}{request.path}")
    fields = filters.field_list(controls)
    out: dict[str, Any] = {"agents": [filters.select_fields(o, fields) for o in objs]}
    if links:
        out["agents_links"] = links
    return dump(out)


async def list_agents(request: web.Request) -> web.Response:
    check_admin(ctx(request).caller(request), "get_agent")
    return _answer(request, await _agents(request))


async def _one(request: web.Request, agent_id: str) -> dict[str, Any]:
    found = await _agents(request, lambda obj: obj["id"] == agent_id)
    if not found:
        raise agent_not_found(agent_id)
    return found[0]


async def show_agent(request: web.Request) -> web.Response:
    check_admin(ctx(request).caller(request), "get_agent")
    agent = await _one(request, request.match_info["id"])
    _, controls = filters.parse("agents", [(k, v) for k, v in request.query.items() if k == "fields"])
    return dump({"agent": filters.select_fields(agent, filters.field_list(controls))})


def _agent_or_404(txn: Txn, agent_id: str) -> dict[str, Any]:
    obj = txn.get("agents", agent_id)
    if obj is None:
        raise agent_not_found(agent_id)
    return obj


READONLY = {"id", "agent_type", "binary", "topic", "host", "created_at", "started_at", "heartbeat_timestamp",
            "alive", "configurations", "availability_zone", "resources_synced"}


async def update_agent(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "update_agent")
    agent_id = request.match_info["id"]
    raw = await json_body(request)
    body = raw.get("agent") if isinstance(raw, dict) and len(raw) == 1 else None
    if not isinstance(body, dict):
        raise BadRequest("Resource body required, expected an object with key 'agent'.", "HTTPBadRequest")
    for key in sorted(body):
        if key in READONLY:
            raise BadRequest(f"Cannot update read-only attribute {key}", "HTTPBadRequest")
        if key not in ("admin_state_up", "description"):
            raise BadRequest(f"Unrecognized attribute(s) '{key}'", "HTTPBadRequest")

    def write(txn: Txn) -> dict[str, Any]:
        obj = _agent_or_404(txn, agent_id)
        changed = dict(obj)
        if "admin_state_up" in body:
            changed["admin_state_up"] = as_bool(body["admin_state_up"], "admin_state_up")
        if "description" in body:
            changed["description"] = as_str(body["description"], "description", allow_none=True)
        if changed != obj:
            txn.update("agents", changed)
            # A disabled agent's networks move to another agent; an enabled one takes what has no host.
            scheduling.check_agents(txn)
            if changed["admin_state_up"] and not obj.get("admin_state_up", True):
                scheduling.on_agent_available(txn, changed)
        return changed

    obj = await server.write(write)
    return dump({"agent": await _one(request, obj["id"])})


async def delete_agent(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "delete_agent")
    agent_id = request.match_info["id"]

    def write(txn: Txn) -> None:
        obj = _agent_or_404(txn, agent_id)
        txn.remove("agents", obj)
        scheduling.on_agent_removed(txn, obj)

    await server.write(write)
    return web.Response(status=204)


# --- the scheduler extensions ----------------------------------------------------------


def _hosting_agent(txn: Txn, agent_id: str, agent_type: str) -> dict[str, Any]:
    obj = txn.get("agents", agent_id)
    if obj is None or obj["agent_type"] != agent_type or not obj.get("admin_state_up", True):
        if agent_type == AGENT_DHCP:
            raise NotFound(f"Agent {agent_id} is not a valid DHCP Agent or has been disabled.", "InvalidDHCPAgent")
        raise NotFound(f"Agent {agent_id} is not a L3 Agent or has been disabled", "InvalidL3Agent")
    return obj


def _target_id(raw: Any, key: str) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get(key), str):
        raise BadRequest(f"Body must be {{\"{key}\": \"<id>\"}}", "HTTPBadRequest")
    return str(raw[key])


async def list_agent_networks(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "get_dhcp-networks")
    agent_id = request.match_info["id"]

    def read(conn: Connection) -> list[dict[str, Any]]:
        if load_one(conn, "agents", agent_id) is None:
            raise agent_not_found(agent_id)
        ids = [json.loads(b)["network_id"] for b in _bindings(conn, agent_id=agent_id)]
        return [n for n in (load_one(conn, "networks", i) for i in ids if i) if n is not None]

    nets = await server.db.read(read)
    return dump({"networks": sorted(nets, key=lambda n: n["id"])})


def _bindings(conn: Connection, **where: str) -> list[str]:
    table = schema.bindings
    query = select(table.c.body)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    return list(conn.execute(query).scalars())


async def add_agent_network(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "create_dhcp-network")
    agent_id = request.match_info["id"]
    network_id = _target_id(await json_body(request), "network_id")

    def write(txn: Txn) -> None:
        agent = _hosting_agent(txn, agent_id, AGENT_DHCP)
        if txn.get("networks", network_id) is None:
            raise NotFound(f"Network {network_id} could not be found.", "NetworkNotFound")
        if any(b["agent_id"] == agent_id for b in scheduling.network_bindings(txn, network_id)):
            raise Conflict(f"The network {network_id} has been already hosted by the DHCP Agent {agent_id}.",
                           "NetworkHostedByDHCPAgent")
        scheduling.bind(txn, agent, network_id=network_id)
        scheduling._sync_ports(txn, network_id)

    await server.write(write)
    return dump(None, status=201)


async def remove_agent_network(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "delete_dhcp-network")
    agent_id, network_id = request.match_info["id"], request.match_info["network_id"]

    def write(txn: Txn) -> None:
        _agent_or_404(txn, agent_id)
        binding = next((b for b in scheduling.network_bindings(txn, network_id) if b["agent_id"] == agent_id), None)
        if binding is None:
            raise Conflict(f"The network {network_id} is not hosted by the DHCP Agent {agent_id}.",
                           "NetworkNotHostedByDhcpAgent")
        scheduling.unbind(txn, binding)
        # No automatic rescheduling here: the admin said where it must not be
        # (Neutron's remove_network_from_dhcp_agent does not reschedule either).
        network = txn.get("networks", network_id)
        if network is not None:
            from netmeta.server import dhcp_port

            dhcp_port.sync_dhcp_port(txn, network, random.randbytes, schedule=False)

    await server.write(write)
    return web.Response(status=204)


async def network_agents(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "get_dhcp-agents")
    network_id = request.match_info["id"]
    ids = await server.db.read(lambda conn: _hosting(conn, "networks", network_id))
    return _answer(request, await _agents(request, lambda obj: obj["id"] in ids))


def _hosting(conn: Connection, kind: str, obj_id: str) -> set[str]:
    if load_one(conn, kind, obj_id) is None:
        from netmeta.server.errors import not_found

        raise not_found(kind, obj_id)
    column = "network_id" if kind == "networks" else "router_id"
    return {json.loads(b)["agent_id"] for b in _bindings(conn, **{column: obj_id})}


async def list_agent_routers(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "get_l3-routers")
    agent_id = request.match_info["id"]

    def read(conn: Connection) -> list[dict[str, Any]]:
        if load_one(conn, "agents", agent_id) is None:
            raise agent_not_found(agent_id)
        ids = [json.loads(b)["router_id"] for b in _bindings(conn, agent_id=agent_id)]
        return [r for r in (load_one(conn, "routers", i) for i in ids if i) if r is not None]

    found = await server.db.read(read)
    return dump({"routers": sorted(found, key=lambda r: r["id"])})


async def add_agent_router(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "create_l3-router")
    agent_id = request.match_info["id"]
    router_id = _target_id(await json_body(request), "router_id")

    def write(txn: Txn) -> None:
        agent = _hosting_agent(txn, agent_id, AGENT_L3)
        if txn.get("routers", router_id) is None:
            raise NotFound(f"Router {router_id} could not be found.", "RouterNotFound")
        current = scheduling.router_binding(txn, router_id)
        if current is not None:
            # A legacy router lives on one agent: move it with remove, then add.
            raise Conflict(f"The router {router_id} has been already hosted by the L3 Agent {current['agent_id']}.",
                           "RouterHostedByL3Agent")
        scheduling.bind(txn, agent, router_id=router_id)
        scheduling.set_router_ports_host(txn, router_id)

    await server.write(write)
    return dump(None, status=201)


async def remove_agent_router(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "delete_l3-router")
    agent_id, router_id = request.match_info["id"], request.match_info["router_id"]

    def write(txn: Txn) -> None:
        _agent_or_404(txn, agent_id)
        binding = scheduling.router_binding(txn, router_id)
        if binding is None or binding["agent_id"] != agent_id:
            raise Conflict(f"The router {router_id} is not hosted by the L3 Agent {agent_id}.",
                           "RouterNotHostedByL3Agent")
        scheduling.unbind(txn, binding)
        scheduling.set_router_ports_host(txn, router_id)

    await server.write(write)
    return web.Response(status=204)


async def router_agents(request: web.Request) -> web.Response:
    server = ctx(request)
    check_admin(server.caller(request), "get_l3-agents")
    router_id = request.match_info["id"]
    ids = await server.db.read(lambda conn: _hosting(conn, "routers", router_id))
    return _answer(request, await _agents(request, lambda obj: obj["id"] in ids))


# --- the periodic check ----------------------------------------------------------------


async def watch_agents(app: web.Application) -> None:
    """Every agent_down_time / 2 seconds: move work off dead agents (every server runs it; it is idempotent)."""
    from netmeta.server.context import CTX

    server = app[CTX]
    period = max(0.5, min(server.config.agent_down_time / 2, 30.0))
    while True:
        await asyncio.sleep(period)
        try:
            await server.write(lambda txn: scheduling.check_agents(txn))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed check is tried again next period
            log.exception("agent check failed; trying again in %.1fs", period)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/netmeta/v1/report_state", report_state)
    r.add_get("/v2.0/agents", list_agents)
    r.add_get("/v2.0/agents/{id}", show_agent)
    r.add_put("/v2.0/agents/{id}", update_agent)
    r.add_delete("/v2.0/agents/{id}", delete_agent)
    r.add_get("/v2.0/agents/{id}/dhcp-networks", list_agent_networks)
    r.add_post("/v2.0/agents/{id}/dhcp-networks", add_agent_network)
    r.add_delete("/v2.0/agents/{id}/dhcp-networks/{network_id}", remove_agent_network)
    r.add_get("/v2.0/networks/{id}/dhcp-agents", network_agents)
    r.add_get("/v2.0/agents/{id}/l3-routers", list_agent_routers)
    r.add_post("/v2.0/agents/{id}/l3-routers", add_agent_router)
    r.add_delete("/v2.0/agents/{id}/l3-routers/{router_id}", remove_agent_router)
    r.add_get("/v2.0/routers/{id}/l3-agents", router_agents)
