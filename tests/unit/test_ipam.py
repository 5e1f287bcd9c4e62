"""Table-driven tests of the pure IPAM rules."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netmeta.model import ipam


@pytest.mark.parametrize(
    "cidr,version,error",
    [
        ("10.0.0.0/24", 4, None),
        ("10.0.0.0/30", 4, None),
        ("fd00::/64", 6, None),
        ("10.0.0.5/24", 4, ipam.InvalidCidr),  # host bits set
        ("10.0.0.0/33", 4, ipam.InvalidCidr),
        ("10.0.0.0", 4, ipam.InvalidCidr),  # no prefix
        ("banana/24", 4, ipam.InvalidCidr),
        ("fd00::/64", 4, ipam.InvalidCidr),  # version mismatch
        ("10.0.0.0/31", 4, ipam.InvalidCidr),  # no usable host
        ("10.0.0.0/32", 4, ipam.InvalidCidr),
        (42, 4, ipam.InvalidCidr),
    ],
)
def test_parse_cidr(cidr: object, version: int, error: type[Exception] | None) -> None:
    if error is None:
        assert str(ipam.parse_cidr(cidr, version)) == cidr
    else:
        with pytest.raises(error):
            ipam.parse_cidr(cidr, version)


@pytest.mark.parametrize(
    "cidr,gateway,pools",
    [
        ("192.168.111.0/24", None, [("192.168.111.1", "192.168.111.254")]),
        ("172.31.0.0/24", "172.31.0.1", [("172.31.0.2", "172.31.0.254")]),
        ("10.0.0.0/24", "10.0.0.254", [("10.0.0.1", "10.0.0.253")]),
        ("10.0.0.0/24", "10.0.0.100", [("10.0.0.1", "10.0.0.99"), ("10.0.0.101", "10.0.0.254")]),
        ("10.0.0.0/30", "10.0.0.1", [("10.0.0.2", "10.0.0.2")]),
        ("fd00::/126", "fd00::1", [("fd00::2", "fd00::3")]),
    ],
)
def test_default_pools_exclude_gateway(cidr: str, gateway: str | None, pools: list[tuple[str, str]]) -> None:
    net = ipaddress.ip_network(cidr)
    assert [(p.start, p.end) for p in ipam.default_pools(net, gateway)] == pools


@pytest.mark.parametrize(
    "cidr,gateway",
    [("192.168.111.0/24", "192.168.111.1"), ("10.0.0.0/8", "10.0.0.1"), ("fd00::/64", "fd00::1")],
)
def test_default_gateway_is_first_host(cidr: str, gateway: str) -> None:
    assert ipam.default_gateway(ipaddress.ip_network(cidr)) == gateway


@pytest.mark.parametrize(
    "gateway,ok",
    [("10.0.0.1", True), ("10.0.0.254", True), ("10.0.0.0", False), ("10.0.0.255", False),
     ("10.0.1.1", False), ("fd00::1", False), ("nope", False)],
)
def test_validate_gateway(gateway: str, ok: bool) -> None:
    net = ipaddress.ip_network("10.0.0.0/24")
    if ok:
        assert ipam.validate_gateway(net, gateway) == gateway
    else:
        with pytest.raises(ipam.IpamError):
            ipam.validate_gateway(net, gateway)


@pytest.mark.parametrize(
    "pools,gateway,error",
    [
        ([{"start": "10.0.0.10", "end": "10.0.0.20"}], "10.0.0.1", None),
        ([{"start": "10.0.0.20", "end": "10.0.0.10"}], None, ipam.InvalidAllocationPool),
        ([{"start": "10.0.0.10", "end": "10.0.1.20"}], None, ipam.OutOfBoundsAllocationPool),
        ([{"start": "10.0.0.0", "end": "10.0.0.20"}], None, ipam.OutOfBoundsAllocationPool),
        ([{"start": "10.0.0.1", "end": "10.0.0.20"}], "10.0.0.1", ipam.GatewayConflictWithAllocationPools),
        ([{"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.20", "end": "10.0.0.30"}], None,
         ipam.OverlappingAllocationPools),
        ([{"start": "10.0.0.10"}], None, ipam.InvalidAllocationPool),
        ([{"start": "x", "end": "y"}], None, ipam.InvalidAllocationPool),
        ("10.0.0.1-10.0.0.5", None, ipam.InvalidAllocationPool),
    ],
)
def test_validate_pools(pools: object, gateway: str | None, error: type[Exception] | None) -> None:
    net = ipaddress.ip_network("10.0.0.0/24")
    if error is None:
        assert [p.as_api() for p in ipam.validate_pools(net, pools, gateway)] == pools
    else:
        with pytest.raises(error):
            ipam.validate_pools(net, pools, gateway)


@pytest.mark.parametrize(
    "ranges,taken,expected",
    [
        ([(1, 5)], [], 1),
        ([(1, 5)], [1, 2], 3),
        ([(1, 5)], [1, 3], 2),
        ([(1, 2)], [1, 2], None),
        ([(10, 12), (2, 3)], [2, 3], 10),
        ([], [], None),
    ],
)
def test_first_free(ranges: list[tuple[int, int]], taken: list[int], expected: int | None) -> None:
    assert ipam.first_free(ranges, taken) == expected


@pytest.mark.parametrize(
    "lo,hi,count,highest,expected",
    [
        (1, 10, 0, None, 1),
        (1, 10, 3, 3, 4),  # dense: next one
        (1, 10, 3, 7, None),  # gaps: unknown, caller scans
        (1, 3, 3, 3, None),  # full
    ],
)
def test_dense_next(lo: int, hi: int, count: int, highest: int | None, expected: int | None) -> None:
    assert ipam.dense_next(lo, hi, count, highest) == expected


@given(st.sets(st.integers(min_value=1, max_value=40)))
def test_dense_next_agrees_with_scan(taken: set[int]) -> None:
    shortcut = ipam.dense_next(1, 40, len(taken), max(taken) if taken else None)
    if shortcut is not None:
        assert shortcut == ipam.first_free([(1, 40)], taken)


@pytest.mark.parametrize(
    "ip,ok",
    [("10.0.0.1", True), ("10.0.0.200", True), ("10.0.0.0", False), ("10.0.0.255", False),
     ("10.0.1.1", False), ("fd00::1", False)],
)
def test_validate_fixed_ip(ip: str, ok: bool) -> None:
    net = ipaddress.ip_network("10.0.0.0/24")
    if ok:
        assert ipam.validate_fixed_ip(net, ip) == ip
    else:
        with pytest.raises(ipam.InvalidIpForSubnet if ip != "nope" else ipam.IpamError):
            ipam.validate_fixed_ip(net, ip)


@pytest.mark.parametrize(
    "a,b,expected",
    [("10.0.0.0/24", "10.0.0.128/25", True), ("10.0.0.0/24", "10.0.1.0/24", False),
     ("10.0.0.0/8", "10.200.0.0/16", True), ("10.0.0.0/24", "fd00::/64", False)],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert ipam.overlaps(a, b) is expected


def test_generate_mac_uses_neutron_prefix_and_given_randomness() -> None:
    assert ipam.generate_mac(lambda n: bytes([0xAB, 0x01, 0xFF][:n])) == "fa:16:3e:ab:01:ff"


@pytest.mark.parametrize(
    "mac,ok",
    [("fa:16:3e:00:00:01", True), ("FA:16:3E:00:00:01", True), ("01:00:5e:00:00:01", False),
     ("00:00:00:00:00:00", False), ("fa:16:3e:00:00", False), ("zz:16:3e:00:00:01", False), (7, False)],
)
def test_validate_mac(mac: object, ok: bool) -> None:
    if ok:
        assert ipam.validate_mac(mac) == str(mac).lower()
    else:
        with pytest.raises(ipam.IpamError):
            ipam.validate_mac(mac)


@pytest.mark.parametrize(
    "routes,ok",
    [([{"destination": "10.1.0.0/16", "nexthop": "10.0.0.5"}], True),
     ([{"destination": "10.1.0.0/16"}], False),
     ([{"destination": "nope", "nexthop": "10.0.0.5"}], False),
     ("x", False)],
)
def test_validate_host_routes(routes: object, ok: bool) -> None:
    if ok:
        assert ipam.validate_host_routes(routes) == routes
    else:
        with pytest.raises(ipam.IpamError):
            ipam.validate_host_routes(routes)


# --- IPv6: EUI-64 and the address-mode rules ------------------------------------------------


@pytest.mark.parametrize(
    "cidr,mac,expected",
    [
        # RFC 4291 appendix A: flip the U/L bit, ff:fe in the middle.
        ("2001:db8::/64", "fa:16:3e:12:34:56", "2001:db8::f816:3eff:fe12:3456"),
        ("fd00:1:2:3::/64", "00:00:5e:00:53:01", "fd00:1:2:3:200:5eff:fe00:5301"),
        ("fe80::/64", "02:42:ac:11:00:02", "fe80::42:acff:fe11:2"),
    ],
)
def test_eui64_address(cidr: str, mac: str, expected: str) -> None:
    assert ipam.eui64_address(cidr, mac) == expected
    assert ipam.is_eui64(expected)


def test_link_local_is_eui64_in_fe80() -> None:
    assert ipam.link_local_address("FA:16:3E:00:00:01") == "fe80::f816:3eff:fe00:1"


@given(st.binary(min_size=6, max_size=6))
def test_eui64_keeps_the_mac_recoverable(raw: bytes) -> None:
    octets = bytearray(raw)
    octets[0] &= 0xFE  # unicast
    mac = ":".join(f"{b:02x}" for b in octets)
    if mac == "00:00:00:00:00:00":
        return
    ip = ipaddress.IPv6Address(ipam.eui64_address("2001:db8:0:1::/64", mac))
    iid = ip.packed[8:]
    assert iid[3:5] == b"\xff\xfe"
    assert bytes([iid[0] ^ 2]) + iid[1:3] + iid[5:] == bytes(octets)
    assert ip in ipaddress.ip_network("2001:db8:0:1::/64")


def test_not_eui64() -> None:
    assert not ipam.is_eui64("2001:db8::5")
    assert not ipam.is_eui64("10.0.0.1")
    assert not ipam.is_eui64("garbage")


@pytest.mark.parametrize(
    "version,ra,addr,dhcp,cidr,message",
    [
        (6, "slaac", "slaac", True, "2001:db8::/64", None),
        (6, "dhcpv6-stateful", "dhcpv6-stateful", True, "2001:db8::/64", None),
        (6, "dhcpv6-stateless", None, True, "2001:db8::/64", None),
        (6, None, "dhcpv6-stateless", True, "2001:db8::/64", None),
        (6, None, None, False, "2001:db8::/64", None),
        (6, "dhcpv6-stateful", None, True, "2001:db8::/80", None),  # stateful needs no /64
        (4, None, None, True, "10.0.0.0/24", None),
        (6, "slaac", "dhcpv6-stateful", True, "2001:db8::/64",
         "ipv6_ra_mode set to 'slaac' with ipv6_address_mode set to 'dhcpv6-stateful' is not valid. "
         "If both attributes are set, they must be the same value"),
        (6, "slaac", None, False, "2001:db8::/64",
         "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"),
        (6, "slaac", None, True, "2001:db8::/80",
         "Invalid CIDR 2001:db8::/80 for IPv6 address mode. OpenStack uses the EUI-64 address format, "
         "which requires the prefix to be /64"),
        (6, None, "dhcpv6-stateless", True, "2001:db8::/56",
         "Invalid CIDR 2001:db8::/56 for IPv6 address mode. OpenStack uses the EUI-64 address format, "
         "which requires the prefix to be /64"),
        (4, "slaac", None, True, "10.0.0.0/24", "ipv6_ra_mode is not valid when ip_version is 4"),
        (4, None, "slaac", True, "10.0.0.0/24", "ipv6_address_mode is not valid when ip_version is 4"),
        (6, "dhcpv6", None, True, "2001:db8::/64",
         "Invalid input for ipv6_ra_mode. Reason: dhcpv6 is not in valid_values."),
        (6, None, 7, True, "2001:db8::/64",
         "Invalid input for ipv6_address_mode. Reason: 7 is not in valid_values."),
    ],
)
def test_ipv6_mode_combinations(version: int, ra: object, addr: object, dhcp: bool, cidr: str,
                                message: str | None) -> None:
    if message is None:
        ipam.validate_ipv6_modes(version, ra, addr, dhcp, cidr)
        return
    with pytest.raises(ipam.IpamError) as info:
        ipam.validate_ipv6_modes(version, ra, addr, dhcp, cidr)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "ra,addr,auto",
    [("slaac", "slaac", True), ("dhcpv6-stateless", None, True), (None, "slaac", True),
     ("dhcpv6-stateful", "dhcpv6-stateful", False), (None, None, False)],
)
def test_is_auto_address(ra: str | None, addr: str | None, auto: bool) -> None:
    assert ipam.is_auto_address(ra, addr) is auto
