"""Neutron's default policy as pure tables: who sees which stored document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netmeta.server import policy
from netmeta.server.errors import BadRequest, Forbidden, NotFound
from netmeta.server.standard_attrs import Caller

ALICE = Caller("alpha", frozenset({"member", "reader"}))
READER = Caller("alpha", frozenset({"reader"}))
ADMIN = Caller("admin", frozenset({"admin", "member", "reader"}))
SERVICE = Caller("service", frozenset({"service"}))


def doc(**fields: Any) -> str:
    base = {"id": fields.pop("id", "x"), "name": fields.pop("name", ""), "tenant_id": fields.get("project_id"),
            "project_id": fields.pop("project_id")}
    base.update(fields)
    return json.dumps(base, separators=(",", ":"))


NETS = [doc(id="n-alpha", project_id="alpha"), doc(id="n-beta", project_id="beta"),
        doc(id="n-shared", project_id="beta", shared=True), doc(id="n-ext", project_id="beta", **{"router:external": True})]


@pytest.mark.parametrize("kind,body,alice_sees", [
    ("networks", NETS[0], True),
    ("networks", NETS[1], False),
    ("networks", NETS[2], True),
    ("networks", NETS[3], True),
    ("subnets", doc(project_id="beta", network_id="n-shared"), True),
    ("subnets", doc(project_id="beta", network_id="n-beta"), False),
    ("ports", doc(project_id="beta", network_id="n-alpha"), True),   # alpha owns the network
    ("ports", doc(project_id="beta", network_id="n-shared"), False),
    ("ports", doc(project_id="alpha", network_id="n-beta"), True),
    # A nested "project_id" naming alpha must not make beta's document visible.
    ("ports", doc(project_id="beta", network_id="n-beta", **{"binding:profile": {"project_id": "alpha"}}), False),
    # Names that look like JSON stay strings.
    ("ports", doc(name='{"project_id":"alpha"}', project_id="beta", network_id="n-beta"), False),
    ("ports", doc(name='{', project_id="alpha", network_id="n-beta"), True),
    ("routers", doc(project_id="beta"), False),
    ("routers", doc(project_id="alpha"), True),
])
def test_visible_bodies(kind: str, body: str, alice_sees: bool) -> None:
    assert policy.visible_bodies(ALICE, kind, [body], NETS) == ([body] if alice_sees else [])
    assert policy.visible_bodies(ADMIN, kind, [body], NETS) == [body]
    assert policy.visible_bodies(SERVICE, kind, [body], NETS) == [body]
    nets = {json.loads(n)["id"]: json.loads(n) for n in NETS}
    assert policy.visible(ALICE, kind, json.loads(body), lambda k, i: nets.get(i)) is alice_sees


def lookup(kind: str, obj_id: str) -> dict[str, Any] | None:
    return {json.loads(n)["id"]: json.loads(n) for n in NETS}.get(obj_id) if kind == "networks" else None


def test_create_rules() -> None:
    with pytest.raises(BadRequest, match="requires admin privileges"):
        policy.check_create(ALICE, "networks", {"project_id": "beta"}, lookup)
    policy.check_create(ADMIN, "networks", {"project_id": "beta", "shared": True}, lookup)
    with pytest.raises(Forbidden):
        policy.check_create(ALICE, "networks", {"shared": True}, lookup)
    with pytest.raises(Forbidden):
        policy.check_create(READER, "networks", {}, lookup)
    with pytest.raises(NotFound):
        policy.check_create(ALICE, "subnets", {"network_id": "n-beta"}, lookup)
    with pytest.raises(Forbidden):
        policy.check_create(ALICE, "subnets", {"network_id": "n-shared"}, lookup)
    policy.check_create(ALICE, "ports", {"network_id": "n-shared"}, lookup)
    for attr in ({"mac_address": "fa:16:3e:00:00:01"}, {"fixed_ips": [{"ip_address": "10.0.0.5"}]},
                 {"device_owner": "network:dhcp"}, {"binding:host_id": "h"}):
        with pytest.raises(Forbidden):
            policy.check_create(ALICE, "ports", {"network_id": "n-shared", **attr}, lookup)
    policy.check_create(ALICE, "ports", {"network_id": "n-alpha", "mac_address": "fa:16:3e:00:00:01"}, lookup)
    policy.check_create(SERVICE, "ports", {"network_id": "n-beta", "project_id": "beta"}, lookup)


def test_feed_is_admin_and_service_only() -> None:
    policy.check_feed(ADMIN)
    policy.check_feed(SERVICE)
    with pytest.raises(Forbidden):
        policy.check_feed(ALICE)
