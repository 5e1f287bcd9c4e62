"""Metrics after a known sequence, read back with prometheus_client's own text parser.

The API server is a real subprocess with its own endpoint (absolute counts);
the metadata app runs in this process, whose registry other tests also count
into, so those checks compare a scrape before and after.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netmeta.config import Config
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import ListenerContext, Request
from tests.builders import NET_A, VM1, MemoryPasswords, metadata_cloud

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics_address(state_dir: Path, component: str) -> str:
    status = json.loads((state_dir / component / "status.json").read_text())
    address: str = status["metrics"]
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    return address


def test_api_metrics_count_what_was_done(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(state_dir=tmp_path / "api")
    api = server.api
    net = api.network("m1")
    api.network("m2")
    for _ in range(3):
        api.get("/v2.0/networks")
    assert api.call("GET", "/v2.0/networks/no-such-id")[0] == 404
    assert api.call("POST", "/v2.0/networks", raw=b"{not json")[0] == 400
    assert api.call("GET", "/no/such/route/" + "x" * 50)[0] == 404
    api.get(f"/v2.0/networks/{net['id']}")
    revision = api.state()["revision"]

    address = metrics_address(tmp_path / "api", "server")
    status, body = fetch(f"http://{address}/metrics")
    assert status == 200
    samples = parse(body.decode())
    total = "netmeta_api_requests_total"
    assert value(samples, total, method="POST", route="/v2.0/networks", status="201") == 2
    assert value(samples, total, method="POST", route="/v2.0/networks", status="400") == 1
    assert value(samples, total, method="GET", route="/v2.0/networks", status="200") == 3
    assert value(samples, total, method="GET", route="/v2.0/networks/{id}", status="404") == 1
    assert value(samples, total, method="GET", route="/v2.0/networks/{id}", status="200") == 1
    # an unknown path is one bounded series, never the raw path
    assert value(samples, total, method="GET", route="other", status="404") == 1
    assert not any("x" * 50 in str(labels) for _, labels in samples)
    assert value(samples, "netmeta_api_request_duration_seconds_count", method="GET", route="/v2.0/networks") == 3
    assert value(samples, "netmeta_api_revision") == revision
    assert value(samples, "netmeta_api_watch_clients") == 0

    status, body = fetch(f"http://{address}/healthz")
    health = json.loads(body)
    assert status == 200 and health["component"] == "server" and health["status"] == "ok"
    assert health["revision"] == revision


def test_api_access_log_names_each_call(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory("--log-format", "json", state_dir=tmp_path / "api")
    server.api.network("logged")
    server.api.call("GET", "/v2.0/ports/nope")
    server.stop()
    lines = [json.loads(line) for line in (tmp_path / "api" / "log" / "server.log").read_text().splitlines()]
    access = [entry for entry in lines if entry["logger"] == "netmeta.server.access"
              and not entry["route"].startswith("/identity")]  # the client's own log-in comes first
    assert [(e["method"], e["route"], e["status"]) for e in access] == [
        ("POST", "/v2.0/networks", 201), ("GET", "/v2.0/ports/{id}", 404)]
    assert access[0]["peer"] == "127.0.0.1" and access[0]["bytes"] > 0 and access[0]["ms"] >= 0


def _request(path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, path, path, "", headers or [], b"", "127.0.0.1", ListenerContext("network", NET_A))


def _scrape() -> Samples:
    return parse(generate_latest(REGISTRY).decode())


async def test_metadata_metrics_and_access_log(caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Fresh log budgets: earlier tests in this process may have spent the interval's.
    from netmeta.logs import RateLimitedLog
    from netmeta.metadata import metrics as metadata_metrics

    for name in ("ACCESS", "ACCESS_REFUSED"):
        monkeypatch.setattr(metadata_metrics, name,
                            RateLimitedLog(logging.getLogger("netmeta.metadata.access"), burst=100, interval=10.0))
    snap = metadata_cloud()
    app = MetadataApp(Config(), lambda: snap, MemoryPasswords())
    metadata_metrics.flush()  # tallies left by earlier tests in this process
    before = _scrape()
    caplog.set_level(logging.INFO, logger="netmeta.metadata.access")
    for _ in range(3):
        assert (await app.handle(_request("/openstack/latest/meta_data.json"))).status == 200
    assert (await app.handle(_request("/openstack/latest/nothing-here"))).status == 404
    assert (await app.handle(_request("/latest/api/token", "PUT",
                                      [("X-aws-ec2-metadata-token-ttl-seconds", "60")]))).status == 200
    assert (await app.handle(_request("/latest/meta-data/instance-id"))).status == 200
    metadata_metrics.flush()  # what the service's tick does
    after = _scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "netmeta_metadata_requests_total"
    assert delta(total, listener="network", family="openstack", status="200") == 3
    assert delta(total, listener="network", family="openstack", status="404") == 1
    assert delta(total, listener="network", family="token", status="200") == 1
    assert delta(total, listener="network", family="ec2", status="200") == 1
    assert delta("netmeta_metadata_request_duration_seconds_count", listener="network", family="openstack") == 4
    assert delta("netmeta_metadata_tokens_issued_total") == 1

    # (a flood summary from an earlier test's interval may come first: not a request line)
    lines = [r for r in caplog.records if r.name == "netmeta.metadata.access" and "peer" in getattr(r, "fields", {})]
    assert len(lines) == 6
    fields = [getattr(r, "fields") for r in lines]
    assert fields[0]["peer"] == "127.0.0.1" and fields[0]["instance"] == VM1 and fields[0]["status"] == 200
    assert fields[0]["listener"] == "network" and fields[0]["listener_id"] == NET_A and fields[0]["bytes"] > 0
    assert fields[3]["status"] == 404 and fields[3]["path"] == "/openstack/latest/nothing-here"
    await app.close()
