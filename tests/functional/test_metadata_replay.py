"""Answers given again from memory (:class:`netmeta.metadata.http.Replays`) are the answers the app would give.

The listener keeps an answer the app marks repeatable under (listener,
caller, request bytes) and gives it again without parsing or dispatching.
These tests drive :class:`HttpProtocol` with a transport that records what is
written, count how often the app's dispatch runs (to prove the memory was
used), and hold every per-request duty to what the app does without it:
another guest's bytes, a new snapshot, the rate limit, a fresh seed, an
expiring token, the access log and metrics, and the close.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import replace
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netmeta.config import Config, RateLimitConfig
from netmeta.metadata import metrics
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import HttpProtocol, HttpShared, ListenerContext, Replays, Request
from netmeta.model.types import Snapshot
from tests.builders import NET_A, USER_DATA, VM1, MemoryPasswords, metadata_cloud

NET_A_CTX = ListenerContext("network", NET_A)
VM1_IP, VM4_IP = "192.168.50.10", "192.168.50.77"  # two guests on NET_A (see metadata_cloud)
USER_DATA_REQ = b"GET /openstack/latest/user_data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
META_REQ = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"


@pytest.fixture(autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The loop a protocol is made on: run only for answers that need I/O."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


class Recording(asyncio.Transport):
    """Keeps what is written; no socket behind it."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Cloud:
    """An app on a snapshot the test can change, its dispatch counted, and one HttpShared for its connections."""

    def __init__(self, config: Config | None = None, replays: Replays | None = None) -> None:
        self.snap = metadata_cloud()
        self.now = 1000.0
        self.app = MetadataApp(config or Config(), lambda: self.snap, MemoryPasswords(), clock=lambda: self.now)
        self.dispatched = 0
        self.shared = HttpShared(replays=replays if replays is not None else Replays())
        self.shared.caps.port_of = self.app.port_of

    def dispatch(self, request: Request) -> Any:
        self.dispatched += 1
        return self.app.dispatch(request)

    def connect(self, peer: str = VM1_IP) -> tuple[HttpProtocol, Recording]:
        protocol = HttpProtocol(self.dispatch, NET_A_CTX, self.shared)
        transport = Recording(peer)
        protocol.connection_made(transport)
        return protocol, transport

    def ask(self, request: bytes, times: int = 1, peer: str = VM1_IP) -> list[bytes]:
        """``request`` sent ``times`` on one kept-alive connection: the answers."""
        protocol, transport = self.connect(peer)
        for _ in range(times):
            protocol.data_received(request)
            while protocol.worker is not None:  # an answer that needs I/O (a password POST)
                protocol.loop.run_until_complete(asyncio.sleep(0))
        protocol.connection_lost(None)
        return transport.written


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


def test_a_repeat_is_answered_from_memory_and_the_same() -> None:
    cloud = Cloud()
    answers = cloud.ask(USER_DATA_REQ, times=5)
    assert cloud.dispatched == 1  # the other four never reached the app
    assert [status_and_body(a) for a in answers] == [(200, USER_DATA)] * 5
    assert len({without_date(a) for a in answers}) == 1
    # A new connection from the same guest is answered from memory too.
    assert status_and_body(cloud.ask(USER_DATA_REQ)[0]) == (200, USER_DATA)
    assert cloud.dispatched == 1


def test_the_same_bytes_from_another_guest_get_its_own_answer() -> None:
    cloud = Cloud()
    mine = cloud.ask(META_REQ, times=2, peer=VM1_IP)
    theirs = cloud.ask(META_REQ, times=2, peer=VM4_IP)
    assert {json.loads(status_and_body(a)[1])["name"] for a in mine} == {"vm1"}
    assert {json.loads(status_and_body(a)[1])["name"] for a in theirs} == {"vm4"}
    # A caller nobody can be tied to gets its own 404, not a guest's answer.
    stranger = cloud.ask(META_REQ, times=2, peer="192.168.50.99")
    assert [status_and_body(a)[0] for a in stranger] == [404, 404]


def test_a_new_snapshot_is_served_at_once() -> None:
    cloud = Cloud()
    assert status_and_body(cloud.ask(USER_DATA_REQ, times=2)[-1]) == (200, USER_DATA)
    instances = dict(cloud.snap.instances)
    instances[VM1] = replace(instances[VM1], user_data=base64.b64encode(b"#!/bin/sh\necho new\n").decode())
    cloud.snap = replace(cloud.snap, instances=instances, revision=cloud.snap.revision + 1)
    assert status_and_body(cloud.ask(USER_DATA_REQ)[0]) == (200, b"#!/bin/sh\necho new\n")
    cloud.snap = Snapshot(revision=cloud.snap.revision + 1)  # the guest is gone
    assert status_and_body(cloud.ask(USER_DATA_REQ)[0])[0] == 404


@pytest.mark.parametrize("enabled", [True, False])
def test_the_rate_limit_counts_every_repeat(enabled: bool) -> None:
    limits = RateLimitConfig(rate_limit_enabled=enabled, base_query_rate_limit=10, burst_query_rate_limit=5)
    cloud = Cloud(Config(rate_limiting=limits))
    protocol, transport = cloud.connect()
    for _ in range(8):
        protocol.data_received(USER_DATA_REQ)
    statuses = [status_and_body(a)[0] for a in transport.written]
    if not enabled:  # the limit is what refuses: without it every repeat is answered
        assert statuses == [200] * 8
        return
    assert statuses == [200] * 5 + [429]  # then the connection is held, unread, for the refusal pause
    assert b"Retry-After: " in transport.written[-1]
    assert cloud.dispatched == 1


def test_meta_data_json_has_a_fresh_seed_on_every_repeat() -> None:
    cloud = Cloud()
    answers = cloud.ask(META_REQ, times=4)
    seeds = {json.loads(status_and_body(a)[1])["random_seed"] for a in answers}
    assert len(seeds) == 4
    assert cloud.dispatched == 1
    assert len({len(a) for a in answers}) == 1  # the same Content-Length, always right
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(body)}".encode() in head


def test_a_token_is_checked_on_every_request() -> None:
    cloud = Cloud(Config(imds_tokens="required"))
    protocol, transport = cloud.connect()
    protocol.data_received(b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\r\n")
    token = status_and_body(transport.written[-1])[1].decode()
    get = f"GET /latest/meta-data/hostname HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n".encode()
    protocol.data_received(get)
    protocol.data_received(get)
    assert [status_and_body(a)[0] for a in transport.written[1:]] == [200, 200]
    cloud.now += 6  # the token has expired: the same bytes are refused now
    protocol.data_received(get)
    assert status_and_body(transport.written[-1])[0] == 401
    assert cloud.dispatched == 4  # every request with a token went to the app


def test_every_repeat_is_logged_and_counted() -> None:
    metrics.flush()
    cloud = Cloud()
    cloud.ask(USER_DATA_REQ, times=6)
    assert cloud.shared.access_log.count("network", NET_A, VM1_IP) == 6
    tallied = sum(n for (kind, fam, status), n in metrics._requests.items()
                  if (kind, fam, status) == ("network", "openstack", 200))
    assert tallied == 6


def test_a_repeat_that_closes_closes() -> None:
    cloud = Cloud()
    request = USER_DATA_REQ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    for _ in range(3):
        protocol, transport = cloud.connect()
        protocol.data_received(request)
        assert transport.closed
        assert b"Connection: close" in transport.written[0]
        protocol.data_received(request)  # after the close: nothing more is answered
        assert len(transport.written) == 1
        protocol.connection_lost(None)
    assert cloud.dispatched == 1


def test_the_memory_is_bounded() -> None:
    cloud = Cloud(replays=Replays(entries=8))
    for n in range(50):
        cloud.ask(f"GET /openstack/latest/user_data?n={n} HTTP/1.1\r\n\r\n".encode())
    assert len(cloud.shared.replays) <= 8


_PATHS = ["/", "/openstack", "/openstack/latest/meta_data.json", "/openstack/latest/user_data",
          "/openstack/2018-08-27/network_data.json", "/latest/meta-data/", "/latest/meta-data/hostname",
          "/2009-04-04/meta-data/public-keys/0/openssh-key", "/nope", "/openstack/latest/password",
          "/latest/api/token"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["GET", "HEAD", "POST", "PUT"]), st.sampled_from(_PATHS),
                          st.sampled_from([b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n"]),
                          st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
                          st.sampled_from([VM1_IP, VM4_IP, "192.168.50.99"])), min_size=1, max_size=12))
def test_answers_from_memory_equal_the_app_s(requests: list[tuple[str, str, bytes, str, str]]) -> None:
    with_memory, without = Cloud(), Cloud(replays=Replays(entries=0))
    for method, path, header, version, peer in requests * 2:
        request = f"{method} {path} {version}\r\nHost: x\r\n".encode() + header + b"\r\n"
        one, other = with_memory.ask(request, peer=peer), without.ask(request, peer=peer)
        assert [_comparable(a) for a in one] == [_comparable(a) for a in other]
    assert without.dispatched == 2 * len(requests)


def _comparable(answer: bytes) -> bytes:
    """An answer without what differs every time: the Date, and meta_data.json's seed (of one length)."""
    return re.sub(rb'"random_seed": "[^"]*"', b'"random_seed": ""', without_date(answer))
