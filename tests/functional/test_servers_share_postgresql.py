"""Several servers on one PostgreSQL: LISTEN/NOTIFY wakes every server's watchers, followers fail over.

The PostgreSQL is a throwaway cluster the test starts (tests/pg.py). A watcher
on the second server must see a write made through the first at once — via
NOTIFY, which carries the write's events, not the periodic catch-up, which
waits five seconds while the server listens — and a follower given both
URLs keeps following when one is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from netmeta.endpoints import Endpoints
from netmeta.feed import FeedFollower
from tests.functional.conftest import ServerProcess
from tests.pg import postgres_cluster


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


def watch_latency(reader: ServerProcess, writer: ServerProcess, name: str) -> float:
    """Seconds from the start of a write through ``writer`` to a watcher of ``reader`` returning with it."""
    revision = reader.api.state()["revision"]
    seen: dict[str, Any] = {}

    def watch() -> None:
        seen["body"] = reader.api.get(f"/netmeta/v1/watch?since={revision}&timeout=20")
        seen["at"] = time.monotonic()

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)  # the watcher is waiting on the reader
    started = time.monotonic()
    net = writer.api.network(name)
    thread.join(timeout=30)
    assert [e["object"]["id"] for e in seen["body"]["events"]] == [net["id"]]
    return float(seen["at"] - started)


def test_a_write_through_one_server_reaches_a_watcher_of_the_other_at_once(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    first = server_factory("--db", postgres_url)
    second = server_factory("--db", postgres_url)
    latencies = [watch_latency(second, first, f"notified-{i}") for i in range(5)]
    latencies += [watch_latency(first, second, f"back-{i}") for i in range(3)]
    print("watch latency across servers (s):", [round(x, 4) for x in latencies])
    # The 50 ms (the write itself included), on a machine with a core to spare;
    # scaled by how oversubscribed the cores are when the test ends (at load 2 on 2 cores: 50 ms).
    bound = 0.05 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert statistics.median(latencies) < bound, (latencies, bound)
    # Without NOTIFY a watcher would wake only at its 5 s catch-up.
    assert max(latencies) < 2.0, latencies
    # ... and the NOTIFY carried the events: neither server read its change log for these watchers
    # (allowing one periodic look, in case a watcher waited past the 1 s before its LISTEN was up).
    for server in (first, second):
        reads = log_reads(server)
        assert reads["behind"] == 0 and reads["catch_up"] <= 1, reads


def log_reads(server: ServerProcess) -> dict[str, float]:
    """The server's netmeta_api_watch_log_reads_total by reason, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    address = json.loads((server.state_dir / "server" / "status.json").read_text())["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    reads = {"behind": 0.0, "catch_up": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "netmeta_api_watch_log_reads_total":
                reads[sample.labels["reason"]] = sample.value
    return reads


def test_a_follower_fails_over_to_the_other_server(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    first = server_factory("--db", postgres_url, "--auth-strategy", "noauth")
    second = server_factory("--db", postgres_url, "--auth-strategy", "noauth")

    async def follow() -> tuple[set[str], str]:
        follower = FeedFollower(Endpoints([first.url, second.url]), watch_timeout=5)
        task = asyncio.create_task(follower.run())
        try:
            await asyncio.wait_for(follower.synced.wait(), 20)
            before = first.api.network("before")
            await _until(lambda: before["id"] in follower.snapshot.networks)
            first.kill9()
            after = await asyncio.to_thread(second.api.network, "after")
            await _until(lambda: after["id"] in follower.snapshot.networks)
            return set(follower.snapshot.networks), follower.api_url
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    networks, following = asyncio.run(follow())
    assert len(networks) == 2 and following == second.url


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_token_from_one_server_is_accepted_by_the_other(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    """Servers on one PostgreSQL, each with its own state directory, are one identity service.

    The second adopts the first's token key, users and clouds at start, so
    a token issued by one is valid at the other (a component failing over
    between api_urls keeps its token, or logs in again at the next server
    with the same clouds.yaml); a user added at one logs in at the other.
    """
    first = server_factory("--db", postgres_url)
    second = server_factory("--db", postgres_url)
    assert first.state_dir != second.state_dir
    net = first.api.network("made-at-first")
    # The first server's token, at the second (401 while each had its own key).
    status, seen = second.api.as_token(first.api.token).call("GET", "/v2.0/networks")
    assert status == 200 and net["id"] in [n["id"] for n in seen["networks"]]
    assert first.api.as_token(second.api.token).get(f"/v2.0/networks/{net['id']}")["network"]["name"] == "made-at-first"
    # One admin and one service user, in both clouds.yaml; each cloud names its own server.
    for cloud in ("netmeta", "netmeta-service"):
        mine = {k: v for k, v in first.cloud(cloud).items() if k != "auth_url"}
        assert {k: v for k, v in second.cloud(cloud).items() if k != "auth_url"} == mine
    assert second.cloud("netmeta")["auth_url"].startswith(second.url)
    # A user added at the first server (its identity.json, as an operator does) logs in at the second.
    first.add_user("carol", "carol-pw", "gamma", ["member"])
    deadline = time.monotonic() + 15
    while True:
        try:
            token = second.login("carol", "carol-pw", "gamma")
            break
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    assert first.api.as_token(token).call("GET", "/v2.0/networks")[0] == 200
    # ... and one added at the second meanwhile is kept: both in the store, in both files.
    second.add_user("dave", "dave-pw", "delta", ["member"])
    deadline = time.monotonic() + 15
    while True:
        try:
            first.login("dave", "dave-pw", "delta")
            break
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    first.login("carol", "carol-pw", "gamma")


def test_a_token_revoked_at_one_server_is_refused_by_the_others(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    """``DELETE /identity/v3/auth/tokens`` at one server: the token is refused at every server on the store.

    The revocation is recorded in the store and told to the other servers by
    NOTIFY (before, each server kept its own revocations: the second server
    went on accepting the token for its whole lifetime); a server started
    later reads it from the store.
    """
    first = server_factory("--db", postgres_url)
    second = server_factory("--db", postgres_url)
    admin = first.cloud("netmeta")
    token = first.login(admin["username"], admin["password"], admin["project_name"])
    for server in (first, second):
        assert server.api.as_token(token).call("GET", "/v2.0/networks")[0] == 200
    status, _ = first.api.call("DELETE", "/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
    assert status == 204
    assert first.api.as_token(token).call("GET", "/v2.0/networks")[0] == 401
    # At the second server within a second: the NOTIFY, not the 2 s exchange with the store (nor ever, before).
    revoked = time.monotonic()
    while second.api.as_token(token).call("GET", "/v2.0/networks")[0] != 401:
        assert time.monotonic() - revoked < 1.0, "the second server still accepts the revoked token"
        time.sleep(0.02)
    assert second.api.call("GET", "/identity/v3/auth/tokens", headers={"X-Subject-Token": token})[0] == 404
    # Another token of the same user is not touched; a server started afterwards refuses the revoked one too.
    other = second.login(admin["username"], admin["password"], admin["project_name"])
    third = server_factory("--db", postgres_url)
    assert third.api.as_token(token).call("GET", "/v2.0/networks")[0] == 401
    assert third.api.as_token(other).call("GET", "/v2.0/networks")[0] == 200
    assert first.api.as_token(other).call("GET", "/v2.0/networks")[0] == 200
