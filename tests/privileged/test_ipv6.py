"""IPv6 for real: SLAAC, DHCPv6 and metadata at fe80::a9fe:a9fe, through the qdhcp and the qrouter.

Each test runs a whole netmeta with guests that bring IPv6 up the way a
cloud image does (accept router advertisements, ``dhclient -6`` or ``-6 -S``
when the subnet says so). What is checked is what the guest ends up with —
its addresses against the API's, its default route against the router's
link-local, its DHCPv6 lease and options — and that ``meta_data.json`` and
``user_data`` come back from ``http://[fe80::a9fe:a9fe%eth0]/``, from the
listener the path says (the metadata process's per-listener access counts,
keyed by the caller's link-local address). Waits are on real conditions
(an address that is no longer tentative, a route, a counted request).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netmeta.agent.plan import routes_in_sync
from netmeta.drivers import links
from netmeta.metadata.service import read_status as metadata_status
from netmeta.model import ipam, names
from netmeta.vm.guests import Guest
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until

pytestmark = pytest.mark.privileged

META = "/openstack/latest/meta_data.json"
V6_META = "http://[fe80::a9fe:a9fe%eth0]"
USER_DATA = b"#cloud-config\nruncmd: [echo v6]\n"
# Router advertisements every few seconds, so a guest never waits Neutron's 100 s.
FAST_RA = {"min_rtr_adv_interval": 3, "max_rtr_adv_interval": 4}


@pytest.fixture
def stack() -> Iterator[Stack]:
    """Neutron's defaults (the router serves metadata), fast RAs."""
    yield from make_stack(**FAST_RA)


@pytest.fixture
def isolated_stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True, **FAST_RA)


# --- helpers -------------------------------------------------------------------


def subnet6(stack: Stack, net_id: str, cidr: str, mode: str | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"network_id": net_id, "ip_version": 6, "cidr": cidr, **extra}
    if mode is not None:
        body.setdefault("ipv6_ra_mode", mode)
        body.setdefault("ipv6_address_mode", mode)
    return stack.client.request("POST", "/v2.0/subnets", {"subnet": body})["subnet"]  # type: ignore[no-any-return]


def network6(stack: Stack, name: str, cidr: str, mode: str | None, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    net = stack.client.request("POST", "/v2.0/networks", {"network": {"name": name}})["network"]
    return net, subnet6(stack, net["id"], cidr, mode, **extra)


def port_of(stack: Stack, guest: Guest) -> dict[str, Any]:
    return stack.client.get(f"/v2.0/ports/{guest.port_id}")["port"]  # type: ignore[no-any-return]


def v6_addresses(guest: Guest) -> dict[str, bool]:
    return dict(links.ipv6_addresses(guest.namespace, "eth0"))


def usable(guest: Guest, address: str) -> bool:
    return any(cidr.split("/")[0] == address and ok for cidr, ok in v6_addresses(guest).items())


def default_route6(guest: Guest) -> dict[str, Any] | None:
    routes = json.loads(in_ns(guest.namespace, "ip", "-j", "-6", "route", "show", "default").stdout or "[]")
    return routes[0] if routes else None


def curl6(guest: Guest, path: str, *extra: str) -> tuple[int, str]:
    out = in_ns(guest.namespace, "curl", "-sg", "--max-time", "3", "-w", "\n%{http_code}", *extra, f"{V6_META}{path}")
    body, _, code = out.stdout.rpartition("\n")
    return (int(code) if out.returncode == 0 and code.isdigit() else 0), body


def fetch6(guest: Guest, path: str) -> str:
    def answered() -> str | None:
        code, body = curl6(guest, path)
        return body if code == 200 else None

    return str(wait_until(answered, f"{path} over IPv6 from {guest.name}", timeout=30))


def access(stack: Stack, kind: str, ident: str, peer: str) -> int:
    status = metadata_status(stack.config.state_dir) or {}
    return sum(int(a["count"]) for a in status.get("access", [])  # type: ignore[union-attr]
               if a["kind"] == kind and a["id"] == ident and a["peer"] == peer)


def link_local(guest: Guest) -> str:
    return ipam.link_local_address(guest.mac)


def fetch_counted6(stack: Stack, guest: Guest, kind: str, ident: str) -> dict[str, Any]:
    """meta_data.json over IPv6, and the listener (kind, ident) counted it from the guest's link-local."""
    before = access(stack, kind, ident, link_local(guest))
    meta = json.loads(fetch6(guest, META))
    wait_until(lambda: access(stack, kind, ident, link_local(guest)) > before,
               f"{kind} {ident} to count a request from {link_local(guest)}", timeout=10)
    return meta  # type: ignore[no-any-return]


def guest_env(guest: Guest) -> dict[str, str]:
    """What the guest's DHCP client script recorded last (its ``env`` file)."""
    with open(os.path.join(guest.directory, "env"), encoding="utf-8") as handle:
        return dict(line.split("=", 1) for line in handle.read().splitlines() if "=" in line)


def without_seed(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "random_seed"}  # fresh random bytes every request


# --- SLAAC behind a router --------------------------------------------------------------


def test_slaac_on_a_router_eui64_route_and_metadata_through_the_qrouter(stack: Stack) -> None:
    net, sub = network6(stack, "v6-slaac", "2001:db8:10::/64", "slaac")
    router = stack.router("r6", sub)
    stack.converged()
    qrouter = names.router_namespace(router["id"])
    [rport] = stack.client.get("/v2.0/ports", device_id=router["id"])["ports"]
    qr = names.router_port_name(rport["id"])
    # The qrouter: the gateway on qr- (no DAD wait), forwarding on, radvd running, the ip6tables REDIRECT.
    assert "2001:db8:10::1/64" in in_ns(qrouter, "ip", "-6", "addr", "show", qr).stdout
    assert in_ns(qrouter, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    assert ("-A neutron-l3-agent-PREROUTING -d fe80::a9fe:a9fe/128 -i qr-+ -p tcp -m tcp --dport 80 "
            "-j REDIRECT --to-ports 9697") in in_ns(qrouter, "ip6tables-save", "-t", "nat").stdout.splitlines()
    with open(stack.config.paths.radvd_file(router["id"], "pid"), encoding="ascii") as handle:
        radvd_pid = int(handle.read())
    assert os.readlink(f"/proc/{radvd_pid}/exe").endswith("radvd")
    assert os.stat(f"/proc/{radvd_pid}/ns/net").st_ino == os.stat(f"/run/netns/{qrouter}").st_ino

    vm = stack.boot("vm6", net["id"], user_data=USER_DATA)
    eui = ipam.eui64_address(sub["cidr"], vm.mac)
    assert [f["ip_address"] for f in port_of(stack, vm)["fixed_ips"]] == [eui] == [vm.ip6]
    # The guest forms exactly the API's address from the RA, and routes via the router's link-local.
    wait_until(lambda: usable(vm, eui), f"{vm.name} to form {eui}", timeout=30)
    route = wait_until(lambda: default_route6(vm), "a default route from the RA", timeout=30)
    assert route["gateway"] == ipam.link_local_address(rport["mac_address"]) and route["dev"] == "eth0"

    meta = fetch_counted6(stack, vm, "router", router["id"])
    assert meta["uuid"] == vm.instance_id
    assert fetch6(vm, "/openstack/latest/user_data").encode() == USER_DATA
    assert access(stack, "network", net["id"], link_local(vm)) == 0  # no qdhcp listener without the options
    network_data = json.loads(fetch6(vm, "/openstack/latest/network_data.json"))
    assert [(n["type"], n.get("ip_address")) for n in network_data["networks"]] == [("ipv6_slaac", eui)]
    # A killed radvd is back on the agent's next pass (supervised like dnsmasq).
    os.kill(radvd_pid, 9)
    wait_until(lambda: (p := _pid(stack, router["id"])) and p != radvd_pid, "radvd to be started again", timeout=30)


def _pid(stack: Stack, router_id: str) -> int | None:
    try:
        with open(stack.config.paths.radvd_file(router_id, "pid"), encoding="ascii") as handle:
            pid = int(handle.read())
        return pid if "radvd" in os.readlink(f"/proc/{pid}/exe") else None
    except (OSError, ValueError):
        return None  # no pid file yet, or the process it names is gone


# --- DHCPv6 ------------------------------------------------------------------------------


def test_stateful_dhcpv6_isolated_ipv6_only_metadata_from_the_qdhcp(isolated_stack: Stack) -> None:
    stack = isolated_stack
    net, sub = network6(stack, "v6-stateful", "2001:db8:20::/64", "dhcpv6-stateful",
                        dns_nameservers=["2001:db8::53"])
    stack.converged()
    qdhcp = names.dhcp_namespace(net["id"])
    dhcp = stack.dhcp_port(net["id"])
    tap_addrs = in_ns(qdhcp, "ip", "-6", "addr", "show", names.tap_name(dhcp["id"])).stdout.splitlines()
    ours = [line for line in tap_addrs if "fe80::a9fe:a9fe/128" in line or "2001:db8:20::" in line]
    assert len(ours) == 2 and not any("tentative" in line for line in ours), tap_addrs  # nodad
    vm = stack.boot("vm6s", net["id"], user_data=USER_DATA)
    [api_ip] = [f["ip_address"] for f in port_of(stack, vm)["fixed_ips"]]
    assert not ipam.is_eui64(api_ip)
    # The DHCPv6 lease is the API's address, and the option6 line reached the guest.
    assert usable(vm, api_ip), v6_addresses(vm)
    env = guest_env(vm)
    assert env["new_ip6_address"] == api_ip and "2001:db8::53" in env["new_dhcp6_name_servers"]
    # IPv6-only and isolated: metadata from the qdhcp's [fe80::a9fe:a9fe%tap]:80.
    meta = fetch_counted6(stack, vm, "network", net["id"])
    assert meta["uuid"] == vm.instance_id
    assert fetch6(vm, "/openstack/latest/user_data").encode() == USER_DATA
    assert json.loads(fetch6(vm, "/openstack/latest/network_data.json"))["networks"][0]["type"] == \
        "ipv6_dhcpv6-stateful"


def test_stateless_address_from_ra_options_from_dhcpv6(stack: Stack) -> None:
    net, sub = network6(stack, "v6-stateless", "2001:db8:30::/64", "dhcpv6-stateless",
                        dns_nameservers=["2001:db8::35"])
    stack.router("r6s", sub)
    stack.converged()
    vm = stack.boot("vm6l", net["id"])
    eui = ipam.eui64_address(sub["cidr"], vm.mac)
    wait_until(lambda: usable(vm, eui), f"{vm.name} to form {eui} from the RA", timeout=30)
    env = guest_env(vm)
    assert env["reason"] in ("INFORM6", "RENEW6") and "2001:db8::35" in env["new_dhcp6_name_servers"]
    assert not env.get("new_ip6_address")  # stateless: DHCPv6 hands out no address


# --- a router's IPv6 port, routes, and a qdhcp that takes no RAs ---------------------------


def routes6(namespace: str) -> dict[str, Any]:
    """The namespace's IPv6 routes of the main table, by destination."""
    out = in_ns(namespace, "ip", "-j", "-6", "route", "show", "table", "main").stdout
    return {r["dst"]: r for r in json.loads(out or "[]")}


def test_router_ipv6_port_prefixes_extra_routes_and_a_qdhcp_without_ras(isolated_stack: Stack) -> None:
    """Neutron's L3 and DHCP agents, three details at once (one stack, no guest boot).

    A second IPv6 subnet of a network goes on the router's existing IPv6 port:
    one qr- device with both gateways, one radvd stanza with both prefixes.
    IPv6 extra routes reach the qrouter (single and multipath) and leave it.
    The qdhcp namespace takes no router advertisements: accept_ra is off on
    its tap, and while radvd advertises on the link the tap gets no route
    from it (before, it took a default route via the router).
    """
    stack = isolated_stack
    net, sub4 = stack.network("v6-rtr", "10.96.1.0/24")
    slaac = subnet6(stack, net["id"], "2001:db8:e1::/64", "slaac")
    stateful = subnet6(stack, net["id"], "2001:db8:e2::/64", "dhcpv6-stateful")
    router = stack.router("r6-routes", sub4, slaac, stateful)
    stack.converged()
    qrouter = names.router_namespace(router["id"])
    ports = stack.client.get("/v2.0/ports", device_id=router["id"])["ports"]
    [v6port] = [p for p in ports if any(":" in f["ip_address"] for f in p["fixed_ips"])]
    assert len(ports) == 2 and {f["subnet_id"] for f in v6port["fixed_ips"]} == {slaac["id"], stateful["id"]}
    qr = names.router_port_name(v6port["id"])
    shown = in_ns(qrouter, "ip", "-6", "addr", "show", qr).stdout
    assert "2001:db8:e1::1/64" in shown and "2001:db8:e2::1/64" in shown, shown
    with open(stack.config.paths.radvd_file(router["id"], "conf"), encoding="utf-8") as handle:
        conf = handle.read()
    assert conf.count("interface ") == 1 and f"interface {qr}" in conf, conf
    assert "prefix 2001:db8:e1::/64" in conf and "prefix 2001:db8:e2::/64" in conf, conf

    # IPv6 extra routes, one plain and one multipath, beside an IPv4 one.
    stack.client.request("PUT", f"/v2.0/routers/{router['id']}", {"router": {"routes": [
        {"destination": "2001:db8:77::/64", "nexthop": "2001:db8:e1::50"},
        {"destination": "2001:db8:78::/64", "nexthop": "2001:db8:e1::51"},
        {"destination": "2001:db8:78::/64", "nexthop": "2001:db8:e2::52"},
        {"destination": "192.168.79.0/24", "nexthop": "10.96.1.53"}]}})
    wait_until(lambda: "2001:db8:78::/64" in routes6(qrouter), "the IPv6 extra routes in the qrouter", timeout=15)
    got = routes6(qrouter)
    assert got["2001:db8:77::/64"]["gateway"] == "2001:db8:e1::50", got
    assert {h["gateway"] for h in got["2001:db8:78::/64"]["nexthops"]} == {"2001:db8:e1::51", "2001:db8:e2::52"}, got
    v4 = json.loads(in_ns(qrouter, "ip", "-j", "-4", "route").stdout or "[]")
    assert {"192.168.79.0/24": "10.96.1.53"}.items() <= {r["dst"]: r.get("gateway") for r in v4}.items()
    # What the agent's full pass observes is those routes exactly (a restart finds them in place).
    seen = links.observe_namespace(qrouter, routes=True)[1]
    assert routes_in_sync(seen, (("2001:db8:77::/64", ("2001:db8:e1::50",), None),
                                 ("2001:db8:78::/64", ("2001:db8:e1::51", "2001:db8:e2::52"), None),
                                 ("192.168.79.0/24", ("10.96.1.53",), None))), seen
    stack.client.request("PUT", f"/v2.0/routers/{router['id']}", {"router": {"routes": [
        {"destination": "2001:db8:78::/64", "nexthop": "2001:db8:e1::51"}]}})
    wait_until(lambda: "2001:db8:77::/64" not in routes6(qrouter), "the removed IPv6 route to leave", timeout=15)
    assert routes6(qrouter)["2001:db8:78::/64"]["gateway"] == "2001:db8:e1::51"
    v4 = json.loads(in_ns(qrouter, "ip", "-j", "-4", "route").stdout or "[]")
    assert "192.168.79.0/24" not in {r["dst"] for r in v4}

    # The qdhcp takes no RAs: off on its tap, and no route from the router's advertisements, which a
    # host on the link (a guest) does take.
    qdhcp = names.dhcp_namespace(net["id"])
    tap = names.tap_name(stack.dhcp_port(net["id"])["id"])
    assert in_ns(qdhcp, "sysctl", "-n", f"net.ipv6.conf.{tap}.accept_ra").stdout.strip() == "0"
    assert in_ns(qdhcp, "sysctl", "-n", "net.ipv6.conf.default.accept_ra").stdout.strip() == "0"
    vm = stack.boot("vm-ra", net["id"])
    wait_until(lambda: default_route6(vm), "the guest's default route from the RA", timeout=30)
    # One more unsolicited advertisement (every 3-4 s here) reaches the tap too.
    time.sleep(FAST_RA["max_rtr_adv_interval"] + 1)
    from_ra = {d: r for d, r in routes6(qdhcp).items() if r.get("protocol") == "ra"}
    assert from_ra == {}, from_ra


# --- dual stack and spoofing --------------------------------------------------------------


def test_dual_stack_both_families_answer_the_same_document(stack: Stack) -> None:
    net, sub4 = stack.network("v46", "10.46.0.0/24")
    sub6 = subnet6(stack, net["id"], "2001:db8:46::/64", "slaac")
    router = stack.router("r46", sub4, sub6)
    stack.converged()
    vm = stack.boot("vm46", net["id"])
    assert vm.ip.startswith("10.46.0.") and vm.ip6 == ipam.eui64_address(sub6["cidr"], vm.mac)
    over4 = json.loads(stack.fetch(vm, META))
    over6 = fetch_counted6(stack, vm, "router", router["id"])
    assert without_seed(over4) == without_seed(over6)
    # local-ipv4 stays IPv4 whoever asks.
    assert fetch6(vm, "/latest/meta-data/local-ipv4") == vm.ip


def test_a_spoofed_ipv6_source_is_dropped(isolated_stack: Stack) -> None:
    """Port security: the guest's own addresses and link-local pass, another source does not."""
    stack = isolated_stack
    net, sub = network6(stack, "v6-spoof", "2001:db8:40::/64", "dhcpv6-stateful")
    stack.converged()
    vm = stack.boot("vmsp", net["id"])
    dhcp_ip = next(f["ip_address"] for f in stack.dhcp_port(net["id"])["fixed_ips"])
    forged = "2001:db8:40::bad"
    in_ns(vm.namespace, "ip", "-6", "addr", "add", f"{forged}/64", "dev", "eth0", "nodad")

    def pings(source: str) -> bool:
        return in_ns(vm.namespace, "ping", "-6", "-c", "1", "-W", "1", "-I", source, dhcp_ip).returncode == 0

    assert wait_until(lambda: pings(vm.ip6), "the guest's own address to reach the DHCP port", timeout=20)
    assert not pings(forged) and not pings(forged)
    code, _ = curl6(vm, META, "--interface", forged)
    assert code == 0  # nothing answers a forged source
    # The attack works when the protection is off: the same packets are answered.
    stack.client.request("PUT", f"/v2.0/ports/{vm.port_id}",
                         {"port": {"port_security_enabled": False, "security_groups": []}})
    stack.converged()
    assert wait_until(lambda: pings(forged), "the forged source to get through without port security", timeout=20)


# --- cloud-init ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloudinit_paths() -> Iterator[tuple[str, str]]:
    from tests.cloudinit import cloudinit_dist_packages, debian_http_dist_packages

    with cloudinit_dist_packages() as cloudinit, debian_http_dist_packages() as http:
        yield cloudinit, http


def test_cloud_init_reads_an_ipv6_only_guest_at_fe80_a9fe_a9fe(isolated_stack: Stack,
                                                              cloudinit_paths: tuple[str, str]) -> None:
    """cloud-init's OpenStack reader with metadata_urls = http://[fe80::a9fe:a9fe%25eth0], no IPv4 at all.

    It runs with Debian 12's requests/urllib3, as a Debian 12 guest's
    cloud-init does (the .venv's newer ones cannot connect to a zone id).
    """
    import base64
    import sys

    stack = isolated_stack
    net, _ = network6(stack, "v6-ci", "2001:db8:50::/64", "slaac")
    stack.converged()
    vm = stack.boot("vmci", net["id"], user_data=USER_DATA)
    assert vm.ip == ""  # IPv6-only: no DHCPv4 lease, no route to 169.254.169.254
    fetch6(vm, META)  # the listener is up
    cloudinit, http = cloudinit_paths
    client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest_client.py")
    out = in_ns(vm.namespace, sys.executable, client, "openstack", "--cloudinit", cloudinit, "--libs", http,
                "--metadata-url", "http://[fe80::a9fe:a9fe%25eth0]", "--retries", "0", "--timeout", "3", timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)["openstack"]
    assert result["metadata"]["uuid"] == vm.instance_id
    assert base64.b64decode(result["userdata_b64"]) == USER_DATA
    assert result["networkdata"]["networks"][0]["type"] == "ipv6_slaac"
    # The reader's own requests, counted (the access counts reach the status file on the service's tick).
    wait_until(lambda: access(stack, "network", net["id"], link_local(vm)) >= 3,
               f"the qdhcp listener to count the reader's requests from {link_local(vm)}", timeout=10)


# --- explain ---------------------------------------------------------------------------------


def test_explain_follows_the_ipv6_path(stack: Stack) -> None:
    from tests.privileged.test_explain import by_code, run_explain

    net, sub = network6(stack, "v6-explain", "2001:db8:60::/64", "slaac")
    router = stack.router("r6x", sub)
    stack.converged()
    vm = stack.boot("vm6x", net["id"])
    wait_until(lambda: usable(vm, vm.ip6), f"{vm.name} to form {vm.ip6}", timeout=30)
    fetch6(vm, META)
    code, result = run_explain(stack, vm)
    assert code == 0 and result["consistent"], result
    found = by_code(result)
    assert vm.ip6 in found["ipv6-address"]["text"] and found["ipv6-address"]["ok"]
    assert f"router {router['id']}" in found["ipv6-route"]["text"] and found["ipv6-route"]["ok"]
    assert found["ipv6-fetch"]["ok"]
    # The router gone: the same command names the broken link.
    stack.client.request("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})
    stack.converged()
    code, result = run_explain(stack, vm)
    assert code == 3 and "ipv6-fetch" in {f["code"] for f in result["findings"] if not f["ok"]}, result
