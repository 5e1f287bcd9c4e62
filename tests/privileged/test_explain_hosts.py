"""`netmeta explain` and `netmeta status` on two simulated hosts: hosts named, the right host's namespaces.

A guest on host A is served by the qdhcp on host B. Run on host A, explain
names the host its port is bound to and the DHCP agent (host B) that serves
its network, says the qdhcp namespace is on host B instead of calling it
missing on A, and status lists both hosts' agents alive. Once host B's agent
is stopped (``agent_down_time`` 6 s, automatic DHCP failover off so the
network stays there), explain names that down agent as the problem — for the
guest, and for its port from anywhere — and status shows it DOWN.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from netmeta.cli.multihost import MultiHost
from netmeta.client import Client
from netmeta.model import names
from tests.privileged.stack import wait_until
from tests.privileged.multihost import make_cloud

pytestmark = pytest.mark.privileged


@pytest.fixture
def cloud2() -> Iterator[tuple[MultiHost, Client]]:
    yield from make_cloud(("host-1", "host-2"), vni_ranges="1000:1999", enable_isolated_metadata=True,
                          agent_down_time=6, report_interval=1, allow_automatic_dhcp_failover=False)


def _explain(host: Any, key: str) -> tuple[int, dict[str, Any]]:
    done = host.netmeta("explain", key, "--json", timeout=90)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def _codes(result: dict[str, Any], severity: str) -> dict[str, str]:
    return {f["code"]: f["text"] for f in result["findings"] if f["severity"] == severity}


def test_explain_and_status_name_the_hosts_and_a_down_dhcp_agent(cloud2: tuple[MultiHost, Client]) -> None:
    multi, client = cloud2
    net = client.request("POST", "/v2.0/networks", {"network": {"name": "blue"}})["network"]
    client.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                        "cidr": "192.168.111.0/24", "gateway_ip": None}})
    dhcp = wait_until(lambda: [p for p in client.get("/v2.0/ports", network_id=net["id"], device_owner="network:dhcp")
                               ["ports"] if p.get("binding:host_id")], "a bound DHCP port", timeout=30)[0]
    server_host = multi.host(dhcp["binding:host_id"])
    guest_host = next(h for h in multi.hosts if h is not server_host)
    qdhcp = names.dhcp_namespace(net["id"])
    vm = guest_host.boot("vm1", net["id"])
    port = client.get("/v2.0/ports", device_id=vm["instance"])["ports"][0]

    code, result = _explain(guest_host, "vm1")
    ok, notes = _codes(result, "ok"), _codes(result, "note")
    assert code == 0 and result["consistent"], result["problems"]
    assert ok["port-host"] == f"port {port['id']} is bound to host {guest_host.name}"
    assert ok["dhcp-agents"].endswith(f"on {server_host.name} (alive)")
    assert f"namespace {qdhcp} is on host {server_host.name}, not this one" in notes["namespace-elsewhere"]
    assert ok["fetch"].startswith("GET /openstack/latest/meta_data.json from the guest: 200")
    # On the DHCP host the same guest is unknown, but its port is explained from there.
    code, there = _explain(server_host, port["id"])
    assert code == 0 and "dhcp-agents" in _codes(there, "ok")

    status = guest_host.netmeta("status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 0, report
    assert {(a["host"], a["agent_type"]): a["alive"] for a in report["agents"]} == {
        (h.name, t): True for h in multi.hosts
        for t in ("DHCP agent", "L3 agent", "Linux bridge agent", "Metadata agent")}
    (blue,) = [n for n in report["networks"] if n["id"] == net["id"]]
    assert blue["dhcp"] == f"on {server_host.name} (alive)"  # not looked for on this host
    assert report["components"]["server"]["health"] == "ok" and report["components"]["server"]["remote"]
    text = guest_host.netmeta("status").stdout
    assert "AGENTS (8 on 2 hosts)" in text and f"{server_host.name}" in text

    # The DHCP host's agent stops: after agent_down_time the API calls it dead.
    server_host.stop("agent")
    wait_until(lambda: {(a["host"], a["agent_type"]): a["alive"] for a in client.get("/v2.0/agents")["agents"]}
               .get((server_host.name, "DHCP agent")) is False, "the stopped agent to turn dead", timeout=30)
    code, result = _explain(guest_host, "vm1")
    problems = _codes(result, "problem")
    assert code == 3 and list(problems) == ["dhcp-agent-down"], result
    assert problems["dhcp-agent-down"].startswith(
        f"the DHCP agent on {server_host.name}, which hosts network blue, is DOWN")
    code, result = _explain(guest_host, port["id"])
    assert code == 3 and list(_codes(result, "problem")) == ["dhcp-agent-down"]
    status = guest_host.netmeta("status", "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 1
    (blue,) = [n for n in report["networks"] if n["id"] == net["id"]]
    assert blue["dhcp"] == f"AGENT DOWN: on {server_host.name} (DOWN)"
    assert "DHCP agent DOWN" in guest_host.netmeta("status").stdout


def test_explain_on_the_router_path_names_the_l3_agent_host_and_its_failure(cloud2: tuple[MultiHost, Client]) -> None:
    multi, client = cloud2
    net = client.request("POST", "/v2.0/networks", {"network": {"name": "routed"}})["network"]
    sub = client.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                              "cidr": "10.61.0.0/24"}})["subnet"]
    router = client.request("POST", "/v2.0/routers", {"router": {"name": "r1"}})["router"]
    client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    (l3,) = wait_until(lambda: [a["host"] for a in client.get(f"/v2.0/routers/{router['id']}/l3-agents")["agents"]],
                       "the router to be scheduled", timeout=30)
    router_host = multi.host(l3)
    qrouter = names.router_namespace(router["id"])
    wait_until(lambda: qrouter in router_host.sim.inner_namespaces(), f"{qrouter} on {l3}", timeout=30)
    guest_host = next(h for h in multi.hosts if h is not router_host)
    guest_host.boot("vm1", net["id"])

    code, result = _explain(guest_host, "vm1")
    assert code == 0 and result["path"] == "router", result["problems"]
    assert _codes(result, "ok")["l3-agent"] == f"router r1 is hosted by the L3 agent on {l3} (alive)"
    assert f"namespace {qrouter} is on host {l3}, not this one" in _codes(result, "note")["namespace-elsewhere"]
    status = json.loads(guest_host.netmeta("status", "--json").stdout)
    (r1,) = [r for r in status["routers"] if r["id"] == router["id"]]
    assert r1["state"] == f"on {l3} (alive)"

    router_host.stop("agent")
    wait_until(lambda: {(a["host"], a["agent_type"]): a["alive"] for a in client.get("/v2.0/agents")["agents"]}
               .get((l3, "L3 agent")) is False, "the stopped L3 agent to turn dead", timeout=30)
    code, result = _explain(guest_host, "vm1")
    problems = _codes(result, "problem")
    assert code == 3 and problems["l3-agent-down"].startswith(f"the L3 agent on {l3}, which hosts router r1, is DOWN")
    status = json.loads(guest_host.netmeta("status", "--json").stdout)
    (r1,) = [r for r in status["routers"] if r["id"] == router["id"]]
    assert r1["state"] == f"AGENT DOWN: on {l3} (DOWN)"
