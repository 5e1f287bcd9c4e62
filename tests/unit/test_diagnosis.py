"""The pure half of ``netmeta explain``, with hand-built snapshots and observations.

No root, no namespaces: every situation (and every breakage) is written down
as the values ``explain`` would have observed, so the reasoning — which
path, which inconsistency, which words — is pinned independently of the
kernel.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from netmeta.model.diagnosis import (
    Ipv6Observations,
    NamespaceFacts,
    Observations,
    explain,
    opts_metadata_route,
    parse_rfc3442,
)
from netmeta.model.ipam import eui64_address, link_local_address
from netmeta.model.types import Instance, InstanceId, Network, NetworkId, PortId, Router, RouterId, Snapshot, SubnetId
from tests.builders import port, router_port_at, subnet, world

NET, SUB, ROUTER = NetworkId("net-1"), SubnetId("sub-1"), RouterId("rtr-1")
VM = InstanceId("vm-1")
DHCP_PORT, RTR_PORT, VM_PORT = PortId("dhcpport-000"), PortId("rtrport-0000"), PortId("vmport-00000")
GW, DHCP_IP, VM_IP = "172.31.0.1", "172.31.0.2", "172.31.0.5"
TAG = f"tag:subnet-{SUB}"
REDIRECT = ("-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
            "-j REDIRECT --to-ports 9697")


def snapshot(*, routed: bool) -> Snapshot:
    ports = [
        port(DHCP_PORT, NET, [(SUB, DHCP_IP)], mac="fa:16:3e:00:00:02", device_id="dhcp", owner="network:dhcp"),
        port(VM_PORT, NET, [(SUB, VM_IP)], mac="fa:16:3e:00:00:05", device_id=VM, owner="compute:nova", project_id="p"),
    ]
    if routed:
        ports.append(router_port_at(RTR_PORT, NET, SUB, GW, ROUTER, mac="fa:16:3e:00:00:01"))
    return world(
        networks=[Network(NET, "n", "p")],
        subnets=[subnet(SUB, NET, "172.31.0.0/24", gateway_ip=GW)],
        ports=ports,
        routers=[Router(ROUTER, "r")] * routed,
        instances=[Instance(VM, "vm1", "vm1", "p")],
        revision=7,
    )


def opts(hop: str) -> tuple[str, ...]:
    return (f"{TAG},option:classless-static-route,169.254.169.254/32,{hop},0.0.0.0/0,{GW}",
            f"{TAG},249,169.254.169.254/32,{hop},0.0.0.0/0,{GW}", f"{TAG},option:router,{GW}")


DHCP_NS = NamespaceFacts(f"qdhcp-{NET}", True, (f"{DHCP_IP}/24", "169.254.169.254/32"), "",
                         ("169.254.169.254:80",), "tapdhcpport-0")
ROUTER_NS = NamespaceFacts(f"qrouter-{ROUTER}", True, (f"{GW}/24",), f"*nat\n{REDIRECT}\nCOMMIT\n",
                           ("0.0.0.0:9697",), "qr-rtrport-00")


def observed(hop: str | None, **kw: object) -> Observations:
    base = Observations(
        guest_name="vm1", guest_ip=VM_IP, instance_id=VM, network_id=NET,
        route_gateway=hop, route_found=hop is not None, route_specific=hop is not None,
        dhcp_routes=f"32 169 254 169 254 {hop.replace('.', ' ')} 0 172 31 0 1" if hop else "",
        opts_lines=opts(hop) if hop else (), namespace=DHCP_NS if hop == DHCP_IP else ROUTER_NS,
        fetch_status=200 if hop else None, fetch_body='{"uuid": "vm-1"}' if hop else "",
        fetch_error="" if hop else "curl exit 7: connection refused or no route to host",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def codes(result: object, severity: str) -> set[str]:
    return {f.code for f in result.findings if f.severity == severity}  # type: ignore[attr-defined]


def test_dhcp_path_is_consistent() -> None:
    result = explain(snapshot(routed=False), observed(DHCP_IP))
    assert result.consistent and result.path == "dhcp" and result.next_hop == DHCP_IP
    assert result.namespace == f"qdhcp-{NET}" and result.resolved_instance == VM
    assert [f.code for f in result.findings] == [
        "route", "route-origin", "next-hop", "address", "listener", "identity", "fetch"]


def test_router_path_is_consistent() -> None:
    result = explain(snapshot(routed=True), observed(GW))
    assert result.consistent and result.path == "router", result.findings
    assert result.namespace == f"qrouter-{ROUTER}"
    assert "qr-rtrport-00" in result.findings[2].text


def test_stale_route_is_named_with_both_hops() -> None:
    # The seed: router attached, opts rewritten, the guest still holds the old lease.
    result = explain(snapshot(routed=True), observed(DHCP_IP, opts_lines=opts(GW)))
    assert codes(result, "problem") == {"stale-route"}
    text = next(f.text for f in result.findings if f.code == "stale-route")
    assert f"via {DHCP_IP} is stale (the guest's lease says via {DHCP_IP})" in text
    assert f"now offers 169.254.169.254/32 via {GW}" in text
    assert result.path == "dhcp"


def test_opts_match_whole_fields_only() -> None:
    # 172.31.0.1 must not be taken for 172.31.0.10.
    lines = (f"{TAG},option:classless-static-route,169.254.169.254/32,172.31.0.10",)
    assert opts_metadata_route(lines, {SUB}) == ("172.31.0.10", lines[0])
    result = explain(snapshot(routed=True), observed(GW, opts_lines=lines))
    assert "stale-route" in codes(result, "problem")


def test_opts_of_another_subnet_do_not_count() -> None:
    other = ("tag:subnet-other,option:classless-static-route,169.254.169.254/32,10.0.0.2",)
    assert opts_metadata_route(other, {SUB}) == (None, None)


def test_metadata_off_is_a_note() -> None:
    result = explain(snapshot(routed=False), observed(None, namespace=replace(DHCP_NS, addresses=(f"{DHCP_IP}/24",))))
    assert result.consistent and result.path == "none"
    assert codes(result, "note") == {"metadata-off", "fetch"}


def test_unused_address_without_route_is_a_problem() -> None:
    result = explain(snapshot(routed=False), observed(None, namespace=DHCP_NS))
    assert codes(result, "problem") == {"unused-address"}


def test_offered_route_not_installed() -> None:
    result = explain(snapshot(routed=False), observed(None, opts_lines=opts(DHCP_IP), namespace=DHCP_NS))
    assert "route-not-installed" in codes(result, "problem")
    assert "fetch" in codes(result, "problem"), "metadata was supposed to work here"


@pytest.mark.parametrize(
    ("hop", "facts", "problem", "words"),
    [
        (DHCP_IP, replace(DHCP_NS, addresses=(f"{DHCP_IP}/24",)), "address-missing",
         "169.254.169.254/32 is not on tapdhcpport-0"),
        (DHCP_IP, replace(DHCP_NS, listening=()), "no-listener", "nothing listens on 169.254.169.254:80"),
        (GW, replace(ROUTER_NS, iptables="*nat\nCOMMIT\n"), "no-redirect", "no REDIRECT rule"),
        (GW, replace(ROUTER_NS, listening=("0.0.0.0:22",)), "no-listener", "nothing listens on port 9697"),
        (GW, replace(ROUTER_NS, addresses=()), "address-missing", f"{GW} is not on qr-rtrport-00"),
        (DHCP_IP, NamespaceFacts(f"qdhcp-{NET}", False), "namespace-missing", "does not exist"),
    ],
    ids=["dhcp-address", "dhcp-listener", "router-redirect", "router-listener", "router-address", "no-namespace"],
)
def test_breakage_is_named(hop: str, facts: NamespaceFacts, problem: str, words: str) -> None:
    result = explain(snapshot(routed=hop == GW), observed(hop, namespace=facts))
    assert not result.consistent
    assert problem in codes(result, "problem")
    assert words in next(f.text for f in result.findings if f.code == problem)


def test_unknown_caller_and_wrong_instance() -> None:
    result = explain(snapshot(routed=False), observed(DHCP_IP, guest_ip="172.31.0.99"))
    assert "identity" in codes(result, "problem")
    result = explain(snapshot(routed=False), observed(DHCP_IP, instance_id="someone-else"))
    text = next(f.text for f in result.findings if f.code == "identity")
    assert "but the guest is instance someone-else" in text


def test_next_hop_nobody_holds_and_on_link() -> None:
    result = explain(snapshot(routed=False), observed("172.31.0.77", opts_lines=opts("172.31.0.77")))
    assert "no-next-hop-port" in codes(result, "problem")
    result = explain(snapshot(routed=False), observed(DHCP_IP, route_gateway=None))
    assert codes(result, "problem") == {"on-link"}


def test_default_route_without_offer_is_fine_but_a_hand_route_is_not() -> None:
    result = explain(snapshot(routed=True), observed(GW, opts_lines=(), route_specific=False))
    assert result.consistent, result.findings
    result = explain(snapshot(routed=True), observed(GW, opts_lines=()))
    assert "route-not-offered" in codes(result, "problem")


def test_rfc3442_parsing() -> None:
    assert parse_rfc3442("32 169 254 169 254 10 0 0 2 0 10 0 0 1 24 192 168 5 10 0 0 1") == [
        ("169.254.169.254/32", "10.0.0.2"), ("0.0.0.0/0", "10.0.0.1"), ("192.168.5.0/24", "10.0.0.1")]
    assert parse_rfc3442("") == [] and parse_rfc3442("x y") == []
    assert parse_rfc3442("32 169 254") == []


def test_as_dict_is_json_ready() -> None:
    result = explain(snapshot(routed=False), observed(DHCP_IP)).as_dict()
    assert result["consistent"] and result["problems"] == []
    assert all({"severity", "code", "text", "ok"} <= set(f) for f in result["findings"])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: replace(s, networks={NET: Network(NET, "n", "p", admin_state_up=False)}),
         "network n is admin-down, so no qdhcp namespace is made for it"),
        (lambda s: replace(s, subnets={SUB: replace(s.subnets[SUB], enable_dhcp=False)}),
         "no subnet of network n has DHCP enabled"),
        (lambda s: s, "the agent should have made it: is `netmeta agent` running?"),
    ],
)
def test_a_namespace_missing_on_purpose_names_the_cause(change: object, words: str) -> None:
    snap = change(snapshot(routed=False))  # type: ignore[operator]
    result = explain(snap, observed(DHCP_IP, namespace=NamespaceFacts(f"qdhcp-{NET}", False)))
    [finding] = [f for f in result.findings if f.code == "namespace-missing"]
    assert words in finding.text


def test_an_admin_down_router_is_named() -> None:
    snap = snapshot(routed=True)
    snap = replace(snap, routers={ROUTER: Router(ROUTER, "r", admin_state_up=False)})
    result = explain(snap, observed(GW, namespace=NamespaceFacts(f"qrouter-{ROUTER}", False)))
    [finding] = [f for f in result.findings if f.code == "namespace-missing"]
    assert "router r is admin-down, so its qrouter namespace is not made" in finding.text


# --- IPv6 -------------------------------------------------------------------------------------

SUB6, CIDR6 = SubnetId("sub-6"), "2001:db8:6::/64"
VM_MAC, RTR_MAC = "fa:16:3e:00:00:05", "fa:16:3e:00:00:01"


def snapshot6() -> Snapshot:
    """A SLAAC subnet on a router (radvd advertises there), the VM with its EUI-64 address."""
    vm_ip6 = eui64_address(CIDR6, VM_MAC)
    return world(
        networks=[Network(NET, "n", "p")],
        subnets=[subnet(SUB6, NET, CIDR6, gateway_ip="2001:db8:6::1", ip_version=6,
                        ipv6_ra_mode="slaac", ipv6_address_mode="slaac")],
        ports=[port(VM_PORT, NET, [(SUB6, vm_ip6)], mac=VM_MAC, device_id=VM, owner="compute:nova", project_id="p"),
               router_port_at(RTR_PORT, NET, SUB6, "2001:db8:6::1", ROUTER, mac=RTR_MAC)],
        routers=[Router(ROUTER, "r")],
        instances=[Instance(VM, "vm1", "vm1", "p")],
        revision=7,
    )


def observed6(six: Ipv6Observations) -> Observations:
    return Observations(guest_name="vm1", guest_ip="", instance_id=VM, network_id=NET, route_gateway=None,
                        route_found=False, ipv6=six)


def route6_text(result: object) -> str:
    return " ".join(f.text for f in result.findings if f.code == "ipv6-route")  # type: ignore[attr-defined]


def test_ipv6_routed_through_the_advertised_route_is_consistent() -> None:
    six = Ipv6Observations((eui64_address(CIDR6, VM_MAC),), link_local_address(RTR_MAC), True, 200)
    result = explain(snapshot6(), observed6(six))
    assert codes(result, "problem") == set() and {"ipv6-address", "ipv6-route", "ipv6-fetch"} <= codes(result, "ok")
    assert "from its router advertisement" in route6_text(result)


def test_ipv6_guest_ignoring_the_advertised_route_is_named() -> None:
    """Neutron's routers put nothing at fe80::a9fe:a9fe on the link: a guest must take the RA's route."""
    six = Ipv6Observations((eui64_address(CIDR6, VM_MAC),), None, True, None, "curl exit 7")
    result = explain(snapshot6(), observed6(six))
    assert {"ipv6-route", "ipv6-fetch"} <= codes(result, "problem")
    assert "accept_ra_rt_info_max_plen" in route6_text(result) and ROUTER in route6_text(result)
    # On the link and answered (a DHCP tap holds the address): nothing wrong with the route.
    answered = explain(snapshot6(), observed6(replace(six, fetch_status=200, fetch_error="")))
    assert "ipv6-route" in codes(answered, "ok") and "on the guest's link" in route6_text(answered)
