"""The change hub: every watcher of this server answered from one window of recent events.

A long-polling watcher (``GET /netmeta/v1/watch``) must learn of a commit at
once, whichever server made it, without each watcher reading the database.
So :class:`ChangeHub` keeps the most recent events, rendered once as the
watch answers them, in a window that holds *every* change with a revision
in ``(floor, top]``:

* a write through this server hands its committed events to the hub
  (:meth:`ChangeHub.committed`), so its watchers are answered from memory;
* on PostgreSQL a write through another server arrives as a NOTIFY that
  carries its events (:mod:`netmeta.store.notify`), so no database read
  either; a NOTIFY without them (a transaction too large for a payload)
  or a revision the window has not heard of makes *one* read of the log
  (:meth:`ChangeHub.catch_up`), shared by every watcher waiting for it;
* waiters wake on an ``asyncio.Condition``, and after :attr:`ChangeHub.recheck`
  seconds without news they catch up anyway — a second while nothing
  listens, longer while a LISTEN connection does — so a lost notification
  makes a change late, never missed.

A ``since`` below the window (a watcher far behind, or one the server has
not seen since it started) is read from the database as before, with its
410 for a compacted log. The window never reaches further back than
the change-log retention, so it answers nothing the log would refuse.
Revisions are one total order (each write transaction takes the revision
row), so batches from this server and from others join end to end; a
batch that does not (its start is beyond ``top``) waits in ``_pending``
until the gap is filled or a catch-up read covers it.
"""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_right
from typing import Awaitable, Callable

from netmeta.server import instances
from netmeta.server.metrics import LOG_READS, REVISION

# The log after a revision: (the database's revision, compacted, [(revision, event rendered)]).
Reader = Callable[[int], Awaitable[tuple[int, int, list[tuple[int, str]]]]]

# How many rendered events a hub keeps at most (a few MB).
KEEP = 4096


def public_json(kind: str, text: str) -> str:
    """An object as the feed shows it: stored JSON, an instance with its secrets but not its internals."""
    if kind != "instances":
        return text
    return json.dumps(instances.public(json.loads(text), with_secrets=True), separators=(",", ":"))


def render_event(revision: int, change: str, kind: str, text: str) -> str:
    """One event of a watch answer, as JSON text (``object`` is the stored JSON, never re-encoded)."""
    return f'{{"revision":{revision},"type":"{change}","kind":"{kind}","object":{public_json(kind, text)}}}'


class ChangeHub:
    """Wakes watchers after a commit and answers them; see the module docstring."""

    def __init__(self, keep: int = KEEP) -> None:
        self._cond = asyncio.Condition()
        self.revision = 0  # the highest revision known committed, here or by another server
        self.closing = False
        # Set when a LISTEN connection tells this hub about other servers' commits.
        self.listening: asyncio.Event | None = None
        # Reads the change log after a revision (set by the app; None: nothing to catch up from).
        self.reader: Reader | None = None
        self.keep = max(1, keep)
        self.floor = 0  # the window holds every event with floor < revision <= top
        self.top = 0
        self._revisions: list[int] = []
        self._events: list[str] = []
        self._pending: dict[int, tuple[int, list[str]]] = {}  # base -> (last revision, events)
        self._catching_up: asyncio.Future[None] | None = None

    def start(self, revision: int) -> None:
        """The database's revision when the server starts: an empty window there."""
        self.revision = self.floor = self.top = revision
        REVISION.set(revision)

    @property
    def recheck(self) -> float:
        """How long a waiter sleeps before catching up anyway."""
        return 5.0 if self.listening is not None and self.listening.is_set() else 1.0

    # --- what the window holds ---------------------------------------------------

    def covers(self, since: int) -> bool:
        return self.floor <= since <= self.top

    def events_after(self, since: int, limit: int) -> tuple[int, list[str]]:
        """The events after ``since`` (which the window covers), at most ``limit``, and the last one's revision."""
        start = bisect_right(self._revisions, since)
        end = min(len(self._events), start + limit)
        if start >= end:
            return since, []
        return self._revisions[end - 1], self._events[start:end]

    def _extend(self, base: int, last: int, events: list[tuple[int, str]]) -> bool:
        """Join a batch that holds every change in ``(base, last]``; False if it starts beyond ``top``."""
        if base > self.top:
            return False
        for revision, text in events:
            if revision > self.top:
                self._revisions.append(revision)
                self._events.append(text)
        self.top = max(self.top, last)
        excess = len(self._events) - self.keep
        if excess > 0:
            self.floor = self._revisions[excess - 1]
            del self._revisions[:excess], self._events[:excess]
        return True

    def _join(self, base: int, last: int, events: list[str]) -> None:
        if len(events) != last - base:
            return  # not one event per revision: only a read of the log can fill this gap
        if not self._extend(base, last, list(zip(range(base + 1, last + 1), events))):
            self._pending[base] = (last, events)
            return
        self._join_pending()

    def _join_pending(self) -> None:
        """Batches that arrived before the one they follow, now that it is here."""
        while self.top in self._pending:
            base = self.top
            last, events = self._pending.pop(base)
            self._extend(base, last, list(zip(range(base + 1, last + 1), events)))
        for stale in [b for b in self._pending if b < self.top]:
            del self._pending[stale]

    def _restart_at(self, revision: int) -> None:
        self.floor = self.top = revision
        self._revisions.clear()
        self._events.clear()
        self._pending.clear()

    # --- news ----------------------------------------------------------------------

    async def committed(self, revision: int, base: int | None = None, events: list[str] | None = None) -> None:
        """``revision`` is committed; with ``base`` and ``events``: they are every change in ``(base, revision]``."""
        if base is not None and events is not None:
            self._join(base, revision, events)
        async with self._cond:
            self.revision = max(self.revision, revision)
            REVISION.set(self.revision)
            self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self.closing = True
            self._cond.notify_all()

    async def wait_beyond(self, since: int, timeout: float) -> bool:
        """Return when a revision above ``since`` is known here (True), or on timeout (False)."""
        async with self._cond:
            if self.revision > since or self.closing:
                return True
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.revision > since or self.closing), timeout)
            except TimeoutError:
                return False
            return True

    async def catch_up(self) -> None:
        """Read the log from ``top`` to the database's present: one read, however many watchers ask."""
        if self._catching_up is None:
            self._catching_up = asyncio.ensure_future(self._read_log())
            self._catching_up.add_done_callback(self._caught_up)
        await asyncio.shield(self._catching_up)

    def _caught_up(self, future: asyncio.Future[None]) -> None:
        self._catching_up = None
        if not future.cancelled():
            future.exception()  # retrieved here; the watchers that waited raise it themselves

    async def _read_log(self) -> None:
        if self.reader is None:
            return
        after = self.top
        revision, compacted, rows = await self.reader(after)
        LOG_READS.labels("catch_up").inc()
        if after < compacted:
            # The log moved past the window (a burst longer than the retention): start again at the present.
            self._restart_at(revision)
        else:
            # Every change after ``after`` up to the last row read (the read may stop at its limit).
            last = rows[-1][0] if rows else revision
            self._extend(after, last, rows)
            self._join_pending()
        await self.committed(revision)
