"""Every refusal: its status, its Neutron error type, and that nothing changed.

Each case is a request against a small fixed world; before and after it the
whole ``/netmeta/v1/state`` (revision included) must be byte-for-byte the
same: one transaction per request, rolled back whole on failure.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.functional.conftest import Api

World = dict[str, Any]


@pytest.fixture(scope="module")
def world(server: Any) -> World:
    api: Api = server.api
    w: World = {}
    w["net"] = api.network("errors-net")
    w["subnet"] = api.subnet(w["net"]["id"], "10.50.0.0/24")  # gateway .1, DHCP port .2
    w["tiny_net"] = api.network("errors-tiny")
    # /30: hosts .1 and .2; gateway .1, the DHCP port takes .2 — nothing left.
    w["tiny"] = api.subnet(w["tiny_net"]["id"], "10.51.0.0/30")
    w["nogw_net"] = api.network("errors-nogw")
    w["nogw"] = api.subnet(w["nogw_net"]["id"], "10.52.0.0/24", gateway_ip=None)
    w["port"] = api.port(w["net"]["id"], fixed_ips=[{"ip_address": "10.50.0.10"}])
    w["router"] = api.router("errors-router")
    w["iface"] = api.ok("PUT", f"/v2.0/routers/{w['router']['id']}/add_router_interface",
                        {"subnet_id": w["subnet"]["id"]})
    w["free_port"] = api.port(w["nogw_net"]["id"])
    w["instance"] = api.post("/netmeta/v1/instances", {"instance": {"name": "errors-vm"}})["instance"]
    api.post(f"/netmeta/v1/instances/{w['instance']['id']}/password", {"password": "set-once"})
    return w


MISSING = "00000000-0000-4000-8000-000000000000"
Case = tuple[str, str, str, Callable[[World], Any], int, str]


def sub(path: str) -> Callable[[World], str]:
    return lambda w: path.format(**{k: v["id"] if isinstance(v, dict) and "id" in v else v for k, v in w.items()})


CASES: list[tuple[str, str, Callable[[World], str], Any, int, str]] = [
    # id, method, path, body (or callable), status, type
    ("bad cidr", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.60.0.0/33", "ip_version": 4}}, 400, "InvalidInput"),
    ("host bits in cidr", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.60.0.5/24", "ip_version": 4}}, 400, "InvalidInput"),
    ("cidr version mismatch", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "fd00::/64", "ip_version": 4}}, 400, "InvalidInput"),
    ("gateway outside subnet", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.61.0.0/24", "gateway_ip": "10.99.0.1"}},
     400, "InvalidInput"),
    ("overlapping subnet on one network", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.50.0.128/25"}}, 400, "InvalidInput"),
    ("pool start after end", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.62.0.0/24",
                           "allocation_pools": [{"start": "10.62.0.20", "end": "10.62.0.10"}]}},
     400, "InvalidAllocationPool"),
    ("pool outside subnet", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.62.0.0/24",
                           "allocation_pools": [{"start": "10.62.0.20", "end": "10.62.1.10"}]}},
     400, "OutOfBoundsAllocationPool"),
    ("pool holds the gateway", "POST", sub("/v2.0/subnets"),
     lambda w: {"subnet": {"network_id": w["net"]["id"], "cidr": "10.62.0.0/24",
                           "allocation_pools": [{"start": "10.62.0.1", "end": "10.62.0.10"}]}},
     409, "GatewayConflictWithAllocationPools"),
    ("subnet on missing network", "POST", sub("/v2.0/subnets"),
     {"subnet": {"network_id": MISSING, "cidr": "10.63.0.0/24"}}, 404, "NetworkNotFound"),
    ("malformed json", "POST", sub("/v2.0/networks"), b"{not json", 400, "HTTPBadRequest"),
    ("wrong type", "POST", sub("/v2.0/networks"), {"network": {"name": 5}}, 400, "InvalidInput"),
    ("wrong boolean", "POST", sub("/v2.0/networks"), {"network": {"admin_state_up": "maybe"}}, 400, "InvalidInput"),
    ("unknown attribute", "POST", sub("/v2.0/networks"), {"network": {"colour": "red"}}, 400, "HTTPBadRequest"),
    ("missing wrapper", "POST", sub("/v2.0/networks"), {"name": "x"}, 400, "HTTPBadRequest"),
    ("read-only on update", "PUT", sub("/v2.0/networks/{net}"), {"network": {"id": "x"}}, 400, "HTTPBadRequest"),
    ("bad filter", "GET", sub("/v2.0/ports?colour=red"), None, 400, "HTTPBadRequest"),
    ("bad boolean filter", "GET", sub("/v2.0/networks?shared=perhaps"), None, 400, "InvalidInput"),
    ("unknown network", "GET", sub(f"/v2.0/networks/{MISSING}"), None, 404, "NetworkNotFound"),
    ("unknown subnet", "PUT", sub(f"/v2.0/subnets/{MISSING}"), {"subnet": {"name": "x"}}, 404, "SubnetNotFound"),
    ("unknown port", "DELETE", sub(f"/v2.0/ports/{MISSING}"), None, 404, "PortNotFound"),
    ("unknown router", "DELETE", sub(f"/v2.0/routers/{MISSING}"), None, 404, "RouterNotFound"),
    ("unknown path", "GET", sub("/v2.0/floatingips"), None, 404, "HTTPNotFound"),
    ("wrong method", "PATCH", sub("/v2.0/networks"), None, 405, "HTTPMethodNotAllowed"),
    ("ip in use", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"], "fixed_ips": [{"ip_address": "10.50.0.10"}]}},
     409, "IpAddressInUse"),
    ("ip outside the network's subnets", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"], "fixed_ips": [{"ip_address": "10.77.0.10"}]}},
     400, "InvalidIpForNetwork"),
    ("broadcast address", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"],
                         "fixed_ips": [{"subnet_id": w["subnet"]["id"], "ip_address": "10.50.0.255"}]}},
     400, "InvalidIpForSubnet"),
    ("subnet of another network", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"], "fixed_ips": [{"subnet_id": w["nogw"]["id"]}]}},
     400, "InvalidInput"),
    ("subnet exhausted", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["tiny_net"]["id"]}}, 409, "IpAddressGenerationFailure"),
    ("port on missing network", "POST", sub("/v2.0/ports"), {"port": {"network_id": MISSING}}, 404, "NetworkNotFound"),
    ("bad mac", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"], "mac_address": "zz:16:3e:00:00:01"}}, 400, "InvalidInput"),
    ("mac in use", "POST", sub("/v2.0/ports"),
     lambda w: {"port": {"network_id": w["net"]["id"], "mac_address": w["port"]["mac_address"]}},
     409, "MacAddressInUse"),
    ("network with ports", "DELETE", sub("/v2.0/networks/{net}"), None, 409, "NetworkInUse"),
    ("subnet with ports", "DELETE", sub("/v2.0/subnets/{subnet}"), None, 409, "SubnetInUse"),
    ("router with interfaces", "DELETE", sub("/v2.0/routers/{router}"), None, 409, "RouterInUse"),
    ("router interface port deleted directly", "DELETE",
     lambda w: f"/v2.0/ports/{w['iface']['port_id']}", None, 409, "ServicePortInUse"),
    ("interface on a subnet without gateway", "PUT", sub("/v2.0/routers/{router}/add_router_interface"),
     lambda w: {"subnet_id": w["nogw"]["id"]}, 400, "BadRequest"),
    ("interface already on the router", "PUT", sub("/v2.0/routers/{router}/add_router_interface"),
     lambda w: {"subnet_id": w["subnet"]["id"]}, 400, "BadRequest"),
    ("interface with both ids", "PUT", sub("/v2.0/routers/{router}/add_router_interface"),
     lambda w: {"subnet_id": w["subnet"]["id"], "port_id": w["port"]["id"]}, 400, "BadRequest"),
    ("interface with neither id", "PUT", sub("/v2.0/routers/{router}/add_router_interface"), {}, 400, "BadRequest"),
    ("interface by a port in use", "PUT", sub("/v2.0/routers/{router}/add_router_interface"),
     lambda w: {"port_id": w["iface"]["port_id"]}, 409, "PortInUse"),
    ("interface by missing subnet", "PUT", sub("/v2.0/routers/{router}/add_router_interface"),
     {"subnet_id": MISSING}, 404, "SubnetNotFound"),
    ("remove interface not there", "PUT", sub("/v2.0/routers/{router}/remove_router_interface"),
     lambda w: {"subnet_id": w["nogw"]["id"]}, 404, "RouterInterfaceNotFoundForSubnet"),
    ("interface on missing router", "PUT", sub(f"/v2.0/routers/{MISSING}/add_router_interface"),
     lambda w: {"subnet_id": w["subnet"]["id"]}, 404, "RouterNotFound"),
    ("instance without name", "POST", sub("/netmeta/v1/instances"), {"instance": {}}, 400, "InvalidInput"),
    ("instance user_data not base64", "POST", sub("/netmeta/v1/instances"),
     {"instance": {"name": "x", "user_data": "!!!"}}, 400, "InvalidInput"),
    ("instance user_data too big", "POST", sub("/netmeta/v1/instances"),
     {"instance": {"name": "x", "user_data": "QUFB" * (65 * 1024 // 3 + 1)}}, 400, "InvalidInput"),
    ("instance meta too many", "POST", sub("/netmeta/v1/instances"),
     {"instance": {"name": "x", "meta": {str(i): "v" for i in range(129)}}}, 400, "InvalidInput"),
    ("instance meta value too long", "POST", sub("/netmeta/v1/instances"),
     {"instance": {"name": "x", "meta": {"k": "v" * 256}}}, 400, "InvalidInput"),
    ("instance on missing network", "POST", sub("/netmeta/v1/instances"),
     {"instance": {"name": "x", "networks": [{"uuid": MISSING}]}}, 404, "NetworkNotFound"),
    ("instance fixed ip in use", "POST", sub("/netmeta/v1/instances"),
     lambda w: {"instance": {"name": "x", "networks": [{"uuid": w["net"]["id"], "fixed_ip": "10.50.0.10"}]}},
     409, "IpAddressInUse"),
    # The first network succeeds inside the transaction, the second fails: all rolled back.
    ("instance half valid", "POST", sub("/netmeta/v1/instances"),
     lambda w: {"instance": {"name": "x", "networks": [{"uuid": w["nogw_net"]["id"]}, {"uuid": w["tiny_net"]["id"]}]}},
     409, "IpAddressGenerationFailure"),
    ("instance binds a port in use", "POST", sub("/netmeta/v1/instances"),
     lambda w: {"instance": {"name": "x", "networks": [{"port": w["iface"]["port_id"]}]}}, 409, "PortInUse"),
    ("unknown instance", "GET", sub(f"/netmeta/v1/instances/{MISSING}"), None, 404, "InstanceNotFound"),
    ("password already set", "POST", sub("/netmeta/v1/instances/{instance}/password"),
     {"password": "again"}, 409, "PasswordAlreadySet"),
    ("watch since not a number", "GET", sub("/netmeta/v1/watch?since=abc"), None, 400, "HTTPBadRequest"),
    ("watch since infinite", "GET", sub("/netmeta/v1/watch?since=inf"), None, 400, "HTTPBadRequest"),
    ("watch since fractional", "GET", sub("/netmeta/v1/watch?since=1.5"), None, 400, "HTTPBadRequest"),
    ("watch timeout infinite", "GET", sub("/netmeta/v1/watch?since=0&timeout=inf"), None, 400, "HTTPBadRequest"),
    ("watch since in the future", "GET", sub("/netmeta/v1/watch?since=999999999&timeout=0"), None, 410,
     "ResourceVersionTooOld"),
]


@pytest.mark.parametrize("name,method,path,body,status,type_", CASES, ids=[c[0] for c in CASES])
def test_refusal_changes_nothing(
    api: Api, world: World, name: str, method: str, path: Callable[[World], str], body: Any, status: int,
    type_: str,
) -> None:
    before = api.state()
    payload = body(world) if callable(body) else body
    if isinstance(payload, bytes):
        got, result = api.call(method, path(world), raw=payload)
    else:
        got, result = api.call(method, path(world), payload)
    assert (got, result["NeutronError"]["type"]) == (status, type_), result
    assert set(result["NeutronError"]) == {"type", "message", "detail"}
    assert api.state() == before


def test_password_too_long_is_400(api: Api, world: World) -> None:
    instance = api.post("/netmeta/v1/instances", {"instance": {"name": "pw-vm"}})["instance"]
    before = api.state()
    status, result = api.call("POST", f"/netmeta/v1/instances/{instance['id']}/password", {"password": "x" * 1021})
    assert status == 400 and result["NeutronError"]["type"] == "InvalidInput"
    assert api.state() == before
    assert api.ok("POST", f"/netmeta/v1/instances/{instance['id']}/password", {"password": "x" * 1020})
    assert api.get(f"/netmeta/v1/instances/{instance['id']}/password") == {"password": "x" * 1020}
    api.ok("DELETE", f"/netmeta/v1/instances/{instance['id']}/password")
    assert api.get(f"/netmeta/v1/instances/{instance['id']}/password") == {"password": ""}


def test_server_survives_garbage(api: Api) -> None:
    for raw in (b"\xff\xfe", b"[]", b"null", b'{"network": []}', b'{"network": null}', b"1e999999"):
        status, result = api.call("POST", "/v2.0/networks", raw=raw)
        assert status == 400, (raw, status, result)
    status, result = api.call("PUT", "/v2.0/routers/x/add_router_interface", raw=b"[1]")
    assert status == 404
    assert api.get("/")["versions"][0]["id"] == "v2.0"
