"""The change hub's window and the NOTIFY payload (netmeta.server.changes, netmeta.store.notify).

Watchers are answered from the window of recent events: batches committed
here and notices carrying their events join it without reading the log; a
notice without events, or a gap, costs one read however many watchers wait.
"""

from __future__ import annotations

import asyncio

import pytest

from netmeta.server.changes import ChangeHub, render_event
from netmeta.store.notify import MAX_PAYLOAD, notify_payload, parse_payload


def ev(revision: int) -> str:
    return render_event(revision, "ADDED", "networks", f'{{"id":"n{revision}"}}')


class Log:
    """A fake change log holding revisions 1..revision (compacted up to ``compacted``), counting reads."""

    def __init__(self, revision: int, compacted: int = 0) -> None:
        self.revision = revision
        self.compacted = compacted
        self.reads = 0

    async def __call__(self, since: int) -> tuple[int, int, list[tuple[int, str]]]:
        self.reads += 1
        await asyncio.sleep(0.01)  # every waiter arrives while the one read is out
        return self.revision, self.compacted, [(r, ev(r)) for r in range(max(since, self.compacted) + 1, self.revision + 1)]


def hub_at(revision: int, log: Log | None = None, keep: int = 100) -> ChangeHub:
    hub = ChangeHub(keep=keep)
    hub.start(revision)
    hub.reader = log
    return hub


def test_batches_committed_here_and_notices_with_events_are_answered_without_a_read() -> None:
    async def run() -> None:
        log = Log(3)
        hub = hub_at(0, log)
        await hub.committed(2, 0, [ev(1), ev(2)])  # a write through this server
        await hub.committed(3, 2, [ev(3)])  # another server's, its events in the NOTIFY
        assert hub.events_after(0, 10) == (3, [ev(1), ev(2), ev(3)])
        assert hub.events_after(1, 1) == (2, [ev(2)])
        assert hub.events_after(3, 10) == (3, [])
        assert (hub.covers(0), hub.covers(3), hub.covers(4)) == (True, True, False)
        assert log.reads == 0

    asyncio.run(run())


def test_a_batch_that_arrives_before_the_one_it_follows_waits_for_it() -> None:
    async def run() -> None:
        hub = hub_at(0)
        await hub.committed(3, 2, [ev(3)])  # this server's write, before the NOTIFY of revisions 1-2
        assert hub.revision == 3 and hub.top == 0
        await hub.committed(2, 0, [ev(1), ev(2)])
        assert hub.top == 3 and hub.events_after(0, 10)[1] == [ev(1), ev(2), ev(3)]

    asyncio.run(run())


def test_a_notice_without_events_is_one_read_for_every_waiting_watcher() -> None:
    async def run() -> None:
        log = Log(5)
        hub = hub_at(2, log)
        await hub.committed(5)  # a transaction too large for a payload: the revision alone
        await asyncio.gather(*(hub.catch_up() for _ in range(10)))
        assert log.reads == 1
        assert hub.events_after(2, 10) == (5, [ev(3), ev(4), ev(5)])

    asyncio.run(run())


def test_a_log_compacted_past_the_window_restarts_it_at_the_present() -> None:
    async def run() -> None:
        log = Log(50, compacted=40)
        hub = hub_at(2, log)
        await hub.catch_up()
        assert (hub.floor, hub.top, hub.revision) == (50, 50, 50)
        assert not hub.covers(45)  # such a watcher reads the log itself (and is told 410)

    asyncio.run(run())


def test_the_window_keeps_at_most_keep_events() -> None:
    async def run() -> None:
        hub = hub_at(0, keep=3)
        for revision in range(1, 6):
            await hub.committed(revision, revision - 1, [ev(revision)])
        assert (hub.floor, hub.top) == (2, 5)
        assert not hub.covers(1) and hub.events_after(2, 10) == (5, [ev(3), ev(4), ev(5)])

    asyncio.run(run())


def test_waiters_wake_on_a_commit_and_tell_a_timeout_apart() -> None:
    async def run() -> None:
        hub = hub_at(0)
        assert await hub.wait_beyond(0, 0.05) is False
        waiter = asyncio.create_task(hub.wait_beyond(0, 5))
        await asyncio.sleep(0.01)
        await hub.committed(1, 0, [ev(1)])
        assert await waiter is True

    asyncio.run(run())


def test_a_failed_read_reaches_every_watcher_and_the_next_catch_up_reads_again() -> None:
    async def run() -> None:
        calls = []

        async def broken(since: int) -> tuple[int, int, list[tuple[int, str]]]:
            calls.append(since)
            await asyncio.sleep(0.01)
            raise OSError("the database went away")

        hub = hub_at(0)
        hub.reader = broken
        results = await asyncio.gather(*(hub.catch_up() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results) and calls == [0]
        with pytest.raises(OSError):
            await hub.catch_up()
        assert calls == [0, 0]

    asyncio.run(run())


def test_the_notify_payload_carries_the_events_when_they_fit() -> None:
    events = [ev(8), ev(9)]
    payload = notify_payload(9, 7, events)
    assert payload.split("\n")[0] == "9 7"
    assert parse_payload(payload) == (9, 7, events)
    big = ['{"revision":9,"x":"' + "a" * MAX_PAYLOAD + '"}']
    assert notify_payload(9, 8, big) == "9" and parse_payload("9") == (9, None, None)
    assert notify_payload(9, 7, None) == "9"
    assert notify_payload(9, 7, [ev(9)]) == "9"  # not one event per revision
    assert notify_payload(9, 8, ['{"a":\n1}']) == "9"  # a line break would split an event
    for garbage in ("", "x", "9 x", "9 7\n{}", "1 2 3"):
        with pytest.raises(ValueError):
            parse_payload(garbage)
