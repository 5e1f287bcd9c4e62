"""IPv6 in the qrouter as pure data: radvd.conf per mode, the ip6tables payload, qr- addresses."""

from __future__ import annotations

import pytest

from netmeta.config import Config
from netmeta.model import l3, ra
from netmeta.model.types import Network, NetworkId, Router, RouterId, SubnetId
from tests.builders import port, subnet, world

NET = NetworkId("f673b2b9-360f-4815-b308-362e4725fd85")
ROUTER = RouterId("28120946-9f6a-4638-9747-603977b49816")
V4, S6 = SubnetId("5a5a5a5a-0000-4000-8000-00000000000a"), SubnetId("5b5b5b5b-0000-4000-8000-00000000000b")
RPORT = "a0a0a0a0-0000-4000-8000-0000000000a0"


def v6(mode: str | None, cidr: str = "2001:db8:1::/64", id: str = S6, **kw: object) -> object:
    return subnet(id, NET, cidr, cidr.replace("::/64", "::1"), ip_version=6, ipv6_ra_mode=mode,
                  ipv6_address_mode=mode, **kw)


def stanza(mode: str | None, **kw: object) -> str:
    iface = ra.RaInterface("qr-a0a0a0a0-00", 1500, (v6(mode, **kw),))  # type: ignore[arg-type]
    return ra.radvd_config([iface], 30, 100)


def test_slaac_stanza() -> None:
    assert stanza("slaac", dns_nameservers=("2001:db8::53",)) == """\
interface qr-a0a0a0a0-00
{
   AdvSendAdvert on;
   MinRtrAdvInterval 30;
   MaxRtrAdvInterval 100;
   AdvLinkMTU 1500;
   RDNSS 2001:db8::53 {};
   prefix 2001:db8:1::/64
   {
        AdvOnLink on;
        AdvAutonomous on;
   };
   route fe80::a9fe:a9fe/128 {
   };
};
"""


@pytest.mark.parametrize(
    "mode,flags,autonomous",
    [
        ("slaac", [], "on"),
        ("dhcpv6-stateless", ["AdvOtherConfigFlag on;"], "on"),
        ("dhcpv6-stateful", ["AdvManagedFlag on;"], "off"),
        (None, [], None),  # RAs come from elsewhere: the stanza advertises no prefix
    ],
)
def test_flags_per_mode(mode: str | None, flags: list[str], autonomous: str | None) -> None:
    text = stanza(mode, dns_nameservers=("2001:db8::53",))
    lines = [line.strip() for line in text.splitlines()]
    assert [x for x in lines if x.startswith(("AdvOther", "AdvManaged"))] == flags
    assert [x for x in lines if x.startswith("AdvAutonomous")] == ([f"AdvAutonomous {autonomous};"] if autonomous else [])
    # RDNSS only for slaac: the others have DHCPv6 to ask.
    assert any(x.startswith("RDNSS") for x in lines) is (mode == "slaac")
    assert "route fe80::a9fe:a9fe/128 {" in lines


def test_small_mtu_and_many_dns_servers() -> None:
    iface = ra.RaInterface("qr-x", 1000, (v6("slaac", dns_nameservers=("::1", "::2", "::3", "::4")),))  # type: ignore[arg-type]
    text = ra.radvd_config([iface], 3, 4)
    assert "AdvLinkMTU" not in text and "   RDNSS ::1 ::2 ::3 {};\n" in text
    assert ra.radvd_config([ra.RaInterface("qr-y", 1500, ())], 30, 100) == ""


def _router_world(*subnets: object) -> object:
    fixed = [(s.id, s.gateway_ip) for s in subnets]  # type: ignore[attr-defined]
    rport = port(RPORT, NET, fixed, mac="fa:16:3e:aa:aa:01", owner="network:router_interface", device_id=ROUTER)
    return world([Network(id=NET, name="n", project_id="p")], subnets, [rport],  # type: ignore[arg-type]
                 [Router(id=ROUTER, name="r", project_id="p")])


def test_router_with_ipv6_gets_addresses_radvd_and_ip6tables() -> None:
    snap = _router_world(subnet(V4, NET, "10.0.0.0/24", "10.0.0.1"), v6("dhcpv6-stateful"))
    spec = l3.desired_routers(snap, Config())[ROUTER]  # type: ignore[arg-type]
    [iface] = spec.interfaces
    assert iface.addresses == ("10.0.0.1/24", "2001:db8:1::1/64")
    assert spec.radvd.startswith("interface qr-a0a0a0a0-00\n") and "AdvManagedFlag on;" in spec.radvd
    assert "-A neutron-l3-agent-PREROUTING -d fe80::a9fe:a9fe/128 -i qr-+ -p tcp -m tcp --dport 80 " \
           "-j REDIRECT --to-ports 9697" in spec.ip6tables.splitlines()
    assert "-A neutron-l3-agent-PREROUTING -d fe80::a9fe:a9fe/128 -i qr-+ -p tcp -m tcp --dport 80 " \
           "-j MARK --set-xmark 0x1/0xffff" in spec.ip6tables.splitlines()
    # Everything else is the IPv4 payload's, line for line.
    assert spec.ip6tables.replace("fe80::a9fe:a9fe/128", "169.254.169.254/32") == spec.iptables


def test_ipv4_only_router_runs_no_radvd() -> None:
    snap = _router_world(subnet(V4, NET, "10.0.0.0/24", "10.0.0.1"))
    spec = l3.desired_routers(snap, Config())[ROUTER]  # type: ignore[arg-type]
    assert spec.radvd == ""
    assert "fe80::a9fe:a9fe/128" in spec.ip6tables  # the rules are there anyway, as Neutron's are


def test_intervals_come_from_the_config() -> None:
    snap = _router_world(v6("slaac"))
    spec = l3.desired_routers(snap, Config(min_rtr_adv_interval=3, max_rtr_adv_interval=4))[ROUTER]  # type: ignore[arg-type]
    assert "   MinRtrAdvInterval 3;\n   MaxRtrAdvInterval 4;\n" in spec.radvd


def test_interval_config_is_checked() -> None:
    from netmeta.config import ConfigError

    with pytest.raises(ConfigError):
        Config(min_rtr_adv_interval=10, max_rtr_adv_interval=5)
    with pytest.raises(ConfigError):
        Config(min_rtr_adv_interval=2, max_rtr_adv_interval=5)
