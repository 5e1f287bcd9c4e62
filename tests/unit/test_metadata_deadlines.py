"""One periodic check closes connections past their deadline (metadata.http.Deadlines), instead of a timer each."""

from __future__ import annotations

import asyncio

from netmeta.metadata.h1 import Limits
from netmeta.metadata.http import Deadlines


class _Connection:
    def __init__(self, deadlines: Deadlines, due: float) -> None:
        self.deadlines, self.due, self.closed_at = deadlines, due, None

    def check(self, now: float) -> None:
        if now >= self.due and self.closed_at is None:
            self.closed_at = now
            self.deadlines.discard(self)  # as connection_lost does


async def test_a_due_connection_is_closed_within_one_interval_and_the_check_stops_with_the_last() -> None:
    deadlines = Deadlines(Limits(header_timeout=0.2, idle_timeout=1.0))
    assert deadlines.interval == 0.05  # a quarter of the shortest timeout
    loop = asyncio.get_running_loop()
    start = loop.time()
    soon, later = _Connection(deadlines, start + 0.1), _Connection(deadlines, start + 60)
    deadlines.add(soon, loop)
    deadlines.add(later, loop)
    await asyncio.sleep(0.4)
    assert soon.closed_at is not None and soon.closed_at - soon.due <= 0.05 + 0.2  # one interval, and a loaded loop
    assert later.closed_at is None and deadlines.handle is not None
    deadlines.discard(later)
    await asyncio.sleep(0.15)
    assert deadlines.handle is None  # no connection open: no periodic check either


def test_the_interval_is_at_most_a_second() -> None:
    assert Deadlines(Limits()).interval == 1.0
