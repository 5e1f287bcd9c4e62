"""One host's agents, for real: they register, beat, die, and the host builds only what they host.

The stack's agent reports the DHCP, L3 and Linux bridge agents and its
metadata process the Metadata agent; ``openstack network agent …`` (the real
CLI) sees them. A short ``agent_down_time`` shows a stopped agent dead while
its dnsmasq keeps serving; taking a network off the (disabled) DHCP agent
removes its qdhcp namespace from this host, and giving it back rebuilds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.privileged.stack import Stack, make_stack, wait_until

from netmeta.model import names

pytestmark = pytest.mark.privileged


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, agent_down_time=4.0, report_interval=1.0)


def osc(stack: Stack, *args: str) -> Any:
    cli = Path(sys.executable).with_name("openstack")
    done = subprocess.run([str(cli), *args, "-f", "json"], capture_output=True, text=True,
                          env=stack.openstack_env(), timeout=120)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout) if done.stdout.strip() else None


def osc_do(stack: Stack, *args: str) -> None:
    cli = Path(sys.executable).with_name("openstack")
    done = subprocess.run([str(cli), *args], capture_output=True, text=True, env=stack.openstack_env(), timeout=120)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def agents(stack: Stack) -> dict[str, dict[str, Any]]:
    return {a["agent_type"]: a for a in stack.client.get("/v2.0/agents")["agents"]}


def test_one_host_registers_its_agents_and_builds_what_they_host(stack: Stack) -> None:
    host = stack.config.host
    found = wait_until(lambda: len(agents(stack)) == 4 and agents(stack), "four agents to register")
    rows = osc(stack, "network", "agent", "list")
    assert sorted((r["Agent Type"], r["Host"], r["Alive"]) for r in rows) == [
        ("DHCP agent", host, True), ("L3 agent", host, True), ("Linux bridge agent", host, True),
        ("Metadata agent", host, True)]
    net, _ = stack.network("hosted", "192.168.111.0/24", gateway=False)
    port = stack.dhcp_port(net["id"])
    assert port["binding:host_id"] == host
    assert [r["Host"] for r in osc(stack, "network", "agent", "list", "--network", net["id"])] == [host]
    stack.converged()
    qdhcp = f"/run/netns/{names.dhcp_namespace(net['id'])}"
    assert os.path.exists(qdhcp)
    dhcp = found["DHCP agent"]

    # Disabled, then the network taken off it: this host no longer builds it.
    osc_do(stack, "network", "agent", "set", "--disable", dhcp["id"])
    osc_do(stack, "network", "agent", "remove", "network", "--dhcp", dhcp["id"], net["id"])
    assert stack.client.get("/v2.0/ports", network_id=net["id"], device_owner="network:dhcp")["ports"] == []
    wait_until(lambda: not os.path.exists(qdhcp), "the qdhcp namespace to go")
    # Enabled again: the periodic check gives the unhosted network back, and it is rebuilt.
    osc_do(stack, "network", "agent", "set", "--enable", dhcp["id"])
    wait_until(lambda: os.path.exists(qdhcp) and stack.dnsmasq_pid(net["id"]), "the qdhcp namespace to return")
    assert stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"] == "192.168.111.1"

    # The agent stops: it turns dead after agent_down_time, its dnsmasq keeps serving.
    pid = stack.dnsmasq_pid(net["id"])
    stack.agent.stop()
    wait_until(lambda: agents(stack)["DHCP agent"]["alive"] is False, "the stopped agent to be dead", timeout=20)
    assert agents(stack)["Metadata agent"]["alive"] is True
    assert stack.dnsmasq_pid(net["id"]) == pid
    stack.agent.start()
    wait_until(lambda: agents(stack)["DHCP agent"]["alive"] is True, "the agent to beat again", timeout=20)
    stack.converged()
    assert stack.dnsmasq_pid(net["id"]) == pid  # nothing moved, nothing restarted
    assert stack.dhcp_port(net["id"])["binding:host_id"] == host


def test_the_agent_keeps_converging_through_the_other_server() -> None:
    """Two servers on one PostgreSQL; the stack's server is killed; the agent follows the other."""
    from netmeta.cli.waiting import wait_for_api
    from netmeta.client import Client
    from netmeta.credentials import admin_tokens
    from netmeta.drivers.supervise import Component
    from tests.pg import postgres_cluster
    from tests.privileged.stack import free_port

    with postgres_cluster() as db:
        first, second = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        stacks = make_stack(db=db, bind=first, api_urls=f"http://{first},http://{second}",
                            enable_isolated_metadata=True, report_interval=1.0)
        stack = next(stacks)
        other: Component | None = None
        try:
            config = stack.config
            ini = os.path.join(config.state_dir, "netmeta.ini")
            other = Component("server", ["server", "--config", ini, "--state-dir", config.state_dir, "--bind", second,
                                         "--server-metrics-bind", "127.0.0.1:0", "--no-log-console"],
                              os.path.join(config.state_dir, "server-2.out"))
            other.start()
            client = Client(f"http://{second}", tokens=admin_tokens(config))
            wait_for_api(client)
            net, _ = stack.network("via-first", "192.168.111.0/24", gateway=False)
            stack.converged()
            assert os.path.exists(f"/run/netns/{names.dhcp_namespace(net['id'])}")

            stack.components[0].stop()  # the stack's own server
            net2 = client.request("POST", "/v2.0/networks", {"network": {"name": "via-second"}})["network"]
            client.request("POST", "/v2.0/subnets", {"subnet": {"network_id": net2["id"], "ip_version": 4,
                                                               "cidr": "192.168.112.0/24", "gateway_ip": None}})
            target = client.state()["revision"]
            from netmeta.agent.service import read_status

            wait_until(lambda: (s := read_status(config.state_dir)) and int(s["revision"]) >= target,
                       "the agent to converge through the second server", timeout=30)
            assert os.path.exists(f"/run/netns/{names.dhcp_namespace(net2['id'])}")
            rows = client.get("/v2.0/agents")["agents"]
            assert {r["agent_type"] for r in rows if r["alive"]} >= {"DHCP agent", "Metadata agent"}
        finally:
            if other is not None:
                other.stop()
            stacks.close()
