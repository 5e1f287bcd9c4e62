"""The qdhcp data plane as pure data: opts, hosts, argv, specs.

Expected lines are written out in full, line for line. They come from
the behaviour table in docs/architecture.md, from the seed report's two networks, and from
Neutron's own unit tests (neutron/tests/unit/agent/linux/test_dhcp.py), whose
vectors are re-expressed here with netmeta's types.
"""

from __future__ import annotations

from typing import Any

import pytest

from netmeta.config import Config
from netmeta.model import dhcp, names
from netmeta.model.paths import StatePaths
from tests import builders
from netmeta.model.types import (
    HostRoute,
    Network,
    NetworkId,
    Port,
    PortId,
    Router,
    RouterId,
    Snapshot,
    Subnet,
    SubnetId,
)

# --- building worlds -----------------------------------------------------------

NET = NetworkId("f673b2b9-360f-4815-b308-362e4725fd85")
SUB = SubnetId("5d1e1c2a-0000-4000-8000-000000000001")
DHCP_PORT = PortId("3da34c9a-1d00-4000-8000-000000000002")
VM_PORT = PortId("7e0c3f1b-0000-4000-8000-000000000003")
RTR_PORT = PortId("9a9a9a9a-0000-4000-8000-000000000004")
ROUTER = RouterId("4cc7cb93-8b8b-4859-93b1-628031b04f4c")
T = f"tag:subnet-{SUB}"


def subnet(
    id: str = SUB,
    cidr: str = "172.31.0.0/24",
    gateway_ip: str | None = "172.31.0.1",
    network_id: str = NET,
    **kw: Any,
) -> Subnet:
    return builders.subnet(id, network_id, cidr, gateway_ip, **kw)


def port(
    id: str, ips: list[tuple[str, str]], owner: str = "", mac: str = "fa:16:3e:00:00:01",
    network_id: str = NET, device_id: str = "",
) -> Port:
    return builders.port(id, network_id, ips, mac=mac, owner=owner, device_id=device_id)


def world(
    subnets: list[Subnet], ports: list[Port], networks: list[Network] | None = None,
    routers: list[Router] | None = None,
) -> Snapshot:
    return builders.world(networks or [Network(id=NET, name="n", project_id="p")], subnets, ports, routers or ())


def dhcp_port_at(ip: str, sub: str = SUB, id: str = DHCP_PORT, **kw: Any) -> Port:
    return port(id, [(sub, ip)], owner="network:dhcp", mac="fa:16:3e:dd:dd:dd", **kw)


def router_port_at(ip: str, sub: str = SUB, id: str = RTR_PORT, owner: str = "network:router_interface") -> Port:
    return port(id, [(sub, ip)], owner=owner, mac="fa:16:3e:rr:rr:01", device_id=ROUTER)


ISOLATED = Config(enable_isolated_metadata=True)
FORCE = Config(force_metadata=True)
NEITHER = Config()


# --- the behaviour table (docs/architecture.md) -----------------------------------

ROUTED = [subnet()], [dhcp_port_at("172.31.0.2"), router_port_at("172.31.0.1")]
ALONE = [subnet()], [dhcp_port_at("172.31.0.2")]

TABLE = [
    pytest.param(
        ALONE, ISOLATED,
        [
            f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},option:router,172.31.0.1",
        ],
        True, True, True,
        id="isolated+enable_isolated_metadata",
    ),
    pytest.param(
        ROUTED, ISOLATED,
        [
            f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
            f"{T},249,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
            f"{T},option:router,172.31.0.1",
        ],
        True, False, True,  # netmeta keeps the listener; Neutron would not
        id="router-on-gateway+enable_isolated_metadata",
    ),
    pytest.param(
        ROUTED, FORCE,
        [
            f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},option:router,172.31.0.1",
        ],
        True, True, True,
        id="force_metadata-routed",
    ),
    pytest.param(
        ALONE, FORCE,
        [
            f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
            f"{T},option:router,172.31.0.1",
        ],
        True, True, True,
        id="force_metadata-isolated",
    ),
    pytest.param(
        ROUTED, NEITHER,
        [
            f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
            f"{T},249,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
            f"{T},option:router,172.31.0.1",
        ],
        False, False, False,
        id="neither-routed",
    ),
    pytest.param(
        ALONE, NEITHER,
        [f"{T},option:router,172.31.0.1"],
        False, False, False,
        id="neither-isolated",
    ),
]


@pytest.mark.parametrize(("ws", "config", "opts", "listener", "neutron_listener", "on_tap"), TABLE)
def test_behaviour_table(
    ws: tuple[list[Subnet], list[Port]], config: Config, opts: list[str],
    listener: bool, neutron_listener: bool, on_tap: bool,
) -> None:
    # neutron_listener (Neutron's should_enable_metadata) documents the one row where netmeta differs.
    del neutron_listener
    snap = world(*ws)
    assert dhcp.opts_lines(snap, NET, config) == opts
    assert dhcp.dhcp_listener_wanted(snap, NET, config) is listener
    assert dhcp.metadata_address_on_tap(config) is on_tap
    spec = dhcp.desired_dhcp(snap, config, StatePaths("/var/lib/netmeta"))[NET]
    assert spec.listener_wanted is listener
    assert spec.metadata_address is on_tap
    expected_addresses = ("172.31.0.2/24", "169.254.169.254/32") if on_tap else ("172.31.0.2/24",)
    assert spec.addresses == expected_addresses
    assert spec.files["opts"] == "".join(line + "\n" for line in opts)


# --- the seed's two networks ---------------------------------------------------

SEED_NET1 = NetworkId("18b28e2a-30a2-4374-83e1-54bdfeda66a3")
SEED_SUB1 = SubnetId("a1b2c3d4-0000-4000-8000-0000000000aa")
SEED_DHCP1 = PortId("25fabc7f-c2aa-4000-8000-0000000000bb")


def test_seed_network_without_gateway() -> None:
    snap = world(
        [subnet(SEED_SUB1, "192.168.111.0/24", None, network_id=SEED_NET1)],
        [dhcp_port_at("192.168.111.1", sub=SEED_SUB1, id=SEED_DHCP1, network_id=SEED_NET1)],
        networks=[Network(id=SEED_NET1, name="test-metadata-in-dhcp", project_id="p")],
    )
    t = f"tag:subnet-{SEED_SUB1}"
    assert dhcp.opts_lines(snap, SEED_NET1, ISOLATED) == [
        f"{t},option:classless-static-route,169.254.169.254/32,192.168.111.1",
        f"{t},249,169.254.169.254/32,192.168.111.1",
        f"{t},option:router",
    ]
    spec = dhcp.desired_dhcp(snap, ISOLATED, StatePaths("/var/lib/netmeta"))[SEED_NET1]
    assert spec.namespace == "qdhcp-18b28e2a-30a2-4374-83e1-54bdfeda66a3"
    assert spec.tap == "tap25fabc7f-c2"
    assert spec.bridge == "brq18b28e2a-30"
    assert spec.addresses == ("192.168.111.1/24", "169.254.169.254/32")
    assert spec.listener_wanted
    d = "/var/lib/netmeta/dhcp/18b28e2a-30a2-4374-83e1-54bdfeda66a3"
    assert spec.argv == [
        "dnsmasq",
        "--no-hosts",
        "--no-resolv",
        f"--pid-file={d}/pid",
        f"--dhcp-hostsfile={d}/host",
        f"--addn-hosts={d}/addn_hosts",
        f"--dhcp-optsfile={d}/opts",
        f"--dhcp-leasefile={d}/leases",
        "--dhcp-match=set:ipxe,175",
        "--bind-dynamic",
        "--interface=tap25fabc7f-c2",
        "--except-interface=lo",
        f"--dhcp-range=set:subnet-{SEED_SUB1},192.168.111.0,static,255.255.255.0,86400s",
        "--dhcp-option-force=option:mtu,1500",
        "--dhcp-lease-max=256",
        "--conf-file=/dev/null",
        "--domain=openstacklocal",
    ]


def test_seed_network_with_gateway_before_and_after_router() -> None:
    before = world(*ALONE)
    after = world(*ROUTED)
    assert dhcp.opts_lines(before, NET, ISOLATED) == [
        f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
        f"{T},249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
        f"{T},option:router,172.31.0.1",
    ]
    # The seed's inconsistency: Neutron kept the old lines until a restart.
    # netmeta's output is a function of the data alone, so it changes at once.
    assert dhcp.opts_lines(after, NET, ISOLATED) == [
        f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
        f"{T},249,169.254.169.254/32,172.31.0.1,0.0.0.0/0,172.31.0.1",
        f"{T},option:router,172.31.0.1",
    ]
    assert dhcp.desired_dhcp(after, ISOLATED, StatePaths("/s")) == dhcp.desired_dhcp(after, ISOLATED, StatePaths("/s"))


# --- isolation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "gateway", "isolated"),
    [
        ([], "172.31.0.1", True),
        ([router_port_at("172.31.0.1")], "172.31.0.1", False),
        ([router_port_at("172.31.0.1", owner="network:router_interface_distributed")], "172.31.0.1", False),
        ([router_port_at("172.31.0.1", owner="network:ha_router_replicated_interface")], "172.31.0.1", False),
        # an HA-network port is not an interface; a router elsewhere doesn't count
        ([router_port_at("172.31.0.1", owner="network:router_ha_interface")], "172.31.0.1", True),
        ([router_port_at("172.31.0.9")], "172.31.0.1", True),
        ([port("p", [(SUB, "172.31.0.1")], owner="compute:nova")], "172.31.0.1", True),
        ([router_port_at("172.31.0.1")], None, True),
    ],
)
def test_is_isolated(ports: list[Port], gateway: str | None, isolated: bool) -> None:
    s = subnet(gateway_ip=gateway)
    assert dhcp.is_isolated(world([s], ports), s) is isolated


# --- Neutron's own vectors (test_dhcp.py, conf enable_isolated_metadata=True) ----

D = "dddddddd-dddd-dddd-dddd-dddddddddddd"
C = "cccccccc-cccc-cccc-cccc-cccccccccccc"
E = "eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee"
TD, TC, TE = f"tag:subnet-{D}", f"tag:subnet-{C}", f"tag:subnet-{E}"


def fake_v4_subnet(**kw: Any) -> Subnet:
    """FakeV4Subnet: 192.168.0.0/24, gw .1, host route 20.0.0.1/24 via 20.0.0.1, dns 8.8.8.8."""
    base: dict[str, Any] = dict(
        id=D, cidr="192.168.0.0/24", gateway_ip="192.168.0.1",
        host_routes=(HostRoute("20.0.0.1/24", "20.0.0.1"),), dns_nameservers=("8.8.8.8",),
    )
    base.update(kw)
    return subnet(**base)


FAKE_PORT1 = port("eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee", [(D, "192.168.0.2")], owner="foo1", mac="00:00:80:aa:bb:cc")
FAKE_ROUTER_PORT = port("rrrrrrrr-rrrr-rrrr-rrrr-rrrrrrrrrrrr", [(D, "192.168.0.1")],
                        owner="network:router_interface", mac="00:00:0f:rr:rr:rr")
FAKE_ROUTER_PORT2 = port("rrrrrrrr-rrrr-rrrr-rrrr-rrrrrrrrrrr2", [(C, "192.168.1.1")],
                         owner="network:router_interface", mac="00:00:0f:rr:rr:r2")

NEUTRON_VECTORS = [
    pytest.param(  # test_output_opts_file (its IPv4 half)
        [fake_v4_subnet()], [FAKE_PORT1, FAKE_ROUTER_PORT],
        [
            f"{TD},option:dns-server,8.8.8.8",
            f"{TD},option:classless-static-route,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,20.0.0.1/24,20.0.0.1,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="output_opts_file",
    ),
    pytest.param(  # test_output_opts_file_gateway_route: a 0.0.0.0/0 host route is dropped
        [fake_v4_subnet(host_routes=(HostRoute("0.0.0.0/0", "10.0.0.1"),))], [FAKE_PORT1, FAKE_ROUTER_PORT],
        [
            f"{TD},option:dns-server,8.8.8.8",
            f"{TD},option:classless-static-route,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="gateway_route",
    ),
    pytest.param(  # test_output_opts_file_agent_with_many_dns_provided: order kept
        [fake_v4_subnet(host_routes=(), dns_nameservers=("2.2.2.2", "9.9.9.9", "1.1.1.1", "3.3.3.3"))],
        [FAKE_PORT1, FAKE_ROUTER_PORT],
        [
            f"{TD},option:dns-server,2.2.2.2,9.9.9.9,1.1.1.1,3.3.3.3",
            f"{TD},option:classless-static-route,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="many_dns",
    ),
    pytest.param(  # test_output_opts_file_agent_with_no_dns_provided: 0.0.0.0 = announce none
        [fake_v4_subnet(host_routes=(), dns_nameservers=("0.0.0.0",))], [FAKE_PORT1, FAKE_ROUTER_PORT],
        [
            f"{TD},option:dns-server",
            f"{TD},option:classless-static-route,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="dns_any_address",
    ),
    pytest.param(  # test_output_opts_file_agent_dns_provided: one DHCP agent, no dns → nothing
        [fake_v4_subnet(host_routes=(), dns_nameservers=())],
        [FAKE_PORT1, FAKE_ROUTER_PORT, dhcp_port_at("192.168.0.5", sub=D, id="aaaa0001")],
        [
            f"{TD},option:classless-static-route,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="single_agent_no_dns",
    ),
    pytest.param(  # test_output_opts_file_multiple_agents_without_dns_provided
        [fake_v4_subnet(host_routes=(), dns_nameservers=())],
        [FAKE_PORT1, FAKE_ROUTER_PORT, dhcp_port_at("192.168.0.5", sub=D, id="aaaa0001"),
         dhcp_port_at("192.168.0.6", sub=D, id="aaaa0002")],
        [
            f"{TD},option:classless-static-route,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
            f"{TD},option:dns-server,192.168.0.5,192.168.0.6",
        ],
        id="multiple_agents_no_dns",
    ),
    pytest.param(  # test_output_opts_file_single_dhcp: a DHCP-disabled subnet is on-link
        [fake_v4_subnet(), subnet(E, "192.168.1.0/24", "192.168.1.1", enable_dhcp=False)],
        [FAKE_PORT1, FAKE_ROUTER_PORT],
        [
            f"{TD},option:dns-server,8.8.8.8",
            f"{TD},option:classless-static-route,192.168.1.0/24,0.0.0.0,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,192.168.1.0/24,0.0.0.0,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="single_dhcp",
    ),
    pytest.param(  # test_output_opts_file_dual_dhcp_rfc3442 (blocks in subnet-id order)
        [fake_v4_subnet(), fake_v4_subnet(id=C, cidr="192.168.1.0/24", gateway_ip="192.168.1.1", host_routes=())],
        [FAKE_PORT1, FAKE_ROUTER_PORT, FAKE_ROUTER_PORT2],
        [
            f"{TC},option:dns-server,8.8.8.8",
            f"{TC},option:classless-static-route,192.168.0.0/24,0.0.0.0,"
            "169.254.169.254/32,192.168.1.1,0.0.0.0/0,192.168.1.1",
            f"{TC},249,192.168.0.0/24,0.0.0.0,169.254.169.254/32,192.168.1.1,0.0.0.0/0,192.168.1.1",
            f"{TC},option:router,192.168.1.1",
            f"{TD},option:dns-server,8.8.8.8",
            f"{TD},option:classless-static-route,192.168.1.0/24,0.0.0.0,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,192.168.1.0/24,0.0.0.0,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="dual_dhcp_rfc3442",
    ),
    pytest.param(  # test_output_opts_file_no_gateway
        [subnet(E, "192.168.1.0/24", None)], [FAKE_PORT1, dhcp_port_at("192.168.1.1", sub=E)],
        [
            f"{TE},option:classless-static-route,169.254.169.254/32,192.168.1.1",
            f"{TE},249,169.254.169.254/32,192.168.1.1",
            f"{TE},option:router",
        ],
        id="no_gateway",
    ),
    pytest.param(  # test_output_opts_file_no_neutron_router_on_subnet
        [subnet(E, "192.168.1.0/24", "192.168.1.1")], [FAKE_PORT1, dhcp_port_at("192.168.1.2", sub=E)],
        [
            f"{TE},option:classless-static-route,169.254.169.254/32,192.168.1.2,0.0.0.0/0,192.168.1.1",
            f"{TE},249,169.254.169.254/32,192.168.1.2,0.0.0.0/0,192.168.1.1",
            f"{TE},option:router,192.168.1.1",
        ],
        id="no_router_on_subnet",
    ),
    pytest.param(  # test_output_opts_file_dist_neutron_router_on_subnet
        [fake_v4_subnet()],
        [FAKE_PORT1, port("rrrr", [(D, "192.168.0.1")], owner="network:router_interface_distributed")],
        [
            f"{TD},option:dns-server,8.8.8.8",
            f"{TD},option:classless-static-route,20.0.0.1/24,20.0.0.1,"
            "169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},249,20.0.0.1/24,20.0.0.1,169.254.169.254/32,192.168.0.1,0.0.0.0/0,192.168.0.1",
            f"{TD},option:router,192.168.0.1",
        ],
        id="dvr_router_on_subnet",
    ),
]


@pytest.mark.parametrize(("subnets", "ports", "expected"), NEUTRON_VECTORS)
def test_neutron_opts_vectors(subnets: list[Subnet], ports: list[Port], expected: list[str]) -> None:
    assert dhcp.opts_lines(world(subnets, ports), NET, ISOLATED) == expected


# --- more opts cases -----------------------------------------------------------


def test_host_routes_and_default_route_without_gateway() -> None:
    """A 0.0.0.0/0 host route becomes the gateway when the subnet has none."""
    s = subnet(gateway_ip=None, host_routes=(HostRoute("10.0.0.0/8", "172.31.0.254"),
                                             HostRoute("0.0.0.0/0", "172.31.0.253")))
    snap = world([s], [dhcp_port_at("172.31.0.2")])
    assert dhcp.opts_lines(snap, NET, ISOLATED) == [
        f"{T},option:classless-static-route,10.0.0.0/8,172.31.0.254,"
        "169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.253",
        f"{T},249,10.0.0.0/8,172.31.0.254,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.253",
        f"{T},option:router,172.31.0.253",
    ]
    assert dhcp.opts_lines(snap, NET, NEITHER) == [
        f"{T},option:classless-static-route,10.0.0.0/8,172.31.0.254,0.0.0.0/0,172.31.0.253",
        f"{T},249,10.0.0.0/8,172.31.0.254,0.0.0.0/0,172.31.0.253",
        f"{T},option:router,172.31.0.253",
    ]


def test_dns_nameservers_come_first() -> None:
    snap = world([subnet(dns_nameservers=("9.9.9.9", "1.1.1.1"))], [dhcp_port_at("172.31.0.2")])
    assert dhcp.opts_lines(snap, NET, ISOLATED) == [
        f"{T},option:dns-server,9.9.9.9,1.1.1.1",
        f"{T},option:classless-static-route,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
        f"{T},249,169.254.169.254/32,172.31.0.2,0.0.0.0/0,172.31.0.1",
        f"{T},option:router,172.31.0.1",
    ]


def test_two_subnets_one_routed_one_isolated() -> None:
    a, b = SubnetId("aaaaaaaa-0000-4000-8000-000000000001"), SubnetId("bbbbbbbb-0000-4000-8000-000000000002")
    snap = world(
        [subnet(a, "10.0.1.0/24", "10.0.1.1"), subnet(b, "10.0.2.0/24", None)],
        [port(DHCP_PORT, [(a, "10.0.1.2"), (b, "10.0.2.2")], owner="network:dhcp"),
         port(RTR_PORT, [(a, "10.0.1.1")], owner="network:router_interface", device_id=ROUTER)],
    )
    ta, tb = f"tag:subnet-{a}", f"tag:subnet-{b}"
    assert dhcp.opts_lines(snap, NET, ISOLATED) == [
        f"{ta},option:classless-static-route,10.0.2.0/24,0.0.0.0,169.254.169.254/32,10.0.1.1,0.0.0.0/0,10.0.1.1",
        f"{ta},249,10.0.2.0/24,0.0.0.0,169.254.169.254/32,10.0.1.1,0.0.0.0/0,10.0.1.1",
        f"{ta},option:router,10.0.1.1",
        f"{tb},option:classless-static-route,10.0.1.0/24,0.0.0.0,169.254.169.254/32,10.0.2.2",
        f"{tb},249,10.0.1.0/24,0.0.0.0,169.254.169.254/32,10.0.2.2",
        f"{tb},option:router",
    ]
    spec = dhcp.desired_dhcp(snap, ISOLATED, StatePaths("/s"))[NET]
    assert spec.addresses == ("10.0.1.2/24", "10.0.2.2/24", "169.254.169.254/32")
    assert [a for a in spec.argv if a.startswith("--dhcp-range")] == [
        f"--dhcp-range=set:subnet-{a},10.0.1.0,static,255.255.255.0,86400s",
        f"--dhcp-range=set:subnet-{b},10.0.2.0,static,255.255.255.0,86400s",
    ]
    assert "--dhcp-lease-max=512" in spec.argv


def test_three_subnets_on_link_routes_are_prepended() -> None:
    """Neutron inserts each other subnet at the front: reverse id order."""
    ids = [SubnetId(f"{c * 8}-0000-4000-8000-000000000000") for c in "abc"]
    snap = world(
        [subnet(ids[0], "10.0.1.0/24", None), subnet(ids[1], "10.0.2.0/24", None),
         subnet(ids[2], "10.0.3.0/24", None)],
        [port(DHCP_PORT, [(ids[0], "10.0.1.2")], owner="network:dhcp")],
    )
    first = dhcp.opts_lines(snap, NET, NEITHER)[0]
    assert first == f"tag:subnet-{ids[0]},option:classless-static-route,10.0.3.0/24,0.0.0.0,10.0.2.0/24,0.0.0.0"


def test_force_metadata_without_dhcp_address_on_subnet_has_no_metadata_route() -> None:
    """Neutron does not fall back to the gateway when the DHCP port lacks an IP there."""
    snap = world(*ROUTED[:1], [router_port_at("172.31.0.1")])  # no DHCP port at all
    assert dhcp.opts_lines(snap, NET, FORCE) == [f"{T},option:router,172.31.0.1"]
    assert dhcp.desired_dhcp(snap, FORCE, StatePaths("/s")) == {}


def test_dhcp_disabled_is_ignored_and_modeless_ipv6_is_served_statefully() -> None:
    """A subnet with neither IPv6 mode is Neutron's old "static" DHCPv6 (tests/upstream checks the lines)."""
    v6 = SubnetId("66666666-0000-4000-8000-000000000006")
    off = SubnetId("00000000-0000-4000-8000-000000000000")
    snap = world(
        [subnet(), subnet(v6, "fd00::/64", "fd00::1", ip_version=6),
         subnet(off, "10.9.0.0/24", "10.9.0.1", enable_dhcp=False)],
        [port(DHCP_PORT, [(SUB, "172.31.0.2"), (v6, "fd00::2")], owner="network:dhcp"),
         port(VM_PORT, [(SUB, "172.31.0.5"), (v6, "fd00::5"), (off, "10.9.0.5")], mac="fa:16:3e:00:00:05")],
    )
    assert dhcp.opts_lines(snap, NET, NEITHER) == [
        f"{T},option:classless-static-route,10.9.0.0/24,0.0.0.0,0.0.0.0/0,172.31.0.1",
        f"{T},249,10.9.0.0/24,0.0.0.0,0.0.0.0/0,172.31.0.1",
        f"{T},option:router,172.31.0.1",
        f"tag:subnet-{v6},option6:domain-search,openstacklocal",
    ]
    assert dhcp.hosts_lines(snap, NET, "openstacklocal") == [
        "fa:16:3e:00:00:05,host-172-31-0-5.openstacklocal,172.31.0.5",
        "fa:16:3e:00:00:05,tag:dhcpv6,host-fd00--5.openstacklocal,[fd00::5]",
    ]
    spec = dhcp.desired_dhcp(snap, NEITHER, StatePaths("/s"))[NET]
    assert spec.addresses == ("172.31.0.2/24", "fd00::2/64")
    assert [a for a in spec.argv if a.startswith("--dhcp-range")] == [
        f"--dhcp-range=set:subnet-{SUB},172.31.0.0,static,255.255.255.0,86400s",
        f"--dhcp-range=set:subnet-{v6},fd00::,static,64,86400s",
    ]
    # With metadata on, the IPv6 metadata address joins the IPv4 one on the tap.
    spec = dhcp.desired_dhcp(snap, ISOLATED, StatePaths("/s"))[NET]
    assert spec.addresses == ("172.31.0.2/24", "fd00::2/64", "169.254.169.254/32", "fe80::a9fe:a9fe/128")


SLAAC = SubnetId("5a5a5a5a-0000-4000-8000-00000000005a")
STATEFUL = SubnetId("5f5f5f5f-0000-4000-8000-00000000005f")
STATELESS = SubnetId("5e5e5e5e-0000-4000-8000-00000000005e")


def test_ipv6_modes_ranges_hosts_and_options() -> None:
    vm_mac = "fa:16:3e:00:00:05"
    snap = world(
        [subnet(SLAAC, "2001:db8:a::/64", "2001:db8:a::1", ip_version=6, ipv6_address_mode="slaac",
                ipv6_ra_mode="slaac", dns_nameservers=("2001:db8::53",)),
         subnet(STATEFUL, "2001:db8:f::/64", "2001:db8:f::1", ip_version=6, ipv6_address_mode="dhcpv6-stateful",
                ipv6_ra_mode="dhcpv6-stateful", dns_nameservers=("2001:db8::53", "2001:db8::54")),
         subnet(STATELESS, "2001:db8:e::/64", "2001:db8:e::1", ip_version=6,
                ipv6_address_mode="dhcpv6-stateless", ipv6_ra_mode="dhcpv6-stateless")],
        [port(DHCP_PORT, [(STATEFUL, "2001:db8:f::2")], owner="network:dhcp"),
         port(VM_PORT, [(SLAAC, "2001:db8:a::f816:3eff:fe00:5"), (STATEFUL, "2001:db8:f::5"),
                        (STATELESS, "2001:db8:e::f816:3eff:fe00:5")], mac=vm_mac)],
    )
    config = Config(enable_isolated_metadata=True, dns_domain="")
    assert dhcp.opts_lines(snap, NET, config) == [
        f"tag:subnet-{STATEFUL},option6:dns-server,[2001:db8::53],[2001:db8::54]",
    ]
    assert dhcp.hosts_lines(snap, NET, "") == [
        f"{vm_mac},tag:dhcpv6,host-2001-db8-f--5,[2001:db8:f::5]",
    ]
    spec = dhcp.desired_dhcp(snap, config, StatePaths("/s"))[NET]
    assert [a for a in spec.argv if a.startswith("--dhcp-range")] == [
        f"--dhcp-range=set:subnet-{STATELESS},2001:db8:e::,static,64,86400s",
        f"--dhcp-range=set:subnet-{STATEFUL},2001:db8:f::,static,64,86400s",
    ]
    assert spec.listener_wanted  # an IPv6-only network serves metadata too
    assert spec.addresses[-1] == "fe80::a9fe:a9fe/128"


def test_only_dhcp_disabled_means_no_namespace() -> None:
    snap = world([subnet(enable_dhcp=False)], [dhcp_port_at("172.31.0.2")])
    assert dhcp.desired_dhcp(snap, ISOLATED, StatePaths("/s")) == {}
    assert not dhcp.dhcp_listener_wanted(snap, NET, ISOLATED)


def test_admin_down_network_gets_no_namespace() -> None:
    snap = world(*ALONE, networks=[Network(id=NET, name="n", project_id="p", admin_state_up=False)])
    assert dhcp.desired_dhcp(snap, ISOLATED, StatePaths("/s")) == {}


# --- hosts files ---------------------------------------------------------------


def _hosts_world() -> Snapshot:
    return world(
        [subnet()],
        [
            dhcp_port_at("172.31.0.2"),
            router_port_at("172.31.0.1"),
            port("11111111-aaaa", [(SUB, "172.31.0.10")], owner="compute:nova", mac="fa:16:3e:00:00:10"),
            port("22222222-bbbb", [(SUB, "172.31.0.11")], mac="fa:16:3e:00:00:11"),
            port("33333333-cccc", [(SUB, "172.31.0.12")], owner="network:router_ha_interface"),
            port("44444444-dddd", [(SUB, "172.31.0.13")], owner="network:floatingip"),
        ],
    )


def test_hosts_lines() -> None:
    assert dhcp.hosts_lines(_hosts_world(), NET, "openstacklocal") == [
        "fa:16:3e:00:00:10,host-172-31-0-10.openstacklocal,172.31.0.10",
        "fa:16:3e:00:00:11,host-172-31-0-11.openstacklocal,172.31.0.11",
        "fa:16:3e:rr:rr:01,host-172-31-0-1.openstacklocal,172.31.0.1",
    ]
    # test_spawn_no_dns_domain: no domain, bare host names
    assert dhcp.hosts_lines(_hosts_world(), NET, "")[0] == "fa:16:3e:00:00:10,host-172-31-0-10,172.31.0.10"


def test_addn_hosts_lines() -> None:
    assert dhcp.addn_hosts_lines(_hosts_world(), NET, "openstacklocal") == [
        "172.31.0.10\thost-172-31-0-10.openstacklocal host-172-31-0-10",
        "172.31.0.11\thost-172-31-0-11.openstacklocal host-172-31-0-11",
        "172.31.0.1\thost-172-31-0-1.openstacklocal host-172-31-0-1",
    ]
    assert dhcp.addn_hosts_lines(_hosts_world(), NET, "")[0] == "172.31.0.10\thost-172-31-0-10 host-172-31-0-10"


def test_files_end_with_newline() -> None:
    spec = dhcp.desired_dhcp(_hosts_world(), ISOLATED, StatePaths("/s"))[NET]
    assert set(spec.files) == {"opts", "host", "addn_hosts"}
    assert all(text.endswith("\n") for text in spec.files.values())
    assert spec.files["host"] == "".join(
        line + "\n" for line in dhcp.hosts_lines(_hosts_world(), NET, "openstacklocal")
    )
    assert dhcp.render_file([]) == ""


# --- dnsmasq argv ---------------------------------------------------------------


def _spec(**kw: Any) -> dhcp.DnsmasqSpec:
    base: dict[str, Any] = dict(
        network_id=NET, interface="tap3da34c9a-1d", files_dir="/st/dhcp/n/",
        ranges=(dhcp.DhcpRange(SUB, "172.31.0.0", "255.255.255.0"),),
        lease_duration=86400, lease_max=256, domain="openstacklocal", mtu=1450,
    )
    base.update(kw)
    return dhcp.DnsmasqSpec(**base)


def test_dnsmasq_argv_infinite_lease_no_domain_no_mtu() -> None:
    assert dhcp.dnsmasq_argv(_spec(lease_duration=-1, domain="", mtu=0)) == [
        "dnsmasq",
        "--no-hosts",
        "--no-resolv",
        "--pid-file=/st/dhcp/n/pid",
        "--dhcp-hostsfile=/st/dhcp/n/host",
        "--addn-hosts=/st/dhcp/n/addn_hosts",
        "--dhcp-optsfile=/st/dhcp/n/opts",
        "--dhcp-leasefile=/st/dhcp/n/leases",
        "--dhcp-match=set:ipxe,175",
        "--bind-dynamic",
        "--interface=tap3da34c9a-1d",
        "--except-interface=lo",
        f"--dhcp-range=set:subnet-{SUB},172.31.0.0,static,255.255.255.0,infinite",
        "--dhcp-lease-max=256",
        "--conf-file=/dev/null",
    ]


def test_dnsmasq_argv_mtu_and_lease() -> None:
    argv = dhcp.dnsmasq_argv(_spec(lease_duration=600))
    assert argv[12:] == [
        f"--dhcp-range=set:subnet-{SUB},172.31.0.0,static,255.255.255.0,600s",
        "--dhcp-option-force=option:mtu,1450",
        "--dhcp-lease-max=256",
        "--conf-file=/dev/null",
        "--domain=openstacklocal",
    ]


def test_dnsmasq_spec_lease_max_is_capped() -> None:
    snap = world([subnet(cidr="10.0.0.0/7", gateway_ip=None)], [dhcp_port_at("10.0.0.2")])
    spec = dhcp.dnsmasq_spec(snap, NET, NEITHER, "/d")
    assert spec is not None and spec.lease_max == 2**24
    assert spec.ranges == (dhcp.DhcpRange(SUB, "10.0.0.0", "254.0.0.0"),)
    assert dhcp.dnsmasq_spec(world([subnet()], []), NET, NEITHER, "/d") is None


# --- names -----------------------------------------------------------------------


def test_names() -> None:
    assert names.dhcp_namespace("n1") == "qdhcp-n1"
    assert names.router_namespace("r1") == "qrouter-r1"
    assert names.tap_name("3da34c9a-1d5f-4000") == "tap3da34c9a-1d"
    assert names.router_port_name("3da34c9a-1d5f-4000") == "qr-3da34c9a-1d"
    assert names.bridge_name("f673b2b9-360f-4815") == "brqf673b2b9-36"
    assert names.dhcp_outer_name("3da34c9a-1d5f-4000") == "d-3da34c9a-1d"
    assert names.router_outer_name("3da34c9a-1d5f-4000") == "r-3da34c9a-1d"
    assert names.guest_outer_name("3da34c9a-1d5f-4000") == "g-3da34c9a-1d"
    assert names.guest_namespace("vm1", "0123456789abcdef") == "vm-vm1-01234567"
    every = [f("x" * 36) for f in (names.tap_name, names.bridge_name, names.router_port_name,
                                   names.dhcp_outer_name, names.router_outer_name, names.guest_outer_name)]
    assert all(len(n) <= 15 for n in every)  # IFNAMSIZ - 1
