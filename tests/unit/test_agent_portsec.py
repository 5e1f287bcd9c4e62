"""Port security in the agent's pass: replaced only when the ruleset changes (fake host)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from netmeta.agent.reconciler import Reconciler
from netmeta.config import Config
from netmeta.model import portsec
from netmeta.model.types import FixedIP, Port, PortId, SubnetId
from tests.builders import merge, tenant_network
from tests.fake_host import FakeHost

CONFIG = Config(state_dir="/state", fabric_namespace="fabric", enable_isolated_metadata=True)


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def agent(host: FakeHost) -> Iterator[Reconciler]:
    reconciler = Reconciler(CONFIG, host, workers=2)
    yield reconciler
    reconciler.close()


def with_guest(ip: str = "10.0.1.50") -> object:
    base = tenant_network(1)
    net_id = next(iter(base.networks))
    subnet_id = next(iter(base.subnets))
    guest = Port(PortId("guestport-0001"), net_id, "fa:16:3e:00:00:50", (FixedIP(SubnetId(subnet_id), ip),),
                 device_id="vm", device_owner="compute:nova", project_id="p")
    return merge(base, replace(base, ports={guest.id: guest}))


def test_rules_are_applied_once_and_again_only_on_change(agent: Reconciler, host: FakeHost) -> None:
    snap = with_guest()
    agent.converge(snap, full=True)  # type: ignore[arg-type]
    assert host.calls("replace_nftables") == [("replace_nftables", True)]
    assert host.nftables == (portsec.ruleset(snap).digest, True)  # type: ignore[arg-type]
    host.clear()
    agent.converge(snap)  # type: ignore[arg-type]
    assert host.calls("replace_nftables") == []
    agent.converge(with_guest("10.0.1.51"))  # type: ignore[arg-type]
    assert host.calls("replace_nftables") == [("replace_nftables", True)]


def test_a_restarted_agent_finds_the_rules_in_place_and_changes_nothing(host: FakeHost) -> None:
    snap = with_guest()
    first = Reconciler(CONFIG, host, workers=2)
    first.converge(snap, full=True)  # type: ignore[arg-type]
    first.close()
    host.clear()
    second = Reconciler(CONFIG, host, workers=2)
    second.converge(snap, full=True)  # type: ignore[arg-type]
    second.close()
    assert host.calls("replace_nftables") == []


def test_no_guest_ports_no_tables_and_stale_ones_are_removed(agent: Reconciler, host: FakeHost) -> None:
    agent.converge(tenant_network(1), full=True)
    assert host.calls("replace_nftables") == []  # nothing there, nothing wanted
    host.nftables = ("netmeta-sha256:old", True)  # left by an earlier run
    agent.converge(tenant_network(1), full=True)
    assert host.calls("replace_nftables") == [("replace_nftables", False)]
    assert host.nftables == (None, False)


def test_bridges_in_the_host_namespace_get_no_rules(host: FakeHost) -> None:
    agent = Reconciler(replace(CONFIG, fabric_namespace=""), host, workers=2)
    agent.converge(with_guest(), full=True)  # type: ignore[arg-type]
    agent.close()
    assert host.calls("replace_nftables") == []
