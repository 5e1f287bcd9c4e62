"""Waiting on signals, never on sleeps: poll a condition until it holds."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from netmeta.client import ApiUnavailable, Client

T = TypeVar("T")


class Timeout(Exception):
    """A condition did not hold in time; the message says which."""


def until(condition: Callable[[], T | None], what: str, timeout: float = 20.0, poll: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def wait_for_api(client: Client, timeout: float = 20.0) -> None:
    def answers() -> bool:
        try:
            client.get("/")
            return True
        except ApiUnavailable:
            return False

    until(answers, f"the API at {client.api_url}", timeout)
