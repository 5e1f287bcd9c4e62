"""Several hosts on one machine: simulated hosts, VXLAN between them (issue 13).

Each simulated host is its own mount + network namespace with its own
/run/netns, state directory and processes (tests/privileged/multihost.py);
the hosts share one API server and an underlay bridge namespace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from netmeta.client import Client
from netmeta.cli.multihost import MultiHost
from netmeta.drivers import netns
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
