"""Guests that lie, on a real fabric: each attack fails with port security on.

Every test runs a whole netmeta and real guests (namespaces, veths, dhclient)
on one isolated network with metadata in qdhcp. Each attack is the one from
issue 8, run from the attacker's own namespace; each is then repeated with
port security turned off *for the attacker's port only* and shown to work,
so it is the rule that stops it, not luck or a broken setup.

The rules under test are the agent's: :func:`rules_in_force` waits until the
fabric's nftables carry the digest of the ruleset the server's current state
asks for, and never applies anything itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from netmeta.drivers import nftables
from netmeta.model import names, portsec
from netmeta.model.types import snapshot_from_state
from netmeta.vm.guests import Guest
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

pytestmark = pytest.mark.privileged

RAW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rawframes.py")
CIDR = "10.66.0.0/24"


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def secret(name: str) -> bytes:
    return f"#cloud-config\n# the secret of {name}\n".encode()


def rules_in_force(stack: Stack, timeout: float = 20.0) -> str | None:
    """Wait until the agent has applied the ruleset the server's state asks for."""
    stack.converged(timeout=timeout)
    want = portsec.ruleset(snapshot_from_state(stack.client.state())).digest
    fabric = stack.config.fabric_namespace
    wait_until(lambda: nftables.current_digest(fabric) == want, f"ruleset {want} in {fabric}", timeout=timeout)
    return want


def set_port_security(stack: Stack, guest: Guest, on: bool) -> None:
    body: dict[str, Any] = {"port_security_enabled": on}
    if on:
        body["security_groups"] = [default_group(stack)]
    else:
        body["security_groups"] = []
    stack.client.request("PUT", f"/v2.0/ports/{guest.port_id}", {"port": body})
    rules_in_force(stack)


def default_group(stack: Stack) -> str:
    groups = stack.client.get("/v2.0/security-groups")["security_groups"]
    return str(next(g["id"] for g in groups if g["name"] == "default"))


def world(stack: Stack, *guests: str) -> tuple[dict[str, Any], list[Guest]]:
    net, _ = stack.network("portsec", CIDR, gateway=False)
    booted = [stack.boot(name, net["id"], user_data=secret(name)) for name in guests]
    rules_in_force(stack)
    for guest in booted:
        assert stack.fetch(guest, "/openstack/latest/user_data").encode() == secret(guest.name)
    return net, booted


def sh(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = in_ns(ns, *argv)
    assert done.returncode == 0, (argv, done.stderr)
    return done


def tries(stack: Stack, guest: Guest, path: str, count: int, *extra: str) -> list[str]:
    """The bodies of ``count`` attempts (empty for a failure)."""
    out = []
    for _ in range(count):
        done = stack.curl(guest, path, "-f", *extra)
        out.append(done.stdout if done.returncode == 0 else "")
    return out


def steal_with_secondary_ip(stack: Stack, attacker: Guest, victim: Guest, count: int) -> list[str]:
    sh(attacker.namespace, "ip", "addr", "add", f"{victim.ip}/32", "dev", "eth0")
    try:
        sh(attacker.namespace, "ip", "neigh", "flush", "dev", "eth0")
        return tries(stack, attacker, "/openstack/latest/user_data", count, "--interface", victim.ip)
    finally:
        in_ns(attacker.namespace, "ip", "addr", "del", f"{victim.ip}/32", "dev", "eth0")


def garp(guest: Guest, ip: str, mac: str) -> None:
    sh(guest.namespace, sys.executable, RAW, "garp", "eth0", ip, mac)


def neighbour(ns: str, ip: str) -> str:
    out = in_ns(ns, "ip", "-j", "neigh", "show", ip).stdout
    entries = json.loads(out or "[]")
    return str(entries[0].get("lladdr", "")) if entries else ""


def dhcp_ip(stack: Stack, net: dict[str, Any]) -> str:
    return str(stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"])


# --- the attacks of issue 8 ------------------------------------------------------


def test_secondary_ip_and_neighbour_flush(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")
    assert not any(steal_with_secondary_ip(stack, a, b, 2)), "port security let A read B's user data"
    assert stack.fetch(b, "/openstack/latest/user_data").encode() == secret("b")  # B unharmed
    set_port_security(stack, a, False)
    assert secret("b").decode() in steal_with_secondary_ip(stack, a, b, 3), "the attack itself did not work"


def test_gratuitous_arp_for_a_neighbours_ip(stack: Stack) -> None:
    net, (a, b) = world(stack, "a", "b")
    qdhcp = names.dhcp_namespace(net["id"])
    wait_until(lambda: neighbour(qdhcp, b.ip) == b.mac, "qdhcp to know B's MAC")
    time.sleep(1.2)  # past the neighbour table's locktime, or Linux ignores any new answer
    garp(a, b.ip, a.mac)
    time.sleep(0.3)
    assert neighbour(qdhcp, b.ip) == b.mac, "A's gratuitous ARP reached qdhcp"
    set_port_security(stack, a, False)
    stack.fetch(b, "/openstack/latest/meta_data.json")  # qdhcp's entry fresh again
    time.sleep(1.2)
    garp(a, b.ip, a.mac)
    wait_until(lambda: neighbour(qdhcp, b.ip) == a.mac, "the gratuitous ARP to take (the attack itself)")
    sh(a.namespace, "ip", "addr", "add", f"{b.ip}/32", "dev", "eth0")
    assert secret("b").decode() in tries(stack, a, "/openstack/latest/user_data", 3, "--interface", b.ip)


def test_copying_the_victims_mac(stack: Stack) -> None:
    net, (a, b) = world(stack, "a", "b")
    server = dhcp_ip(stack, net)

    def become_b() -> None:
        sh(a.namespace, "ip", "link", "set", "eth0", "down")
        sh(a.namespace, "ip", "link", "set", "eth0", "address", b.mac)
        sh(a.namespace, "ip", "addr", "flush", "dev", "eth0")
        sh(a.namespace, "ip", "addr", "add", f"{b.ip}/24", "dev", "eth0")
        sh(a.namespace, "ip", "link", "set", "eth0", "up")
        in_ns(a.namespace, "ip", "route", "replace", "169.254.169.254/32", "via", server)

    _stop_dhclient(a)  # dhclient would put A's own address back, so an attacker stops it first
    become_b()
    assert not any(tries(stack, a, "/openstack/latest/user_data", 2)), "a copied MAC passed port security"
    set_port_security(stack, a, False)
    become_b()
    assert secret("b").decode() in tries(stack, a, "/openstack/latest/user_data", 3)


def _stop_dhclient(guest: Guest) -> None:
    from netmeta.drivers import dhclient

    dhclient.stop(guest.namespace, guest.paths)


def test_taking_over_a_victim_that_is_down(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")
    sh(b.namespace, "ip", "link", "set", "eth0", "down")
    assert not any(steal_with_secondary_ip(stack, a, b, 2))
    set_port_security(stack, a, False)
    assert secret("b").decode() in steal_with_secondary_ip(stack, a, b, 3)


FAKE_METADATA = """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"FORGED"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
http.server.HTTPServer(("169.254.169.254", 80), H).serve_forever()
"""


def test_impersonating_the_dhcp_port_to_feed_forged_metadata(stack: Stack) -> None:
    net, (a, b) = world(stack, "a", "b")
    server = dhcp_ip(stack, net)
    sh(a.namespace, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
    fake = subprocess.Popen(["ip", "netns", "exec", a.namespace, sys.executable, "-c", FAKE_METADATA],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "169.254.169.254:80" in in_ns(a.namespace, "ss", "-Hntl").stdout, "A's fake server")

        def attack() -> list[str]:
            wait_until(lambda: neighbour(b.namespace, server) not in ("", a.mac), "B to know the DHCP port")
            stack.fetch(b, "/openstack/latest/meta_data.json")
            time.sleep(1.2)  # past B's neighbour locktime
            garp(a, server, a.mac)
            time.sleep(0.3)
            return tries(stack, b, "/openstack/latest/user_data", 3)

        answers = attack()
        assert "FORGED" not in answers and secret("b").decode() in answers
        set_port_security(stack, a, False)
        in_ns(b.namespace, "ip", "neigh", "flush", "dev", "eth0")
        stack.fetch(b, "/openstack/latest/meta_data.json")
        assert "FORGED" in attack(), "the impersonation itself did not work"
    finally:
        os.kill(fake.pid, signal.SIGTERM)
        fake.wait(timeout=10)


def test_a_rogue_dhcp_server_reply_from_a_guest(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")

    def reply_reaches_victim() -> bool:
        sniff = subprocess.Popen(["ip", "netns", "exec", b.namespace, sys.executable, RAW, "sniff-dhcp", "eth0",
                                  a.mac, "3"], stdout=subprocess.PIPE, text=True)
        try:
            assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
            for _ in range(3):
                sh(a.namespace, sys.executable, RAW, "dhcp-offer", "eth0", a.mac, a.ip, b.mac, b.ip)
            return sniff.wait(timeout=10) == 0
        finally:
            if sniff.poll() is None:
                os.kill(sniff.pid, signal.SIGTERM)
                sniff.wait(timeout=10)
            if sniff.stdout is not None:
                sniff.stdout.close()

    assert not reply_reaches_victim(), "a guest's DHCP offer reached another guest"
    set_port_security(stack, a, False)
    assert reply_reaches_victim(), "the rogue offer itself did not get through"


# --- allowed address pairs ---------------------------------------------------------


def _reaches_metadata_from(stack: Stack, guest: Guest, ip: str) -> bool:
    """True when a request from ``ip`` reached the metadata service (any HTTP answer)."""
    sh(guest.namespace, "ip", "addr", "add", f"{ip}/32", "dev", "eth0")
    try:
        done = stack.curl(guest, "/openstack/latest/meta_data.json", "--interface", ip, "-o", "/dev/null",
                          "-w", "%{http_code}")
        return bool(re.fullmatch(r"[1-5]\d\d", done.stdout.strip()))
    finally:
        in_ns(guest.namespace, "ip", "addr", "del", f"{ip}/32", "dev", "eth0")


def test_allowed_address_pairs_open_exactly_what_they_name(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")
    extra, block = "10.66.0.200", "10.66.0.224/28"
    inside = str(ipaddress.ip_network(block)[5])
    assert not _reaches_metadata_from(stack, a, extra)
    stack.client.request("PUT", f"/v2.0/ports/{a.port_id}", {"port": {"allowed_address_pairs": [
        {"ip_address": extra}, {"ip_address": block}]}})
    rules_in_force(stack)
    assert _reaches_metadata_from(stack, a, extra)   # the address
    assert _reaches_metadata_from(stack, a, inside)  # and the CIDR
    assert not _reaches_metadata_from(stack, a, "10.66.0.240")  # just outside it
    assert not any(steal_with_secondary_ip(stack, a, b, 1))  # a neighbour's address still not


# --- security groups ----------------------------------------------------------------

LISTENER = "import http.server, sys; http.server.HTTPServer((sys.argv[1], 8080), " \
           "http.server.SimpleHTTPRequestHandler).serve_forever()"


def _listen(guest: Guest) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", guest.namespace, sys.executable, "-c", LISTENER, guest.ip],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        wait_until(lambda: f"{guest.ip}:8080" in in_ns(guest.namespace, "ss", "-Hntl").stdout, "a TCP listener")
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc


def _connects(src: Guest, dst: Guest) -> bool:
    done = in_ns(src.namespace, "curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{dst.ip}:8080/")
    return done.returncode == 0


def _group(stack: Stack, name: str) -> dict[str, Any]:
    return stack.client.request("POST", "/v2.0/security-groups", {"security_group": {"name": name}})[
        "security_group"]


def _set_groups(stack: Stack, guest: Guest, *groups: str) -> None:
    stack.client.request("PUT", f"/v2.0/ports/{guest.port_id}", {"port": {"security_groups": list(groups)}})


def test_tcp_is_reachable_only_while_a_rule_allows_it(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")
    listener = _listen(b)
    try:
        assert _connects(a, b)  # both in the default group: members talk
        web = _group(stack, "web")
        _set_groups(stack, b, web["id"])
        rules_in_force(stack)
        assert not _connects(a, b)
        rule = stack.client.request("POST", "/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": web["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 8080,
            "port_range_max": 8080, "remote_ip_prefix": CIDR}})["security_group_rule"]
        rules_in_force(stack)
        assert _connects(a, b)
        stack.client.request("DELETE", f"/v2.0/security-group-rules/{rule['id']}")
        rules_in_force(stack)
        assert not _connects(a, b)
    finally:
        os.kill(listener.pid, signal.SIGTERM)
        listener.wait(timeout=10)


def test_the_default_group_lets_members_talk_and_blocks_others(stack: Stack) -> None:
    _, (a, b, c) = world(stack, "a", "b", "c")
    _set_groups(stack, c, _group(stack, "lonely")["id"])
    rules_in_force(stack)
    listener = _listen(b)
    try:
        assert _connects(a, b)
        assert not _connects(c, b)
    finally:
        os.kill(listener.pid, signal.SIGTERM)
        listener.wait(timeout=10)


def test_dhcp_and_metadata_work_under_a_deny_all_group(stack: Stack) -> None:
    _, (a, b) = world(stack, "a", "b")
    nothing = _group(stack, "nothing")
    for rule in nothing["security_group_rules"]:  # drop even the egress rules a new group gets
        stack.client.request("DELETE", f"/v2.0/security-group-rules/{rule['id']}")
    _set_groups(stack, b, nothing["id"])
    rules_in_force(stack)
    stack.guests.renew(b.name)
    assert stack.fetch(b, "/openstack/latest/user_data").encode() == secret("b")
    listing = stack.fetch(b, "/latest/meta-data/")
    for leaf in (line for line in listing.splitlines() if line and not line.endswith("/")):
        assert stack.curl(b, f"/latest/meta-data/{leaf}", "-f").returncode == 0, leaf
    assert stack.curl(b, "/openstack/latest/meta_data.json", "-f").returncode == 0
    listener = _listen(a)
    try:
        assert not _connects(b, a)  # and nothing else gets out
    finally:
        os.kill(listener.pid, signal.SIGTERM)
        listener.wait(timeout=10)


def test_an_agent_restart_changes_no_rule(stack: Stack) -> None:
    world(stack, "a", "b")
    fabric = stack.config.fabric_namespace

    def handles() -> str:
        out = in_ns(fabric, "nft", "-a", "list", "tables").stdout
        out += nftables.listing(fabric, "bridge") + nftables.listing(fabric, "inet")
        out += in_ns(fabric, "nft", "-a", "list", "table", "inet", "netmeta").stdout
        return re.sub(r"counter packets \d+ bytes \d+", "counter", out)

    before = handles()
    assert "# handle" in before
    stack.agent.restart()
    stack.agent_pass()
    assert handles() == before


# --- the driver on its own ------------------------------------------------------------


def test_the_driver_replaces_both_tables_only_on_change(netns_scope: Any) -> None:
    from tests.unit.test_portsec_model import guest, snap

    ns = netns_scope.namespace("fabric")
    first = portsec.ruleset(snap(guest()))
    assert nftables.apply(ns, first.payload, first.digest) is True
    assert nftables.current_digest(ns) == first.digest
    listed = in_ns(ns, "nft", "-a", "list", "ruleset").stdout
    assert nftables.apply(ns, first.payload, first.digest) is False  # same digest: nothing run
    assert in_ns(ns, "nft", "-a", "list", "ruleset").stdout == listed
    second = portsec.ruleset(snap(guest(), guest("bbbbbbbbbbbb-2", "10.0.0.6", "fa:16:3e:00:00:06")))
    assert nftables.apply(ns, second.payload, second.digest) is True
    assert "from-g-bbbbbbbbbbb" in nftables.listing(ns, "bridge")
    # Another table in the namespace is not netmeta's and stays.
    sh(ns, "nft", "add", "table", "inet", "someone-else")
    empty = portsec.ruleset(snap())
    assert nftables.apply(ns, empty.payload, empty.digest) is True
    assert nftables.apply(ns, empty.payload, empty.digest) is False
    tables = in_ns(ns, "nft", "list", "tables").stdout
    assert "netmeta" not in tables and "someone-else" in tables
    with pytest.raises(Exception, match="root namespace"):
        nftables.apply("", first.payload, first.digest)
