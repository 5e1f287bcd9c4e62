"""Several hosts on one machine: simulated hosts, VXLAN between them (issue 13).

Each simulated host is its own mount + network namespace with its own
/run/netns, state directory and processes (tests/privileged/multihost.py);
the hosts share one API server and an underlay bridge namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from netmeta.client import Client
from netmeta.cli.multihost import HostStack, MultiHost
from netmeta.drivers import files, netns
from netmeta.model import names
from tests.privileged.multihost import make_cloud
from tests.privileged.stack import wait_until

pytestmark = pytest.mark.privileged


@pytest.fixture
def three_agents() -> Iterator[tuple[MultiHost, Client]]:
    yield from make_cloud(components=("agent",))


def test_simulated_hosts_are_separate_machines(three_agents: tuple[MultiHost, Client]) -> None:
    multi, client = three_agents
    fabric = multi.hosts[0].config.fabric_namespace
    # Each host's namespaces live in its own /run/netns: not the real host's.
    assert not netns.namespace_exists(fabric)
    for host in multi.hosts:
        assert host.sim.inner_namespaces() == [fabric]
        assert host.status()["pid"] == host.components["agent"].pid
        # Every host reaches every other over the underlay, and the API through it.
        for other in multi.hosts:
            ping = host.sim.run(["ping", "-c1", "-W3", other.sim.underlay_ip])
            assert ping.returncode == 0, ping.stdout + ping.stderr
        addrs = json.loads(host.sim.run(["ip", "-j", "-4", "addr", "show", "eth0"]).stdout)
        assert addrs[0]["addr_info"][0]["local"] == host.sim.underlay_ip
    net = client.request("POST", "/v2.0/networks", {"network": {"name": "n1"}})["network"]
    # An unbound port: any host may be about to plug it, so every host builds the bridge.
    client.request("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "name": "unbound"}})
    bridge = names.bridge_name(net["id"])
    for host in multi.hosts:
        # The agent inside the host, following the API through the underlay, built the bridge in ITS fabric.
        wait_until(lambda host=host: host.sim.in_namespace(fabric, ["ip", "link", "show", bridge]).returncode == 0,
                   f"{bridge} on {host.name}", timeout=30)
    holders = [h.sim.holder_pid for h in multi.hosts]
    assert all(holders)


VXLAN_CODE = r'''
import json, sys
from netmeta.drivers import links, netns, vxlan
me, other, mine, theirs, fabric = sys.argv[1:6]
netns.ensure_namespace(fabric)
links.ensure_bridge(fabric, "brq-t", 1450)
first = vxlan.ensure_vxlan(None, fabric, "vxlan-77", 77, me, "brq-t", 1450)
again = vxlan.ensure_vxlan(None, fabric, "vxlan-77", 77, me, "brq-t", 1450)
entries = [("00:00:00:00:00:00", other), (theirs, other)]
changed = [vxlan.ensure_fdb(fabric, "vxlan-77", entries), vxlan.ensure_fdb(fabric, "vxlan-77", entries)]
netns.ensure_namespace(fabric + "-g")
links.ensure_veth_into(fabric + "-g", "eth0", fabric, "g-t", "brq-t", mine, 1450)
print(json.dumps({"same_index": first == again, "changed": changed, "fdb": sorted(vxlan.observe_fdb(fabric, "vxlan-77")),
                  "device": vxlan.get_vxlan(fabric, "vxlan-77")}))
'''


def test_vxlan_driver_joins_two_hosts(netns_prefix: str) -> None:
    """drivers.vxlan on two simulated hosts: a device made from the host's namespace, in its fabric, with l2pop entries.

    The UDP socket is where local_ip is (the host's own namespace), the device
    where the bridge is (the fabric); two guests on the two hosts' bridges
    reach each other through it with full 1450-byte packets (1500 - 50).
    """
    import sys

    from netmeta.drivers import simhosts

    cloud = simhosts.create_cloud(netns_prefix, ["h1", "h2"])
    try:
        h1, h2 = cloud.hosts
        macs = {h1.name: "02:00:00:00:aa:01", h2.name: "02:00:00:00:aa:02"}
        fabric = f"{netns_prefix}fab"
        for me, other in ((h1, h2), (h2, h1)):
            done = me.run([sys.executable, "-c", VXLAN_CODE, me.underlay_ip, other.underlay_ip, macs[me.name],
                           macs[other.name], fabric], timeout=60)
            assert done.returncode == 0, done.stderr
            seen = json.loads(done.stdout)
            assert seen["same_index"] and seen["changed"] == [True, False]
            assert seen["fdb"] == [["00:00:00:00:00:00", other.underlay_ip], [macs[other.name], other.underlay_ip]]
            assert seen["device"] | {"index": 0} == {"vni": 77, "local": me.underlay_ip, "port": 8472, "learning": False,
                                                     "mtu": 1450, "up": True, "master": "brq-t", "index": 0}
            # The encapsulating socket is in the host's own namespace, not in the fabric.
            assert ":8472" in me.run(["ss", "-Huln"]).stdout
            assert ":8472" not in me.in_namespace(fabric, ["ss", "-Huln"]).stdout
            assert me.in_namespace(f"{fabric}-g", ["ip", "addr", "add", f"10.77.0.{me.name[-1]}/24", "dev", "eth0"]).returncode == 0
        ping = h1.in_namespace(f"{fabric}-g", ["ping", "-c2", "-W3", "-M", "do", "-s", str(1450 - 28), "10.77.0.2"])
        assert ping.returncode == 0, ping.stdout + ping.stderr
        too_big = h1.in_namespace(f"{fabric}-g", ["ping", "-c1", "-W2", "-M", "do", "-s", str(1451 - 28), "10.77.0.2"])
        assert too_big.returncode != 0
        # Nothing of it is in the real host's /run/netns.
        assert not netns.namespace_exists(fabric)
    finally:
        problems = cloud.destroy()
    assert not problems, problems


# --- the agents on three hosts: VXLAN between them -------------------------------------

CURL = ("curl", "-sf", "--max-time", "5")


@pytest.fixture
def cloud3() -> Iterator[tuple[MultiHost, Client]]:
    yield from make_cloud(vni_ranges="1000:1999", enable_isolated_metadata=True)


def _vxlan_fdb(host: HostStack, device: str) -> set[tuple[str, str]]:
    out = host.in_namespace(host.config.fabric_namespace, "bridge", "-j", "fdb", "show", "dev", device)
    return {(e["mac"], e["dst"]) for e in json.loads(out.stdout or "[]") if e.get("dst")}


def _isolated_network(client: Client, name: str, cidr: str) -> tuple[dict[str, Any], dict[str, Any]]:
    net = client.request("POST", "/v2.0/networks", {"network": {"name": name}})["network"]
    sub = client.request("POST", "/v2.0/subnets", {"subnet": {
        "name": name, "network_id": net["id"], "ip_version": 4, "cidr": cidr, "gateway_ip": None}})["subnet"]
    return net, sub


def _dhcp_ports(client: Client, net_id: str, count: int = 1) -> list[dict[str, Any]]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (ports := [p for p in client.get("/v2.0/ports", network_id=net_id, device_owner="network:dhcp")["ports"]
                           if p.get("binding:host_id")]) and len(ports) == count and ports,
        f"{count} bound DHCP port(s) on {net_id}", timeout=30)


def test_guest_on_one_host_gets_lease_and_metadata_from_qdhcp_on_another(cloud3: tuple[MultiHost, Client]) -> None:
    multi, client = cloud3
    net, sub = _isolated_network(client, "test-metadata-in-dhcp", "192.168.111.0/24")
    # The server: a VXLAN segment, and an MTU that leaves room for VXLAN over IPv4.
    assert net["provider:network_type"] == "vxlan" and 1000 <= net["provider:segmentation_id"] <= 1999
    assert net["mtu"] == 1450
    device = f"vxlan-{net['provider:segmentation_id']}"
    (dhcp,) = _dhcp_ports(client, net["id"])
    server_host = multi.host(dhcp["binding:host_id"])
    guest_host = next(h for h in multi.hosts if h is not server_host)
    third = next(h for h in multi.hosts if h not in (server_host, guest_host))
    qdhcp = names.dhcp_namespace(net["id"])
    wait_until(lambda: qdhcp in server_host.sim.inner_namespaces(), f"{qdhcp} on {server_host.name}", timeout=30)

    vm = guest_host.boot("vm1", net["id"])
    port = client.get("/v2.0/ports", device_id=vm["instance"])["ports"][0]
    assert port["binding:host_id"] == guest_host.name
    # The qdhcp is on its host only; the guest got its lease through VXLAN.
    assert qdhcp not in guest_host.sim.inner_namespaces() and qdhcp not in third.sim.inner_namespaces()
    addrs = json.loads(guest_host.in_namespace(vm["namespace"], "ip", "-j", "-4", "addr", "show", "eth0").stdout)
    assert addrs[0]["addr_info"][0]["local"] == vm["ip"] and addrs[0]["mtu"] == 1450
    lease = _read(server_host.config.paths.dhcp_file(net["id"], "leases"))
    assert port["mac_address"] in lease and vm["ip"] in lease
    routes = json.loads(guest_host.in_namespace(vm["namespace"], "ip", "-j", "-4", "route").stdout)
    dhcp_ip = dhcp["fixed_ips"][0]["ip_address"]
    assert {"dst": "169.254.169.254", "gateway": dhcp_ip} in [{k: r.get(k) for k in ("dst", "gateway")} for r in routes]
    # Metadata, answered by the metadata process on the DHCP host, across VXLAN.
    meta = wait_until(lambda: (out := guest_host.in_namespace(
        vm["namespace"], *CURL, "http://169.254.169.254/openstack/latest/meta_data.json")).returncode == 0 and out.stdout,
        "metadata from the other host", timeout=30)
    assert json.loads(meta)["uuid"] == vm["instance"]
    # l2population's entries, each way; the third host has no port there: no bridge, no entries for it.
    guest_ip, server_ip = guest_host.sim.underlay_ip, server_host.sim.underlay_ip
    assert _vxlan_fdb(guest_host, device) == {("00:00:00:00:00:00", server_ip), (dhcp["mac_address"], server_ip)}
    wait_until(lambda: _vxlan_fdb(server_host, device) == {("00:00:00:00:00:00", guest_ip), (port["mac_address"], guest_ip)},
               "the DHCP host's entries for the guest", timeout=20)
    assert names.bridge_name(net["id"]) not in third.in_namespace(third.config.fabric_namespace, "ip", "link").stdout
    # dnsmasq advertises the network's MTU.
    assert "--dhcp-option-force=option:mtu,1450" in _read(f"/proc/{_dnsmasq_pid(server_host, net['id'])}/cmdline").split("\0")

    # A guest on the third host: entries appear on both others at once; gone again when it goes.
    vm3 = third.boot("vm3", net["id"])
    port3 = client.get("/v2.0/ports", device_id=vm3["instance"])["ports"][0]
    third_ip = third.sim.underlay_ip
    wait_until(lambda: {("00:00:00:00:00:00", third_ip), (port3["mac_address"], third_ip)} <= _vxlan_fdb(guest_host, device),
               "entries for the third host", timeout=20)
    ping = third.in_namespace(vm3["namespace"], "ping", "-c1", "-W3", "-M", "do", "-s", "1422", vm["ip"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    done = third.netmeta("vm", "delete", "vm3")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: not any(ip == third_ip for _, ip in _vxlan_fdb(guest_host, device)),
               "the third host's entries to go", timeout=20)


def _dnsmasq_pid(host: HostStack, net_id: str) -> int:
    return int(_read(host.config.paths.dhcp_file(net_id, "pid")).strip())


def _lease_server(host: HostStack, guest: str) -> str:
    """The dhcp-server-identifier of the guest's current lease (dhclient's lease file, last lease)."""
    leases = _read(os.path.join(host.config.state_dir, "vms", guest, "dhclient.leases"))
    found = [line.split()[-1].rstrip(";") for line in leases.splitlines() if "dhcp-server-identifier" in line]
    assert found, leases
    return found[-1]


def _metadata_via(host: HostStack, namespace: str) -> str | None:
    routes = json.loads(host.in_namespace(namespace, "ip", "-j", "-4", "route").stdout or "[]")
    for route in routes:
        if route.get("dst") == "169.254.169.254":
            return str(route.get("gateway"))
    return None


@pytest.fixture
def cloud3_ha() -> Iterator[tuple[MultiHost, Client]]:
    yield from make_cloud(vni_ranges="1000:1999", enable_isolated_metadata=True, dhcp_agents_per_network=3,
                          agent_down_time=6, report_interval=1)


def test_three_dhcp_servers_and_one_host_down(cloud3_ha: tuple[MultiHost, Client]) -> None:
    multi, client = cloud3_ha
    net, sub = _isolated_network(client, "test-metadata-in-dhcp", "192.168.111.0/24")
    dhcp = _dhcp_ports(client, net["id"], 3)
    assert sorted(p["binding:host_id"] for p in dhcp) == sorted(h.name for h in multi.hosts)
    dhcp_ips = sorted(p["fixed_ips"][0]["ip_address"] for p in dhcp)
    # The seed's line: three DNS servers, the three DHCP ports; every host's own dnsmasq, its own port.
    for host in multi.hosts:
        opts = wait_until(lambda host=host: (text := _read(host.config.paths.dhcp_file(net["id"], "opts")))
                          and "dns-server" in text and text, f"opts on {host.name}", timeout=30)
        line = next(l for l in opts.splitlines() if "option:dns-server" in l)
        assert sorted(line.split("option:dns-server,")[1].split(",")) == dhcp_ips
        own = next(p for p in dhcp if p["binding:host_id"] == host.name)["fixed_ips"][0]["ip_address"]
        assert f"169.254.169.254/32,{own}" in opts  # each advertises metadata via its own port
    guest_host = multi.hosts[0]
    vm = guest_host.boot("vm1", net["id"])
    server = _lease_server(guest_host, "vm1")
    assert server in dhcp_ips
    assert _metadata_via(guest_host, vm["namespace"]) == server  # the route points at the server that answered
    meta = guest_host.in_namespace(vm["namespace"], *CURL, "http://169.254.169.254/openstack/latest/meta_data.json")
    assert meta.returncode == 0 and json.loads(meta.stdout)["uuid"] == vm["instance"]

    # `openstack network agent list`: four agents per host, every one alive.
    rows = _agent_list(multi)
    assert len(rows) == 4 * len(multi.hosts) and all(r["Alive"] for r in rows), rows

    # The answering host loses its agent and its dnsmasq: the others carry on.
    down = next(h for h in multi.hosts
                if next(p for p in dhcp if p["binding:host_id"] == h.name)["fixed_ips"][0]["ip_address"] == server)
    down.stop("agent")
    pid = _dnsmasq_pid(down, net["id"])
    down.sim.run(["kill", str(pid)])
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), "the dnsmasq to exit", timeout=10)
    done = guest_host.netmeta("vm", "renew", "vm1", timeout=90)
    assert done.returncode == 0, done.stderr
    new_server = _lease_server(guest_host, "vm1")
    assert new_server in dhcp_ips and new_server != server
    assert _metadata_via(guest_host, vm["namespace"]) == new_server
    meta = wait_until(lambda: (out := guest_host.in_namespace(
        vm["namespace"], *CURL, "http://169.254.169.254/openstack/latest/meta_data.json")).returncode == 0 and out.stdout,
        "metadata through another host", timeout=30)
    assert json.loads(meta)["uuid"] == vm["instance"]
    # The API tells: that host's DHCP agent is not alive any more (agent_down_time 6 s), the others are.
    def alive() -> dict[tuple[str, str], bool]:
        return {(a["host"], a["agent_type"]): a["alive"] for a in client.get("/v2.0/agents")["agents"]}
    wait_until(lambda: alive().get((down.name, "DHCP agent")) is False, "the stopped agent to turn dead", timeout=30)
    states = alive()
    assert all(states[(h.name, "DHCP agent")] for h in multi.hosts if h is not down)
    rows = {r["Agent Type"]: r["Alive"] for r in _agent_list(multi, "--host", down.name)}
    assert rows["DHCP agent"] is False and rows["Metadata agent"] is True  # its metadata process still runs


def _agent_list(multi: MultiHost, *args: str) -> list[dict[str, Any]]:
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("openstack"))  # the venv's python-openstackclient
    done = subprocess.run([cli, "network", "agent", "list", *args, "-f", "json"], capture_output=True,
                          text=True, env=multi.openstack_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _read(path: str) -> str:
    return files.read_text(path) or ""


def test_router_moves_between_l3_agents(cloud3: tuple[MultiHost, Client]) -> None:
    multi, client = cloud3
    net = client.request("POST", "/v2.0/networks", {"network": {"name": "routed"}})["network"]
    sub = client.request("POST", "/v2.0/subnets", {"subnet": {
        "name": "routed", "network_id": net["id"], "ip_version": 4, "cidr": "10.60.0.0/24"}})["subnet"]
    router = client.request("POST", "/v2.0/routers", {"router": {"name": "r1"}})["router"]
    client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    qrouter = names.router_namespace(router["id"])

    def l3_hosts() -> list[str]:
        agents = client.get(f"/v2.0/routers/{router['id']}/l3-agents")["agents"]
        return [a["host"] for a in agents]

    (first,) = wait_until(l3_hosts, "the router to be scheduled", timeout=30)
    wait_until(lambda: qrouter in multi.host(first).sim.inner_namespaces(), f"{qrouter} on {first}", timeout=30)
    guest_host = next(h for h in multi.hosts if h.name != first)
    vm = guest_host.boot("vm1", net["id"])
    assert _metadata_via(guest_host, vm["namespace"]) == sub["gateway_ip"]
    fetch = lambda: (out := guest_host.in_namespace(  # noqa: E731
        vm["namespace"], *CURL, "http://169.254.169.254/openstack/latest/meta_data.json")).returncode == 0 and out.stdout
    assert json.loads(wait_until(fetch, "metadata through the router", timeout=30))["uuid"] == vm["instance"]
    # Move it: off the first L3 agent, onto the guest's host's.
    agents = {(a["host"], a["agent_type"]): a["id"] for a in client.get("/v2.0/agents")["agents"]}
    target = guest_host.name
    client.request("DELETE", f"/v2.0/agents/{agents[(first, 'L3 agent')]}/l3-routers/{router['id']}")
    client.request("POST", f"/v2.0/agents/{agents[(target, 'L3 agent')]}/l3-routers", {"router_id": router["id"]})
    wait_until(lambda: qrouter in guest_host.sim.inner_namespaces() and qrouter not in multi.host(first).sim.inner_namespaces(),
               "the qrouter to move", timeout=30)
    assert [h.name for h in multi.hosts if qrouter in h.sim.inner_namespaces()] == [target]
    assert json.loads(wait_until(fetch, "metadata through the moved router", timeout=30))["uuid"] == vm["instance"]


@pytest.mark.slow
def test_demo_on_three_controllers() -> None:
    """``netmeta demo --hosts 3``: the seed on three controllers, consistent after controller-1's agent restarts."""
    import re
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "netmeta", "demo", "--hosts", "3"], capture_output=True, text=True,
                          timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    line = re.search(r"option:dns-server,(\S+)$", out, re.M)
    assert line and len(line.group(1).split(",")) == 3  # three DHCP ports, as in the seed
    assert out.count(":-)") == 12  # four agents on each of the three controllers
    assert "controller-1: has qrouter-" in out and out.count(": no qrouter-") == 2
    assert "CHANGED" not in out and out.count("(same)") >= 14
    assert "cleaned up" in out
    prefixes = set(re.findall(r"\b(nmdemo[0-9a-f]{6}-)", out))
    assert prefixes and not [n for n in netns.list_namespaces() if any(n.startswith(p) for p in prefixes)]
