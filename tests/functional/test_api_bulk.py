"""Neutron's bulk create: ``POST /v2.0/networks`` with ``{"networks": [...]}``, and the same for subnets and ports.

One request, one transaction: every item is created, or — when any item is
refused — nothing is, and the answer is that item's Neutron error.
"""

from __future__ import annotations

import json
from typing import Any

from tests.functional.conftest import Api
from tests.functional.test_api_hostile import refused_unchanged, state_text

MISSING = "00000000-0000-4000-8000-000000000000"


def bulk(api: Api, kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = api.call("POST", f"/v2.0/{kind}", {kind: items})
    assert status == 201, body
    assert set(body) == {kind}
    return list(body[kind])


def test_bulk_creates_networks_subnets_and_ports_in_order(api: Api) -> None:
    before = api.state()["revision"]
    nets = bulk(api, "networks", [{"name": "bulk-a"}, {"network": {"name": "bulk-b", "mtu": 1400}}])
    assert [n["name"] for n in nets] == ["bulk-a", "bulk-b"] and nets[1]["mtu"] == 1400
    subnets = bulk(api, "subnets", [
        {"network_id": nets[0]["id"], "cidr": "10.90.0.0/24", "ip_version": 4},
        {"network_id": nets[1]["id"], "cidr": "10.90.1.0/24", "ip_version": 4, "gateway_ip": None},
    ])
    assert [s["network_id"] for s in subnets] == [n["id"] for n in nets]
    ports = bulk(api, "ports", [{"network_id": nets[0]["id"], "name": f"bulk-p{i}"} for i in range(3)]
                 + [{"network_id": nets[1]["id"], "binding:host_id": "host-2"}])
    assert [p["fixed_ips"][0]["ip_address"] for p in ports[:3]] == ["10.90.0.3", "10.90.0.4", "10.90.0.5"]
    assert ports[3]["binding:host_id"] == "host-2"
    # Each is an ordinary resource: listed, shown, with its DHCP port, and one event apiece in the feed.
    for net, subnet in zip(nets, subnets):
        shown = api.get(f"/v2.0/networks/{net['id']}")["network"]
        assert shown["subnets"] == [subnet["id"]]
        dhcp = api.get(f"/v2.0/ports?network_id={net['id']}&device_owner=network:dhcp")["ports"]
        assert len(dhcp) == 1
    changes = api.get(f"/netmeta/v1/watch?since={before}&timeout=0")
    created = {e["object"]["id"] for e in changes["events"] if e["type"] == "ADDED"}
    assert {o["id"] for o in nets + subnets + ports} <= created


def test_a_bulk_with_one_bad_item_changes_nothing_and_answers_its_error(api: Api) -> None:
    [net] = bulk(api, "networks", [{"name": "bulk-atomic"}])
    api.subnet(net["id"], "10.91.0.0/24")
    ports_before = len(api.get(f"/v2.0/ports?network_id={net['id']}")["ports"])
    good = {"network_id": net["id"]}
    # The third of four items names a network that does not exist: 404, none of the four is created.
    err = refused_unchanged(api, "POST", "/v2.0/ports",
                            _raw({"ports": [good, good, {"network_id": MISSING}, good]}), 404)
    assert err["type"] == "NetworkNotFound"
    # Two items asking for one address: the second is 409 IpAddressInUse, and the first is rolled back with it.
    fixed = {**good, "fixed_ips": [{"ip_address": "10.91.0.50"}]}
    err = refused_unchanged(api, "POST", "/v2.0/ports", _raw({"ports": [fixed, fixed]}), 409)
    assert err["type"] == "IpAddressInUse"
    assert len(api.get(f"/v2.0/ports?network_id={net['id']}")["ports"]) == ports_before
    # A subnet overlapping an earlier item of the same bulk: 400 InvalidInput, neither subnet exists.
    [other] = bulk(api, "networks", [{"name": "bulk-overlap"}])
    err = refused_unchanged(api, "POST", "/v2.0/subnets", _raw({"subnets": [
        {"network_id": other["id"], "cidr": "10.92.0.0/24", "ip_version": 4},
        {"network_id": other["id"], "cidr": "10.92.0.0/25", "ip_version": 4}]}), 400)
    assert err["type"] == "InvalidInput" and "overlaps" in err["message"]
    assert api.get(f"/v2.0/subnets?network_id={other['id']}")["subnets"] == []
    # An attribute Neutron does not know, in the last item: 400 before anything is looked at.
    names = {n["name"] for n in api.get("/v2.0/networks")["networks"]}
    err = refused_unchanged(api, "POST", "/v2.0/networks",
                            _raw({"networks": [{"name": "bulk-never-1"}, {"name": "bulk-never-2", "colour": 1}]}), 400)
    assert "Unrecognized attribute" in err["message"]
    assert not {"bulk-never-1", "bulk-never-2"} & names


def test_bulk_garbage_is_400_never_500(api: Api) -> None:
    for raw in (b'{"networks": []}', b'{"networks": {}}', b'{"networks": "x"}', b'{"networks": [1, 2]}',
                b'{"networks": [null]}', b'{"networks": [{}], "network": {}}', b'{"networks": [[]]}',
                b'{"networks": [{"network": {}, "x": 1}]}', b'{"ports": [{"network_id": 7}]}'):
        path = "/v2.0/ports" if b"ports" in raw else "/v2.0/networks"
        refused_unchanged(api, "POST", path, raw, 400)


def test_bulk_policy_holds_for_every_item(server: Any, api: Api) -> None:
    """A member may not put a port on another project's network by hiding it among its own."""
    [theirs] = bulk(api, "networks", [{"name": "bulk-admins", "project_id": "someone-else"}])
    member = server.user_api("bulk-member", "bulk-project", ["member"])
    mine = member.network("bulk-mine")
    before = state_text(api)
    status, body = member.call("POST", "/v2.0/ports", {"ports": [{"network_id": mine["id"]},
                                                                 {"network_id": theirs["id"]}]})
    assert status == 404 and body["NeutronError"]["type"] == "NetworkNotFound", (status, body)
    assert state_text(api) == before


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()
