"""What every request handler shares: the database, the config, the change hub.

Every write goes through :meth:`ServerContext.write`: one transaction, its
events rendered once in the writer's thread (they also ride on the NOTIFY
other servers hear, :mod:`netmeta.store.notify`), then handed to the
:class:`~netmeta.server.changes.ChangeHub` that answers this server's
watchers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from aiohttp import web

from netmeta.config import Config
from netmeta.server.bodies import clean_json, parse_body
from netmeta.server.changes import ChangeHub, render_event
from netmeta.server.standard_attrs import Caller, utcnow
from netmeta.store.database import Database, Txn

T = TypeVar("T")


@dataclass
class ServerContext:
    config: Config
    db: Database
    hub: ChangeHub = field(default_factory=ChangeHub)

    def caller(self, request: web.Request) -> Caller:
        """Set by :mod:`.auth` for every request that got this far."""
        caller = request.get("netmeta.caller")
        if isinstance(caller, Caller):
            return caller
        return Caller(self.config.default_project_id, roles=frozenset())  # no rights at all

    async def write(self, fn: Callable[[Txn], T]) -> T:
        """One request, one transaction; watchers are woken after the commit."""
        dns_domain = self.config.dns_domain
        settings = self.config

        done: list[Txn] = []

        def run(txn: Txn) -> T:
            txn.dns_domain = dns_domain
            txn.settings = settings
            result = fn(txn)
            txn.rendered = [render_event(*change) for change in txn.events]
            done.append(txn)
            return result

        result, revision = await self.db.write(run, utcnow())
        txn = done[0]
        await self.hub.committed(revision, txn.base, txn.rendered)
        return result


CTX: web.AppKey[ServerContext] = web.AppKey("netmeta_ctx", ServerContext)


def ctx(request: web.Request) -> ServerContext:
    return request.app[CTX]


async def json_body(request: web.Request) -> Any:
    """The parsed, checked body (:mod:`.bodies`), or Neutron's 400/413."""
    return parse_body(await request.read())


def raw_json(text: str, status: int = 200) -> web.Response:
    # A lone surrogate stored by an older version must not break any reader.
    text = clean_json(text)
    return web.Response(text=text, status=status, content_type="application/json")


def dump(obj: Any, status: int = 200) -> web.Response:
    return raw_json(json.dumps(obj, separators=(",", ":")), status)
