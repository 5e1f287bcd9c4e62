"""Extra DHCP options, DNS names, extra routes, availability zones, quotas, ha/distributed.

Each feature through the API as the openstack CLI uses it: what is stored
and shown, what is merged, and each refusal with Neutron's status and type
(and nothing changed).
"""

from __future__ import annotations

from typing import Any

from tests.functional.conftest import Api


def _opts(port: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(o["opt_name"], o["opt_value"], o["ip_version"]) for o in port["extra_dhcp_opts"]}


def test_extra_dhcp_opts_are_merged_on_update(api: Api) -> None:
    net = api.network("edo-net")
    api.subnet(net["id"], "10.61.0.0/24")
    port = api.port(net["id"], extra_dhcp_opts=[
        {"opt_name": "bootfile-name", "opt_value": "pxelinux.0"},
        {"opt_name": "tftp-server", "opt_value": None},  # no value: not stored, as in Neutron
        {"opt_name": "router", "opt_value": "", "ip_version": 4},  # blank-able: kept
    ])
    assert _opts(port) == {("bootfile-name", "pxelinux.0", 4), ("router", "", 4)}
    path = f"/v2.0/ports/{port['id']}"
    merged = api.ok("PUT", path, {"port": {"extra_dhcp_opts": [
        {"opt_name": "66", "opt_value": "10.61.0.9"},
        {"opt_name": "bootfile-name", "opt_value": "ipxe.efi"},
        {"opt_name": "router", "opt_value": None},
    ]}})["port"]
    assert _opts(merged) == {("bootfile-name", "ipxe.efi", 4), ("66", "10.61.0.9", 4)}
    unchanged = api.ok("PUT", path, {"port": {"extra_dhcp_opts": []}})["port"]
    assert _opts(unchanged) == _opts(merged)
    for bad in ([{"opt_name": "x"}], [{"opt_name": "a\nb", "opt_value": "v"}], "nope",
                [{"opt_name": "mtu", "opt_value": "1", "ip_version": 5}],
                [{"opt_name": "mtu", "opt_value": "1"}, {"opt_name": "mtu", "opt_value": "1"}]):
        status, body = api.call("PUT", path, {"port": {"extra_dhcp_opts": bad}})
        assert (status, body["NeutronError"]["type"]) == (400, "InvalidInput"), bad
    assert _opts(api.get(path)["port"]) == _opts(merged)


def test_every_port_shows_dns_assignment_with_neutrons_trailing_dot(api: Api) -> None:
    net = api.network("dns-net")
    api.subnet(net["id"], "10.62.0.0/24")
    port = api.port(net["id"], dns_name="web1", fixed_ips=[{"ip_address": "10.62.0.7"}])
    assert port["dns_name"] == "web1"
    # The server's dns_domain is Neutron's default, so dns_name does not name the address.
    assert port["dns_assignment"] == [
        {"ip_address": "10.62.0.7", "hostname": "host-10-62-0-7", "fqdn": "host-10-62-0-7.openstacklocal."}]
    moved = api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": [{"ip_address": "10.62.0.8"}]}})["port"]
    assert [a["ip_address"] for a in moved["dns_assignment"]] == ["10.62.0.8"]
    status, body = api.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "dns_name": "Bad_Name"}})
    assert (status, body["NeutronError"]["type"]) == (400, "InvalidInput")


def test_extra_routes_are_checked_added_and_removed(api: Api) -> None:
    net = api.network("xr-net")
    sub = api.subnet(net["id"], "10.63.0.0/24")
    router = api.router("xr")
    api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    base = f"/v2.0/routers/{router['id']}"
    one = {"destination": "192.168.10.0/24", "nexthop": "10.63.0.50"}
    two = {"destination": "192.168.11.0/24", "nexthop": "10.63.0.51"}
    got = api.ok("PUT", f"{base}/add_extraroutes", {"router": {"routes": [one, two]}})["router"]
    assert got["routes"] == [one, two]
    again = api.ok("PUT", f"{base}/add_extraroutes", {"router": {"routes": [one]}})["router"]
    assert again["routes"] == [one, two], "adding a route it has changes nothing"
    for bad, reason in (({"destination": "10.0.0.0/8", "nexthop": "172.16.0.1"}, "not connected with router"),
                        ({"destination": "10.0.0.0/8", "nexthop": "10.63.0.1"}, "used by router")):
        status, body = api.call("PUT", f"{base}/add_extraroutes", {"router": {"routes": [bad]}})
        assert (status, body["NeutronError"]["type"]) == (400, "InvalidRoutes") and reason in body["NeutronError"]["message"]
        status, body = api.call("PUT", base, {"router": {"routes": [bad]}})
        assert (status, body["NeutronError"]["type"]) == (400, "InvalidRoutes")
    status, body = api.call("PUT", f"{base}/remove_router_interface", {"subnet_id": sub["id"]})
    assert (status, body["NeutronError"]["type"]) == (409, "RouterInterfaceInUseByRoute")
    left = api.ok("PUT", f"{base}/remove_extraroutes", {"router": {"routes": [one]}})["router"]
    assert left["routes"] == [two]
    assert api.get(base)["router"]["routes"] == [two]


def test_ha_and_distributed_are_refused_and_shown_false(api: Api) -> None:
    router = api.router("plain")
    assert (router["ha"], router["distributed"]) == (False, False)
    for flag in ("ha", "distributed"):
        status, body = api.call("POST", "/v2.0/routers", {"router": {"name": "x", flag: True}})
        assert (status, body["NeutronError"]["type"]) == (400, "HTTPBadRequest")
        assert api.ok("PUT", f"/v2.0/routers/{router['id']}", {"router": {flag: False}})["router"][flag] is False


def test_availability_zones_and_quotas(api: Api) -> None:
    zones = api.get("/v2.0/availability_zones")["availability_zones"]
    assert {(z["name"], z["resource"], z["state"]) for z in zones} == {
        ("nova", "network", "available"), ("nova", "router", "available")}
    assert api.get("/v2.0/availability_zones?resource=router")["availability_zones"] == [
        {"name": "nova", "resource": "router", "state": "available"}]
    assert api.get("/v2.0/quotas") == {"quotas": []}
    quota = api.get("/v2.0/quotas/some-project")["quota"]
    assert quota["port"] == quota["network"] == -1
    net = api.network("quota-net", project_id="counted")
    details = api.get("/v2.0/quotas/counted/details.json")["quota"]
    assert details["network"] == {"limit": -1, "used": 1, "reserved": 0}
    assert api.get("/v2.0/quotas/counted/default")["quota"]["router"] == -1
    assert net["project_id"] == "counted"
