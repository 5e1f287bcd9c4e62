"""What a router's namespace should hold: pure functions, no I/O.

A router is a ``qrouter-<id>`` namespace with one ``qr-`` device per
interface port and Neutron's metadata rules: requests to
``169.254.169.254:80`` arriving on any ``qr-`` device are marked, redirected
to the local listener on ``metadata_port`` (9697), accepted on INPUT because
of the mark, and never forwarded. The rules come from Neutron's L3 agent
(``RouterInfo.initialize_metadata_iptables``) and metadata driver
(``metadata_filter_rules``, ``metadata_nat_rules``) and keep Neutron's
wrapper-chain names, so that ``iptables-save | grep REDIRECT`` inside the
namespace prints what operators expect.

The rules are rendered as one ``iptables-restore`` payload that replaces the
``filter``, ``nat`` and ``mangle`` tables of the namespace entirely (applied
*without* ``--noflush``). netmeta owns the namespace, so a full replacement
is both correct and idempotent: stale rules and chains vanish and applying
twice changes nothing. The payload is written in the exact canonical form
``iptables-save`` prints (tables in a fixed order, every built-in chain, user
chains sorted, rules grouped by chain), so :func:`normalize_saved` of what
the kernel holds equals the payload exactly when nothing needs applying.
IPv6 gets the same rules in an ``ip6tables-restore`` payload
(:func:`ip6tables_payload`), with ``fe80::a9fe:a9fe/128`` in place of
``169.254.169.254/32`` — Neutron's L3 agent adds exactly those to its
``ipv6`` tables. A router with an IPv6 subnet also runs radvd
(:mod:`netmeta.model.ra`) and forwards IPv6.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from netmeta.model import hosting, names
from netmeta.model.paths import StatePaths
from netmeta.model.ra import RaInterface, radvd_argv, radvd_config
from netmeta.model.settings import DataPlaneSettings
from netmeta.model.types import (
    METADATA_CIDR, METADATA_V6_CIDR, HostRoute, NetworkId, PortId, RouterId, Snapshot, Subnet,
)


# The prefix of Neutron's L3 agent chains (binary name "neutron-l3-agent").
WRAP = "neutron-l3-agent"
# neutron-lib ROUTER_MARK_MASK: the low 16 bits belong to the metadata mark,
# the high 16 to address scopes.
ROUTER_MARK_MASK = "0xffff"
INTERNAL_DEV_WILDCARD = names.ROUTER_PORT_PREFIX + "+"

# Tables the payload owns, in the order rendered, and the built-in chains of
# each in the order iptables-save lists them (nft and legacy agree).
TABLES: tuple[str, ...] = ("filter", "nat", "mangle")
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}


@dataclass(frozen=True)
class RouterInterface:
    """One ``qr-`` device: a router interface port plugged into a network."""

    port_id: PortId
    device: str  # qr-<port_id[:11]>
    mac: str
    # CIDR strings, e.g. ("172.31.0.1/24", "2001:db8::1/64"), in the port's fixed_ips order.
    addresses: tuple[str, ...]
    network_id: NetworkId
    bridge: str  # brq<network_id[:11]>
    mtu: int = 1500


@dataclass(frozen=True)
class RouterRoute:
    """One extra route in the qrouter: several nexthops make one ECMP (multipath) route."""

    destination: str
    nexthops: tuple[str, ...]


@dataclass(frozen=True)
class RouterSpec:
    """The desired content of one ``qrouter-<id>`` namespace."""

    router_id: RouterId
    namespace: str  # qrouter-<router_id>
    interfaces: tuple[RouterInterface, ...]  # the admin-up interface ports, sorted by port id
    iptables: str  # full iptables-restore payload, see iptables_payload()
    listener_wanted: bool  # a metadata listener on 0.0.0.0:<metadata_port>
    routes: tuple[RouterRoute, ...] = ()
    ip6tables: str = ""  # the ip6tables-restore payload, see ip6tables_payload()
    radvd: str = ""  # radvd.conf text; "" = no interface has an IPv6 subnet, no radvd
    ra_dir: str = ""  # where radvd's conf, pid and log files live (StatePaths.ra_dir)

    def radvd_path(self, suffix: str) -> str:
        return f"{self.ra_dir}/{self.router_id}.radvd.{suffix}"

    @property
    def radvd_argv(self) -> tuple[str, ...]:
        return tuple(radvd_argv(self.radvd_path("conf"), self.radvd_path("pid"), self.radvd_path("log")))


# --- rules -------------------------------------------------------------------


def _chain(name: str) -> str:
    return f"{WRAP}-{name}"


def _mark(config: DataPlaneSettings) -> str:
    """The mark as iptables prints it back (``0x1``), whatever the config spelling."""
    return f"{int(config.metadata_access_mark, 0):#x}/{ROUTER_MARK_MASK}"


# neutron-lib's address-scope marks use the high 16 bits; every netmeta
# interface is in Neutron's "noscope" scope, whose mark id is the first of
# ADDRESS_SCOPE_MARK_ID_MIN..MAX (1024), shifted up: 0x4000000.
NOSCOPE_MARK = f"{1024 << 16:#x}/0xffff0000"
CONNMARK_MASKS = "--nfmask 0xffff0000 --ctmask 0xffff0000"


def _rules(scope_devices: Sequence[str], config: DataPlaneSettings,
           metadata_cidr: str = METADATA_CIDR) -> dict[str, dict[str, list[str]]]:
    """table → chain → rule bodies (without ``-A <chain>``), in order.

    Neutron's steady state: what its L3 agent holds after the first
    ``process()`` of a router without a gateway (read from its own code by
    tests/upstream). The ``scope`` chains carry one address-scope rule per
    interface port (admin-down ones too, as Neutron's do), and the mark set
    on metadata requests in mangle ``PREROUTING`` is what lets filter
    ``INPUT`` accept them after the REDIRECT; the INPUT pair and the REDIRECT
    exist only with ``enable_metadata_proxy``.

    One rule is netmeta's own, on purpose: ``-m mark --mark <mark> -j DROP``
    at the end of ``neutron-l3-agent-FORWARD``. Neutron installs that rule in
    ``scope`` at start-up and its first ``process()`` empties the chain, so a
    marked request that meets no REDIRECT (the metadata proxy off, or a rule
    removed by hand) is routed onward. netmeta keeps it, in its own place: a
    request for 169.254.169.254 never leaves the router.
    """
    mark = _mark(config)
    port = config.metadata_port
    match = f"-d {metadata_cidr} -i {INTERNAL_DEV_WILDCARD} -p tcp -m tcp --dport 80"
    filter_input: list[str] = []
    nat_prerouting: list[str] = []
    if config.enable_metadata_proxy:
        filter_input = [f"-m mark --mark {mark} -j ACCEPT", f"-p tcp -m tcp --dport {port} -j DROP"]
        nat_prerouting = [f"{match} -j REDIRECT --to-ports {port}"]
    return {
        "filter": {
            "INPUT": [f"-j {_chain('INPUT')}"],
            "FORWARD": ["-j neutron-filter-top", f"-j {_chain('FORWARD')}"],
            "OUTPUT": ["-j neutron-filter-top", f"-j {_chain('OUTPUT')}"],
            "neutron-filter-top": [f"-j {_chain('local')}"],
            _chain("FORWARD"): [f"-j {_chain('scope')}", f"-m mark --mark {mark} -j DROP"],
            _chain("INPUT"): filter_input,
            _chain("OUTPUT"): [],
            _chain("local"): [],
            _chain("scope"): [f"-o {dev} -m mark ! --mark {NOSCOPE_MARK} -j DROP" for dev in scope_devices],
        },
        "nat": {
            "PREROUTING": [f"-j {_chain('PREROUTING')}"],
            "OUTPUT": [f"-j {_chain('OUTPUT')}"],
            "POSTROUTING": [f"-j {_chain('POSTROUTING')}", "-j neutron-postrouting-bottom"],
            "neutron-postrouting-bottom": [
                f'-m comment --comment "Perform source NAT on outgoing traffic." -j {_chain("snat")}'
            ],
            _chain("OUTPUT"): [],
            _chain("POSTROUTING"): [],
            _chain("PREROUTING"): nat_prerouting,
            _chain("float-snat"): [],
            _chain("snat"): [f"-j {_chain('float-snat')}"],
        },
        "mangle": {
            "PREROUTING": [f"-j {_chain('PREROUTING')}"],
            "INPUT": [f"-j {_chain('INPUT')}"],
            "FORWARD": [f"-j {_chain('FORWARD')}"],
            "OUTPUT": [f"-j {_chain('OUTPUT')}"],
            "POSTROUTING": [f"-j {_chain('POSTROUTING')}"],
            _chain("FORWARD"): [],
            _chain("INPUT"): [],
            _chain("OUTPUT"): [],
            _chain("POSTROUTING"): [],
            _chain("PREROUTING"): [
                f"-j {_chain('mark')}",
                f"-j {_chain('scope')}",
                f"-m connmark ! --mark 0x0/0xffff0000 -j CONNMARK --restore-mark {CONNMARK_MASKS}",
                f"-j {_chain('floatingip')}",
                f"{match} -j MARK --set-xmark {mark}",
            ],
            _chain("float-snat"): [f"-m connmark --mark 0x0/0xffff0000 -j CONNMARK --save-mark {CONNMARK_MASKS}"],
            _chain("floatingip"): [],
            _chain("mark"): [],
            _chain("scope"): [f"-i {dev} -j MARK --set-xmark {NOSCOPE_MARK}" for dev in scope_devices],
        },
    }


def _render(tables: dict[str, dict[str, tuple[str, list[str]]]]) -> str:
    """Canonical iptables-save text from table → chain → (policy, rules)."""
    out: list[str] = []
    for table in TABLES:
        if table not in tables:
            continue
        chains = tables[table]
        builtins = [c for c in BUILTIN_CHAINS[table] if c in chains]
        order = builtins + sorted(c for c in chains if c not in BUILTIN_CHAINS[table])
        out.append(f"*{table}")
        out.extend(f":{name} {chains[name][0]} [0:0]" for name in order)
        for name in order:
            out.extend(f"-A {name} {rule}" for rule in chains[name][1])
        out.append("COMMIT")
    return "".join(line + "\n" for line in out)


def iptables_payload(scope_devices: Sequence[str], config: DataPlaneSettings,
                     metadata_cidr: str = METADATA_CIDR) -> str:
    """One ``iptables-restore`` payload for a router namespace (no ``--noflush``).

    It declares every built-in chain (policy ACCEPT) and Neutron's wrapper
    chains of the ``filter``, ``nat`` and ``mangle`` tables, so applying it
    replaces those tables wholesale. The metadata rules match ``qr-+``, as
    Neutron's do; only the address-scope rules name devices, one pair per
    interface port (``scope_devices``, the ``qr-`` names by port id).
    """
    tables: dict[str, dict[str, tuple[str, list[str]]]] = {}
    for table, chains in _rules(scope_devices, config, metadata_cidr).items():
        decl: dict[str, tuple[str, list[str]]] = {c: ("ACCEPT", []) for c in BUILTIN_CHAINS[table]}
        for chain, rules in chains.items():
            policy = "ACCEPT" if chain in BUILTIN_CHAINS[table] else "-"
            decl[chain] = (policy, list(rules))
        tables[table] = decl
    return _render(tables)


def ip6tables_payload(scope_devices: Sequence[str], config: DataPlaneSettings) -> str:
    """The same payload for ``ip6tables-restore``: the metadata rules match ``fe80::a9fe:a9fe/128``.

    A guest's request to ``http://[fe80::a9fe:a9fe%eth0]/`` reaches the router
    (radvd advertises a route to that address through it), is marked, is
    redirected to ``[::]:<metadata_port>`` and is never forwarded.
    """
    return iptables_payload(scope_devices, config, METADATA_V6_CIDR)


_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")


def normalize_saved(text: str) -> str:
    """``iptables-save`` output reduced to what :func:`iptables_payload` renders.

    Drops comments and blank lines, tables other than ``filter``, ``nat`` and
    ``mangle`` (``raw`` and ``security`` are not ours), chain counters and
    ``-c`` rule counters; orders tables, chains and rules the canonical way.
    Rule order *within* a chain is kept — it is meaningful. Equal output means
    the namespace already holds exactly the payload; a missing table renders
    as absent, so the comparison fails and the agent re-applies.
    """
    tables: dict[str, dict[str, tuple[str, list[str]]]] = {}
    current: dict[str, tuple[str, list[str]]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name = line[1:]
            current = tables.setdefault(name, {}) if name in TABLES else None
            continue
        if current is None:
            continue  # inside a table we don't own
        if line == "COMMIT":
            current = None
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            chain, policy = parts[0], parts[1] if len(parts) > 1 else "-"
            rules = current[chain][1] if chain in current else []
            current[chain] = (policy, rules)
            continue
        line = _COUNTERS.sub("", line)
        if line.startswith("-A "):
            chain, _, body = line[3:].partition(" ")
            policy, rules = current.get(chain, ("-", []))
            rules.append(body)
            current[chain] = (policy, rules)
    return _render(tables)


# --- routers -------------------------------------------------------------------


def _interface(snapshot: Snapshot, port_id: PortId) -> RouterInterface:
    port = snapshot.ports[port_id]
    addresses: list[str] = []
    for fixed in port.fixed_ips:
        subnet = snapshot.subnets.get(fixed.subnet_id)
        if subnet is None:
            continue
        prefix = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
        addresses.append(f"{fixed.ip_address}/{prefix}")
    network = snapshot.networks.get(port.network_id)
    return RouterInterface(
        port_id=port.id,
        device=names.router_port_name(port.id),
        mac=port.mac_address,
        addresses=tuple(addresses),
        network_id=port.network_id,
        bridge=names.bridge_name(port.network_id),
        mtu=network.mtu if network is not None else 1500,
    )


def _v6_subnets(snapshot: Snapshot, port_id: PortId) -> tuple[Subnet, ...]:
    """The IPv6 subnets a router port is on, by id (what its radvd stanza advertises)."""
    ids = {f.subnet_id for f in snapshot.ports[port_id].fixed_ips}
    found = [snapshot.subnets[i] for i in ids if i in snapshot.subnets and snapshot.subnets[i].ip_version == 6]
    return tuple(sorted(found, key=lambda s: s.id))


def router_interfaces(snapshot: Snapshot, router_id: RouterId) -> list[RouterInterface]:
    """The router's interface ports (``ROUTER_INTERFACE_OWNERS``), by port id."""
    return [_interface(snapshot, p.id) for p in snapshot.router_ports(router_id)]


def has_qrouter(snapshot: Snapshot, router_id: RouterId) -> bool:
    """Whether the agent makes ``qrouter-<id>``: the router exists and is admin up.

    Neutron's server hands only active routers to its L3 agents, and its
    agent keeps the namespace of every router it hosts, interfaces or not.
    Seen from a host, only a router its L3 agent hosts (:mod:`.hosting`).
    """
    router = snapshot.routers.get(router_id)
    return bool(router is not None and router.admin_state_up and hosting.hosts_router(snapshot, router_id))


def router_routes(routes: Sequence[HostRoute]) -> tuple[RouterRoute, ...]:
    """A router's extra routes as the L3 agent leaves them (``routes_updated``).

    Routes to the same destination become one multipath route, nexthops in
    the order given; destinations in the order of their first route. IPv6
    routes go in as IPv4 ones do (Neutron's agent makes no difference).
    """
    grouped: dict[str, list[str]] = {}
    for route in routes:
        hops = grouped.setdefault(route.destination, [])
        if route.nexthop not in hops:
            hops.append(route.nexthop)
    return tuple(RouterRoute(dest, tuple(hops)) for dest, hops in grouped.items())


def desired_routers(
    snapshot: Snapshot, config: DataPlaneSettings, paths: StatePaths | None = None
) -> dict[RouterId, RouterSpec]:
    """Every qrouter namespace that should exist, keyed by router id.

    A router gets one when it is administratively up (Neutron's server hands
    only active routers to its L3 agents) — with or without interfaces, as
    Neutron's agent keeps the namespace of every router it hosts. An
    admin-down interface port gets no ``qr-`` device (Neutron's
    ``_process_internal_ports`` plugs only admin-up ones) but keeps its
    address-scope rules, as there.
    """
    out: dict[RouterId, RouterSpec] = {}
    for router_id in sorted(snapshot.routers):
        if not has_qrouter(snapshot, router_id):
            continue
        router = snapshot.routers[router_id]
        ports = snapshot.router_ports(router_id)
        interfaces = [_interface(snapshot, p.id) for p in ports if p.admin_state_up]
        scope = [names.router_port_name(p.id) for p in ports]
        ra = [RaInterface(names.router_port_name(p.id), i.mtu, _v6_subnets(snapshot, p.id))
              for p, i in zip([p for p in ports if p.admin_state_up], interfaces)]
        out[router_id] = RouterSpec(
            router_id=router_id,
            namespace=names.router_namespace(router_id),
            interfaces=tuple(interfaces),
            iptables=iptables_payload(scope, config),
            listener_wanted=config.enable_metadata_proxy,
            routes=router_routes(router.routes),
            ip6tables=ip6tables_payload(scope, config),
            radvd=radvd_config(ra, config.min_rtr_adv_interval, config.max_rtr_adv_interval),
            ra_dir=paths.ra_dir if paths is not None else "",
        )
    return out

