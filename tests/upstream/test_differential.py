"""netmeta against OpenStack's own code, on the same generated inputs.

Each test builds Neutron-shaped JSON with hypothesis (subnets with and
without gateways, several addresses on the DHCP port, router interfaces on
and off the gateway, host routes, DNS servers, extra DHCP options, DNS names,
IPv6 address modes), hands it to Neutron 29 / Nova 34 through the bridge
(bridge.py, run by the upstream venv) and to netmeta's pure model, and
compares the results exactly. What netmeta deliberately does differently is
in ALLOWED below, each with its reason; README.md ("Differences from
upstream, checked") states the same list. Anything else fails.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmeta.config import Config
from netmeta.model import dhcp, l3
from netmeta.model.metadata import ec2, openstack
from netmeta.model.metadata.tree import instance_data
from netmeta.model.paths import StatePaths
from netmeta.model.types import NetworkId, snapshot_from_state
from netmeta.server import port_dns
from netmeta.server.instances import sanitize_hostname

# What netmeta deliberately answers differently, and why (README states the same).
ALLOWED = {
    # network_data.json links[].mtu: Nova writes null when DHCP serves the
    # subnet (it lets DHCP carry the MTU); netmeta always gives the network's
    # MTU — the value is known and a guest without DHCP option 26 needs it.
    "network_data.links.mtu",
    # EC2 meta-data: netmeta adds AWS's mac and network/interfaces/macs/
    # (Nova 34 has neither); tools written for EC2 (cloud-init's Ec2
    # datasource, ec2-metadata) read them. Every added key is servable.
    "ec2.meta-data.mac",
    # qrouter filter neutron-l3-agent-FORWARD ends with "-m mark --mark 0x1/0xffff
    # -j DROP": Neutron has that rule in its scope chain only until its first
    # process() empties the chain; netmeta keeps it, so a metadata request that
    # meets no REDIRECT (proxy off, rule lost) is never routed out of the router.
    "l3.forward-drop",
}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
NET = "8a0c2c5e-0000-4000-8000-00000000000a"
HEX = "0123456789abcdef"


def uuidish(prefix: str, n: int) -> str:
    return f"{prefix}{n:07x}-0000-4000-8000-000000000000"


# --- shapes ------------------------------------------------------------------------

@st.composite
def extra_opts(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = st.sampled_from(["bootfile-name", "tftp-server", "server-ip-address", "66", "150", "mtu",
                             "client-id", "61", "domain-search", "tag:ipxe,bootfile-name", "router"])
    values = st.sampled_from(["pxelinux.0", "10.1.2.3", "ipxe.efi", "1400", "01:aa:bb", "example.org", ""])
    opts = draw(st.lists(st.fixed_dictionaries({"opt_name": names, "opt_value": values,
                                                "ip_version": st.sampled_from([4, 4, 6])}),
                         max_size=3, unique_by=lambda o: (o["opt_name"], o["ip_version"])))
    return port_dns.created_opts(opts)


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    """A network with 1-3 IPv4 subnets, a DHCP port, and a few other ports (API shapes)."""
    n_subnets = draw(st.integers(1, 3))
    subnets: list[dict[str, Any]] = []
    for i in range(n_subnets):
        cidr = f"10.{draw(st.integers(0, 250))}.{i}.0/24"
        gateway = draw(st.sampled_from([None, "inside", "inside", "outside"]))
        net = ipaddress.ip_network(cidr, strict=False)
        gateway_ip = {None: None, "inside": str(net.network_address + 1),
                      "outside": str(net.network_address + 300)}[gateway]
        routes = draw(st.lists(st.sampled_from([
            {"destination": "0.0.0.0/0", "nexthop": str(net.network_address + 254)},
            {"destination": "192.168.50.0/24", "nexthop": str(net.network_address + 253)},
            {"destination": "172.16.0.0/12", "nexthop": str(net.network_address + 252)},
        ]), max_size=2, unique_by=lambda r: r["destination"]))
        subnets.append({
            "id": uuidish("5", i), "network_id": NET, "cidr": cidr, "ip_version": 4, "gateway_ip": gateway_ip,
            "enable_dhcp": draw(st.booleans()) if i else True,
            "dns_nameservers": draw(st.sampled_from([[], ["8.8.8.8"], ["0.0.0.0"], ["1.1.1.1", "9.9.9.9"]])),
            "host_routes": routes,
        })
    # Distinct /24s: a repeated third octet would make two subnets one.
    seen: set[str] = set()
    for s in subnets:
        while s["cidr"] in seen:
            s["cidr"] = s["cidr"].replace(".0/24", ".128/25")
        seen.add(s["cidr"])
    ports: list[dict[str, Any]] = []
    dhcp_ips = []
    for s in subnets:
        net = ipaddress.ip_network(s["cidr"])
        if s["enable_dhcp"]:
            for k in range(draw(st.integers(1, 2))):
                dhcp_ips.append({"subnet_id": s["id"], "ip_address": str(net.network_address + 2 + k * 7)})
    ports.append({"id": uuidish("d", 0), "network_id": NET, "mac_address": "fa:16:3e:00:00:01",
                  "device_owner": "network:dhcp", "fixed_ips": dhcp_ips})
    for j in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["compute:nova", "compute:nova", "network:router_interface", ""]))
        s = draw(st.sampled_from(subnets))
        net = ipaddress.ip_network(s["cidr"])
        on_gateway = kind == "network:router_interface" and s["gateway_ip"] and draw(st.booleans())
        ip = s["gateway_ip"] if on_gateway else str(net.network_address + 20 + j)
        fixed = [{"subnet_id": s["id"], "ip_address": ip}]
        if len(subnets) > 1 and draw(st.booleans()):
            other = subnets[(subnets.index(s) + 1) % len(subnets)]
            fixed.append({"subnet_id": other["id"],
                          "ip_address": str(ipaddress.ip_network(other["cidr"]).network_address + 40 + j)})
        ports.append({
            "id": uuidish("7", j), "network_id": NET, "mac_address": f"fa:16:3e:00:01:{j:02x}",
            "device_owner": kind, "device_id": "", "fixed_ips": fixed,
            "extra_dhcp_opts": draw(extra_opts()) if kind.startswith("compute") else [],
            "dns_name": draw(st.sampled_from(["", "vm-a", "web1"])),
        })
    return {"id": NET, "name": "n", "project_id": "p", "mtu": 1500, "subnets": subnets, "ports": ports}


def _state(network: dict[str, Any], dns_domain: str) -> dict[str, Any]:
    ports = []
    for port in network["ports"]:
        port = dict(port)
        port["dns_assignment"] = port_dns.dns_assignment(port, dns_domain)
        ports.append(port)
    net = {k: v for k, v in network.items() if k not in ("subnets", "ports")}
    return {"networks": [net], "subnets": network["subnets"], "ports": ports}


# --- Neutron: the dnsmasq files and the qdhcp default route ---------------------------------

@SETTINGS
@given(network=networks(), isolated=st.booleans(), force=st.booleans(),
       dns_domain=st.sampled_from(["openstacklocal", "example.org", "example.org.", ""]))
def test_dnsmasq_files_and_default_route_match_neutron(
    upstream: Any, network: dict[str, Any], isolated: bool, force: bool, dns_domain: str
) -> None:
    state = _state(network, dns_domain)
    snap = snapshot_from_state(state)
    config = Config(enable_isolated_metadata=isolated, force_metadata=force, dns_domain=dns_domain)
    spec = dhcp.desired_dhcp(snap, config, StatePaths("/tmp/x"))[NetworkId(NET)]
    theirs = upstream(
        "dnsmasq",
        conf={"enable_isolated_metadata": isolated, "force_metadata": force, "dns_domain": dns_domain},
        network={"id": NET, "subnets": state["subnets"], "ports": state["ports"]},
        tap=list(spec.addresses),
    )
    assert dhcp.opts_lines(snap, NetworkId(NET), config) == theirs["opts"]
    assert dhcp.hosts_lines(snap, NetworkId(NET), dns_domain) == theirs["host"]
    assert dhcp.addn_hosts_lines(snap, NetworkId(NET), dns_domain) == theirs["addn_hosts"]
    route = spec.route
    ours = [] if route is None else ([["onlink", route.gateway]] if route.onlink else []) + [["default", route.gateway]]
    assert ours == theirs["routes"]


@st.composite
def dual_stack_networks(draw: st.DrawFn) -> dict[str, Any]:
    """One IPv4 subnet and 1-3 IPv6 subnets in every address mode, ports addressed as netmeta's IPAM does."""
    from netmeta.model import ipam

    v4 = {"id": uuidish("4", 0), "network_id": NET, "cidr": "10.7.0.0/24", "ip_version": 4,
          "gateway_ip": "10.7.0.1", "enable_dhcp": True, "dns_nameservers": [], "host_routes": []}
    subnets: list[dict[str, Any]] = [v4]
    for i in range(draw(st.integers(1, 3))):
        mode = draw(st.sampled_from([None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless"]))
        subnets.append({
            "id": uuidish(draw(st.sampled_from("36a")), i), "network_id": NET, "cidr": str(ipaddress.ip_network(f"2001:db8:{i}::/64")),
            "ip_version": 6, "gateway_ip": str(ipaddress.ip_address(f"2001:db8:{i}::1")), "enable_dhcp": draw(st.booleans()) if i else True,
            "ipv6_ra_mode": mode if draw(st.booleans()) else None, "ipv6_address_mode": mode,
            "dns_nameservers": draw(st.sampled_from([[], ["2001:4860:4860::8888"], ["::"],
                                                     ["2001:4860:4860::8888", "2606:4700::1111"]])),
            "host_routes": [],
        })

    def addresses(mac: str, k: int) -> list[dict[str, str]]:
        out = [{"subnet_id": v4["id"], "ip_address": f"10.7.0.{10 + k}"}]
        for s in subnets:
            if s is v4:
                continue
            if ipam.is_auto_address(s["ipv6_ra_mode"], s["ipv6_address_mode"]):
                out.append({"subnet_id": s["id"], "ip_address": ipam.eui64_address(s["cidr"], mac)})
            elif s["enable_dhcp"] or draw(st.booleans()):
                out.append({"subnet_id": s["id"],
                            "ip_address": str(ipaddress.ip_network(s["cidr"]).network_address + 10 + k)})
        return out

    subnets.sort(key=lambda s: s["id"])  # the order Neutron's server hands them to its agent
    ports = [{"id": uuidish("d", 0), "network_id": NET, "mac_address": "fa:16:3e:00:00:01",
              "device_owner": "network:dhcp", "fixed_ips": addresses("fa:16:3e:00:00:01", 0)}]
    for j in range(draw(st.integers(1, 3))):
        mac = f"fa:16:3e:00:01:{j:02x}"
        ports.append({"id": uuidish("7", j), "network_id": NET, "mac_address": mac, "device_owner": "compute:nova",
                      "device_id": "", "fixed_ips": addresses(mac, j + 1),
                      "extra_dhcp_opts": draw(extra_opts()), "dns_name": draw(st.sampled_from(["", "vm6"]))})
    return {"id": NET, "name": "n", "project_id": "p", "mtu": 1500, "subnets": subnets, "ports": ports}


@SETTINGS
@given(network=dual_stack_networks(), isolated=st.booleans(),
       dns_domain=st.sampled_from(["openstacklocal", "example.org.", ""]))
def test_dnsmasq_ipv6_files_match_neutron(upstream: Any, network: dict[str, Any], isolated: bool,
                                          dns_domain: str) -> None:
    """DHCPv6: hosts lines ([addr], tag:dhcpv6, stateless first), option6 lines, per mode."""
    state = _state(network, dns_domain)
    snap = snapshot_from_state(state)
    config = Config(enable_isolated_metadata=isolated, dns_domain=dns_domain)
    spec = dhcp.desired_dhcp(snap, config, StatePaths("/tmp/x"))[NetworkId(NET)]
    theirs = upstream(
        "dnsmasq",
        conf={"enable_isolated_metadata": isolated, "dns_domain": dns_domain},
        network={"id": NET, "subnets": state["subnets"], "ports": state["ports"]},
        tap=list(spec.addresses),
    )
    assert dhcp.opts_lines(snap, NetworkId(NET), config) == theirs["opts"]
    assert dhcp.hosts_lines(snap, NetworkId(NET), dns_domain) == theirs["host"]
    assert dhcp.addn_hosts_lines(snap, NetworkId(NET), dns_domain) == theirs["addn_hosts"]


# --- Neutron: dns_assignment, dns_name and extra_dhcp_opts validation ------------------------

@SETTINGS
@given(dns_domain=st.sampled_from(["openstacklocal", "openstacklocal.", "example.org", "a.example.org.", ""]),
       dns_name=st.sampled_from(["", "vm1", "vm1.example.org.", "x.a.example.org.", "db-2"]),
       ips=st.lists(st.sampled_from(["10.0.0.3", "10.0.0.4", "fd00::5"]), max_size=3, unique=True))
def test_dns_assignment_matches_neutron(upstream: Any, dns_domain: str, dns_name: str, ips: list[str]) -> None:
    port = {"dns_name": dns_name, "fixed_ips": [{"ip_address": ip} for ip in ips]}
    assert port_dns.dns_assignment(port, dns_domain) == upstream(
        "dns_assignment", dns_domain=dns_domain, dns_name=dns_name, ips=ips)


LABELISH = st.text(alphabet="ab1-._Z", min_size=0, max_size=12)


@SETTINGS
@given(dns_domain=st.sampled_from(["openstacklocal", "example.org", "example.org."]),
       name=st.one_of(LABELISH, st.sampled_from(["vm1.example.org.", "example.org.", "a.b.c.", "x.123", "-a",
                                                 "a" * 64, "ok-name", "vm.other.org."])))
def test_dns_name_accepted_exactly_when_neutron_accepts(upstream: Any, dns_domain: str, name: str) -> None:
    neutron_says = upstream("dns_name_error", dns_domain=dns_domain, name=name)
    try:
        port_dns.validate_dns_name(name, dns_domain)
        ours = None
    except Exception as exc:  # BadRequest: the text differs, the verdict may not
        ours = str(exc)
    assert (ours is None) == (neutron_says is None), (ours, neutron_says)


OPT_VALUES = st.one_of(st.none(), st.sampled_from(["", " ", "x", "a\nb", "v" * 256, "10.0.0.1"]), st.integers())


@SETTINGS
@given(opts=st.one_of(
    st.lists(st.one_of(
        st.fixed_dictionaries({"opt_name": st.sampled_from(["router", "bootfile-name", "", " ", "66", "a\nb",
                                                            "n" * 65]),
                               "opt_value": OPT_VALUES},
                              optional={"ip_version": st.sampled_from([4, 6, 5, "4", "x"])}),
        st.just({"opt_name": "mtu"}),
        st.just({"opt_name": "mtu", "opt_value": "1400", "extra": 1}),
        st.just("not-a-dict"),
    ), max_size=3),
    st.just("not-a-list"),
))
def test_extra_dhcp_opts_accepted_exactly_when_neutron_accepts(upstream: Any, opts: Any) -> None:
    try:
        upstream("extra_dhcp_opt_error", opts=opts)
        neutron_ok = True
    except RuntimeError as exc:
        assert "InvalidInput" in str(exc), exc
        neutron_ok = False
    try:
        port_dns.parse_extra_dhcp_opts(opts)
        ours_ok = True
    except Exception:
        ours_ok = False
    assert ours_ok == neutron_ok


# --- Nova: host names --------------------------------------------------------------------------

@SETTINGS
@given(name=st.one_of(st.text(max_size=80), st.sampled_from(["a  b", "café", "tab\tname", "###", "My.VM_1",
                                                              "..x..", "日本", "ÉCOLE", "x" * 70 + "."])))
def test_hostname_matches_nova(upstream: Any, name: str) -> None:
    uuid = "0d9b2f6c-0000-4000-8000-000000000001"
    assert sanitize_hostname(name, uuid) == upstream("hostname", name=name, uuid=uuid)


# --- Nova: the metadata documents --------------------------------------------------------------

INSTANCE = "1b2c3d4e-0000-4000-8000-000000000001"


@st.composite
def instance_world(draw: st.DrawFn) -> dict[str, Any]:
    """One or two ports of an instance over IPv4 and IPv6 subnets (some with address modes)."""
    subnets: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        v6 = draw(st.booleans()) if i else False
        sid = uuidish(draw(st.sampled_from(["1", "9", "c"])) + str(i), i)
        if v6:
            subnets.append({"id": sid, "network_id": NET, "cidr": f"fd0{i}::/64", "ip_version": 6,
                            "gateway_ip": draw(st.sampled_from([f"fd0{i}::1", None])),
                            "enable_dhcp": draw(st.booleans()),
                            "ipv6_address_mode": draw(st.sampled_from([None, "slaac", "dhcpv6-stateful",
                                                                       "dhcpv6-stateless"])),
                            "dns_nameservers": draw(st.sampled_from([[], ["fd00::53"]])), "host_routes": []})
        else:
            subnets.append({"id": sid, "network_id": NET, "cidr": f"10.9.{i}.0/24", "ip_version": 4,
                            "gateway_ip": draw(st.sampled_from([f"10.9.{i}.1", None])),
                            "enable_dhcp": draw(st.booleans()),
                            "dns_nameservers": draw(st.sampled_from([[], ["8.8.8.8"], ["8.8.8.8", "1.1.1.1"]])),
                            "host_routes": draw(st.sampled_from(
                                [[], [{"destination": "192.168.7.0/24", "nexthop": f"10.9.{i}.254"}]]))})
    ports = []
    for j in range(draw(st.integers(1, 2))):
        chosen = draw(st.lists(st.sampled_from(subnets), min_size=1, max_size=len(subnets), unique_by=lambda s: s["id"]))
        fixed = []
        for s in chosen:
            base = ipaddress.ip_network(s["cidr"]).network_address
            fixed.append({"subnet_id": s["id"], "ip_address": str(base + 10 + j)})
            if draw(st.booleans()):
                fixed.append({"subnet_id": s["id"], "ip_address": str(base + 30 + j)})
        ports.append({"id": uuidish(draw(st.sampled_from(["3", "e"])) + str(j), j), "network_id": NET,
                      "mac_address": f"fa:16:3e:0a:00:{j:02x}", "device_owner": "compute:nova",
                      "device_id": INSTANCE, "admin_state_up": True, "project_id": "p", "fixed_ips": fixed})
    dhcp_fixed = [{"subnet_id": s["id"], "ip_address": str(ipaddress.ip_network(s["cidr"]).network_address + 2)}
                  for s in subnets if s["enable_dhcp"] and draw(st.booleans())]
    dhcp_port = {"id": uuidish("d", 0), "network_id": NET, "mac_address": "fa:16:3e:00:00:01",
                 "device_owner": "network:dhcp", "device_id": "dhcp", "fixed_ips": dhcp_fixed}
    name = draw(st.sampled_from(["vm1", "My VM", "###"]))
    return {"subnets": subnets, "ports": ports, "dhcp_port": dhcp_port, "name": name,
            "dhcp_domain": draw(st.sampled_from(["novalocal", ""]))}


PATHS = ["/openstack/2012-08-10/network_data.json", "/openstack/2015-10-15/network_data.json",
         "/openstack/latest/network_data.json", "/openstack/latest/meta_data.json", "/openstack/2012-08-10",
         "/openstack/latest", "/latest/meta-data/", "/latest/meta-data/local-ipv4", "/latest/meta-data/hostname",
         "/2009-04-04/meta-data/local-hostname"]


def _drop_allowed_network_data(doc: dict[str, Any]) -> dict[str, Any]:
    for link in doc.get("links", []):
        link.pop("mtu", None)  # ALLOWED "network_data.links.mtu"
    return doc


@SETTINGS
@given(world=instance_world())
def test_metadata_documents_match_nova(upstream: Any, world: dict[str, Any]) -> None:
    hostname = sanitize_hostname(world["name"], INSTANCE)
    instance = {"id": INSTANCE, "name": world["name"], "hostname": hostname, "project_id": "p",
                "ports": [p["id"] for p in world["ports"]]}
    state = {"networks": [{"id": NET, "name": "n", "project_id": "p", "mtu": 1450}], "subnets": world["subnets"],
             "ports": [*world["ports"], world["dhcp_port"]], "instances": [instance]}
    snap = snapshot_from_state(state)
    asking = world["ports"][-1]["fixed_ips"][-1]["ip_address"]
    data = instance_data(snap, snap.instances[INSTANCE], asking, dhcp_domain=world["dhcp_domain"])  # type: ignore[index]
    theirs = upstream(
        "metadata", instance=dict(instance, ec2_id=ec2.instance_ec2_id(INSTANCE)), ports=world["ports"],
        all_ports=[world["dhcp_port"]], subnets=world["subnets"], address=asking,
        networks=[{"id": NET, "name": "n", "tenant_id": "p", "mtu": 1450}], dhcp_domain=world["dhcp_domain"],
        paths=PATHS,
    )
    seed = b"\0" * 512
    for path in PATHS:
        tokens = [t for t in path.split("/") if t]
        if tokens[0] == "openstack":
            leaf: Any = openstack.lookup(data, tokens[1:], seed)
        else:
            leaf = ec2.lookup(data, tokens)
        nova = theirs[path]
        assert nova is not None, path
        body = leaf.body.decode()
        if path.endswith("network_data.json"):
            assert _drop_allowed_network_data(json.loads(body)) == _drop_allowed_network_data(json.loads(nova["body"]))
        elif path.endswith("meta_data.json"):
            ours_md, nova_md = json.loads(body), json.loads(nova["body"])
            ours_md.pop("random_seed"), nova_md.pop("random_seed")
            assert ours_md == nova_md
        elif path == "/latest/meta-data/":
            added = {"mac", "network/"}  # ALLOWED "ec2.meta-data.mac"
            assert [k for k in body.split("\n") if k not in added] == nova["body"].split("\n")
        else:
            assert body == nova["body"], path
        assert leaf.content_type.split(";")[0] == nova["type"], path


# --- Neutron: the L3 agent's qrouter ---------------------------------------------------------

ROUTER = "0e0e0e0e-0000-4000-8000-000000000000"


@st.composite
def router_world(draw: st.DrawFn) -> dict[str, Any]:
    """A router with 0-3 interface ports (some admin-down) and extra routes via their subnets."""
    subnets, ports, routes = [], [], []
    for i in range(draw(st.integers(0, 3))):
        sid, pid = uuidish("5", i), uuidish(draw(st.sampled_from(["a", "b", "c"])) + str(i), i)
        subnets.append({"id": sid, "network_id": uuidish("6", i), "cidr": f"10.7.{i}.0/24", "ip_version": 4,
                        "gateway_ip": f"10.7.{i}.1", "enable_dhcp": True})
        ports.append({"id": pid, "network_id": uuidish("6", i), "mac_address": f"fa:16:3e:0c:00:{i:02x}",
                      "device_owner": "network:router_interface", "device_id": ROUTER,
                      "admin_state_up": draw(st.booleans()), "fixed_ips": [{"subnet_id": sid, "ip_address": f"10.7.{i}.1"}]})
        for dest in draw(st.lists(st.sampled_from(["192.168.1.0/24", "192.168.2.0/24", "0.0.0.0/0"]), max_size=2,
                                  unique=True)):
            routes.append({"destination": dest, "nexthop": f"10.7.{i}.{draw(st.integers(2, 4))}"})
    unique: list[dict[str, str]] = []
    for r in routes:
        if r not in unique:
            unique.append(r)
    return {"subnets": subnets, "ports": sorted(ports, key=lambda p: p["id"]), "routes": unique}


def _payload_chains(payload: str) -> dict[str, dict[str, list[str]]]:
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in payload.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            current.setdefault(chain, []).append(rule)
    return tables


def _neutron_route_state(calls: list[dict[str, Any]]) -> dict[str, list[str]]:
    state: dict[str, list[str]] = {}
    for call in calls:
        via = call["via"]
        state[call["destination"]] = [v["via"] for v in via] if isinstance(via, list) else [via]
    return state


@SETTINGS
@given(world=router_world(), proxy=st.booleans())
def test_qrouter_matches_neutrons_l3_agent(upstream: Any, world: dict[str, Any], proxy: bool) -> None:
    state = {"networks": [{"id": p["network_id"], "name": "n", "project_id": "p"} for p in world["ports"]],
             "subnets": world["subnets"], "ports": world["ports"],
             "routers": [{"id": ROUTER, "name": "r", "admin_state_up": True, "routes": world["routes"]}]}
    snap = snapshot_from_state(state)
    spec = l3.desired_routers(snap, Config(enable_metadata_proxy=proxy))[ROUTER]  # type: ignore[index]
    interfaces = [dict(p, mtu=1500, subnets=[{"id": s["id"], "cidr": s["cidr"], "gateway_ip": s["gateway_ip"]}
                                             for s in world["subnets"] if s["id"] == p["fixed_ips"][0]["subnet_id"]],
                       fixed_ips=[dict(p["fixed_ips"][0], prefixlen=24)]) for p in world["ports"]]
    theirs = upstream("l3", router={"id": ROUTER, "admin_state_up": True, "routes": world["routes"]},
                      interfaces=interfaces, metadata_proxy=proxy)
    assert [i.device for i in spec.interfaces] == theirs["devices"]
    # Nexthops of one multipath route as a set: the kernel spreads flows over
    # them by hash, their order means nothing (Neutron's follows a set diff).
    assert {r.destination: sorted(r.nexthops) for r in spec.routes} == {
        dest: sorted(hops) for dest, hops in _neutron_route_state(theirs["routes"]).items()}
    ours = _payload_chains(spec.iptables)
    forward_drop = "-m mark --mark 0x1/0xffff -j DROP"  # ALLOWED "l3.forward-drop"
    assert ours["filter"]["neutron-l3-agent-FORWARD"].pop() == forward_drop
    for table in ("filter", "nat", "mangle"):
        neutron = {chain: rules for chain, rules in theirs["rules"][table].items()}
        mine = {chain: rules for chain, rules in ours[table].items() if rules or chain.startswith("neutron")}
        assert mine == neutron, table
