"""Commits made by *other* servers, told at once: PostgreSQL's LISTEN/NOTIFY.

Several ``netmeta server`` processes may share one PostgreSQL. Each write
transaction ends with ``NOTIFY netmeta_changes, '<revision>'`` (delivered
by PostgreSQL only when, and only if, the transaction commits), and every
server keeps one connection ``LISTEN``-ing on that channel and wakes its own
watchers (:class:`netmeta.server.context.ChangeHub`) as each notification
arrives. So a change made through one server reaches a watcher of another
within a few milliseconds, without polling. If the listening connection
breaks, it is opened again; meanwhile the watchers' periodic re-read (every
second until the listener is up) keeps every change visible, only later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from sqlalchemy.engine import make_url

log = logging.getLogger("netmeta.store.notify")

CHANNEL = "netmeta_changes"


def notify_sql() -> str:
    """The statement each write transaction ends with (its revision is the payload)."""
    return f"SELECT pg_notify('{CHANNEL}', CAST(:revision AS text))"


def libpq_url(sqlalchemy_url: str) -> str:
    """psycopg's own spelling of the store's SQLAlchemy URL (no ``+psycopg``)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """Calls ``on_revision(rev)`` for every notification; reconnects forever (cancel to stop)."""

    def __init__(self, sqlalchemy_url: str, on_revision: Callable[[int], Awaitable[None]]) -> None:
        self.url = libpq_url(sqlalchemy_url)
        self.on_revision = on_revision
        self.listening = asyncio.Event()

    async def run(self) -> None:
        import psycopg

        backoff = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.2
                    async for note in conn.notifies():
                        try:
                            revision = int(note.payload)
                        except ValueError:
                            continue
                        await self.on_revision(revision)
                finally:
                    self.listening.clear()
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database went away: listen again later
                log.warning("LISTEN %s failed (%s); watchers re-read every second until it is back", CHANNEL, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
