"""netmeta's own API: instances, and the change feed every component follows.

The feed is the Kubernetes list+watch contract:

``GET /netmeta/v1/state``
    ``{"revision": R, "networks": […], "subnets": […], "ports": […],
    "routers": […], "instances": […]}`` — one consistent read (a single
    database snapshot), instances with every field including ``user_data``,
    ``public_key`` and ``password``.

``GET /netmeta/v1/watch?since=REV&timeout=SECONDS``
    ``{"revision": R, "events": [{"revision", "type", "kind", "object"}…]}``
    — every change after REV, in order, at once if there are any; otherwise
    it waits (long poll, default 30 s, at most 300 s) and answers empty at
    the timeout. ``revision`` is where the next watch continues. A REV the
    change log no longer covers (compacted) — or one this database never
    reached — is 410 ``ResourceVersionTooOld``: the client must list again.

At most :data:`MAX_EVENTS` events are returned at once; the client simply
watches again from the returned revision.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Callable

from aiohttp import web
from sqlalchemy import Connection

from netmeta.model.types import STATE_KINDS
from netmeta.server import filters, instances, policy
from netmeta.server.changes import public_json, render_event
from netmeta.server.context import ctx, dump, json_body, raw_json
from netmeta.server.errors import BadRequest, Gone
from netmeta.server.metrics import LOG_READS
from netmeta.store.database import Txn, changes_since, current_revision, load_bodies, load_one

MAX_EVENTS = 5000
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 300.0


# --- instances -----------------------------------------------------------------


async def create_instance(request: web.Request) -> web.Response:
    body = await json_body(request)
    server = ctx(request)
    caller = server.caller(request)

    def write(txn: Txn) -> dict[str, Any]:
        policy.check_instance_create(caller, body, lambda kind, obj_id: txn.get(kind, obj_id))
        return instances.create_instance(txn, body, caller)

    obj = await server.write(write)
    return dump({"instance": instances.public(obj)}, status=201)


async def list_instances(request: web.Request) -> web.Response:
    wanted, controls = filters.parse("instances", list(request.query.items()))
    caller = ctx(request).caller(request)
    bodies = await ctx(request).db.read(lambda conn: load_bodies(conn, "instances"))
    docs = (json.loads(b) for b in bodies)
    objs = filters.apply((instances.public(d) for d in docs if policy.owns(caller, d)), wanted)
    objs, _ = filters.sort_and_page("instances", objs, controls, "")
    fields = filters.field_list(controls)
    return dump({"instances": [filters.select_fields(o, fields) for o in objs]})


async def _instance(request: web.Request) -> dict[str, Any]:
    instance_id = request.match_info["id"]
    obj = await ctx(request).db.read(lambda conn: load_one(conn, "instances", instance_id))
    policy.check_instance(ctx(request).caller(request), obj, instance_id)
    assert obj is not None
    return obj


def _own_instance(request: web.Request, txn: Txn, instance_id: str) -> None:
    policy.check_instance(ctx(request).caller(request), txn.get("instances", instance_id), instance_id, change=True)


async def show_instance(request: web.Request) -> web.Response:
    return dump({"instance": instances.public(await _instance(request))})


async def delete_instance(request: web.Request) -> web.Response:
    instance_id = request.match_info["id"]

    def write(txn: Txn) -> None:
        _own_instance(request, txn, instance_id)
        instances.delete_instance(txn, instance_id)

    await ctx(request).write(write)
    return web.Response(status=204)


async def get_password(request: web.Request) -> web.Response:
    obj = await _instance(request)
    return dump({"password": obj.get("password") or ""})


async def post_password(request: web.Request) -> web.Response:
    instance_id = request.match_info["id"]
    body = await json_body(request)

    def write(txn: Txn) -> dict[str, Any]:
        _own_instance(request, txn, instance_id)
        return instances.set_password(txn, instance_id, body)

    result = await ctx(request).write(write)
    return dump(result)


async def delete_password(request: web.Request) -> web.Response:
    instance_id = request.match_info["id"]

    def write(txn: Txn) -> None:
        _own_instance(request, txn, instance_id)
        instances.clear_password(txn, instance_id)

    await ctx(request).write(write)
    return web.Response(status=204)


# --- the change feed ------------------------------------------------------------


def _read_state(conn: Connection) -> str:
    revision, _ = current_revision(conn)
    parts = [f'"revision":{revision}']
    for kind in STATE_KINDS:
        bodies = [public_json(kind, b) for b in load_bodies(conn, kind)]
        parts.append(f'"{kind}":[{",".join(bodies)}]')
    return "{" + ",".join(parts) + "}"


async def state(request: web.Request) -> web.Response:
    policy.check_feed(ctx(request).caller(request))
    return raw_json(await ctx(request).db.read(_read_state))


def _number(request: web.Request, name: str, default: float | None) -> float:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"{name} is required", "HTTPBadRequest")
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number, not {raw!r}", "HTTPBadRequest") from exc
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{name} must be a finite number, zero or more", "HTTPBadRequest")
    return value


def read_log(since: int) -> Callable[[Connection], tuple[int, int, list[tuple[int, str]]]]:
    """The log after ``since`` in one snapshot: revision, compacted, and the events rendered (off the loop)."""

    def read(conn: Connection) -> tuple[int, int, list[tuple[int, str]]]:
        revision, compacted = current_revision(conn)
        return revision, compacted, [(rev, render_event(rev, change, kind, obj))
                                     for rev, change, kind, obj in changes_since(conn, since, MAX_EVENTS)]

    return read


def _answer(revision: int, events: list[str]) -> web.Response:
    return raw_json(f'{{"revision":{revision},"events":[{",".join(events)}]}}')


async def watch(request: web.Request) -> web.Response:
    raw_since = request.query.get("since", "0")
    if not (raw_since.isascii() and raw_since.isdigit()) or len(raw_since) > 18:
        raise BadRequest(f"since must be a revision number, not {raw_since!r}", "HTTPBadRequest")
    since = int(raw_since)
    policy.check_feed(ctx(request).caller(request))
    timeout = min(_number(request, "timeout", DEFAULT_TIMEOUT), MAX_TIMEOUT)
    server = ctx(request)
    hub = server.hub
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if since > hub.top or timeout == 0:
        # A revision this server has not heard of yet (a follower failing over), or a poll: the present.
        await hub.catch_up()
    while hub.covers(since):
        # Answered from the hub's window (netmeta.server.changes): no read of the database.
        last, events = hub.events_after(since, MAX_EVENTS)
        if events:
            return _answer(last, events)
        since = hub.top  # nothing between since and top
        if hub.revision > hub.top:  # heard of a commit, not yet of its events
            await hub.catch_up()
            if hub.revision > hub.top:
                break  # the log has not caught up with the notice: read it here
            continue
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closing:
            return _answer(since, [])
        if not await hub.wait_beyond(since, min(hub.recheck, remaining)):
            await hub.catch_up()  # nothing heard for a while: look at the log anyway
    # Below the window (a watcher far behind), or beyond the database's revision: the log itself.
    while True:
        LOG_READS.labels("behind").inc()
        revision, compacted, rows = await server.db.read(read_log(since))
        if since < compacted or since > revision:
            raise Gone(
                f"Revision {since} is outside the change log (kept: {compacted}..{revision}); "
                f"list /netmeta/v1/state again and watch from its revision.",
                "ResourceVersionTooOld",
            )
        if rows:
            return _answer(rows[-1][0], [text for _, text in rows])
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closing:
            return _answer(revision, [])
        await hub.wait_beyond(revision, min(hub.recheck, remaining))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/netmeta/v1/instances", create_instance)
    r.add_get("/netmeta/v1/instances", list_instances)
    r.add_get("/netmeta/v1/instances/{id}", show_instance)
    r.add_delete("/netmeta/v1/instances/{id}", delete_instance)
    r.add_get("/netmeta/v1/instances/{id}/password", get_password)
    r.add_post("/netmeta/v1/instances/{id}/password", post_password)
    r.add_delete("/netmeta/v1/instances/{id}/password", delete_password)
    r.add_get("/netmeta/v1/state", state)
    r.add_get("/netmeta/v1/watch", watch)
