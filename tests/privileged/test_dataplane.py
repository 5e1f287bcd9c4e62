"""The seed, for real: qdhcp namespaces, dnsmasq, dhclient guests, metadata.

Each test runs a whole netmeta (server, agent, metadata process) with its own
state directory and fabric namespace, boots guests whose real dhclient takes
a lease from the real dnsmasq, and checks what the seed's author checked: the
guest's routes, the opts file, the address on the tap, who answers on
169.254.169.254 — and that all of it follows every change at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any, Iterator

import pytest

from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

from netmeta.model import names

pytestmark = pytest.mark.privileged


@pytest.fixture
def isolated_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _metadata_routes(stack: Stack, guest: Any) -> dict[str, str | None]:
    return {r["dst"]: r.get("gateway") for r in stack.routes(guest)}


def test_isolated_network_serves_metadata_from_qdhcp(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, sub = stack.network("test-metadata-in-dhcp", "192.168.111.0/24", gateway=False)
    dhcp = stack.dhcp_port(net["id"])
    dhcp_ip = dhcp["fixed_ips"][0]["ip_address"]
    assert dhcp_ip == "192.168.111.1"
    vm = stack.boot("vm1", net["id"], user_data=b"#cloud-config\n", meta={"role": "seed"})

    # The guest learnt exactly one route, to metadata via the DHCP port, and no default.
    routes = _metadata_routes(stack, vm)
    assert routes.get("169.254.169.254") == dhcp_ip
    assert "default" not in routes

    tag = f"tag:subnet-{sub['id']}"
    assert stack.opts(net["id"]) == [
        f"{tag},option:classless-static-route,169.254.169.254/32,{dhcp_ip}",
        f"{tag},249,169.254.169.254/32,{dhcp_ip}",
        f"{tag},option:router",
    ]
    qdhcp = names.dhcp_namespace(net["id"])
    addrs = in_ns(qdhcp, "ip", "-4", "-o", "addr", "show", "dev", names.tap_name(dhcp["id"])).stdout
    assert "169.254.169.254/32" in addrs and f"{dhcp_ip}/24" in addrs

    meta = json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))
    assert meta["uuid"] == vm.instance_id
    assert meta["name"] == "vm1"
    assert stack.fetch(vm, "/latest/meta-data/instance-id").strip().startswith("i-")
    # The listener lives in the qdhcp namespace, not in the root namespace.
    listening = in_ns(qdhcp, "ss", "-Hntl").stdout
    assert "169.254.169.254:80" in listening


def test_unknown_caller_gets_a_clear_404(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("n", "10.77.0.0/24", gateway=False)
    vm = stack.boot("known", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    # Port security would drop the lie in the fabric (tests/privileged/test_port_security.py);
    # this test is about the metadata service's answer, so let the packets through.
    stack.client.request("PUT", f"/v2.0/ports/{vm.port_id}",
                         {"port": {"port_security_enabled": False, "security_groups": []}})
    stack.converged()
    # Give the guest a second address that no port holds and ask from it.
    in_ns(vm.namespace, "ip", "addr", "add", "10.77.0.250/24", "dev", "eth0")
    out = stack.curl(vm, "/openstack/latest/meta_data.json", "--interface", "10.77.0.250", "-w", "\n%{http_code}")
    body, _, code = out.stdout.rpartition("\n")
    assert code == "404"
    assert "10.77.0.250" in body


def test_router_attach_rewrites_opts_at_once_and_renew_moves_the_route(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, sub = stack.network("test-metadata-in-dhcp-with-gw", "172.31.0.0/24")
    dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
    assert (sub["gateway_ip"], dhcp_ip) == ("172.31.0.1", "172.31.0.2")
    vm = stack.boot("vm2", net["id"])
    tag = f"tag:subnet-{sub['id']}"
    assert f"{tag},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1" in stack.opts(net["id"])
    assert _metadata_routes(stack, vm) == {"169.254.169.254": "172.31.0.2", "default": "172.31.0.1", "172.31.0.0/24": None}
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    pid_before = stack.dnsmasq_pid(net["id"])

    stack.router("testrouter", sub)
    want = f"{tag},option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1"
    wait_until(lambda: want in stack.opts(net["id"]), "the opts file to follow the router", timeout=5)
    assert stack.dnsmasq_pid(net["id"]) == pid_before, "a router attach must SIGHUP dnsmasq, not restart it"

    # Before the renew the guest still uses the DHCP port, which still answers.
    assert _metadata_routes(stack, vm)["169.254.169.254"] == "172.31.0.2"
    assert json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))["uuid"] == vm.instance_id
    stack.guests.renew(vm.name)
    assert _metadata_routes(stack, vm)["169.254.169.254"] == "172.31.0.1"
    assert json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))["uuid"] == vm.instance_id


def test_agent_restart_changes_nothing(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("a", "10.78.0.0/24", gateway=False)
    vm = stack.boot("r1", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    dhcp = stack.dhcp_port(net["id"])
    qdhcp = names.dhcp_namespace(net["id"])

    def host_view() -> dict[str, Any]:
        files = {n: _read(os.path.join(stack.files_dir(net["id"]), n)) for n in ("opts", "host", "addn_hosts")}
        link = in_ns(qdhcp, "ip", "-o", "link", "show", names.tap_name(dhcp["id"])).stdout.split(":")[0]
        return {"pid": stack.dnsmasq_pid(net["id"]), "files": files, "tap_ifindex": link,
                "routes": stack.routes(vm), "ns_inode": os.stat(f"/run/netns/{qdhcp}").st_ino}

    before = host_view()
    stack.agent.stop()
    # Metadata keeps answering while the agent is down.
    assert json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))["uuid"] == vm.instance_id
    stack.agent.start()
    status = stack.agent_pass()
    assert status["spawned"] == [] and status["failed"] == {}
    assert host_view() == before


def test_dead_dnsmasq_is_respawned(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("d", "10.79.0.0/24", gateway=False)
    stack.converged()
    pid = wait_until(lambda: stack.dnsmasq_pid(net["id"]), "dnsmasq")
    os.kill(pid, signal.SIGKILL)
    new = wait_until(lambda: (p := stack.dnsmasq_pid(net["id"])) and p != pid and p, "a new dnsmasq", timeout=15)
    assert new != pid
    vm = stack.boot("after", net["id"])
    assert vm.ip.startswith("10.79.0.")


def test_deleted_network_leaves_nothing(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("gone", "10.80.0.0/24", gateway=False)
    vm = stack.boot("g1", net["id"])
    pid = stack.dnsmasq_pid(net["id"])
    qdhcp = names.dhcp_namespace(net["id"])
    assert os.path.exists(f"/run/netns/{qdhcp}")
    stack.guests.delete(vm.name)
    stack.client.request("DELETE", f"/v2.0/networks/{net['id']}")
    wait_until(lambda: not os.path.exists(f"/run/netns/{qdhcp}"), "the qdhcp namespace to go")
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), "dnsmasq to stop")
    assert not os.path.exists(stack.files_dir(net["id"]))
    assert not os.path.exists(f"/run/netns/{vm.namespace}")


@pytest.mark.parametrize(
    ("options", "routed", "route_via", "listener"),
    [
        ({"force_metadata": True}, True, "dhcp", True),
        ({"force_metadata": True}, False, "dhcp", True),
        ({}, True, "gateway", False),
        ({}, False, None, False),
    ],
    ids=["force-routed", "force-isolated", "neither-routed", "neither-isolated"],
)
def test_behaviour_table(options: dict[str, bool], routed: bool, route_via: str | None, listener: bool) -> None:
    for stack in make_stack(**options):
        net, sub = stack.network("t", "10.81.0.0/24")
        if routed:
            stack.router("rt", sub)
        vm = stack.boot("t1", net["id"])
        dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
        routes = _metadata_routes(stack, vm)
        expected = {"dhcp": dhcp_ip, "gateway": sub["gateway_ip"], None: None}[route_via]
        assert routes.get("169.254.169.254") == expected
        qdhcp = names.dhcp_namespace(net["id"])
        wait_until(lambda: ("169.254.169.254:80" in in_ns(qdhcp, "ss", "-Hntl").stdout) == listener,
                   f"qdhcp listener to be {'present' if listener else 'absent'}")
        if route_via is not None:
            meta = json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))
            assert meta["uuid"] == vm.instance_id


def test_files_written_but_never_signalled_are_signalled_after_a_restart(isolated_stack: Stack) -> None:
    # An agent that died between writing dnsmasq's files and its SIGHUP: the
    # next agent finds the files already current on disk and must still signal.
    stack = isolated_stack
    net, _ = stack.network("hup", "10.82.0.0/24", gateway=False)
    stack.converged()
    pid = wait_until(lambda: stack.dnsmasq_pid(net["id"]), "dnsmasq")
    stack.agent.stop()
    with open(os.path.join(stack.files_dir(net["id"]), "loaded"), "w", encoding="utf-8") as handle:
        handle.write("files of an older revision\n")
    stack.agent.start()
    status = stack.agent_pass()
    assert status["signalled"] == [net["id"]]
    assert status["spawned"] == []
    assert stack.dnsmasq_pid(net["id"]) == pid
    # And a restart after that one signals nothing.
    stack.agent.restart()
    status = stack.agent_pass()
    assert status["signalled"] == [] and status["spawned"] == []


def test_a_qdhcp_namespace_deleted_by_hand_is_rebuilt_with_its_dnsmasq(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("lost", "10.83.0.0/24", gateway=False)
    vm = stack.boot("l1", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    qdhcp = names.dhcp_namespace(net["id"])
    old_inode = os.stat(f"/run/netns/{qdhcp}").st_ino
    old_pid = stack.dnsmasq_pid(net["id"])

    subprocess.run(["ip", "netns", "del", qdhcp], check=True)

    # The agent's next pass rebuilds the namespace and starts a dnsmasq in it
    # (the old one serves a namespace nobody reaches); the metadata process
    # reopens its listener in the new namespace.
    wait_until(lambda: os.path.exists(f"/run/netns/{qdhcp}") and os.stat(f"/run/netns/{qdhcp}").st_ino != old_inode,
               "the namespace to be made again", timeout=20)
    new_pid = wait_until(lambda: (p := stack.dnsmasq_pid(net["id"])) and p != old_pid and p, "a new dnsmasq", timeout=20)
    assert os.stat(f"/proc/{new_pid}/ns/net").st_ino == os.stat(f"/run/netns/{qdhcp}").st_ino
    from netmeta.drivers.processes import pid_alive

    assert not pid_alive(old_pid), "the dnsmasq of the lost namespace must be stopped"
    stack.guests.renew(vm.name)
    assert json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))["uuid"] == vm.instance_id


def test_metadata_restart_leaves_dhcp_alone_and_serves_again(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, _ = stack.network("mr", "10.85.0.0/24", gateway=False)
    vm = stack.boot("m1", net["id"])
    stack.fetch(vm, "/openstack/latest/meta_data.json")
    pid = stack.dnsmasq_pid(net["id"])
    stack.metadata.stop()
    # DHCP does not depend on the metadata process.
    stack.guests.renew(vm.name)
    assert stack.curl(vm, "/openstack/latest/meta_data.json").returncode != 0  # nothing listens now
    stack.metadata.start()
    assert json.loads(stack.fetch(vm, "/openstack/latest/meta_data.json"))["uuid"] == vm.instance_id
    assert stack.dnsmasq_pid(net["id"]) == pid
