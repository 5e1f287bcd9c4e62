"""Neutron features a user reaches with the ``openstack`` CLI, in effect on real namespaces.

``port set --extra-dhcp-option`` and ``--dns-name`` end in the guest's real
DHCP lease (dhclient's lease file, after a renew); ``router add route`` ends
in the qrouter's routing table, and a nexthop off the router's subnets is
refused; the qdhcp namespace has Neutron's default route.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from netmeta.model import names
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

pytestmark = pytest.mark.privileged

OPENSTACK = Path(sys.executable).with_name("openstack")


@pytest.fixture
def dns_stack() -> Iterator[Stack]:
    # A dns_domain other than Neutron's default: only then does dns_name name a port.
    yield from make_stack(dns_domain="example.test")


def osc(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    # The stack's own clouds.yaml (auth_strategy = keystone, the admin cloud).
    return subprocess.run([str(OPENSTACK), *args], capture_output=True, text=True, env=stack.openstack_env(),
                          timeout=120)


def osc_json(stack: Stack, *args: str) -> Any:
    done = osc(stack, *args, "-f", "json")
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def _lease(stack: Stack, guest: Any) -> str:
    with open(guest.paths.lease, encoding="utf-8") as handle:
        return handle.read().rsplit("lease {", 1)[-1]


def test_extra_dhcp_option_and_dns_name_reach_the_guests_lease(dns_stack: Stack) -> None:
    stack = dns_stack
    net, sub = stack.network("edo", "10.93.1.0/24")
    vm = stack.boot("edo1", net["id"])
    made = osc_json(stack, "port", "create", "--network", net["id"], "--dns-name", "spare",
                    "--extra-dhcp-option", "name=bootfile-name,value=pxelinux.0", "spare-port")
    assert made["dns_name"] == "spare"
    assert made["dns_assignment"][0]["fqdn"] == "spare.example.test."

    done = osc(stack, "port", "set", "--dns-name", "web1", "--extra-dhcp-option", "name=mtu,value=1400", vm.port_id)
    assert done.returncode == 0, done.stderr
    done = osc(stack, "port", "set", "--extra-dhcp-option", "name=66,value=10.93.1.9", vm.port_id)
    assert done.returncode == 0, done.stderr
    port = osc_json(stack, "port", "show", vm.port_id)
    assert {(o["opt_name"], o["opt_value"]) for o in port["extra_dhcp_opts"]} == {("mtu", "1400"), ("66", "10.93.1.9")}, \
        "a second --extra-dhcp-option adds to the first (Neutron merges)"

    tag = f"tag:port-{vm.port_id}"
    wait_until(lambda: f"{tag},option:mtu,1400" in stack.opts(net["id"]), "the port's option line")
    assert f"{tag},66,10.93.1.9" in stack.opts(net["id"])
    hosts = Path(stack.files_dir(net["id"]), "host").read_text()
    assert f"{vm.mac},web1.example.test.,{vm.ip},set:port-{vm.port_id}" in hosts.splitlines()

    stack.guests.renew(vm.name)
    lease = _lease(stack, vm)
    assert "option interface-mtu 1400;" in lease, lease
    assert 'option host-name "web1";' in lease, lease
    assert 'option domain-name "example.test";' in lease, lease


def test_router_add_route_lands_in_the_qrouter(dns_stack: Stack) -> None:
    stack = dns_stack
    net, sub = stack.network("rt", "10.93.2.0/24")
    router = stack.router("rtr", sub)
    stack.converged()
    qrouter = names.router_namespace(router["id"])
    done = osc(stack, "router", "add", "route", "--route", "destination=192.168.77.0/24,gateway=10.93.2.50",
               "--route", "destination=192.168.78.0/24,gateway=10.93.2.51", router["id"])
    assert done.returncode == 0, done.stderr

    def routes() -> dict[str, str | None]:
        out = in_ns(qrouter, "ip", "-j", "-4", "route").stdout
        return {r["dst"]: r.get("gateway") for r in json.loads(out or "[]")}

    wait_until(lambda: routes().get("192.168.77.0/24") == "10.93.2.50", "the extra route in the qrouter", timeout=10)
    assert routes().get("192.168.78.0/24") == "10.93.2.51"

    refused = osc(stack, "router", "add", "route", "--route", "destination=10.0.0.0/8,gateway=172.16.9.9", router["id"])
    assert refused.returncode != 0 and "nexthop is not connected with router" in refused.stderr, refused.stderr

    done = osc(stack, "router", "remove", "route", "--route", "destination=192.168.77.0/24,gateway=10.93.2.50",
               router["id"])
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "192.168.77.0/24" not in routes(), "the removed route to leave the qrouter", timeout=10)
    assert routes().get("192.168.78.0/24") == "10.93.2.51"
    assert routes().get("10.93.2.0/24") is None and "10.93.2.0/24" in routes(), "the link route stays"


def test_qdhcp_has_neutrons_default_route(dns_stack: Stack) -> None:
    stack = dns_stack
    net, sub = stack.network("dr", "10.93.3.0/24")
    stack.converged()
    qdhcp = names.dhcp_namespace(net["id"])

    def default() -> str | None:
        out = in_ns(qdhcp, "ip", "-j", "-4", "route").stdout
        return next((r.get("gateway") for r in json.loads(out or "[]") if r["dst"] == "default"), None)

    wait_until(lambda: default() == "10.93.3.1", "the qdhcp default route via the gateway", timeout=10)
