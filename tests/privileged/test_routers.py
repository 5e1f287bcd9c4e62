"""Routers for real: qrouter namespaces, Neutron's metadata rules, forwarding.

Each test runs a whole netmeta (server, agent, metadata) with guests whose
real dhclient learns its routes from the real dnsmasq, and checks the
router half of the seed: the REDIRECT rule operators grep for, that the
*router's* listener (not the qdhcp one) answers a routed guest — proved by
the metadata process's per-listener access counts, not by the body, which
is the same from both — that port 9697 is not reachable directly, that a
marked packet is never forwarded to another network, that two subnets of
one router reach each other, and that interface removal, router deletion
and an agent restart do exactly what they should and nothing more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import pytest

from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

from netmeta.metadata.service import read_status as metadata_status
from netmeta.model import names
from netmeta.vm.guests import Guest

pytestmark = pytest.mark.privileged

META = "/openstack/latest/meta_data.json"
REDIRECT = ("-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
            "-j REDIRECT --to-ports 9697")


@pytest.fixture
def plain_stack() -> Iterator[Stack]:
    """Neutron's defaults: no metadata in qdhcp, the router serves it."""
    yield from make_stack()


@pytest.fixture
def isolated_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


# --- helpers -------------------------------------------------------------------


def access(stack: Stack, kind: str, ident: str, peer: str) -> int:
    """Requests the metadata process answered on one listener for one caller."""
    status = metadata_status(stack.config.state_dir) or {}
    return sum(int(a["count"]) for a in status.get("access", [])  # type: ignore[union-attr]
               if a["kind"] == kind and a["id"] == ident and a["peer"] == peer)


def listeners(stack: Stack) -> set[tuple[str, str]]:
    status = metadata_status(stack.config.state_dir) or {}
    return {(l["kind"], l["id"]) for l in status.get("listeners", [])}  # type: ignore[union-attr]


def route_to_metadata(stack: Stack, guest: Guest) -> str | None:
    return {r["dst"]: r.get("gateway") for r in stack.routes(guest)}.get("169.254.169.254")


def fetch_counted(stack: Stack, guest: Guest, kind: str, ident: str) -> dict[str, Any]:
    """Fetch meta_data.json and wait until the listener (kind, ident) has counted it.

    The status file is written on the metadata process's next tick, so the
    count is awaited; the caller then compares the *other* context's count,
    which was written in the same file at the same moment.
    """
    before = access(stack, kind, ident, guest.ip)
    meta = json.loads(stack.fetch(guest, META))
    wait_until(lambda: access(stack, kind, ident, guest.ip) > before,
               f"{kind} {ident} to count a request from {guest.ip}", timeout=5)
    return meta  # type: ignore[no-any-return]


def qr_device(port: dict[str, Any]) -> str:
    return names.router_port_name(port["id"])


def router_port_on(stack: Stack, router_id: str, net_id: str) -> dict[str, Any]:
    ports = stack.client.get("/v2.0/ports", device_id=router_id, network_id=net_id)["ports"]
    assert len(ports) == 1, ports
    return ports[0]  # type: ignore[no-any-return]


def devices(ns: str) -> dict[str, int]:
    """name → ifindex of the links in a namespace."""
    out = in_ns(ns, "ip", "-j", "link", "show")
    assert out.returncode == 0, out.stderr
    return {link["ifname"]: int(link["ifindex"]) for link in json.loads(out.stdout)}


def rule_counters(ns: str) -> list[str]:
    """The ``[packets:bytes] -A …`` rule lines of iptables-save -c (chain policies excluded).

    Chain policy counters move with every DHCP broadcast on the bridge; the
    metadata rules match only requests to 169.254.169.254:80, so their
    counters change only when a test sends one — or are reset to zero if the
    tables are re-applied.
    """
    out = in_ns(ns, "iptables-save", "-c")
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line.startswith("[") and " -A " in line]


def curl_status(guest: Guest, url: str, max_time: str = "2") -> int:
    """curl's exit code for one request from inside the guest (0 ok, 7 refused/unreachable, 28 timeout)."""
    return in_ns(guest.namespace, "curl", "-s", "-o", "/dev/null", "--max-time", max_time, url).returncode


# --- tests -------------------------------------------------------------------------


def test_routed_guest_is_answered_by_the_router_and_9697_is_closed(plain_stack: Stack) -> None:
    """Neither option set: the route goes via the gateway, only the router listens."""
    stack = plain_stack
    net, sub = stack.network("routed", "10.90.1.0/24")
    router = stack.router("r1", sub)
    stack.converged()
    vm = stack.boot("rg1", net["id"])
    gw = sub["gateway_ip"]
    qrouter = names.router_namespace(router["id"])

    assert route_to_metadata(stack, vm) == gw
    wait_until(lambda: ("router", router["id"]) in listeners(stack), "the router's listener")
    assert ("network", net["id"]) not in listeners(stack), "no qdhcp listener without the options"
    assert "169.254.169.254:80" not in in_ns(names.dhcp_namespace(net["id"]), "ss", "-Hntl").stdout
    assert "*:9697" in in_ns(qrouter, "ss", "-Hntl").stdout  # [::]:9697, dual stack

    meta = fetch_counted(stack, vm, "router", router["id"])
    assert meta["uuid"] == vm.instance_id
    assert access(stack, "network", net["id"], vm.ip) == 0

    saved = in_ns(qrouter, "iptables-save").stdout
    assert [line for line in saved.splitlines() if "REDIRECT" in line] == [REDIRECT]

    # The listener on 9697 exists, yet nothing reaches it except through the REDIRECT.
    answered = access(stack, "router", router["id"], vm.ip)
    assert curl_status(vm, f"http://{gw}:9697{META}") == 28, "qr IP:9697 must be silently dropped"
    assert curl_status(vm, f"http://169.254.169.254:9697{META}") != 0
    assert curl_status(vm, f"http://169.254.169.254{META}") == 0, "port 80 still works"
    wait_until(lambda: access(stack, "router", router["id"], vm.ip) == answered + 1,
               "exactly the port-80 request to be counted", timeout=5)
    dropped = in_ns(qrouter, "iptables", "-t", "filter", "-L", "neutron-l3-agent-INPUT", "-v", "-x", "-n").stdout
    drop = next(line for line in dropped.splitlines() if "DROP" in line and "dpt:9697" in line)
    assert int(drop.split()[0]) > 0, dropped


def test_router_answers_after_renew_not_qdhcp_seed_sequence(isolated_stack: Stack) -> None:
    """The seed: gateway network → guest → router attached → renew → the router answers."""
    stack = isolated_stack
    net, sub = stack.network("test-metadata-in-dhcp-with-gw", "172.31.0.0/24")
    dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
    vm = stack.boot("seed", net["id"])
    assert route_to_metadata(stack, vm) == dhcp_ip
    fetch_counted(stack, vm, "network", net["id"])

    router = stack.router("testrouter", sub)
    stack.converged()
    wait_until(lambda: ("router", router["id"]) in listeners(stack), "the router's listener")
    stack.guests.renew(vm.name)
    assert route_to_metadata(stack, vm) == sub["gateway_ip"]
    by_network = access(stack, "network", net["id"], vm.ip)
    # The qdhcp listener is still there (it costs nothing), but it is not what answers.
    assert ("network", net["id"]) in listeners(stack)

    for _ in range(3):
        assert fetch_counted(stack, vm, "router", router["id"])["uuid"] == vm.instance_id
    assert access(stack, "router", router["id"], vm.ip) == 3
    assert access(stack, "network", net["id"], vm.ip) == by_network
    saved = in_ns(names.router_namespace(router["id"]), "iptables-save").stdout
    assert [line for line in saved.splitlines() if "REDIRECT" in line] == [REDIRECT]


def test_two_subnets_of_one_router_reach_each_other(plain_stack: Stack) -> None:
    stack = plain_stack
    net_a, sub_a = stack.network("a", "10.90.11.0/24")
    net_b, sub_b = stack.network("b", "10.90.12.0/24")
    stack.router("r", sub_a, sub_b)
    stack.converged()
    a = stack.boot("pa", net_a["id"])
    b = stack.boot("pb", net_b["id"])
    for src, dst in ((a, b), (b, a)):
        out = in_ns(src.namespace, "ping", "-c1", "-W2", dst.ip)
        assert out.returncode == 0, f"{src.name} → {dst.name}: {out.stdout}{out.stderr}"


def test_marked_packets_are_never_forwarded(plain_stack: Stack) -> None:
    """Without the REDIRECT (a stray request before it exists), the mark still stops forwarding.

    Guest B, on the router's other network, takes 169.254.169.254 itself and
    listens on ports 80 and 81; the router is given a route to that address
    via B. A request from guest A to port 81 is not marked and is forwarded
    to B — the path works. The same request to port 80 is marked in mangle
    PREROUTING and must die in ``neutron-l3-agent-FORWARD`` (netmeta's rule:
    Neutron's steady state has none there): B never sees it.
    """
    stack = plain_stack
    net_a, sub_a = stack.network("a", "10.90.21.0/24")
    net_b, sub_b = stack.network("b", "10.90.22.0/24")
    router = stack.router("r", sub_a, sub_b)
    stack.converged()
    a = stack.boot("ma", net_a["id"])
    b = stack.boot("mb", net_b["id"])
    # B answers as 169.254.169.254, which port security drops at its port
    # (tests/privileged/test_port_security.py); here the router's rules are under test.
    stack.client.request("PUT", f"/v2.0/ports/{b.port_id}",
                         {"port": {"port_security_enabled": False, "security_groups": []}})
    stack.converged()
    qrouter = names.router_namespace(router["id"])
    stack.agent.stop()  # its next full pass would put the REDIRECT back

    rule = REDIRECT.split(" ", 2)[2]
    assert in_ns(qrouter, "iptables", "-t", "nat", "-D", "neutron-l3-agent-PREROUTING", *rule.split()).returncode == 0
    assert in_ns(qrouter, "ip", "route", "add", "169.254.169.254/32", "via", b.ip).returncode == 0
    assert in_ns(b.namespace, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo").returncode == 0

    docroot = tempfile.mkdtemp(prefix="nmt-docroot-")
    with open(os.path.join(docroot, "index.html"), "w", encoding="utf-8") as handle:
        handle.write("guest-b\n")
    servers = [
        subprocess.Popen(["ip", "netns", "exec", b.namespace, sys.executable, "-m", "http.server",
                          "--bind", "0.0.0.0", "--directory", docroot, str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in (80, 81)
    ]
    try:
        wait_until(lambda: all(f"0.0.0.0:{p}" in in_ns(b.namespace, "ss", "-Hntl").stdout for p in (80, 81)),
                   "guest B's listeners")
        control = in_ns(a.namespace, "curl", "-s", "--max-time", "3", "http://169.254.169.254:81/")
        assert control.returncode == 0 and control.stdout == "guest-b\n", "unmarked traffic is forwarded to B"

        def scope_drops() -> int:
            out = in_ns(qrouter, "iptables", "-t", "filter", "-L", "neutron-l3-agent-FORWARD", "-v", "-x", "-n").stdout
            return int(next(line for line in out.splitlines() if "DROP" in line and "mark match 0x1" in line).split()[0])

        before = scope_drops()
        assert curl_status(a, "http://169.254.169.254:80/") == 28, "a marked request must not reach B"
        assert scope_drops() > before
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
        for name in os.listdir(docroot):
            os.unlink(os.path.join(docroot, name))
        os.rmdir(docroot)


def test_interface_removal_and_router_deletion(plain_stack: Stack) -> None:
    stack = plain_stack
    net_a, sub_a = stack.network("a", "10.90.31.0/24")
    net_b, sub_b = stack.network("b", "10.90.32.0/24")
    router = stack.router("r", sub_a, sub_b)
    stack.converged()
    qrouter = names.router_namespace(router["id"])
    qr_a = qr_device(router_port_on(stack, router["id"], net_a["id"]))
    qr_b = qr_device(router_port_on(stack, router["id"], net_b["id"]))
    present = wait_until(lambda: (d := devices(qrouter)) and {qr_a, qr_b} <= set(d) and d, "both qr- devices")

    stack.client.request("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub_a["id"]})
    wait_until(lambda: qr_a not in devices(qrouter), f"{qr_a} to leave {qrouter}", timeout=5)
    assert devices(qrouter)[qr_b] == present[qr_b], "the other interface is left alone"

    stack.client.request("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub_b["id"]})
    stack.client.request("DELETE", f"/v2.0/routers/{router['id']}")
    wait_until(lambda: not os.path.exists(f"/run/netns/{qrouter}"), f"{qrouter} to go", timeout=5)
    wait_until(lambda: ("router", router["id"]) not in listeners(stack), "the router's listener to close", timeout=5)
    stack.converged()
    assert not os.path.exists(f"/run/netns/{qrouter}")


def test_agent_restart_leaves_the_router_alone(plain_stack: Stack) -> None:
    stack = plain_stack
    net, sub = stack.network("rs", "10.90.41.0/24")
    router = stack.router("r", sub)
    stack.converged()
    vm = stack.boot("rs1", net["id"])
    qrouter = names.router_namespace(router["id"])
    qr = qr_device(router_port_on(stack, router["id"], net["id"]))
    fetch_counted(stack, vm, "router", router["id"])

    stack.agent.stop()
    # Metadata keeps answering through the router while the agent is down.
    fetch_counted(stack, vm, "router", router["id"])

    def view() -> dict[str, Any]:
        return {"inode": os.stat(f"/run/netns/{qrouter}").st_ino, "qr": devices(qrouter)[qr],
                "rules": rule_counters(qrouter)}

    def settled() -> dict[str, Any] | None:
        # The guest's last ACK/FIN of a fetch can reach mangle PREROUTING after curl
        # has returned: wait (bounded) until two reads agree before taking the picture.
        first = view()
        time.sleep(0.3)
        return first if view() == first else None

    before = wait_until(settled, "the router's rule counters to settle", timeout=10)
    marked = [line for line in before["rules"] if "169.254.169.254" in line]  # the metadata MARK and REDIRECT
    assert marked and all(not line.startswith("[0:0]") for line in marked), before["rules"]

    stack.agent.start()
    status = stack.agent_pass()
    assert status["last_pass_full"] and status["failed"] == {}
    assert view() == before, "an agent restart must not re-create the namespace, the qr- device or the rules"
    assert fetch_counted(stack, vm, "router", router["id"])["uuid"] == vm.instance_id
