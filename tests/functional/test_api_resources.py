"""What the API does right: DHCP ports, router interfaces, filters, instances."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.functional.conftest import Api


def dhcp_ports(api: Api, network_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/v2.0/ports?network_id={network_id}&device_owner=network:dhcp")["ports"])


def test_version_discovery_is_neutrons(api: Api) -> None:
    body = api.get("/")
    assert body == {"versions": [{"id": "v2.0", "status": "CURRENT",
                                  "links": [{"href": f"{api.url}/v2.0/", "rel": "self"}]}]}
    assert {r["collection"] for r in api.get("/v2.0/")["resources"]} >= {"networks", "ports"}
    assert any(e["alias"] == "router" for e in api.get("/v2.0/extensions")["extensions"])


def test_dhcp_port_follows_subnets(api: Api) -> None:
    net = api.network("dhcp-follow")
    assert dhcp_ports(api, net["id"]) == []
    a = api.subnet(net["id"], "10.20.0.0/24")
    [port] = dhcp_ports(api, net["id"])
    assert port["fixed_ips"] == [{"subnet_id": a["id"], "ip_address": "10.20.0.2"}]
    assert port["device_id"].startswith("dhcp") and port["device_id"].endswith("-" + net["id"])
    b = api.subnet(net["id"], "10.21.0.0/24", gateway_ip=None)
    [port] = dhcp_ports(api, net["id"])
    assert port["fixed_ips"] == [{"subnet_id": a["id"], "ip_address": "10.20.0.2"},
                                 {"subnet_id": b["id"], "ip_address": "10.21.0.1"}]
    api.ok("PUT", f"/v2.0/subnets/{a['id']}", {"subnet": {"enable_dhcp": False}})
    [port] = dhcp_ports(api, net["id"])
    assert port["fixed_ips"] == [{"subnet_id": b["id"], "ip_address": "10.21.0.1"}]
    assert port["revision_number"] == 2
    api.ok("DELETE", f"/v2.0/subnets/{b['id']}")
    assert dhcp_ports(api, net["id"]) == []
    network = api.get(f"/v2.0/networks/{net['id']}")["network"]
    assert network["subnets"] == [a["id"]]
    # A DHCP-disabled subnet and no DHCP port: the network deletes cleanly.
    api.ok("DELETE", f"/v2.0/networks/{net['id']}")
    assert api.get(f"/v2.0/subnets?network_id={net['id']}")["subnets"] == []


def test_network_delete_takes_dhcp_port_along(api: Api) -> None:
    net = api.network("dhcp-gone")
    api.subnet(net["id"], "10.22.0.0/24")
    assert len(dhcp_ports(api, net["id"])) == 1
    api.ok("DELETE", f"/v2.0/networks/{net['id']}")
    assert dhcp_ports(api, net["id"]) == []


def test_ports_allocate_first_free_and_reuse(api: Api) -> None:
    net = api.network("alloc")
    subnet = api.subnet(net["id"], "10.23.0.0/24", allocation_pools=[{"start": "10.23.0.10", "end": "10.23.0.12"}])
    ips = [api.port(net["id"])["fixed_ips"][0]["ip_address"] for _ in range(2)]
    assert ips == ["10.23.0.11", "10.23.0.12"]  # the DHCP port took .10
    status, body = api.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert status == 409 and body["NeutronError"]["type"] == "IpAddressGenerationFailure"
    # Outside the pool but inside the subnet is allowed when asked for.
    port = api.port(net["id"], fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.23.0.200"}])
    assert port["fixed_ips"][0]["ip_address"] == "10.23.0.200"
    moved = api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": [{"ip_address": "10.23.0.201"}]}})
    assert moved["port"]["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.23.0.201"}]
    again = api.port(net["id"], fixed_ips=[{"ip_address": "10.23.0.200"}])  # released by the update
    assert again["fixed_ips"][0]["ip_address"] == "10.23.0.200"


def test_router_interfaces_by_subnet_and_port(api: Api) -> None:
    net = api.network("routed")
    a = api.subnet(net["id"], "10.30.0.0/24")
    b = api.subnet(net["id"], "10.31.0.0/24")
    router = api.router("r1")
    info = api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": a["id"]})
    assert set(info) == {"id", "tenant_id", "project_id", "port_id", "network_id", "subnet_id", "subnet_ids"}
    assert info["subnet_id"] == a["id"] and info["subnet_ids"] == [a["id"]] and info["network_id"] == net["id"]
    port = api.get(f"/v2.0/ports/{info['port_id']}")["port"]
    assert port["fixed_ips"] == [{"subnet_id": a["id"], "ip_address": "10.30.0.1"}]
    assert (port["device_owner"], port["device_id"]) == ("network:router_interface", router["id"])
    # By port: a user port holding the gateway becomes the interface.
    user = api.port(net["id"], fixed_ips=[{"ip_address": "10.31.0.1"}])
    info_b = api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"port_id": user["id"]})
    assert info_b["port_id"] == user["id"] and info_b["subnet_ids"] == [b["id"]]
    # A second router cannot take a gateway another router holds.
    other = api.router("r2")
    status, body = api.call("PUT", f"/v2.0/routers/{other['id']}/add_router_interface", {"subnet_id": a["id"]})
    assert status == 409 and body["NeutronError"]["type"] == "IpAddressInUse"
    listed = api.get(f"/v2.0/ports?device_id={router['id']}&device_owner=network:router_interface")["ports"]
    assert {p["id"] for p in listed} == {info["port_id"], user["id"]}
    api.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": a["id"]})
    api.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"port_id": user["id"]})
    assert api.call("GET", f"/v2.0/ports/{info['port_id']}")[0] == 404
    api.ok("DELETE", f"/v2.0/routers/{router['id']}")


def test_list_filters_or_and_fields(api: Api) -> None:
    x, y = api.network("filter-x"), api.network("filter-y")
    api.network("filter-z", shared=True)
    names = {n["name"] for n in api.get("/v2.0/networks?name=filter-x&name=filter-y")["networks"]}
    assert names == {"filter-x", "filter-y"}
    only = api.get(f"/v2.0/networks?id={x['id']}&fields=id&fields=name")["networks"]
    assert only == [{"id": x["id"], "name": "filter-x"}]
    shared = {n["name"] for n in api.get("/v2.0/networks?shared=true")["networks"]}
    assert "filter-z" in shared and "filter-x" not in shared
    assert api.get(f"/v2.0/networks/{y['id']}?fields=name") == {"network": {"name": "filter-y"}}
    page = api.get("/v2.0/networks?limit=1&sort_key=name&sort_dir=asc")
    assert len(page["networks"]) == 1 and page["networks_links"][0]["rel"] == "next"


def test_project_from_token_or_admin_body(server: Any, api: Api) -> None:
    admin_project = json.loads((server.state_dir / "identity.json").read_text())["projects"][0]["id"]
    assert api.network("p-default")["project_id"] == admin_project
    body = api.post("/v2.0/networks", {"network": {"name": "p-body", "tenant_id": "t1"}})["network"]
    assert (body["project_id"], body["tenant_id"]) == ("t1", "t1")
    # Under keystone the header alone means nothing: the token says who is calling.
    status, hdr = api.as_token(api.token).call("POST", "/v2.0/networks", {"network": {"name": "p-hdr"}},
                                               headers={"X-Project-Id": "h1", "X-Auth-Token": api.token or ""})
    assert status == 201 and hdr["network"]["project_id"] == admin_project


def test_noauth_project_from_body_header_or_default(server_factory: Any) -> None:
    api = server_factory("--auth-strategy", "noauth").api
    assert api.network("p-default")["project_id"] == "netmeta"
    body = api.post("/v2.0/networks", {"network": {"name": "p-body", "tenant_id": "t1"}})["network"]
    assert (body["project_id"], body["tenant_id"]) == ("t1", "t1")
    status, hdr = api.call("POST", "/v2.0/networks", {"network": {"name": "p-hdr"}}, headers={"X-Project-Id": "h1"})
    assert status == 201 and hdr["network"]["project_id"] == "h1"


def test_instances_create_ports_and_clean_up(api: Api) -> None:
    net = api.network("vm-net")
    subnet = api.subnet(net["id"], "10.40.0.0/24")
    spare = api.port(net["id"])
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    created = api.post("/netmeta/v1/instances", {"instance": {
        "name": "My VM_1", "user_data": user_data, "key_name": "k", "public_key": "ssh-ed25519 AAAA x",
        "meta": {"role": "test"},
        "networks": [{"uuid": net["id"]}, {"uuid": net["id"], "fixed_ip": "10.40.0.99"}, {"port": spare["id"]}],
    }})["instance"]
    assert created["hostname"] == "my-vm-1" and created["launch_index"] == 0
    assert created["availability_zone"] == "nova" and created["flavor"] == "m1.small"
    assert "password" not in created and "_created_ports" not in created
    assert len(created["ports"]) == 3 and created["ports"][2] == spare["id"]
    ports = api.get(f"/v2.0/ports?device_id={created['id']}")["ports"]
    assert {p["device_owner"] for p in ports} == {"compute:nova"}
    assert {"subnet_id": subnet["id"], "ip_address": "10.40.0.99"} in [f for p in ports for f in p["fixed_ips"]]
    state = api.state()
    [fed] = [i for i in state["instances"] if i["id"] == created["id"]]
    assert fed["user_data"] == user_data and fed["public_key"] == "ssh-ed25519 AAAA x" and fed["password"] is None
    assert api.get(f"/netmeta/v1/instances/{created['id']}")["instance"]["name"] == "My VM_1"
    api.ok("DELETE", f"/netmeta/v1/instances/{created['id']}")
    left = api.get(f"/v2.0/ports?network_id={net['id']}&device_owner=")["ports"]
    assert [p["id"] for p in left] == [spare["id"]]  # bound port unbound, created ones gone
    assert api.call("GET", f"/netmeta/v1/instances/{created['id']}")[0] == 404
