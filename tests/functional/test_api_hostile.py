"""Input that cannot hurt: the reported cases, then a fuzzer over every body and query.

Every refusal must be a 4xx in Neutron's shape and leave ``/netmeta/v1/state``
(revision included) byte-for-byte unchanged; no request may ever get a 500.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.functional.conftest import Api

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def world(server: Any) -> dict[str, Any]:
    api: Api = server.api
    net = api.network("hostile-net")
    subnet = api.subnet(net["id"], "10.60.0.0/24")
    port = api.port(net["id"])
    router = api.router("hostile-router")
    instance = api.post("/netmeta/v1/instances", {"instance": {"name": "hostile-vm"}})["instance"]
    return {"net": net, "subnet": subnet, "port": port, "router": router, "instance": instance}


def state_text(api: Api) -> str:
    status, state = api.call("GET", "/netmeta/v1/state")
    assert status == 200, state
    return json.dumps(state, sort_keys=True)


def refused_unchanged(api: Api, method: str, path: str, raw: bytes, want: int | None = None) -> dict[str, Any]:
    before = state_text(api)
    status, body = api.call(method, path, raw=raw)
    assert status != 500, (path, raw[:200], body)
    assert 400 <= status < 500, (path, raw[:200], status, body)
    if want is not None:
        assert status == want, (status, body)
    assert state_text(api) == before
    assert isinstance(body, dict) and "NeutronError" in body, body
    return dict(body["NeutronError"])


# --- the reported cases ------------------------------------------------------


def test_lone_surrogate_is_refused_and_lists_keep_working(api: Api, world: dict[str, Any]) -> None:
    err = refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"name": "\\ud800"}}', 400)
    assert err["type"] == "InvalidInput" and "surrogate" in err["message"]
    # The same inside a tag, a key, an instance's meta: all refused.
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"tags": ["ok", "\\udfff"]}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"\\ud800": 1}}', 400)
    refused_unchanged(api, "POST", "/netmeta/v1/instances",
                      b'{"instance": {"name": "x", "meta": {"k": "\\ud800"}}}', 400)
    # Paired surrogates are ordinary text (an emoji) and are stored.
    emoji = api.network("\U0001F600 net")
    assert api.get(f"/v2.0/networks/{emoji['id']}")["network"]["name"] == "\U0001F600 net"


def test_invalid_utf8_nan_and_control_characters_are_400(api: Api, world: dict[str, Any]) -> None:
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"name": "\xed\xa0\x80"}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"name": "\xff"}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"mtu": NaN}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"name": "a\\u0000b"}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", b'{"network": {"name": "two\\nlines"}}', 400)
    refused_unchanged(api, "POST", "/v2.0/networks", "\ufeff{}".encode("utf-16"), 400)


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deep_nesting_is_400_never_500(api: Api, world: dict[str, Any], depth: int) -> None:
    raw = b'{"network": {"binding": ' + b"[" * depth + b"]" * depth + b"}}"
    err = refused_unchanged(api, "POST", "/v2.0/networks", raw[: 100_000], 400)
    assert "Malformed" in err["message"]
    # Brackets inside strings do not count.
    net = api.network("[" * 200)
    assert net["name"] == "[" * 200


def test_body_size_is_bounded_before_parsing(api: Api, world: dict[str, Any]) -> None:
    raw = json.dumps({"network": {"description": "x" * 200_000}}).encode()
    refused_unchanged(api, "POST", "/v2.0/networks", raw, 413)


def test_ten_thousand_fixed_ips_and_the_neutron_limit(api: Api, world: dict[str, Any]) -> None:
    sub = world["subnet"]["id"]
    body = {"port": {"network_id": world["net"]["id"], "fixed_ips": [{"subnet_id": sub}] * 10_000}}
    refused_unchanged(api, "POST", "/v2.0/ports", json.dumps(body).encode())  # 413: too big to even read
    six = {"port": {"network_id": world["net"]["id"], "fixed_ips": [{"subnet_id": sub}] * 6}}
    err = refused_unchanged(api, "POST", "/v2.0/ports", json.dumps(six).encode(), 400)
    assert err["type"] == "InvalidInput" and "fixed ips per port" in err["message"]
    refused_unchanged(api, "PUT", f"/v2.0/ports/{world['port']['id']}",
                      json.dumps({"port": {"fixed_ips": six["port"]["fixed_ips"]}}).encode(), 400)
    five = api.port(world["net"]["id"], fixed_ips=[{"subnet_id": sub}] * 5)
    assert len(five["fixed_ips"]) == 5


@pytest.mark.parametrize("hostname", ["../../etc", "a/b", "-lead", "trail-", "a..b", "x" * 64, "sp ace"])
def test_bad_hostnames_are_refused(api: Api, world: dict[str, Any], hostname: str) -> None:
    body = {"instance": {"name": "h", "hostname": hostname}}
    refused_unchanged(api, "POST", "/netmeta/v1/instances", json.dumps(body).encode(), 400)
    port = {"port": {"network_id": world["net"]["id"], "dns_name": hostname}}
    refused_unchanged(api, "POST", "/v2.0/ports", json.dumps(port).encode(), 400)


def test_good_hostnames_and_nova_meta_limits(api: Api, world: dict[str, Any]) -> None:
    ok = api.post("/netmeta/v1/instances", {"instance": {"name": "h", "hostname": "web-1.example"}})["instance"]
    assert ok["hostname"] == "web-1.example"
    for meta in ({"a/b": "v"}, {"": "v"}, {"k" * 256: "v"}, {"k": "v" * 256}, {"k": 1}):
        body = {"instance": {"name": "m", "meta": meta}}
        refused_unchanged(api, "POST", "/netmeta/v1/instances", json.dumps(body).encode(), 400)
    body = {"instance": {"name": "m", "meta": {"role:web.tier_1 x-y": "v" * 255}}}
    api.post("/netmeta/v1/instances", body)


def test_a_bad_value_already_stored_breaks_no_list(server_factory: Any, tmp_path: Path) -> None:
    """A lone surrogate written by an older version (straight into the store)."""
    first = server_factory(state_dir=tmp_path / "old")
    net = first.api.network("fine")
    first.stop()
    db = sqlite3.connect(tmp_path / "old" / "netmeta.sqlite")
    (body,) = db.execute("SELECT body FROM networks WHERE id = ?", (net["id"],)).fetchone()
    db.execute("UPDATE networks SET body = ? WHERE id = ?", (body.replace('"fine"', '"bad\\ud800"'), net["id"]))
    db.commit()
    db.close()
    again = server_factory(state_dir=tmp_path / "old")
    for path in ("/v2.0/networks", f"/v2.0/networks/{net['id']}", "/v2.0/networks?name=x",
                 "/v2.0/networks?fields=name", "/netmeta/v1/state"):
        status, answer = again.api.call("GET", path)
        assert status == 200, (path, answer)
        text = json.dumps(answer, ensure_ascii=False)
        text.encode("utf-8")  # strict: would raise on a lone surrogate
    names = [n["name"] for n in again.api.get("/v2.0/networks")["networks"]]
    assert names == ["bad?"]


# --- the fuzzer ---------------------------------------------------------------

KEYS = {
    "networks": ["name", "description", "admin_state_up", "tags", "shared", "mtu", "router:external",
                 "port_security_enabled", "availability_zone_hints", "dns_domain", "project_id", "tenant_id",
                 "id", "status"],
    "subnets": ["name", "network_id", "cidr", "ip_version", "gateway_ip", "enable_dhcp", "dns_nameservers",
                "host_routes", "allocation_pools", "service_types", "project_id"],
    "ports": ["name", "network_id", "fixed_ips", "device_id", "device_owner", "mac_address", "dns_name",
              "binding:host_id", "binding:profile", "allowed_address_pairs", "admin_state_up", "tags"],
    "routers": ["name", "description", "external_gateway_info", "routes", "admin_state_up"],
}
TEXTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "\udfff", "\x00", "a\nb", "../../etc", "x" * 300, "10.60.0.7", "10.60.0.0/24",
                     "fa:16:3e:00:00:01", MISSING, "network:dhcp", "true", "-1", "1e400", "", " "]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), TEXTS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(TEXTS, st.sampled_from(["subnet_id", "ip_address",
                                                                                   "start", "end"])),
                                                 inner, max_size=4)), max_leaves=12)


def _resource(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(KEYS[kind]) | TEXTS, VALUES, max_size=5)


def _live_ids(world: dict[str, Any]) -> dict[str, str]:
    return {"networks": world["net"]["id"], "subnets": world["subnet"]["id"], "ports": world["port"]["id"],
            "routers": world["router"]["id"], "instances": world["instance"]["id"]}


@st.composite
def requests(draw: st.DrawFn, ids: dict[str, str]) -> tuple[str, str, bytes | None]:
    kind = draw(st.sampled_from(sorted(KEYS)))
    singular = kind[:-1]
    target = draw(st.sampled_from([ids[kind], MISSING, "%ED%A0%80", "..%2F..", "x" * 300]))
    wrap = draw(st.sampled_from(["ok", "ok", "bare", "extra"]))
    inner = draw(_resource(kind))
    body: Any = {singular: inner} if wrap == "ok" else inner if wrap == "bare" else {singular: inner, "x": 1}
    raw = json.dumps(body).encode()
    form = draw(st.sampled_from(["create", "update", "list", "show", "iface", "tags", "instance", "password",
                                 "watch", "garbage"]))
    if form == "create":
        return "POST", f"/v2.0/{kind}", raw
    if form == "update":
        return "PUT", f"/v2.0/{kind}/{target}", raw
    if form in ("list", "show", "watch"):
        pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS[kind] + ["fields", "limit", "marker", "sort_key",
                                                                      "sort_dir", "since", "timeout"]) | TEXTS,
                                        TEXTS), max_size=4))
        query = urllib.parse.urlencode(pairs, errors="surrogatepass") if pairs else ""
        if draw(st.booleans()):
            query += "&%ED%A0%80=%FF&bad=%zz"
        if form == "watch":
            return "GET", f"/netmeta/v1/watch?timeout=0&{query}", None
        path = f"/v2.0/{kind}" + (f"/{target}" if form == "show" else "")
        return "GET", f"{path}?{query}", None
    if form == "iface":
        action = draw(st.sampled_from(["add_router_interface", "remove_router_interface"]))
        return "PUT", f"/v2.0/routers/{ids['routers']}/{action}", json.dumps(draw(VALUES)).encode()
    if form == "tags":
        return "PUT", f"/v2.0/{kind}/{target}/tags", json.dumps({"tags": draw(VALUES)}).encode()
    if form == "instance":
        keys = ["name", "hostname", "user_data", "meta", "networks", "key_name", "public_key", "flavor"]
        fields = draw(st.dictionaries(st.sampled_from(keys) | TEXTS, VALUES, max_size=5))
        return "POST", "/netmeta/v1/instances", json.dumps({"instance": fields}).encode()
    if form == "password":
        return "POST", f"/netmeta/v1/instances/{ids['instances']}/password", json.dumps(draw(VALUES)).encode()
    return "POST", f"/v2.0/{kind}", draw(st.binary(max_size=64))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_body_and_query(api: Api, world: dict[str, Any], data: st.DataObject) -> None:
    method, path, raw = data.draw(requests(_live_ids(world)))
    before = state_text(api)
    status, body = api.call(method, path, raw=raw)
    assert status != 500, (method, path, raw, body)
    if status >= 400:
        assert isinstance(body, dict) and "NeutronError" in body, (method, path, status, body)
        assert state_text(api) == before, (method, path, raw, status, body)
