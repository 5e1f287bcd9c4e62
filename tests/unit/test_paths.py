"""The state directory's layout has one owner: every path comes from StatePaths."""

from __future__ import annotations

import hashlib

from netmeta.config import Config
from netmeta.model.paths import StatePaths


def test_layout() -> None:
    paths = Config(state_dir="/var/lib/netmeta/").paths
    # dnsmasq's files: outside the (0700) state directory, one directory per state directory.
    digest = hashlib.sha256(b"/var/lib/netmeta").hexdigest()[:12]
    assert paths.dhcp_root == f"/run/netmeta/{digest}/dhcp"
    assert paths.dhcp_dir("n1") == f"/run/netmeta/{digest}/dhcp/n1"
    assert paths.dhcp_file("n1", "opts") == f"/run/netmeta/{digest}/dhcp/n1/opts"
    assert paths.dhcp_link == "/var/lib/netmeta/dhcp"
    assert Config(state_dir="/var/lib/other").paths.dhcp_root != paths.dhcp_root
    assert paths.ledger == "/var/lib/netmeta/agent/ledger.json"
    assert paths.ledger_journal == "/var/lib/netmeta/agent/ledger.journal"
    assert paths.status_file("metadata") == "/var/lib/netmeta/metadata/status.json"
    assert paths.log_file("agent") == "/var/lib/netmeta/log/agent.log"
    assert paths.vms_dir == "/var/lib/netmeta/vms"


def test_dnsmasq_files_can_live_elsewhere() -> None:
    assert StatePaths("/var/lib/netmeta").dhcp_root == "/var/lib/netmeta/dhcp"
    paths = StatePaths("/var/lib/netmeta", dhcp_root_dir="/run/netmeta/abc/dhcp/")
    assert paths.dhcp_file("n1", "pid") == "/run/netmeta/abc/dhcp/n1/pid"
    assert paths.ledger == "/var/lib/netmeta/agent/ledger.json"


def test_the_dnsmasq_spec_uses_the_layout() -> None:
    from netmeta.model.dhcp import desired_dhcp
    from tests.builders import tenant_network

    config = Config(state_dir="/st", enable_isolated_metadata=True)
    (spec,) = desired_dhcp(tenant_network(1), config, config.paths).values()
    assert spec.dnsmasq.path("opts") == config.paths.dhcp_file("net1", "opts")
    assert f"--pid-file={config.paths.dhcp_file('net1', 'pid')}" in spec.argv
