"""What every request handler shares: the database, the config, the change hub.

:class:`ChangeHub` is how a long-polling watcher learns that something was
committed without polling the database in a tight loop: writers call
:meth:`ChangeHub.committed` after each commit and waiters wake on an
``asyncio.Condition``. On PostgreSQL, commits made by *other* servers
arrive the same way, from a LISTEN connection (:mod:`netmeta.store.notify`).
Waiters also give up after :attr:`ChangeHub.recheck` seconds and read the
database again — a second while nothing listens (SQLite shared by nobody,
or the LISTEN connection lost), longer while it does — so no change is
ever missed, only at worst late.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from aiohttp import web

from netmeta.config import Config
from netmeta.server.bodies import clean_json, parse_body
from netmeta.server.metrics import REVISION
from netmeta.server.standard_attrs import Caller, utcnow
from netmeta.store.database import Database, Txn

T = TypeVar("T")


class ChangeHub:
    """Wakes watchers after a commit; see the module docstring."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self.revision = 0
        self.closing = False
        # Set when a LISTEN connection tells this hub about other servers' commits.
        self.listening: asyncio.Event | None = None

    @property
    def recheck(self) -> float:
        """How long a waiter sleeps before reading the database again anyway."""
        return 5.0 if self.listening is not None and self.listening.is_set() else 1.0

    async def committed(self, revision: int) -> None:
        async with self._cond:
            self.revision = max(self.revision, revision)
            REVISION.set(self.revision)
            self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self.closing = True
            self._cond.notify_all()

    async def wait_beyond(self, since: int, timeout: float) -> None:
        """Return when a revision above ``since`` is known here, or on timeout."""
        async with self._cond:
            if self.revision > since or self.closing:
                return
            try:
                await asyncio.wait_for(self._cond.wait(), timeout)
            except TimeoutError:
                pass


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

        def run(txn: Txn) -> T:
            txn.dns_domain = dns_domain
            txn.settings = settings
            return fn(txn)

        result, revision = await self.db.write(run, utcnow())
        await self.hub.committed(revision)
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
