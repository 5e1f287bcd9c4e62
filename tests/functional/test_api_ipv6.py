"""IPv6 through the API: Neutron's address modes, EUI-64 ports, dual stack."""

from __future__ import annotations

from typing import Any

import pytest

from netmeta.model import ipam
from tests.functional.conftest import Api


def v6(api: Api, network_id: str, cidr: str, mode: str | None = "slaac", **extra: Any) -> dict[str, Any]:
    body = {"network_id": network_id, "cidr": cidr, "ip_version": 6, **extra}
    if mode is not None:
        body.setdefault("ipv6_ra_mode", mode)
        body.setdefault("ipv6_address_mode", mode)
    return dict(api.post("/v2.0/subnets", {"subnet": body})["subnet"])


def error(api: Api, method: str, path: str, body: Any) -> tuple[int, str, str]:
    status, answer = api.call(method, path, body)
    return status, answer["NeutronError"]["type"], answer["NeutronError"]["message"]


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"},
         "Invalid input for operation: ipv6_ra_mode set to 'slaac' with ipv6_address_mode set to "
         "'dhcpv6-stateful' is not valid. If both attributes are set, they must be the same value."),
        ({"ipv6_ra_mode": "slaac", "enable_dhcp": False},
         "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp "
         "is set to False."),
        ({"ipv6_address_mode": "slaac", "cidr": "2001:db8:9::/80"},
         "Invalid input for operation: Invalid CIDR 2001:db8:9::/80 for IPv6 address mode. OpenStack uses "
         "the EUI-64 address format, which requires the prefix to be /64."),
        ({"ipv6_ra_mode": "on"}, "Invalid input for ipv6_ra_mode. Reason: on is not in valid_values."),
        ({"ip_version": 4, "cidr": "10.99.0.0/24", "ipv6_ra_mode": "slaac"},
         "Invalid input for operation: ipv6_ra_mode is not valid when ip_version is 4."),
    ],
)
def test_mode_errors_are_neutrons(api: Api, extra: dict[str, Any], message: str) -> None:
    net = api.network("v6-errors")
    body = {"network_id": net["id"], "cidr": "2001:db8:9::/64", "ip_version": 6, **extra}
    assert error(api, "POST", "/v2.0/subnets", {"subnet": body}) == (400, "InvalidInput", message)
    assert api.get(f"/v2.0/subnets?network_id={net['id']}")["subnets"] == []


def test_slaac_ports_get_eui64_and_follow_their_mac(api: Api) -> None:
    net = api.network("v6-slaac")
    sub = v6(api, net["id"], "2001:db8:1::/64")
    assert sub["ipv6_ra_mode"] == sub["ipv6_address_mode"] == "slaac"
    port = api.port(net["id"])
    eui = ipam.eui64_address("2001:db8:1::/64", port["mac_address"])
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": eui}]
    # Another address on the subnet is refused; the port's own EUI-64 is fine.
    status, kind, message = error(api, "POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "2001:db8:1::5"}]}})
    assert (status, kind) == (400, "AllocationOnAutoAddressSubnet")
    assert message == (f"IPv6 address 2001:db8:1::5 cannot be directly assigned to a port on subnet {sub['id']} "
                       "as the subnet is configured for automatic addresses")
    mac = "fa:16:3e:aa:bb:cc"
    own = api.port(net["id"], mac_address=mac,
                   fixed_ips=[{"ip_address": ipam.eui64_address("2001:db8:1::/64", mac)}])
    assert own["fixed_ips"][0]["ip_address"] == "2001:db8:1:0:f816:3eff:feaa:bbcc"
    # A MAC change moves the address.
    moved = api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"mac_address": "fa:16:3e:00:00:99"}})["port"]
    assert moved["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "2001:db8:1:0:f816:3eff:fe00:99"}]
    # ... and the old one is free again: a port with the old MAC takes it.
    again = api.port(net["id"], mac_address=port["mac_address"])
    assert again["fixed_ips"][0]["ip_address"] == eui
    # The DHCP port has its EUI-64 address too.
    [dhcp] = api.get(f"/v2.0/ports?network_id={net['id']}&device_owner=network:dhcp")["ports"]
    assert dhcp["fixed_ips"] == [{"subnet_id": sub["id"],
                                  "ip_address": ipam.eui64_address("2001:db8:1::/64", dhcp["mac_address"])}]


def test_dual_stack_and_stateful(api: Api) -> None:
    net = api.network("v6-dual")
    four = api.subnet(net["id"], "10.61.0.0/24")
    stateful = v6(api, net["id"], "2001:db8:2::/64", "dhcpv6-stateful")
    stateless = v6(api, net["id"], "2001:db8:3::/64", "dhcpv6-stateless")
    port = api.port(net["id"])
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]}
    assert by_subnet[four["id"]].startswith("10.61.0.")
    assert by_subnet[stateful["id"]].startswith("2001:db8:2::") and not ipam.is_eui64(by_subnet[stateful["id"]])
    assert by_subnet[stateless["id"]] == ipam.eui64_address("2001:db8:3::/64", port["mac_address"])
    # A stateful subnet takes an explicit address; updating fixed_ips keeps the EUI-64 one.
    updated = api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"fixed_ips": [
        {"subnet_id": four["id"]}, {"subnet_id": stateful["id"], "ip_address": "2001:db8:2::77"}]}})["port"]
    ips = {f["ip_address"] for f in updated["fixed_ips"]}
    assert "2001:db8:2::77" in ips and by_subnet[stateless["id"]] in ips and len(ips) == 3


def test_new_slaac_subnet_addresses_existing_ports(api: Api) -> None:
    net = api.network("v6-late")
    api.subnet(net["id"], "10.62.0.0/24")
    port = api.port(net["id"])
    sub = v6(api, net["id"], "2001:db8:4::/64")
    got = api.get(f"/v2.0/ports/{port['id']}")["port"]
    assert {"subnet_id": sub["id"], "ip_address": ipam.eui64_address("2001:db8:4::/64", port["mac_address"])} \
        in got["fixed_ips"]


def test_router_interface_on_slaac_takes_the_gateway(api: Api) -> None:
    net = api.network("v6-router")
    sub = v6(api, net["id"], "2001:db8:5::/64")
    router = api.router("r6")
    info = api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    port = api.get(f"/v2.0/ports/{info['port_id']}")["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "2001:db8:5::1"}]
    # A subnet whose RAs come from an outside router cannot be attached.
    net2 = api.network("v6-external-ra")
    ext = v6(api, net2["id"], "2001:db8:6::/64", None, ipv6_address_mode="slaac")
    status, kind, message = error(api, "PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
                                  {"subnet_id": ext["id"]})
    assert (status, kind) == (400, "BadRequest") and "receive RAs from an external router" in message


def test_ipv6_subnets_of_one_network_share_one_router_port(api: Api) -> None:
    """Neutron's ``_add_interface_by_subnet``: a second IPv6 subnet goes on the existing port."""
    net = api.network("v6-two-prefixes")
    v4 = api.post("/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.98.0.0/24",
                                               "ip_version": 4}})["subnet"]
    first = v6(api, net["id"], "2001:db8:a::/64")
    second = v6(api, net["id"], "2001:db8:b::/64", "dhcpv6-stateful")
    router = api.router("r6-two")
    add = f"/v2.0/routers/{router['id']}/add_router_interface"
    by_v4 = api.ok("PUT", add, {"subnet_id": v4["id"]})
    by_first = api.ok("PUT", add, {"subnet_id": first["id"]})
    by_second = api.ok("PUT", add, {"subnet_id": second["id"]})
    # IPv4 has a port of its own; the second IPv6 subnet joins the first one's port.
    assert by_first["port_id"] != by_v4["port_id"]
    assert by_second["port_id"] == by_first["port_id"]
    assert (by_second["subnet_id"], by_second["subnet_ids"]) == (second["id"], [second["id"]])
    ports = api.get(f"/v2.0/ports?device_id={router['id']}")["ports"]
    assert len(ports) == 2
    shared = api.get(f"/v2.0/ports/{by_first['port_id']}")["port"]
    assert shared["fixed_ips"] == [{"subnet_id": first["id"], "ip_address": "2001:db8:a::1"},
                                   {"subnet_id": second["id"], "ip_address": "2001:db8:b::1"}]
    # Removing one prefix leaves the port with the other; removing the last removes the port.
    api.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": first["id"]})
    shared = api.get(f"/v2.0/ports/{by_first['port_id']}")["port"]
    assert shared["fixed_ips"] == [{"subnet_id": second["id"], "ip_address": "2001:db8:b::1"}]
    api.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": second["id"]})
    assert api.call("GET", f"/v2.0/ports/{by_first['port_id']}", None)[0] == 404
    # A router on another network's IPv6 subnet gets a port there.
    other = api.network("v6-other")
    third = v6(api, other["id"], "2001:db8:c::/64")
    assert api.ok("PUT", add, {"subnet_id": third["id"]})["port_id"] != by_first["port_id"]


def test_disabling_dhcp_with_modes_is_refused(api: Api) -> None:
    net = api.network("v6-nodhcp")
    sub = v6(api, net["id"], "2001:db8:7::/64")
    assert error(api, "PUT", f"/v2.0/subnets/{sub['id']}", {"subnet": {"enable_dhcp": False}}) == (
        400, "InvalidInput", "Invalid input for operation: Cannot disable enable_dhcp with ipv6 attributes set.")
