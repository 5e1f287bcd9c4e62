"""``netmeta explain`` against real guests, and against inconsistencies made on purpose.

Each situation the seed's author met — metadata from the DHCP namespace, from
the router, a guest still holding the pre-router route, metadata off — is
built for real, and ``netmeta explain <guest> --json`` runs as a separate
process, the way an operator runs it. Then the host is broken on purpose the
ways the seed hints at (address gone from the tap, nothing listening, no
REDIRECT rule) and explain must name each one plainly. The agent is stopped
before breaking anything, so its next full pass cannot repair the breakage
behind the test's back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

from netmeta.model import names
from netmeta.vm.guests import Guest

pytestmark = pytest.mark.privileged

NETMETA = os.path.join(os.path.dirname(sys.executable), "netmeta")


@pytest.fixture
def isolated_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


@pytest.fixture
def plain_stack() -> Iterator[Stack]:
    yield from make_stack()


def run_explain(stack: Stack, guest: Guest) -> tuple[int, dict[str, Any]]:
    """Run the CLI as an operator would; returns (exit status, parsed JSON)."""
    done = subprocess.run(
        [NETMETA, "explain", guest.name, "--json", "--state-dir", stack.config.state_dir,
         "--bind", stack.config.bind, "--fabric-namespace", stack.config.fabric_namespace],
        capture_output=True, text=True, timeout=60,
    )
    assert done.stdout, f"explain printed nothing (exit {done.returncode}): {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def by_code(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["code"]: f for f in result["findings"]}


def problems(result: dict[str, Any]) -> set[str]:
    return {f["code"] for f in result["findings"] if f["severity"] == "problem"}


# --- the four situations --------------------------------------------------------------


def test_isolated_guest_is_explained_via_the_dhcp_port(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("iso", "192.168.111.0/24", gateway=False)
    dhcp = stack.dhcp_port(net["id"])
    dhcp_ip = dhcp["fixed_ips"][0]["ip_address"]
    vm = stack.boot("x1", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")

    code, result = run_explain(stack, vm)
    assert code == 0 and result["consistent"], result
    assert (result["path"], result["next_hop"], result["namespace"]) == ("dhcp", dhcp_ip, names.dhcp_namespace(net["id"]))
    assert result["resolved_instance"] == vm.instance_id
    found = by_code(result)
    assert {"route", "route-origin", "next-hop", "address", "listener", "identity", "fetch"} <= set(found)
    assert all(f["severity"] == "ok" for f in result["findings"])
    assert f"169.254.169.254/32,{dhcp_ip}" in found["route-origin"]["text"]
    assert names.tap_name(dhcp["id"]) in found["address"]["text"]


def test_routed_guest_is_explained_via_the_router(plain_stack: Stack) -> None:
    stack = plain_stack
    net, sub = stack.network("routed", "10.92.1.0/24")
    router = stack.router("r", sub)
    stack.converged()
    vm = stack.boot("x2", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")

    code, result = run_explain(stack, vm)
    assert code == 0 and result["consistent"], result
    assert (result["path"], result["next_hop"]) == ("router", sub["gateway_ip"])
    assert result["namespace"] == names.router_namespace(router["id"])
    found = by_code(result)
    assert "--to-ports 9697" in found["redirect"]["text"]
    assert "*:9697" in found["listener"]["text"]  # the dual-stack [::]:9697
    assert found["fetch"]["text"].startswith("GET /openstack/latest/meta_data.json from the guest: 200")


def test_stale_route_after_router_attach_is_named_until_renew(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, sub = stack.network("seed", "172.31.0.0/24")
    dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
    vm = stack.boot("x3", net["id"])
    stack.router("testrouter", sub)
    gw = sub["gateway_ip"]
    wait_until(lambda: any(f"169.254.169.254/32,{gw}," in l for l in stack.opts(net["id"])), "the opts to follow")

    code, result = run_explain(stack, vm)
    assert code == 3 and not result["consistent"]
    assert (result["path"], result["next_hop"]) == ("dhcp", dhcp_ip)
    assert problems(result) == {"stale-route"}, result
    stale = by_code(result)["stale-route"]["text"]
    assert f"via {dhcp_ip} is stale" in stale and f"now offers 169.254.169.254/32 via {gw}" in stale
    assert "renew" in stale
    # Stale but still served: the qdhcp listener stays for exactly these guests.
    assert by_code(result)["fetch"]["severity"] == "ok"

    stack.guests.renew(vm.name)
    code, result = run_explain(stack, vm)
    assert code == 0 and (result["path"], result["next_hop"]) == ("router", gw), result


def test_metadata_off_is_a_note_not_a_fault(plain_stack: Stack) -> None:
    stack = plain_stack
    net, _ = stack.network("off", "10.92.4.0/24", gateway=False)
    vm = stack.boot("x4", net["id"])

    code, result = run_explain(stack, vm)
    assert code == 0 and result["consistent"], result
    assert result["path"] == "none" and result["next_hop"] is None
    found = by_code(result)
    assert found["metadata-off"]["severity"] == "note"
    assert "enable_isolated_metadata" in found["metadata-off"]["text"]
    assert found["fetch"]["severity"] == "note"
    assert "unused-address" not in found


# --- inconsistencies made on purpose ----------------------------------------------------------


def test_address_deleted_from_the_tap_is_named(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("noaddr", "10.92.5.0/24", gateway=False)
    vm = stack.boot("x5", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    stack.agent.stop()  # its next full pass would put the address back
    tap = names.tap_name(stack.dhcp_port(net["id"])["id"])
    qdhcp = names.dhcp_namespace(net["id"])
    assert in_ns(qdhcp, "ip", "addr", "del", "169.254.169.254/32", "dev", tap).returncode == 0

    code, result = run_explain(stack, vm)
    assert code == 3
    assert problems(result) == {"address-missing", "fetch"}, result
    assert by_code(result)["address-missing"]["text"].startswith(f"169.254.169.254/32 is not on {tap} in {qdhcp}")
    assert result["problems"][0] == by_code(result)["address-missing"]["text"]


def test_metadata_process_stopped_is_named(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("nolisten", "10.92.6.0/24", gateway=False)
    vm = stack.boot("x6", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    stack.metadata.stop()

    code, result = run_explain(stack, vm)
    assert code == 3
    assert problems(result) == {"no-listener", "fetch"}, result
    assert "nothing listens on 169.254.169.254:80" in by_code(result)["no-listener"]["text"]
    assert "connection refused" in by_code(result)["fetch"]["text"]


def test_flushed_router_nat_table_is_named(plain_stack: Stack) -> None:
    stack = plain_stack
    net, sub = stack.network("nonat", "10.92.7.0/24")
    router = stack.router("r", sub)
    stack.converged()
    vm = stack.boot("x7", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    stack.agent.stop()  # its next full pass would restore the table
    qrouter = names.router_namespace(router["id"])
    assert in_ns(qrouter, "iptables", "-t", "nat", "-F").returncode == 0

    code, result = run_explain(stack, vm)
    assert code == 3 and result["path"] == "router"
    assert problems(result) == {"no-redirect", "fetch"}, result
    assert by_code(result)["no-redirect"]["text"].startswith("no REDIRECT rule for 169.254.169.254:80")
    assert by_code(result)["listener"]["severity"] == "ok", "the listener is fine; the rule is what is missing"
