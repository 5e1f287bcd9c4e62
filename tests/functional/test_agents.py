"""Agents, their heartbeats and Neutron's schedulers, through the API and the real ``openstack`` CLI.

Agents are registered here the way netmeta's processes do it
(``POST /netmeta/v1/report_state``, :mod:`netmeta.reporting`), for made-up
hosts: the server neither knows nor cares that no dnsmasq runs behind them.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from tests.functional.conftest import Api, ServerProcess


def report(api: Api, host: str, agent_type: str = "DHCP agent", **extra: Any) -> dict[str, Any]:
    state = {"agent_type": agent_type, "host": host, "start_flag": True, **extra}
    return dict(api.post("/netmeta/v1/report_state", {"agent_state": state})["agent"])


def cli_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(server.openstack(*args, "-f", "json").stdout)


def dhcp_ports(api: Api, network_id: str) -> list[dict[str, Any]]:
    ports = api.get(f"/v2.0/ports?network_id={network_id}&device_owner=network:dhcp")["ports"]
    return sorted(ports, key=lambda p: p["binding:host_id"])


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_agents_listed_shown_set_deleted_with_the_real_cli(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    api = server.api
    for agent_type in ("DHCP agent", "L3 agent", "Linux bridge agent"):
        report(api, "controller-0", agent_type, configurations={"tunneling_ip": "10.0.0.1"})
    report(api, "controller-1", "Metadata agent")
    rows = cli_json(server, "network", "agent", "list")
    assert sorted((r["Agent Type"], r["Host"], r["Alive"], r["State"]) for r in rows) == [
        ("DHCP agent", "controller-0", True, True), ("L3 agent", "controller-0", True, True),
        ("Linux bridge agent", "controller-0", True, True), ("Metadata agent", "controller-1", True, True)]
    binaries = {r["Agent Type"]: r["Binary"] for r in rows}
    assert binaries == {"DHCP agent": "neutron-dhcp-agent", "L3 agent": "neutron-l3-agent",
                        "Linux bridge agent": "neutron-linuxbridge-agent", "Metadata agent": "neutron-metadata-agent"}
    assert [r["Host"] for r in cli_json(server, "network", "agent", "list", "--host", "controller-1")] == [
        "controller-1"]
    l2 = next(r for r in rows if r["Agent Type"] == "Linux bridge agent")
    shown = cli_json(server, "network", "agent", "show", l2["ID"])
    assert shown["configuration"]["tunneling_ip"] == "10.0.0.1" and shown["topic"] == "N/A"
    raw = api.get(f"/v2.0/agents/{l2['ID']}")["agent"]
    assert set(raw) >= {"id", "agent_type", "binary", "topic", "host", "alive", "admin_state_up",
                        "heartbeat_timestamp", "created_at", "started_at", "configurations",
                        "availability_zone", "description", "resources_synced"}
    server.openstack("network", "agent", "set", "--disable", "--description", "spare", l2["ID"])
    shown = api.get(f"/v2.0/agents/{l2['ID']}")["agent"]
    assert shown["admin_state_up"] is False and shown["description"] == "spare"
    server.openstack("network", "agent", "delete", l2["ID"])
    assert server.openstack("network", "agent", "show", l2["ID"], check=False).returncode != 0
    assert len(cli_json(server, "network", "agent", "list")) == 3
    # The state document carries agents (no heartbeat in it: a heartbeat is no change).
    state = api.state()
    assert {a["agent_type"] for a in state["agents"]} == {"DHCP agent", "L3 agent", "Metadata agent"}
    assert all("heartbeat_timestamp" not in a and "alive" not in a for a in state["agents"])


def test_heartbeats_make_no_events_and_a_silent_agent_dies(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("--agent-down-time", "2")
    api = server.api
    agent = report(api, "h1")
    revision = api.state()["revision"]
    again = api.post("/netmeta/v1/report_state", {"agent_state": {"agent_type": "DHCP agent", "host": "h1"}})
    assert again["agent"]["id"] == agent["id"] and again["agent"]["alive"] is True
    assert api.state()["revision"] == revision  # a heartbeat is not a change
    dead = wait_for(lambda: api.get(f"/v2.0/agents/{agent['id']}")["agent"]["alive"] is False, timeout=10)
    assert dead
    assert api.get("/v2.0/agents?alive=false")["agents"][0]["id"] == agent["id"]
    assert api.get("/v2.0/agents?alive=true")["agents"] == []
    report(api, "h1")
    assert api.get(f"/v2.0/agents/{agent['id']}")["agent"]["alive"] is True


def test_three_dhcp_agents_three_ports_and_the_cli_moves_a_network(
    server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory("--dhcp-agents-per-network", "3")
    api = server.api
    agents = {h: report(api, h) for h in ("controller-0", "controller-1", "controller-2", "controller-3")}
    net = api.network("test-metadata-in-dhcp")
    api.subnet(net["id"], "192.168.111.0/24", gateway_ip=None)
    ports = dhcp_ports(api, net["id"])
    assert [p["binding:host_id"] for p in ports] == ["controller-0", "controller-1", "controller-2"]
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in ports) == ["192.168.111.1", "192.168.111.2",
                                                                     "192.168.111.3"]
    # Neutron's device_id: dhcp<uuid5(DNS, host)>-<network>.
    import uuid

    assert ports[0]["device_id"] == f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, 'controller-0')}-{net['id']}"
    hosting = cli_json(server, "network", "agent", "list", "--network", net["id"])
    assert sorted(r["Host"] for r in hosting) == ["controller-0", "controller-1", "controller-2"]
    state = api.state()
    assert sorted(b["host"] for b in state["bindings"] if b["network_id"] == net["id"]) == [
        "controller-0", "controller-1", "controller-2"]
    # Move it from controller-2 to controller-3: its port (and address) goes along.
    leaving = next(p for p in ports if p["binding:host_id"] == "controller-2")
    server.openstack("network", "agent", "add", "network", "--dhcp", agents["controller-3"]["id"], net["id"])
    server.openstack("network", "agent", "remove", "network", "--dhcp", agents["controller-2"]["id"], net["id"])
    ports = dhcp_ports(api, net["id"])
    assert [p["binding:host_id"] for p in ports] == ["controller-0", "controller-1", "controller-3"]
    networks = api.get(f"/v2.0/agents/{agents['controller-3']['id']}/dhcp-networks")["networks"]
    assert [n["id"] for n in networks] == [net["id"]]
    assert leaving["id"] not in [p["id"] for p in ports]
    # Neutron's errors.
    status, body = api.call("POST", f"/v2.0/agents/{agents['controller-3']['id']}/dhcp-networks",
                            {"network_id": net["id"]})
    assert status == 409 and body["NeutronError"]["type"] == "NetworkHostedByDHCPAgent"
    status, body = api.call("DELETE", f"/v2.0/agents/{agents['controller-2']['id']}/dhcp-networks/{net['id']}")
    assert status == 409 and body["NeutronError"]["type"] == "NetworkNotHostedByDhcpAgent"
    status, body = api.call("POST", "/v2.0/agents/nope/dhcp-networks", {"network_id": net["id"]})
    assert status == 404 and body["NeutronError"]["type"] == "InvalidDHCPAgent"


def test_the_first_dhcp_agent_adopts_the_single_host_port(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    api = server.api
    net = api.network("before-agents")
    api.subnet(net["id"], "10.7.0.0/24", gateway_ip=None)
    (before,) = dhcp_ports(api, net["id"])
    assert before["binding:host_id"] == ""
    report(api, "only-host")
    (after,) = dhcp_ports(api, net["id"])
    assert after["id"] == before["id"] and after["fixed_ips"] == before["fixed_ips"]
    assert after["binding:host_id"] == "only-host"


def test_a_network_moves_off_a_dead_or_disabled_agent_keeping_its_address(
    server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory("--agent-down-time", "3")
    api = server.api
    first = report(api, "a-host")
    net = api.network("moving")
    api.subnet(net["id"], "10.8.0.0/24", gateway_ip=None)
    (port,) = dhcp_ports(api, net["id"])
    assert port["binding:host_id"] == "a-host"
    second = report(api, "b-host")

    def moved() -> bool:
        report(api, "b-host")  # b-host keeps beating, a-host has stopped
        (now,) = dhcp_ports(api, net["id"])
        return now["binding:host_id"] == "b-host"

    assert wait_for(moved, timeout=15)
    (now,) = dhcp_ports(api, net["id"])
    assert now["fixed_ips"] == port["fixed_ips"]  # the guests' metadata route stays right
    # An admin-down agent gives its networks away at once.
    report(api, "a-host")
    api.ok("PUT", f"/v2.0/agents/{second['id']}", {"agent": {"admin_state_up": False}})
    (now,) = dhcp_ports(api, net["id"])
    assert now["binding:host_id"] == "a-host" and now["fixed_ips"] == port["fixed_ips"]
    assert first["id"] != second["id"]


def test_routers_on_one_l3_agent_moved_with_the_cli(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    api = server.api
    l3 = {h: report(api, h, "L3 agent") for h in ("controller-0", "controller-1")}
    net = api.network("routed")
    subnet = api.subnet(net["id"], "172.31.0.0/24")
    router = api.router("r1")
    api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    (intf,) = api.get(f"/v2.0/ports?device_id={router['id']}")["ports"]
    assert intf["binding:host_id"] == "controller-0"
    rows = cli_json(server, "network", "agent", "list", "--router", router["id"])
    assert [r["Host"] for r in rows] == ["controller-0"]
    status, body = api.call("POST", f"/v2.0/agents/{l3['controller-1']['id']}/l3-routers",
                            {"router_id": router["id"]})
    assert status == 409 and body["NeutronError"]["type"] == "RouterHostedByL3Agent"
    server.openstack("network", "agent", "remove", "router", "--l3", l3["controller-0"]["id"], router["id"])
    server.openstack("network", "agent", "add", "router", "--l3", l3["controller-1"]["id"], router["id"])
    rows = cli_json(server, "network", "agent", "list", "--router", router["id"])
    assert [r["Host"] for r in rows] == ["controller-1"]
    (intf,) = api.get(f"/v2.0/ports?device_id={router['id']}")["ports"]
    assert intf["binding:host_id"] == "controller-1"
    routers = api.get(f"/v2.0/agents/{l3['controller-1']['id']}/l3-routers")["routers"]
    assert [r["id"] for r in routers] == [router["id"]]
    second = api.router("r2")  # the least loaded agent gets the next one
    rows = cli_json(server, "network", "agent", "list", "--router", second["id"])
    assert [r["Host"] for r in rows] == ["controller-0"]


def test_agents_are_admin_only_and_garbage_gets_neutron_errors(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    api = server.api
    agent = report(api, "h1")
    alice = server.user_api("alice", "alpha", ["member"])
    for method, path, body in (("GET", "/v2.0/agents", None), ("GET", f"/v2.0/agents/{agent['id']}", None),
                               ("PUT", f"/v2.0/agents/{agent['id']}", {"agent": {"admin_state_up": False}}),
                               ("DELETE", f"/v2.0/agents/{agent['id']}", None),
                               ("POST", "/netmeta/v1/report_state", {"agent_state": {"agent_type": "DHCP agent",
                                                                                     "host": "evil"}})):
        status, answer = alice.call(method, path, body)
        assert status == 403, (method, path, answer)
        assert answer["NeutronError"]["type"] == "PolicyNotAuthorized"
    for bad in (None, [], {"agent_state": "x"}, {"agent_state": {"agent_type": "Evil agent", "host": "h"}},
                {"agent_state": {"agent_type": "DHCP agent", "host": ""}},
                {"agent_state": {"agent_type": "DHCP agent", "host": "a b"}},
                {"agent_state": {"agent_type": "DHCP agent", "host": "h", "configurations": []}},
                {"agent_state": {"agent_type": "DHCP agent", "host": "h", "bogus": 1}},
                {"agent_state": {"agent_type": "DHCP agent", "host": "h" * 300}}):
        status, answer = api.call("POST", "/netmeta/v1/report_state", bad)
        assert status == 400, (bad, answer)
    for body in ({"agent": {"host": "x"}}, {"agent": {"alive": False}}, {"agent": {"nope": 1}}, {"x": {}},
                 {"agent": {"admin_state_up": "maybe"}}):
        status, answer = api.call("PUT", f"/v2.0/agents/{agent['id']}", body)
        assert status == 400, (body, answer)
    status, answer = api.call("GET", "/v2.0/agents/not-an-agent")
    assert status == 404 and answer["NeutronError"]["type"] == "AgentNotFound"
    status, answer = api.call("GET", "/v2.0/agents?colour=red")
    assert status == 400
    assert api.get("/v2.0/agents")["agents"][0]["admin_state_up"] is True  # nothing changed


# --- the provider extension ------------------------------------------------------------


def test_tenant_networks_stay_local_without_vni_ranges(api: Api) -> None:
    net = api.network("plain")
    assert net["provider:network_type"] == "local" and net["provider:segmentation_id"] is None
    assert net["mtu"] == 1500


def test_vxlan_segments_from_vni_ranges_with_neutron_errors(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("--vni-ranges", "100:101")
    api = server.api
    first = api.network("v1")
    assert (first["provider:network_type"], first["provider:segmentation_id"], first["mtu"]) == ("vxlan", 100, 1450)
    given = api.post("/v2.0/networks", {"network": {"name": "v-given", "provider:network_type": "vxlan",
                                                    "provider:segmentation_id": 5000}})["network"]
    assert given["provider:segmentation_id"] == 5000  # outside the ranges is an admin's right, as in ML2
    status, body = api.call("POST", "/v2.0/networks", {"network": {"provider:network_type": "vxlan",
                                                                   "provider:segmentation_id": 100}})
    assert status == 409 and body["NeutronError"]["type"] == "TunnelIdInUse"
    for bad in ({"provider:network_type": "vxlan", "provider:segmentation_id": 2**24},
                {"provider:network_type": "vxlan", "provider:segmentation_id": "abc"},
                {"provider:network_type": "vxlan", "provider:physical_network": "physnet1"},
                {"provider:network_type": "gre"}, {"provider:segmentation_id": 7},
                {"provider:network_type": "flat"},
                {"provider:network_type": "local", "provider:segmentation_id": 9},
                {"provider:network_type": ["vxlan"]},
                {"provider:network_type": "vxlan", "mtu": 1500}):
        status, body = api.call("POST", "/v2.0/networks", {"network": bad})
        assert status == 400 and body["NeutronError"]["type"] == "InvalidInput", (bad, body)
    api.network("v2")  # takes 101, the last one
    status, body = api.call("POST", "/v2.0/networks", {"network": {"name": "v3"}})
    assert status == 503 and body["NeutronError"]["type"] == "NoNetworkAvailable"
    api.ok("DELETE", f"/v2.0/networks/{first['id']}")
    assert api.network("v4")["provider:segmentation_id"] == 100  # released, taken again
    flat = api.post("/v2.0/networks", {"network": {"provider:network_type": "flat",
                                                   "provider:physical_network": "physnet1"}})["network"]
    assert flat["provider:network_type"] == "flat" and flat["mtu"] == 1500
    status, body = api.call("POST", "/v2.0/networks", {"network": {"provider:network_type": "flat",
                                                                   "provider:physical_network": "physnet1"}})
    assert status == 409 and body["NeutronError"]["type"] == "FlatNetworkInUse"
    status, body = api.call("PUT", f"/v2.0/networks/{given['id']}",
                            {"network": {"provider:segmentation_id": 6000}})
    assert status == 400 and body["NeutronError"]["type"] == "InvalidInput"
    alice = server.user_api("alice", "alpha", ["member"])
    status, body = alice.call("POST", "/v2.0/networks", {"network": {"provider:network_type": "vxlan"}})
    assert status == 403 and body["NeutronError"]["type"] == "PolicyNotAuthorized"
    shown = cli_json(server, "network", "show", given["id"])
    assert shown["provider:network_type"] == "vxlan" and shown["provider:segmentation_id"] == 5000


@pytest.mark.parametrize("host", ["controller-1"])
def test_port_binding_host_is_settable_by_admin_only(server: ServerProcess, host: str) -> None:
    api = server.api
    net = api.network("bind")
    port = api.port(net["id"], **{"binding:host_id": host})
    assert port["binding:host_id"] == host
    shown = cli_json(server, "port", "show", port["id"])
    assert shown["binding_host_id"] == host


def test_provider_and_binding_attributes_are_the_admins(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("--vni-ranges", "10:20")
    alice = server.user_api("alice", "alpha", ["member"])
    status, body = alice.call("POST", "/v2.0/networks", {"network": {"name": "mine"}})
    assert status == 201 and "provider:network_type" not in body["network"]
    net = body["network"]
    assert server.api.get(f"/v2.0/networks/{net['id']}")["network"]["provider:segmentation_id"] == 10
    for seen in (alice.get(f"/v2.0/networks/{net['id']}")["network"], alice.get("/v2.0/networks")["networks"][0]):
        assert not {k for k in seen if k.startswith("provider:")}
    status, body = alice.call("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert status == 201 and "binding:host_id" not in body["port"]
    server.api.ok("PUT", f"/v2.0/ports/{body['port']['id']}", {"port": {"binding:host_id": "secret-host"}})
    assert "binding:host_id" not in alice.get(f"/v2.0/ports/{body['port']['id']}")["port"]
    assert alice.get("/v2.0/ports?binding:host_id=secret-host")["ports"] == []  # no probing by filter either
    assert server.api.get(f"/v2.0/ports/{body['port']['id']}")["port"]["binding:host_id"] == "secret-host"


def test_routers_move_off_a_dead_l3_agent_only_when_allowed(
    server_factory: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    ini = tmp_path / "netmeta.ini"
    ini.write_text("[DEFAULT]\nallow_automatic_l3agent_failover = true\n")
    server = server_factory("--agent-down-time", "3", "--config", str(ini))
    api = server.api
    report(api, "a-host", "L3 agent")
    router = api.router("r")
    assert api.state()["bindings"][0]["host"] == "a-host"
    report(api, "b-host", "L3 agent")

    def moved() -> bool:
        report(api, "b-host", "L3 agent")
        return [b["host"] for b in api.state()["bindings"] if b["router_id"] == router["id"]] == ["b-host"]

    assert wait_for(moved, timeout=15)
