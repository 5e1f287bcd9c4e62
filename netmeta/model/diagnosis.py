"""Why does (or doesn't) a guest reach 169.254.169.254? — the pure half of ``explain``.

The seed's author spent a whole report finding out which way a guest's
metadata request goes and why it changed after a restart. ``netmeta explain``
answers that in one command. The command gathers observations from the guest,
the namespaces and the opts file (:class:`Observations`); this module turns
them into a chain of findings — the route, where it came from, the namespace
behind the next hop, the address or REDIRECT rule, a live listener, the
instance the listener resolves the caller to — and names every inconsistency
plainly. No I/O here: the same observations always give the same story.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from netmeta.model import names
from netmeta.model.metadata.identity import IdentityError, resolve
from netmeta.model.types import (
    DEVICE_OWNER_DHCP,
    METADATA_CIDR,
    METADATA_IPV4,
    ROUTER_INTERFACE_OWNERS,
    Snapshot,
)


@dataclass(frozen=True)
class NamespaceFacts:
    name: str
    exists: bool
    addresses: tuple[str, ...] = ()  # CIDRs on the device facing the guest
    iptables: str = ""  # iptables-save text (routers)
    listening: tuple[str, ...] = ()  # "addr:port" of TCP listeners


@dataclass(frozen=True)
class Observations:
    guest_name: str
    guest_ip: str
    instance_id: str
    network_id: str
    route_gateway: str | None  # None: on-link or no route
    route_found: bool
    dhcp_routes: str = ""  # what dhclient received in option 121, as it recorded it
    opts_lines: tuple[str, ...] = ()
    namespace: NamespaceFacts | None = None
    fetch_status: int | None = None
    fetch_body: str = ""
    fetch_error: str = ""


@dataclass
class Finding:
    ok: bool
    text: str


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
        return all(f.ok for f in self.findings)

    def add(self, ok: bool, text: str) -> None:
        self.findings.append(Finding(ok, text))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["consistent"] = self.consistent
        return out


def explain(snapshot: Snapshot, obs: Observations, *, metadata_port: int = 9697) -> Explanation:
    out = Explanation(guest=obs.guest_name)
    if not obs.route_found:
        out.add(False, f"the guest has no route to {METADATA_IPV4}: no DHCP option gave it one")
        _unused_address_note(out, obs)
        return out
    if obs.route_gateway is None:
        out.add(False, f"the guest sends {METADATA_IPV4} straight out of its interface (no next hop): "
                       "nothing on the network answers for it")
        return out
    gw = obs.route_gateway
    out.next_hop = gw
    out.add(True, f"the guest's route to {METADATA_IPV4} goes via {gw}")
    line = next((l for l in obs.opts_lines if f"{METADATA_CIDR},{gw}" in l and "classless-static-route" in l), None)
    if line:
        out.add(True, f"it came from DHCP option 121 (classless-static-route), opts line: {line}")
    else:
        current = next((l for l in obs.opts_lines if METADATA_CIDR in l and "classless" in l), None)
        if current:
            out.add(False, f"the guest's route via {gw} is stale: the opts file now says {current} "
                           "(the guest has not renewed its lease since)")
        else:
            out.add(False, f"no line in the opts file routes {METADATA_CIDR} via {gw}")
    owner = _port_at(snapshot, obs.network_id, gw)
    if owner is None:
        out.add(False, f"no port on the guest's network holds {gw}: the next hop does not exist")
        return out
    if owner.device_owner == DEVICE_OWNER_DHCP:
        out.path, out.namespace = "dhcp", names.dhcp_namespace(owner.network_id)
        out.add(True, f"{gw} is the DHCP port {owner.id}, in namespace {out.namespace}")
        _check_dhcp(out, obs)
        context = ("network", owner.network_id)
    elif owner.device_owner in ROUTER_INTERFACE_OWNERS:
        out.path, out.namespace = "router", names.router_namespace(owner.device_id)
        out.add(True, f"{gw} is interface {names.router_port_name(owner.id)} of router {owner.device_id}, "
                      f"in namespace {out.namespace}")
        _check_router(out, obs, metadata_port)
        context = ("router", owner.device_id)
    else:
        out.add(False, f"{gw} belongs to port {owner.id} ({owner.device_owner or 'no owner'}), "
                       "which is neither a DHCP port nor a router interface: nothing serves metadata there")
        return out
    try:
        instance, _port = resolve(snapshot, context[0], context[1], obs.guest_ip)
        out.resolved_instance = instance.id
        same = instance.id == obs.instance_id
        out.add(same, f"the listener resolves {obs.guest_ip} to instance {instance.id} ({instance.name})"
                      + ("" if same else f", but the guest is instance {obs.instance_id}"))
    except IdentityError as exc:
        out.add(False, f"the listener cannot tell who {obs.guest_ip} is: {exc}")
    _check_fetch(out, obs)
    return out


def _port_at(snapshot: Snapshot, network_id: str, ip: str) -> Any:
    for port in snapshot.ports.values():
        if port.network_id == network_id and any(f.ip_address == ip for f in port.fixed_ips):
            return port
    return None


def _check_dhcp(out: Explanation, obs: Observations) -> None:
    facts = obs.namespace
    if facts is None or not facts.exists:
        out.add(False, f"namespace {out.namespace} does not exist on this host")
        return
    if METADATA_CIDR in facts.addresses:
        out.add(True, f"{METADATA_CIDR} is on the DHCP tap")
    else:
        out.add(False, f"{METADATA_IPV4} is not on the DHCP tap: packets to it are not for this namespace")
    if f"{METADATA_IPV4}:80" in facts.listening or "0.0.0.0:80" in facts.listening:
        out.add(True, f"a listener is live on {METADATA_IPV4}:80 in {out.namespace}")
    else:
        out.add(False, f"the guest's route points to {out.next_hop} (the DHCP port) but nothing listens "
                       f"on {METADATA_IPV4}:80 in {out.namespace}")


def _check_router(out: Explanation, obs: Observations, port: int) -> None:
    facts = obs.namespace
    if facts is None or not facts.exists:
        out.add(False, f"namespace {out.namespace} does not exist on this host")
        return
    rule = f"-d {METADATA_CIDR} -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports {port}"
    if rule in facts.iptables:
        out.add(True, f"the REDIRECT rule sends port 80 to {port}: {rule}")
    else:
        out.add(False, f"no REDIRECT rule for {METADATA_IPV4}:80 in {out.namespace}")
    if f"0.0.0.0:{port}" in facts.listening:
        out.add(True, f"a listener is live on 0.0.0.0:{port} in {out.namespace}")
    else:
        out.add(False, f"the guest's route points to the router {out.next_hop} but nothing listens on "
                       f"port {port} in {out.namespace}")


def _check_fetch(out: Explanation, obs: Observations) -> None:
    if obs.fetch_status == 200:
        out.add(True, f"GET /openstack/latest/meta_data.json from the guest: 200 ({len(obs.fetch_body)} bytes)")
    elif obs.fetch_status is not None:
        out.add(False, f"GET /openstack/latest/meta_data.json from the guest: {obs.fetch_status} {obs.fetch_body[:200]}")
    else:
        out.add(False, f"GET /openstack/latest/meta_data.json from the guest failed: {obs.fetch_error or 'no answer'}")


def _unused_address_note(out: Explanation, obs: Observations) -> None:
    facts = obs.namespace
    if facts is not None and METADATA_CIDR in facts.addresses:
        out.add(False, f"{METADATA_IPV4} is on the tap but no DHCP option routes guests to it")
