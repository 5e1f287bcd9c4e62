"""The change feed's contract, and what survives a crash or a shared database.

* a watcher following ``since`` sees every revision exactly once, in order,
  while several threads write concurrently, and replaying the events over
  the first list gives exactly the final list;
* a ``since`` older than the retained log is 410 ``ResourceVersionTooOld``;
* a committed change survives ``kill -9`` of the server;
* the same flow runs on PostgreSQL, in a throwaway cluster this test starts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from netmeta.model.types import STATE_KINDS
from tests.functional.conftest import Api, ServerProcess
from tests.pg import postgres_cluster



def apply_events(state: dict[str, Any], events: list[dict[str, Any]]) -> None:
    for event in events:
        table = {o["id"]: o for o in state[event["kind"]]}
        if event["type"] == "DELETED":
            table.pop(event["object"]["id"], None)
        else:
            table[event["object"]["id"]] = event["object"]
        state[event["kind"]] = list(table.values())


def by_id(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {o["id"]: o for o in state[k]} for k in STATE_KINDS}


def test_concurrent_writers_watcher_sees_every_revision_once(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    api = server.api
    net = api.network("watched")
    api.subnet(net["id"], "10.70.0.0/16")
    start = api.state()
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def watcher() -> None:
        since = start["revision"]
        try:
            while True:
                body = api.get(f"/netmeta/v1/watch?since={since}&timeout=0.5")
                seen.extend(body["events"])
                since = body["revision"]
                if done.is_set() and not body["events"]:
                    return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def writer(index: int) -> None:
        try:
            for n in range(15):
                port = api.port(net["id"], name=f"w{index}-{n}")
                if n % 3 == 0:
                    api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"name": "renamed"}})
                if n % 5 == 0:
                    api.ok("DELETE", f"/v2.0/ports/{port['id']}")
        except BaseException as exc:
            errors.append(exc)

    watch_thread = threading.Thread(target=watcher)
    watch_thread.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    watch_thread.join(timeout=30)
    assert not errors, errors
    final = api.state()
    revisions = [e["revision"] for e in seen]
    assert revisions == list(range(start["revision"] + 1, final["revision"] + 1))
    replayed = {k: list(start[k]) for k in STATE_KINDS}
    apply_events(replayed, seen)
    assert by_id(replayed) == by_id(final)


def test_watch_waits_then_wakes_quickly(server_factory: Callable[..., ServerProcess]) -> None:
    api = server_factory().api
    revision = api.state()["revision"]
    began = time.monotonic()
    assert api.get(f"/netmeta/v1/watch?since={revision}&timeout=0.3") == {"revision": revision, "events": []}
    assert time.monotonic() - began >= 0.25
    result: dict[str, Any] = {}

    def watch() -> None:
        result.update(api.get(f"/netmeta/v1/watch?since={revision}&timeout=20"))
        result["at"] = time.monotonic()

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.3)  # let the watcher park; the assertion below is about wake-up, not this pause
    wrote = time.monotonic()
    net = api.network("wake")
    thread.join(timeout=20)
    assert [(e["type"], e["kind"], e["object"]["id"]) for e in result["events"]] == [("ADDED", "networks", net["id"])]
    assert result["at"] - wrote < 0.5


def test_stale_since_is_410(server_factory: Callable[..., ServerProcess]) -> None:
    api = server_factory("--change-log-retention", "5").api
    for n in range(12):
        api.network(f"churn{n}")
    status, body = api.call("GET", "/netmeta/v1/watch?since=1&timeout=0")
    assert status == 410 and body["NeutronError"]["type"] == "ResourceVersionTooOld"
    state = api.state()
    ok = api.get(f"/netmeta/v1/watch?since={state['revision'] - 3}&timeout=0")
    assert [e["revision"] for e in ok["events"]] == [state["revision"] - 2, state["revision"] - 1, state["revision"]]


def test_committed_change_survives_kill_9(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = server_factory(state_dir=tmp_path / "crash")
    net = server.api.network("durable")
    server.api.subnet(net["id"], "10.80.0.0/24")
    before = server.api.state()
    server.kill9()
    again = server_factory(state_dir=tmp_path / "crash")
    assert again.api.state() == before
    assert again.api.port(net["id"])["fixed_ips"][0]["ip_address"] == "10.80.0.3"  # .2 is the DHCP port


# --- PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway cluster on a unix socket in a temp dir, always stopped (tests/pg.py)."""
    with postgres_cluster() as url:
        yield url


def test_postgresql_flow_shared_by_two_servers(
    server_factory: Callable[..., ServerProcess], postgres_url: str
) -> None:
    first = server_factory("--db", postgres_url)
    second = server_factory("--db", postgres_url)
    api: Api = first.api
    net = api.network("pg-net")
    subnet = api.subnet(net["id"], "192.168.111.0/24", gateway_ip=None)
    router = api.router("pg-router")
    gw_net = api.network("pg-gw")
    gw_subnet = api.subnet(gw_net["id"], "172.31.0.0/24")
    api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": gw_subnet["id"]})
    ports = second.api.get("/v2.0/ports")["ports"]
    ips = sorted(f["ip_address"] for p in ports for f in p["fixed_ips"])
    assert ips == ["172.31.0.1", "172.31.0.2", "192.168.111.1"]
    assert subnet["gateway_ip"] is None
    # A watcher on the second server sees a write made through the first.
    revision = second.api.state()["revision"]
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(second.api.get(f"/netmeta/v1/watch?since={revision}&timeout=10"))
    )
    thread.start()
    time.sleep(0.2)
    port = api.port(net["id"])
    thread.join(timeout=15)
    # (The project's first port also made its default group: those events come first.)
    assert [e["object"]["id"] for e in result["events"] if e["kind"] == "ports"] == [port["id"]]
    # Conflicts and rollbacks behave the same on PostgreSQL.
    before = api.state()
    status, body = api.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"],
                                                              "fixed_ips": [{"ip_address": "192.168.111.1"}]}})
    assert status == 409 and body["NeutronError"]["type"] == "IpAddressInUse"
    assert second.api.state() == before
