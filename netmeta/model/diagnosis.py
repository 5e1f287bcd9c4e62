"""Why does (or doesn't) a guest reach 169.254.169.254? — the pure half of ``explain``.

The seed's author spent a whole report finding out which way a guest's
metadata request goes and why it changed after a restart. ``netmeta explain``
answers that in one command. The command gathers observations from the guest,
the namespaces and the opts file (:class:`Observations`); this module turns
them into a chain of findings — the route, where it came from, the namespace
behind the next hop, the address or REDIRECT rule, a live listener, the
instance the listener resolves the caller to — and names every inconsistency
plainly. No I/O here: the same observations always give the same story.

Every finding has a severity: ``ok`` (this link of the chain holds),
``note`` (the chain ends here *by configuration* — metadata off on an
isolated network is Neutron's default, not a fault) and ``problem`` (an
inconsistency or a failure). The explanation is *consistent* when there is
no problem. Every finding also has a stable ``code`` so scripts and tests
need not parse the sentence, which is written for people.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from netmeta.model import names
from netmeta.model.metadata.identity import IdentityError, resolve
from netmeta.model.types import (
    DEVICE_OWNER_DHCP,
    METADATA_CIDR,
    METADATA_IPV4,
    ROUTER_INTERFACE_OWNERS,
    InstanceId,
    NetworkId,
    Port,
    PortId,
    RouterId,
    Snapshot,
)

OK, NOTE, PROBLEM = "ok", "note", "problem"
CLASSLESS = "option:classless-static-route"


@dataclass(frozen=True)
class NamespaceFacts:
    """What was seen in the namespace behind the guest's next hop."""

    name: str
    exists: bool
    addresses: tuple[str, ...] = ()  # CIDRs on the device facing the guest
    iptables: str = ""  # iptables-save text (routers)
    listening: tuple[str, ...] = ()  # "addr:port" of TCP listeners
    device: str = ""  # the tap or qr- device the addresses were read from


@dataclass(frozen=True)
class Observations:
    """Everything ``explain`` looked at, as plain values (built by the CLI or by hand in tests)."""

    guest_name: str
    guest_ip: str
    instance_id: str
    network_id: str
    route_gateway: str | None  # None: on-link or no route
    route_found: bool
    # True when the guest's table has a route for 169.254.169.254 itself;
    # False when the lookup fell through to a wider one (the default route).
    route_specific: bool = True
    dhcp_routes: str = ""  # option 121 as dhclient recorded it ("32 169 254 169 254 10 0 0 2 ...")
    opts_lines: tuple[str, ...] = ()
    namespace: NamespaceFacts | None = None
    fetch_status: int | None = None
    fetch_body: str = ""
    fetch_error: str = ""
    ipv6: "Ipv6Observations | None" = None
    # The host holding the namespace behind the next hop when it is another
    # host than the one explain runs on: ``namespace`` is then None (not
    # looked at from here) rather than "missing" (netmeta.model.placement).
    namespace_host: str = ""


@dataclass(frozen=True)
class Ipv6Observations:
    """The guest's IPv6 side: its usable addresses, its route to fe80::a9fe:a9fe, one fetch there."""

    addresses: tuple[str, ...] = ()  # usable (not tentative) IPv6 addresses, without prefix
    route_gateway: str | None = None  # the next hop's link-local; None: on the link
    route_found: bool = False
    fetch_status: int | None = None
    fetch_error: str = ""


@dataclass
class Finding:
    severity: str  # ok | note | problem
    code: str
    text: str

    @property
    def ok(self) -> bool:
        return self.severity == OK


@dataclass
class Explanation:
    guest: str
    findings: list[Finding] = field(default_factory=list)
    path: str = "none"  # "dhcp", "router" or "none"
    next_hop: str | None = None
    namespace: str | None = None
    resolved_instance: str | None = None

    @property
    def consistent(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == PROBLEM]

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def add(self, severity: str, code: str, text: str) -> None:
        self.findings.append(Finding(severity, code, text))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for finding, raw in zip(self.findings, out["findings"]):
            raw["ok"] = finding.ok
        out["consistent"] = self.consistent
        out["problems"] = [f.text for f in self.problems]
        return out


# --- parsing what was observed ----------------------------------------------------


def parse_rfc3442(text: str) -> list[tuple[str, str]]:
    """dhclient's ``new_rfc3442_classless_static_routes`` → [(cidr, gateway)].

    The value is RFC 3442's encoding in decimal: a prefix length, the
    significant octets of the destination, then the four octets of the
    router. Anything malformed ends the list (the guest ignored it too).
    """
    octets: list[int] = []
    for token in text.replace(",", " ").split():
        if not token.isdigit():
            return []
        octets.append(int(token))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(octets):
        width = octets[i]
        significant = (width + 7) // 8
        if width > 32 or i + 1 + significant + 4 > len(octets):
            break
        dst = octets[i + 1:i + 1 + significant] + [0] * (4 - significant)
        gw = octets[i + 1 + significant:i + 5 + significant]
        out.append((f"{'.'.join(map(str, dst))}/{width}", ".".join(map(str, gw))))
        i += 5 + significant
    return out


def opts_metadata_route(opts_lines: tuple[str, ...], subnet_ids: set[str]) -> tuple[str | None, str | None]:
    """(next hop the opts file offers for 169.254.169.254/32, the line) for the guest's subnets.

    Only ``option:classless-static-route`` lines tagged with one of the
    guest's subnets count (a network may carry several subnets, each with its
    own line). Fields are compared exactly: ``…/32,172.31.0.1`` must not
    match ``…/32,172.31.0.10``.
    """
    for line in opts_lines:
        fields = line.strip().split(",")
        if len(fields) < 2 or fields[1] != CLASSLESS:
            continue
        tag = fields[0]
        if subnet_ids and not any(tag == f"tag:subnet-{s}" for s in subnet_ids):
            continue
        pairs = fields[2:]
        for dst, hop in zip(pairs[0::2], pairs[1::2]):
            if dst == METADATA_CIDR:
                return hop, line
    return None, None


def _guest_subnets(snapshot: Snapshot, obs: Observations) -> set[str]:
    found: set[str] = set()
    for port in snapshot.ports.values():
        if port.network_id != obs.network_id:
            continue
        for fixed in port.fixed_ips:
            if fixed.ip_address == obs.guest_ip:
                found.add(fixed.subnet_id)
    if not found:  # the guest's port is unknown: fall back to the IP's subnet
        for subnet in snapshot.subnets_of(NetworkId(obs.network_id)):
            try:
                if ipaddress.ip_address(obs.guest_ip) in subnet.network:
                    found.add(subnet.id)
            except ValueError:
                continue
    return found


def _port_at(snapshot: Snapshot, network_id: str, ip: str) -> Port | None:
    for port in snapshot.ports.values():
        if port.network_id == network_id and any(f.ip_address == ip for f in port.fixed_ips):
            return port
    return None


# --- the story --------------------------------------------------------------------


def explain(snapshot: Snapshot, obs: Observations, *, metadata_port: int = 9697) -> Explanation:
    """The chain of findings from the guest's route to the answer it gets (IPv4, then IPv6)."""
    out = Explanation(guest=obs.guest_name)
    if obs.guest_ip or not obs.ipv6:
        _explain_ipv4(out, snapshot, obs, metadata_port)
    if obs.ipv6 is not None and any(s.ip_version == 6 for s in snapshot.subnets_of(NetworkId(obs.network_id))):
        _explain_ipv6(out, snapshot, obs, obs.ipv6)
    return out


def _explain_ipv4(out: Explanation, snapshot: Snapshot, obs: Observations, metadata_port: int) -> Explanation:
    offered, line = opts_metadata_route(obs.opts_lines, _guest_subnets(snapshot, obs))
    lease = dict(parse_rfc3442(obs.dhcp_routes)).get(METADATA_CIDR)
    if not obs.route_found:
        _no_route(out, obs, offered, line)
        return out
    if obs.route_gateway is None:
        out.add(PROBLEM, "on-link", f"the guest sends {METADATA_IPV4} straight out of its interface "
                                    "(no next hop): nothing on the network answers for it")
        return out
    gw = obs.route_gateway
    out.next_hop = gw
    how = "its route for 169.254.169.254/32" if obs.route_specific else "its default route"
    out.add(OK, "route", f"the guest's request to {METADATA_IPV4} goes via {gw} ({how})")
    _route_origin(out, obs, gw, offered, line, lease)

    owner = _port_at(snapshot, obs.network_id, gw)
    if owner is None:
        out.add(PROBLEM, "no-next-hop-port", f"no port on the guest's network holds {gw}: the next hop does not exist")
        _check_fetch(out, obs)
        return out
    if owner.device_owner == DEVICE_OWNER_DHCP:
        out.path, out.namespace = "dhcp", names.dhcp_namespace(owner.network_id)
        out.add(OK, "next-hop", f"{gw} is the DHCP port {owner.id}, in namespace {out.namespace}")
        _check_dhcp(out, obs, snapshot, owner.network_id)
        context: tuple[str, str] = ("network", owner.network_id)
    elif owner.device_owner in ROUTER_INTERFACE_OWNERS:
        out.path, out.namespace = "router", names.router_namespace(owner.device_id)
        out.add(OK, "next-hop", f"{gw} is interface {names.router_port_name(owner.id)} of router "
                                f"{owner.device_id}, in namespace {out.namespace}")
        _check_router(out, obs, gw, metadata_port, snapshot, owner.device_id)
        context = ("router", owner.device_id)
    else:
        out.add(PROBLEM, "next-hop-not-served",
                f"{gw} belongs to port {owner.id} ({owner.device_owner or 'no owner'}), which is neither "
                "a DHCP port nor a router interface: nothing serves metadata there")
        _check_fetch(out, obs)
        return out
    try:
        instance, _port = resolve(snapshot, context[0], context[1], obs.guest_ip)
        out.resolved_instance = instance.id
        same = instance.id == obs.instance_id
        out.add(OK if same else PROBLEM, "identity",
                f"the listener resolves {obs.guest_ip} to instance {instance.id} ({instance.name})"
                + ("" if same else f", but the guest is instance {obs.instance_id}"))
    except IdentityError as exc:
        out.add(PROBLEM, "identity", f"the listener cannot tell who {obs.guest_ip} is: {exc}")
    _check_fetch(out, obs)
    return out


def _explain_ipv6(out: Explanation, snapshot: Snapshot, obs: Observations, six: Ipv6Observations) -> None:
    """The IPv6 path: the guest's addresses against the API's, its route to fe80::a9fe:a9fe, the answer.

    Routed (the route goes via a router interface's link-local, from the
    router advertisement's route information) the qrouter answers behind
    its ip6tables REDIRECT; on the link, the qdhcp's listener on
    ``[fe80::a9fe:a9fe%tap]:80`` does, when a metadata option is on. A guest
    that resolves the address on its link, gets no answer and has a router
    advertising on the network ignores the advertised route (as Neutron, the
    router holds nothing at that address on the link): that is named.
    """
    from netmeta.model.ipam import AUTO_ADDRESS_MODES, DHCPV6_STATEFUL, link_local_address

    port = snapshot.ports.get(PortId(_guest_port_id(snapshot, obs)))
    if port is None:
        return
    for fixed in port.fixed_ips:
        subnet = snapshot.subnets.get(fixed.subnet_id)
        if subnet is None or subnet.ip_version != 6:
            continue
        mode = subnet.ipv6_address_mode
        how = ("from the router advertisement (SLAAC, EUI-64 of its MAC)" if mode in AUTO_ADDRESS_MODES
               else "by DHCPv6" if mode == DHCPV6_STATEFUL else "by hand (the subnet has no address mode)")
        if _same(fixed.ip_address, six.addresses):
            out.add(OK, "ipv6-address", f"the guest holds {fixed.ip_address}, the API's address, {how}")
        else:
            out.add(PROBLEM if mode is not None else NOTE, "ipv6-address",
                    f"the guest does not hold {fixed.ip_address} (the API's address, expected {how}); it has "
                    f"{', '.join(six.addresses) or 'no usable IPv6 address'}")
    if not six.route_found:
        out.add(PROBLEM, "ipv6-route", "the guest has no route to fe80::a9fe:a9fe on eth0")
    elif six.route_gateway is not None:
        router = next((p for p in snapshot.ports_of(NetworkId(obs.network_id))
                       if p.device_owner in ROUTER_INTERFACE_OWNERS
                       and _same(link_local_address(p.mac_address), (six.route_gateway,))), None)
        if router is None:
            out.add(PROBLEM, "ipv6-route", f"the guest sends fe80::a9fe:a9fe via {six.route_gateway}, which is "
                                           "no router interface's link-local on its network")
        else:
            out.add(OK, "ipv6-route", f"fe80::a9fe:a9fe goes via {six.route_gateway}, the link-local of "
                                      f"{names.router_port_name(router.id)} (router {router.device_id}, from its "
                                      "router advertisement); ip6tables there redirects it to [::]:9697")
    elif six.fetch_status != 200 and _advertising_router(snapshot, obs.network_id) is not None:
        # Neutron's L3 agent puts nothing at fe80::a9fe:a9fe on the link: radvd advertises a route
        # to it via the router, and the guest must take the route (its release note says so).
        out.add(PROBLEM, "ipv6-route",
                f"the guest resolves fe80::a9fe:a9fe on its link, but router "
                f"{_advertising_router(snapshot, obs.network_id)} advertises it as a route through itself and "
                f"no DHCP tap holds it: the guest ignores the route information of router advertisements "
                f"(Linux: net.ipv6.conf.<interface>.accept_ra_rt_info_max_plen must be 128; its default is 0)")
    else:
        out.add(OK, "ipv6-route", "fe80::a9fe:a9fe is on the guest's link: the DHCP tap in "
                                  f"{names.dhcp_namespace(obs.network_id)} answers for it when a metadata "
                                  "option is on")
    if six.fetch_status == 200:
        out.add(OK, "ipv6-fetch", "GET http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json from the "
                                  "guest: 200")
    else:
        out.add(PROBLEM, "ipv6-fetch", "GET http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json from "
                                       f"the guest: {six.fetch_status or six.fetch_error or 'no answer'}")


def _advertising_router(snapshot: Snapshot, network_id: str) -> str | None:
    """The router that sends RAs on the network (an interface on a subnet with ``ipv6_ra_mode``), if any."""
    for port in snapshot.ports_of(NetworkId(network_id)):
        if port.device_owner not in ROUTER_INTERFACE_OWNERS:
            continue
        for fixed in port.fixed_ips:
            subnet = snapshot.subnets.get(fixed.subnet_id)
            if subnet is not None and subnet.ip_version == 6 and subnet.ipv6_ra_mode:
                return str(port.device_id)
    return None


def _guest_port_id(snapshot: Snapshot, obs: Observations) -> str:
    instance = snapshot.instances.get(InstanceId(obs.instance_id))
    for port in snapshot.ports_of(NetworkId(obs.network_id)):
        if port.device_id == obs.instance_id or (instance is not None and port.id in instance.port_ids):
            return port.id
    return ""


def _same(ip: str, candidates: tuple[str, ...]) -> bool:
    try:
        wanted = ipaddress.ip_address(ip)
        return any(ipaddress.ip_address(c.split("/")[0].split("%")[0]) == wanted for c in candidates)
    except ValueError:
        return False


def _no_route(out: Explanation, obs: Observations, offered: str | None, line: str | None) -> None:
    if offered is not None:
        out.add(PROBLEM, "route-not-installed",
                f"the opts file offers {METADATA_CIDR} via {offered} ({line}), but the guest has no route "
                f"to {METADATA_IPV4}: its lease predates that option, or its DHCP client ignored it")
    else:
        out.add(NOTE, "metadata-off",
                f"the guest has no route to {METADATA_IPV4} and DHCP offers none: metadata is off for this "
                "network (an isolated subnet with neither enable_isolated_metadata nor force_metadata, "
                "Neutron's default)")
    facts = obs.namespace
    if facts is not None and facts.exists and METADATA_CIDR in facts.addresses and offered is None:
        out.add(PROBLEM, "unused-address",
                f"{METADATA_CIDR} is on the DHCP tap in {facts.name}, but no DHCP option routes guests to it")
    _check_fetch(out, obs, expect_failure=offered is None)


def _route_origin(out: Explanation, obs: Observations, gw: str, offered: str | None, line: str | None,
                  lease: str | None) -> None:
    if offered == gw:
        out.add(OK, "route-origin", f"it came from DHCP option 121 (classless-static-route); the opts file "
                                    f"says the same: {line}")
    elif offered is not None:
        held = f" (the guest's lease says via {lease})" if lease else ""
        out.add(PROBLEM, "stale-route",
                f"the guest's route via {gw} is stale{held}: DHCP now offers {METADATA_CIDR} via {offered} "
                f"({line}). The guest has not renewed its lease since the change; a renew moves it to {offered}")
    elif obs.route_specific:
        out.add(PROBLEM, "route-not-offered",
                f"the guest routes {METADATA_CIDR} via {gw}, but the opts file offers no route for it: "
                "the route was added by hand or comes from an old lease")
    else:
        out.add(OK, "route-origin", f"DHCP offers no route for {METADATA_CIDR}; the default route carries it")


def why_no_namespace(snapshot: Snapshot, kind: str, ident: str) -> str:
    """Why netmeta makes no namespace for this network or router on purpose ("" when it should exist)."""
    if kind == "network":
        network = snapshot.networks.get(NetworkId(ident))
        if network is None:
            return f"network {ident} no longer exists"
        label = network.name or ident
        if not network.admin_state_up:
            return (f"network {label} is admin-down, so no qdhcp namespace is made for it (as Neutron's DHCP "
                    f"agent does); `openstack network set --enable {label}` brings it back")
        if not any(s.network_id == network.id and s.enable_dhcp for s in snapshot.subnets.values()):
            return f"no subnet of network {label} has DHCP enabled, so it has no qdhcp namespace"
        return ""
    router = snapshot.routers.get(RouterId(ident))
    if router is None:
        return f"router {ident} no longer exists"
    label = router.name or ident
    if not router.admin_state_up:
        return (f"router {label} is admin-down, so its qrouter namespace is not made; "
                f"`openstack router set --enable {label}` brings it back")
    if not snapshot.router_ports(router.id):
        return f"router {label} has no interfaces, so it has no qrouter namespace"
    return ""


def _elsewhere(out: Explanation, obs: Observations) -> bool:
    """The namespace is another host's: say so, instead of calling it missing here."""
    if obs.namespace is not None or not obs.namespace_host:
        return False
    out.add(NOTE, "namespace-elsewhere",
            f"namespace {out.namespace} is on host {obs.namespace_host}, not this one: its addresses and listener "
            f"are looked at by `netmeta explain` there; the fetch below shows whether the path works")
    return True


def _missing(out: Explanation, snapshot: Snapshot, kind: str, ident: str) -> None:
    why = why_no_namespace(snapshot, kind, ident)
    reason = f": {why}" if why else " (the agent should have made it: is `netmeta agent` running? see `netmeta status`)"
    out.add(PROBLEM, "namespace-missing", f"namespace {out.namespace} does not exist on this host{reason}")


def _check_dhcp(out: Explanation, obs: Observations, snapshot: Snapshot, network_id: str) -> None:
    facts = obs.namespace
    if _elsewhere(out, obs):
        return
    if facts is None or not facts.exists:
        _missing(out, snapshot, "network", network_id)
        return
    tap = facts.device or "the DHCP tap"
    if METADATA_CIDR in facts.addresses:
        out.add(OK, "address", f"{METADATA_CIDR} is on {tap}")
    else:
        out.add(PROBLEM, "address-missing",
                f"{METADATA_CIDR} is not on {tap} in {out.namespace}: the DHCP port forwards nothing, so "
                f"packets to {METADATA_IPV4} sent there are dropped")
    if f"{METADATA_IPV4}:80" in facts.listening or "0.0.0.0:80" in facts.listening:
        out.add(OK, "listener", f"a listener is live on {METADATA_IPV4}:80 in {out.namespace}")
    else:
        out.add(PROBLEM, "no-listener",
                f"the guest's route points to {out.next_hop} (the DHCP port) but nothing listens on "
                f"{METADATA_IPV4}:80 in {out.namespace}")


def _check_router(out: Explanation, obs: Observations, gw: str, port: int, snapshot: Snapshot,
                  router_id: str) -> None:
    facts = obs.namespace
    if _elsewhere(out, obs):
        return
    if facts is None or not facts.exists:
        _missing(out, snapshot, "router", router_id)
        return
    device = facts.device or "the router interface"
    if any(a.split("/")[0] == gw for a in facts.addresses):
        out.add(OK, "address", f"{gw} is on {device}")
    else:
        out.add(PROBLEM, "address-missing", f"{gw} is not on {device} in {out.namespace}: "
                                            "the guest's packets to its next hop go nowhere")
    rule = f"-d {METADATA_CIDR} -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports {port}"
    if any(l.strip().endswith(rule) and l.startswith("-A ") for l in facts.iptables.splitlines()):
        out.add(OK, "redirect", f"the REDIRECT rule sends port 80 to {port}: {rule}")
    else:
        out.add(PROBLEM, "no-redirect",
                f"no REDIRECT rule for {METADATA_IPV4}:80 in {out.namespace}'s nat table: requests are not "
                f"sent to the listener on {port}")
    live = [a for a in (f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}") if a in facts.listening]
    if live:
        out.add(OK, "listener", f"a listener is live on {live[0]} in {out.namespace}")
    else:
        out.add(PROBLEM, "no-listener",
                f"the guest's route points to the router {out.next_hop} but nothing listens on "
                f"port {port} in {out.namespace}")


def _check_fetch(out: Explanation, obs: Observations, *, expect_failure: bool = False) -> None:
    what = "GET /openstack/latest/meta_data.json from the guest"
    if obs.fetch_status == 200:
        out.add(OK, "fetch", f"{what}: 200 ({len(obs.fetch_body)} bytes)")
    elif obs.fetch_status is not None:
        out.add(PROBLEM, "fetch", f"{what}: {obs.fetch_status} {obs.fetch_body[:200]}")
    else:
        out.add(NOTE if expect_failure else PROBLEM, "fetch",
                f"{what} failed: {obs.fetch_error or 'no answer'}")
