"""Request-body validation and the list query language, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from netmeta.server import filters
from netmeta.server.errors import BadRequest, NeutronError, NotFound
from netmeta.server.instances import sanitize_hostname
from netmeta.server.validation import as_bool, bulk_bodies, project_of, resource_body


@pytest.mark.parametrize(
    "raw,kind,creating,error",
    [
        ({"network": {"name": "x"}}, "networks", True, None),
        ({"network": {"name": "x", "colour": 1}}, "networks", True, "Unrecognized attribute"),
        ({"network": {"id": "x"}}, "networks", True, "read-only"),
        ({"subnet": {"network_id": "n"}}, "subnets", False, "read-only"),
        ({"subnet": {"network_id": "n"}}, "subnets", True, None),
        ({"networks": [{}]}, "networks", True, "Resource body required"),
        ({"network": []}, "networks", True, "must be an object"),
        ([], "ports", True, "Resource body required"),
    ],
)
def test_resource_body(raw: Any, kind: str, creating: bool, error: str | None) -> None:
    if error is None:
        assert resource_body(raw, kind, creating) == raw[kind[:-1]]
    else:
        with pytest.raises(BadRequest, match=error):
            resource_body(raw, kind, creating)


def test_bulk_bodies_unwraps_bare_and_wrapped_items() -> None:
    assert bulk_bodies({"network": {"name": "x"}}, "networks") is None  # one resource: not bulk
    assert bulk_bodies({"networks": [{"name": "a"}, {"network": {"name": "b"}}]}, "networks") == [
        {"name": "a"}, {"name": "b"}]


@pytest.mark.parametrize(
    "raw,error",
    [
        ({"networks": []}, "Resources required"),
        ({"networks": {"name": "a"}}, "must be a list"),
        ({"networks": ["a"]}, "must be an object"),
        ({"networks": [{"name": "a"}, None]}, "must be an object"),
        ({"networks": [{"name": "a"}], "network": {}}, "Extra top-level keys"),
        ({"networks": [{"name": "a"}, {"colour": 1}]}, "Unrecognized attribute"),
        ({"networks": [{"id": "x"}]}, "read-only"),
        ({"networks": [{"network": {"name": "a"}, "name": "b"}]}, "Extra top-level keys"),
    ],
)
def test_bulk_bodies_refuses_any_bad_item(raw: Any, error: str) -> None:
    with pytest.raises(BadRequest, match=error) as caught:
        bulk_bodies(raw, "networks")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "value,expected",
    [(True, True), (False, False), ("true", True), ("False", False), (1, True), (0, False), ("1", True)],
)
def test_as_bool(value: object, expected: bool) -> None:
    assert as_bool(value, "x") is expected


@pytest.mark.parametrize("value", ["yes", 2, None, [], 1.0])
def test_as_bool_refuses(value: object) -> None:
    with pytest.raises(BadRequest):
        as_bool(value, "x")


@pytest.mark.parametrize(
    "body,header,expected",
    [({}, None, "default"), ({}, "hdr", "hdr"), ({"tenant_id": "t"}, "hdr", "t"),
     ({"project_id": "p", "tenant_id": "p"}, None, "p")],
)
def test_project_of(body: dict[str, Any], header: str | None, expected: str) -> None:
    assert project_of(body, header, "default") == expected


def test_project_of_mismatch() -> None:
    with pytest.raises(BadRequest):
        project_of({"project_id": "a", "tenant_id": "b"}, None, "d")


PORTS = [
    {"id": "1", "name": "a", "admin_state_up": True, "device_owner": "network:dhcp", "tags": ["x", "y"],
     "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.2"}], "network_id": "n1"},
    {"id": "2", "name": "b", "admin_state_up": False, "device_owner": "", "tags": ["y"],
     "fixed_ips": [{"subnet_id": "s2", "ip_address": "10.1.0.5"}], "network_id": "n2"},
    {"id": "3", "name": "c", "admin_state_up": True, "device_owner": "compute:nova", "tags": [],
     "fixed_ips": [], "network_id": "n1"},
]


@pytest.mark.parametrize(
    "query,ids",
    [
        ([], ["1", "2", "3"]),
        ([("name", "a"), ("name", "c")], ["1", "3"]),  # repeated: OR
        ([("network_id", "n1"), ("name", "c")], ["3"]),  # different: AND
        ([("admin_state_up", "false")], ["2"]),
        ([("admin_state_up", "True")], ["1", "3"]),
        ([("device_owner", "")], ["2"]),
        ([("fixed_ips", "ip_address=10.1.0.5")], ["2"]),
        ([("fixed_ips", "subnet_id=s1")], ["1"]),
        ([("fixed_ips", "ip_address_substr=10.")], ["1", "2"]),
        ([("tags", "x,y")], ["1"]),
        ([("tags-any", "x,y")], ["1", "2"]),
        ([("not-tags-any", "y")], ["3"]),
        ([("not-tags", "x,y")], ["2", "3"]),
        ([("fields", "id")], ["1", "2", "3"]),
    ],
)
def test_filters(query: list[tuple[str, str]], ids: list[str]) -> None:
    wanted, _ = filters.parse("ports", query)
    assert [o["id"] for o in filters.apply(PORTS, wanted)] == ids


@pytest.mark.parametrize("query", [[("colour", "red")], [("admin_state_up", "maybe")], [("network", "n1")]])
def test_unknown_or_bad_filters_are_400(query: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        filters.parse("ports", query)


def test_fields_sort_and_paging() -> None:
    _, controls = filters.parse("ports", [("sort_key", "name"), ("sort_dir", "desc"), ("limit", "2"),
                                          ("fields", "id,name")])
    page, links = filters.sort_and_page("ports", PORTS, controls, "http://x/v2.0/ports")
    assert [filters.select_fields(o, filters.field_list(controls)) for o in page] == [
        {"id": "3", "name": "c"}, {"id": "2", "name": "b"}]
    assert links == [{"rel": "next", "href": "http://x/v2.0/ports?limit=2&marker=2"}]
    _, controls = filters.parse("ports", [("marker", "nope")])
    with pytest.raises(NotFound):
        filters.sort_and_page("ports", PORTS, controls, "")


@pytest.mark.parametrize(
    "name,hostname",
    # Nova's own answers (tests/upstream checks many more against its code).
    [("vm1", "vm1"), ("My VM_1", "my-vm-1"), ("--x--", "x"), ("ü", "ü"), ("a.b", "a-b"),
     ("x" * 80, "x" * 63), ("a  b", "a--b"), ("café", "café"), ("tab\tname", "tabname"),
     ("###", "Server-u1"), ("日本", "Server-u1")],
)
def test_sanitize_hostname(name: str, hostname: str) -> None:
    assert sanitize_hostname(name, "u1") == hostname


def test_error_body_shape() -> None:
    err = NeutronError("boom", "Something")
    assert err.body() == {"NeutronError": {"type": "Something", "message": "boom", "detail": ""}}
