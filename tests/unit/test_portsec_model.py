"""The port security ruleset, per port shape: the rendered nftables text."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netmeta.model import portsec
from netmeta.model.types import (
    AddressPair,
    FixedIP,
    NetworkId,
    Port,
    PortId,
    SecurityGroup,
    SecurityGroupId,
    SecurityGroupRule,
    Snapshot,
    SubnetId,
)

NET = NetworkId("net-1")
SG = SecurityGroupId("sg-default")
MAC = "fa:16:3e:00:00:05"


def guest(pid: str = "aaaaaaaaaaaa-1", ip: str = "10.0.0.5", mac: str = MAC, **kw: object) -> Port:
    fields: dict[str, object] = {"device_id": "vm", "device_owner": "compute:nova", "project_id": "p",
                                 "security_groups": (SG,), **kw}
    return Port(PortId(pid), NET, mac, (FixedIP(SubnetId("s4"), ip),), **fields)  # type: ignore[arg-type]


def snap(*ports: Port, rules: tuple[SecurityGroupRule, ...] = ()) -> Snapshot:
    return Snapshot(ports={p.id: p for p in ports}, security_groups={SG: SecurityGroup(SG, "default", "p", rules)})


def chain(text: str, name: str, family: str = "") -> list[str]:
    """A chain's rules (its hook line left out), in the given table if named."""
    lines = text.splitlines()
    begin = lines.index(f"table {family} netmeta {{") if family else 0
    start = lines.index(f"\tchain {name} {{", begin)
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1:end] if not line.strip().startswith("type filter")]


def test_link_local_is_the_eui64_of_the_mac() -> None:
    assert portsec.link_local("fa:16:3e:00:00:05") == "fe80::f816:3eff:fe00:5"
    assert portsec.link_local("00:00:00:00:00:01") == "fe80::200:ff:fe00:1"


def test_a_plain_guest_port_sends_only_as_itself() -> None:
    text = portsec.render_tables(snap(guest()))
    assert chain(text, "from-g-aaaaaaaaaaa") == [
        "meta mark set 0x00010000",
        f"ether saddr != {MAC} counter drop comment \"not the port's MAC\"",
        f"arp saddr ether . arp saddr ip {{ {MAC} . 10.0.0.5, {MAC} . 0.0.0.0 }} accept",
        "ether type arp counter drop comment \"ARP for an address not the port's\"",
        "udp sport { 67, 547 } counter drop comment \"a guest is no DHCP server\"",
        "icmpv6 type { nd-router-advert, nd-redirect } counter drop comment \"a guest is no router\"",
        "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
        f"ether type ip ether saddr . ip saddr {{ {MAC} . 10.0.0.5 }} accept",
        "ether type ip counter drop comment \"IPv4 from an address not the port's\"",
        "ether type ip6 ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld2-listener-report } accept",
        f"ether type ip6 ether saddr . ip6 saddr {{ {MAC} . fe80::f816:3eff:fe00:5 }} accept",
        "counter drop comment \"neither the port's IPv6, IPv4 nor ARP\"",
    ]
    assert chain(text, "to-g-aaaaaaaaaaa") == ["meta mark set meta mark or 0x1"]
    assert chain(text, "prerouting")[-1] == 'iifname vmap { "g-aaaaaaaaaaa" : jump from-g-aaaaaaaaaaa }'
    assert chain(text, "forward", "inet")[-1].startswith("meta mark and 0x0000ffff vmap { 0x1 : jump ingress-")


PAIR_CASES = [
    # allowed_address_pairs, expected IPv4 (mac . address) set, expected MACs
    ((AddressPair("10.0.0.50", MAC),), f"{MAC} . 10.0.0.5, {MAC} . 10.0.0.50", MAC),
    ((AddressPair("10.9.0.7/24", MAC),), f"{MAC} . 10.0.0.5, {MAC} . 10.9.0.0/24", MAC),
    ((AddressPair("10.0.0.60", "fa:16:3e:aa:bb:cc"),),
     f"{MAC} . 10.0.0.5, fa:16:3e:aa:bb:cc . 10.0.0.60", f"{{ {MAC}, fa:16:3e:aa:bb:cc }}"),
    ((AddressPair("fd00::77", MAC),), f"{MAC} . 10.0.0.5", MAC),
]


@pytest.mark.parametrize("pairs, ipv4, macs", PAIR_CASES)
def test_allowed_address_pairs_widen_what_the_port_may_send(pairs: tuple[AddressPair, ...], ipv4: str,
                                                            macs: str) -> None:
    lines = chain(portsec.render_tables(snap(guest(allowed_address_pairs=pairs))), "from-g-aaaaaaaaaaa")
    assert f"ether type ip ether saddr . ip saddr {{ {ipv4} }} accept" in lines
    assert lines[1].startswith(f"ether saddr != {macs} ")
    if pairs[0].ip_address == "fd00::77":
        assert any(f"{MAC} . fd00::77" in line for line in lines)


def test_an_ipv6_fixed_ip_is_allowed_beside_the_link_local() -> None:
    port = replace(guest(), fixed_ips=(FixedIP(SubnetId("s4"), "10.0.0.5"), FixedIP(SubnetId("s6"), "fd00::5")))
    lines = chain(portsec.render_tables(snap(port)), "from-g-aaaaaaaaaaa")
    assert f"ether type ip6 ether saddr . ip6 saddr {{ {MAC} . fd00::5, {MAC} . fe80::f816:3eff:fe00:5 }} accept" \
        in lines


def test_a_port_without_addresses_may_still_ask_dhcp() -> None:
    lines = chain(portsec.render_tables(snap(replace(guest(), fixed_ips=()))), "from-g-aaaaaaaaaaa")
    assert "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept" in lines
    assert not any("ip saddr {" in line and "ether saddr ." in line and "ip6" not in line for line in lines)


@pytest.mark.parametrize("port", [
    replace(guest(), port_security_enabled=False, security_groups=()),
    replace(guest(), device_owner="network:dhcp", security_groups=()),
    replace(guest(), device_owner="network:router_interface", security_groups=()),
], ids=["port security off", "dhcp port", "router interface"])
def test_unfiltered_ports_get_no_chains(port: Port) -> None:
    assert portsec.render_tables(snap(port)) == ""
    rules = portsec.ruleset(snap(port))
    assert rules.digest is None
    assert rules.payload == "table bridge netmeta\ndelete table bridge netmeta\n" \
                            "table inet netmeta\ndelete table inet netmeta\n"


RULES = [
    (SecurityGroupRule("r", "ingress", "IPv4"), "meta nfproto ipv4"),
    (SecurityGroupRule("r", "ingress", "IPv4", 6, 22, 22), "meta nfproto ipv4 meta l4proto 6 th dport 22"),
    (SecurityGroupRule("r", "ingress", "IPv4", 17, 1000, 2000), "meta nfproto ipv4 meta l4proto 17 th dport 1000-2000"),
    (SecurityGroupRule("r", "ingress", "IPv4", 6), "meta nfproto ipv4 meta l4proto 6"),
    (SecurityGroupRule("r", "ingress", "IPv4", 1, 8, None), "meta nfproto ipv4 meta l4proto 1 icmp type 8"),
    (SecurityGroupRule("r", "ingress", "IPv4", 1, 3, 4), "meta nfproto ipv4 meta l4proto 1 icmp type 3 icmp code 4"),
    (SecurityGroupRule("r", "ingress", "IPv6", 1, 128, None),
     "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128"),
    (SecurityGroupRule("r", "ingress", "IPv4", 47), "meta nfproto ipv4 meta l4proto 47"),
    (SecurityGroupRule("r", "ingress", "IPv4", remote_ip_prefix="192.168.0.0/16"),
     "meta nfproto ipv4 ip saddr 192.168.0.0/16"),
    (SecurityGroupRule("r", "egress", "IPv6", 6, 443, 443, "fd00::/8"),
     "meta nfproto ipv6 ip6 daddr fd00::/8 meta l4proto 6 th dport 443"),
    (SecurityGroupRule("r", "ingress", "IPv4", remote_group_id=SG),
     "meta nfproto ipv4 ip saddr @rg4-sg-default"),
    (SecurityGroupRule("r", "ingress", "IPv6", remote_group_id=SG), None),  # no IPv6 member: matches nothing
    (SecurityGroupRule("r", "ingress", "IPv4", remote_group_id=SecurityGroupId("gone")), None),
]


@pytest.mark.parametrize("rule, expected", RULES)
def test_rule_matches(rule: SecurityGroupRule, expected: str | None) -> None:
    world = snap(guest(), guest("bbbbbbbbbbbb-2", "10.0.0.6", "fa:16:3e:00:00:06"))
    assert portsec.rule_match(world, rule) == expected


def test_remote_group_members_include_address_pairs() -> None:
    world = snap(guest(allowed_address_pairs=(AddressPair("10.7.0.0/24", MAC),)),
                 replace(guest("cccccccccccc-3", "10.0.0.9", "fa:16:3e:00:00:09"), port_security_enabled=False,
                         security_groups=(SG,)))
    rule = SecurityGroupRule("r", "ingress", "IPv4", remote_group_id=SG)
    members: portsec.Members = {}
    assert portsec.rule_match(world, rule, members) == "meta nfproto ipv4 ip saddr @rg4-sg-default"
    assert members == {(SG, 4): ["10.0.0.5", "10.7.0.0/24"]}
    text = portsec.render_tables(replace(world, security_groups={SG: SecurityGroup(SG, "default", "p", (rule,))}))
    assert "\tset rg4-sg-default {\n\t\ttype ipv4_addr; flags interval;\n" \
           "\t\telements = { 10.0.0.5, 10.7.0.0/24 }\n\t}" in text


def test_egress_and_ingress_chains_keep_dhcp_and_metadata_whatever_the_rules() -> None:
    text = portsec.render_tables(snap(guest()))  # the group has no rules at all: deny-all
    egress = chain(text, "egress-g-aaaaaaaaaaa")
    assert egress[:3] == ['udp sport 68 udp dport 67 return comment "DHCP"',
                          'udp sport 546 udp dport 547 return comment "DHCPv6"',
                          'ip daddr 169.254.169.254 tcp dport 80 return comment "metadata"']
    assert egress[-1] == 'counter drop comment "no egress rule allows it"'
    ingress = chain(text, "ingress-g-aaaaaaaaaaa")
    assert ingress[0] == 'udp sport 67 udp dport 68 accept comment "DHCP"'
    assert ingress[-1] == 'counter drop comment "no ingress rule allows it"'
    forward = chain(text, "forward", "inet")
    assert forward[:3] == ["meta mark 0 accept", "ct state established,related accept",
                           "ct state invalid counter drop"]


def test_rules_land_in_their_direction_once() -> None:
    rules = (SecurityGroupRule("r1", "ingress", "IPv4", 6, 22, 22), SecurityGroupRule("r2", "egress", "IPv4"),
             SecurityGroupRule("r3", "ingress", "IPv4", 6, 22, 22))
    text = portsec.render_tables(snap(guest(), rules=rules))
    assert chain(text, "ingress-g-aaaaaaaaaaa").count("meta nfproto ipv4 meta l4proto 6 th dport 22 accept") == 1
    assert "meta nfproto ipv4 return" in chain(text, "egress-g-aaaaaaaaaaa")


def test_networks_get_their_own_conntrack_zone() -> None:
    other = replace(guest("bbbbbbbbbbbb-2", "10.0.0.5", "fa:16:3e:00:00:06"), network_id=NetworkId("net-2"))
    zone = chain(portsec.render_tables(snap(guest(), other)), "zone")
    assert zone == [f'iifname "brqnet-1" ct zone set {portsec.zone("net-1")}',
                    f'iifname "brqnet-2" ct zone set {portsec.zone("net-2")}']
    assert portsec.zone("net-1") != portsec.zone("net-2")


def test_the_same_snapshot_renders_the_same_ruleset() -> None:
    a, b = guest(), guest("bbbbbbbbbbbb-2", "10.0.0.6", "fa:16:3e:00:00:06")
    first = portsec.ruleset(snap(a, b))
    assert first == portsec.ruleset(snap(b, a))
    assert first.digest is not None and f'comment "{first.digest}"' in first.payload
    changed = portsec.ruleset(snap(a, b, rules=(SecurityGroupRule("r", "ingress", "IPv4", 6, 80, 80),)))
    assert changed.digest != first.digest


def test_netmetas_access_port_reaches_guests_whatever_their_groups() -> None:
    access = replace(guest("dddddddddddd-4", "10.0.0.250", "fa:16:3e:00:00:fa"), device_owner="netmeta:ssh",
                     project_id="admin", security_groups=())
    ingress = chain(portsec.render_tables(snap(guest(), access)), "ingress-g-aaaaaaaaaaa")
    assert "ip saddr 10.0.0.250 accept comment \"netmeta's access port\"" in ingress
