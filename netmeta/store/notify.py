"""Commits made by *other* servers, told at once: PostgreSQL's LISTEN/NOTIFY.

Several ``netmeta server`` processes may share one PostgreSQL. Each write
transaction ends with ``NOTIFY netmeta_changes, '<payload>'`` (delivered
by PostgreSQL only when, and only if, the transaction commits), and every
server keeps one connection ``LISTEN``-ing on that channel and wakes its own
watchers (:class:`netmeta.server.changes.ChangeHub`) as each notification
arrives. So a change made through one server reaches a watcher of another
within a few milliseconds, without polling.

The payload is the new revision, and — when they fit PostgreSQL's 8000
bytes — the revision before the transaction and its events as watchers see
them, one JSON text a line::

    <revision> <base>\n<event>\n<event>…

so the other servers answer their watchers without reading the change log
at all; a larger transaction sends the revision alone and each other server
reads the log once. A token revoked at one server is told to the others on
the same channel, ``revoked <audit_id>``
(:mod:`netmeta.server.shared_identity` records it in the store too). If the listening connection breaks, it is opened again;
meanwhile the watchers' periodic catch-up (every second until the listener
is up) keeps every change visible, only later. All servers on one store run
the same version (they share its migrations), so they agree on this format.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from sqlalchemy.engine import make_url

log = logging.getLogger("netmeta.store.notify")

CHANNEL = "netmeta_changes"


# PostgreSQL refuses a payload of 8000 bytes or more (and the transaction with it).
MAX_PAYLOAD = 7900

Notice = Callable[[int, "int | None", "list[str] | None"], Awaitable[None]]


def notify_sql() -> str:
    """The statement each write transaction ends with (see :func:`notify_payload`)."""
    return f"SELECT pg_notify('{CHANNEL}', :payload)"


def notify_payload(revision: int, base: int, events: list[str] | None) -> str:
    """The revision, with the transaction's events when they fit (see the module docstring)."""
    if events is not None and len(events) == revision - base:
        payload = "\n".join([f"{revision} {base}", *events])
        if len(payload.encode()) <= MAX_PAYLOAD and payload.count("\n") == len(events):
            return payload
    return str(revision)


REVOKED = "revoked"


def revoked_payload(audit_id: str) -> str:
    return f"{REVOKED} {audit_id}"


def parse_payload(payload: str) -> tuple[int, int | None, list[str] | None]:
    """(revision, base, events) from a payload; base and events None when it holds only the revision.

    Raises ValueError for anything else (a NOTIFY on the channel by someone else).
    """
    head, *events = payload.split("\n")
    numbers = head.split(" ")
    if len(numbers) == 1:
        return int(numbers[0]), None, None
    revision, base = (int(n) for n in numbers)
    if len(events) != revision - base:
        raise ValueError(f"{len(events)} events for revisions {base}..{revision}")
    return revision, base, events


def libpq_url(sqlalchemy_url: str) -> str:
    """psycopg's own spelling of the store's SQLAlchemy URL (no ``+psycopg``)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """Calls ``on_notice(revision, base, events)`` for every notification; reconnects forever (cancel to stop)."""

    def __init__(self, sqlalchemy_url: str, on_notice: Notice,
                 on_revoked: Callable[[str], None] | None = None) -> None:
        self.url = libpq_url(sqlalchemy_url)
        self.on_notice = on_notice
        self.on_revoked = on_revoked
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
                        kind, _, audit_id = note.payload.partition(" ")
                        if kind == REVOKED:
                            if self.on_revoked is not None and audit_id:
                                self.on_revoked(audit_id)
                            continue
                        try:
                            revision, base, events = parse_payload(note.payload)
                        except ValueError:
                            continue
                        await self.on_notice(revision, base, events)
                finally:
                    self.listening.clear()
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database went away: listen again later
                log.warning("LISTEN %s failed (%s); watchers re-read every second until it is back", CHANNEL, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
