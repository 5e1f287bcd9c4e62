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
