"""Which listeners the metadata process opens, for each row of the behaviour table (docs/architecture.md)."""

from __future__ import annotations

import pytest

from netmeta.config import Config
from netmeta.metadata.service import desired_listeners
from netmeta.model.types import Network, NetworkId, Router, RouterId, Snapshot
from tests.builders import dhcp_port_at, router_port_at, subnet, world

NET, SUB, ROUTER = "n1", "s1", "r1"


def one_network(*, routed: bool, net_up: bool = True, router_up: bool = True, dhcp_port: bool = True) -> Snapshot:
    return world(
        networks=[Network(NetworkId(NET), "n", "p", admin_state_up=net_up)],
        subnets=[subnet(SUB, NET, "10.0.0.0/24", gateway_ip="10.0.0.1")],
        ports=[dhcp_port_at("pd", NET, SUB, "10.0.0.2")] * dhcp_port
        + [router_port_at("pr", NET, SUB, "10.0.0.1", ROUTER)] * routed,
        routers=[Router(RouterId(ROUTER), "r", admin_state_up=router_up)] * routed,
    )


@pytest.mark.parametrize(
    ("options", "routed", "expected"),
    [
        ({"enable_isolated_metadata": True}, False, {("network", "n1")}),
        ({"enable_isolated_metadata": True}, True, {("network", "n1"), ("router", "r1")}),
        ({"force_metadata": True}, False, {("network", "n1")}),
        ({"force_metadata": True}, True, {("network", "n1"), ("router", "r1")}),
        ({}, True, {("router", "r1")}),
        ({}, False, set()),
        ({"enable_isolated_metadata": True, "enable_metadata_proxy": False}, True, {("network", "n1")}),
    ],
)
def test_listeners_follow_the_behaviour_table(options: dict[str, bool], routed: bool, expected: set[tuple[str, str]]) -> None:
    wanted = desired_listeners(one_network(routed=routed), Config(**options))
    assert set(wanted) == expected
    for (kind, ident), spec in wanted.items():
        if kind == "network":
            assert (spec.namespace, spec.host, spec.port) == (f"qdhcp-{ident}", "169.254.169.254", 80)
        else:
            assert (spec.namespace, spec.host, spec.port) == (f"qrouter-{ident}", "::", 9697)


def test_no_listener_where_the_agent_makes_no_namespace() -> None:
    config = Config(enable_isolated_metadata=True)
    assert desired_listeners(one_network(routed=True, net_up=False, router_up=False), config) == {}
    assert set(desired_listeners(one_network(routed=False, dhcp_port=False), config)) == set()


def test_metadata_port_moves_the_router_listener() -> None:
    wanted = desired_listeners(one_network(routed=True), Config(metadata_port=9800))
    assert wanted[("router", "r1")].port == 9800


@pytest.mark.parametrize("routed", [False, True])
@pytest.mark.parametrize("options", [{"enable_isolated_metadata": True}, {"force_metadata": True}, {},
                                     {"enable_isolated_metadata": True, "enable_metadata_proxy": False}])
def test_listeners_are_where_the_agent_specs_say(options: dict[str, bool], routed: bool) -> None:
    """One decision: the metadata process opens exactly what the agent's specs call for."""
    from netmeta.model.dhcp import desired_dhcp
    from netmeta.model.l3 import desired_routers

    config = Config(**options)
    for snap in (one_network(routed=routed), one_network(routed=routed, net_up=False), one_network(routed=routed, router_up=False)):
        from_specs = {("network", n) for n, s in desired_dhcp(snap, config, config.paths).items() if s.listener_wanted}
        from_specs |= {("router", r) for r, s in desired_routers(snap, config).items() if s.listener_wanted}
        assert set(desired_listeners(snap, config)) == from_specs


def test_an_ipv6_subnet_adds_the_link_local_listener_on_the_tap() -> None:
    import dataclasses

    from netmeta.model.types import NetworkId, Subnet, SubnetId

    snap = one_network(routed=False)
    v6 = Subnet(SubnetId("s6"), NetworkId("n1"), "2001:db8::/64", ip_version=6, gateway_ip=None,
                ipv6_ra_mode=None, ipv6_address_mode="slaac")
    snap = dataclasses.replace(snap, subnets={**snap.subnets, v6.id: v6})
    assert set(desired_listeners(snap, Config())) == set()  # metadata off: neither listener
    wanted = desired_listeners(snap, Config(enable_isolated_metadata=True))
    assert set(wanted) == {("network", "n1"), ("network-v6", "n1")}
    six = wanted[("network-v6", "n1")]
    assert (six.context.kind, six.context.id, six.namespace, six.host, six.port) == (
        "network", "n1", "qdhcp-n1", "fe80::a9fe:a9fe", 80)
    assert six.device.startswith("tap")
