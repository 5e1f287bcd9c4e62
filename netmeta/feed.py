"""Follow the server's change feed: list once, then watch, forever.

The agent and the metadata process both keep a local copy of everything the
server holds and react to every change. They do it the Kubernetes way: one
``GET /netmeta/v1/state`` gives a consistent copy at a revision; then
``GET /netmeta/v1/watch?since=REV`` long-polls for the changes after it. When
the server says the revision is too old (HTTP 410, the change log was
compacted), or anything else goes wrong, the follower lists again: a fresh
list is always correct, so every error has the same cure.

The follower never blocks its caller: it calls ``on_change(snapshot)`` after
each batch of events, with an immutable :class:`~netmeta.model.types.Snapshot`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import aiohttp

from netmeta.credentials import AuthFailed, TokenSource
from netmeta.endpoints import Endpoints
from netmeta.model.types import PARSERS, RESOURCE_KINDS, Snapshot

log = logging.getLogger(__name__)


class RelistNeeded(Exception):
    """The server no longer has the changes after our revision."""


class FeedFollower:
    """Keeps ``self.snapshot`` equal to the server's state, revision by revision."""

    def __init__(
        self,
        api_url: str | Endpoints,
        on_change: Callable[[Snapshot], Awaitable[None] | None] | None = None,
        *,
        watch_timeout: float = 25.0,
        tokens: TokenSource | None = None,
    ) -> None:
        # Several servers on one database: on any failure the next one is listed.
        self.endpoints = api_url if isinstance(api_url, Endpoints) else Endpoints([api_url])
        self.tokens = tokens
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.snapshot = Snapshot()
        self.synced = asyncio.Event()
        # Parsed objects by kind and id: an event re-parses only what it changed.
        self._objects: dict[str, dict[Any, Any]] = {k: {} for k in RESOURCE_KINDS}
        self._revision = 0

    @property
    def api_url(self) -> str:
        return self.endpoints.current

    async def run(self) -> None:
        """Follow the feed until cancelled; survive server restarts and outages."""
        backoff = 0.2
        failures = 0  # in a row: every server tried once, then back off
        timeout = aiohttp.ClientTimeout(total=self.watch_timeout + 10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url = self.api_url
                try:
                    await self._list(session)
                    backoff = 0.2
                    failures = 0
                    while True:
                        await self._watch_once(session)
                except asyncio.CancelledError:
                    raise
                except RelistNeeded:
                    log.info("change feed compacted past revision %d: listing again", self._revision)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, AuthFailed) as exc:
                    following = self.endpoints.failed(url)
                    failures += 1
                    if following != url and failures % len(self.endpoints):
                        # Another server shares the database: list there at once.
                        log.warning("change feed at %s unavailable (%s); following %s", url, exc, following)
                        continue
                    log.warning("change feed unavailable (%s); retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                except Exception:  # noqa: BLE001 - a bad object or callback must not freeze the copy
                    # Anything else (an object that does not parse, a failing
                    # callback) would otherwise end this task silently and leave
                    # its owner serving a frozen snapshot: log, back off, relist.
                    log.exception("change feed: unexpected failure; listing again in %.1fs", backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def _headers(self) -> dict[str, str]:
        return {"X-Auth-Token": await self.tokens.aget()} if self.tokens is not None else {}

    def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 401 and self.tokens is not None:
            self.tokens.invalidate()  # the next attempt logs in again
        resp.raise_for_status()

    async def _list(self, session: aiohttp.ClientSession) -> None:
        async with session.get(f"{self.api_url}/netmeta/v1/state", headers=await self._headers()) as resp:
            self._check(resp)
            state = await resp.json()
        self._objects = {k: {o["id"]: PARSERS[k](o) for o in state.get(k) or ()} for k in RESOURCE_KINDS}
        self._revision = int(state["revision"])
        await self._publish()
        self.synced.set()

    async def _watch_once(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.api_url}/netmeta/v1/watch"
        params = {"since": str(self._revision), "timeout": str(self.watch_timeout)}
        async with session.get(url, params=params, headers=await self._headers()) as resp:
            if resp.status == 410:
                raise RelistNeeded()
            self._check(resp)
            body = await resp.json()
        events = body.get("events") or []
        for event in events:
            kind = event["kind"]
            obj = event["object"]
            # Seen, even when not kept (rules travel inside their group): a
            # batch of only such events must still move the watch forward.
            self._revision = max(self._revision, int(event["revision"]))
            if kind not in self._objects:
                continue
            if event["type"] == "DELETED":
                self._objects[kind].pop(obj["id"], None)
            else:
                self._objects[kind][obj["id"]] = PARSERS[kind](obj)
        if events:
            await self._publish()

    async def _publish(self) -> None:
        objs = self._objects
        self.snapshot = Snapshot(
            revision=self._revision,
            networks=dict(objs["networks"]),
            subnets=dict(objs["subnets"]),
            ports=dict(objs["ports"]),
            routers=dict(objs["routers"]),
            instances=dict(objs["instances"]),
            security_groups=dict(objs["security_groups"]),
            agents=dict(objs["agents"]),
            bindings=dict(objs["bindings"]),
        )
        if self.on_change is not None:
            result = self.on_change(self.snapshot)
            if asyncio.iscoroutine(result):
                await result
