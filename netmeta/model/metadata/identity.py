"""Who is asking: (listener context, source IP) → exactly one instance.

A listener in ``qdhcp-<network>`` sees guests of that one network; a listener
in ``qrouter-<router>`` sees guests of every network the router has an
interface on (Neutron's metadata agent asks for the router's networks the same
way). Among those networks, the ports holding the source IP are candidates;
exactly one candidate whose ``device_id`` is a known instance answers.

An IPv6 guest may call from its link-local address (``fe80::`` + the
modified EUI-64 of its MAC, what the kernel forms and port security lets
through) as well as from its fixed IPs; the index knows both.

A port counts only when it belongs to the same project as the instance its
``device_id`` names, as Nova checks ``X-Tenant-ID`` against the instance:
``device_id`` is a free-form field any project may set on its own port, so
without the comparison a port created in another project with a victim's
instance id would read the victim's user data, keys and password. Such a
port is answered exactly like an unknown guest (the same 404, the same
words), which tells its holder nothing about the victim.

Zero candidates and several candidates are both refusals: serving one of two
guests that share an address (overlapping subnets behind one router, a stale
port) would hand one tenant's data to another. The error says exactly what
was not found, so ``netmeta explain`` and a guest's ``curl`` both show why.

:class:`Index` precomputes the (network, IP) → ports map once per snapshot so
a lookup is two dict reads instead of a scan of every port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netmeta.model.ip import canonical_ip
from netmeta.model.ipam import IpamError, link_local_address
from netmeta.model.types import (
    ROUTER_INTERFACE_OWNERS,
    Instance,
    InstanceId,
    NetworkId,
    Port,
    RouterId,
    Snapshot,
)

NETWORK = "network"
ROUTER = "router"


class IdentityError(LookupError):
    """The caller cannot be tied to one instance; the message says why."""


class InstanceNotFound(IdentityError):
    """No port holding the source IP belongs to a known instance."""


class AmbiguousInstance(IdentityError):
    """Several instances' ports hold the source IP; none is served."""


class UnknownContext(IdentityError):
    """The listener's network or router is not (or no longer) in the snapshot."""


@dataclass(frozen=True)
class Index:
    """Lookup tables for one snapshot; build once, reuse until it changes."""

    by_address: dict[tuple[NetworkId, str], tuple[Port, ...]] = field(default_factory=dict)
    router_networks: dict[RouterId, frozenset[NetworkId]] = field(default_factory=dict)

    @classmethod
    def build(cls, snapshot: Snapshot) -> "Index":
        by_address: dict[tuple[NetworkId, str], list[Port]] = {}
        router_networks: dict[RouterId, set[NetworkId]] = {}
        for port in sorted(snapshot.ports.values(), key=lambda p: p.id):
            for fixed in port.fixed_ips:
                by_address.setdefault((port.network_id, canonical_ip(fixed.ip_address)), []).append(port)
            try:
                by_address.setdefault((port.network_id, link_local_address(port.mac_address)), []).append(port)
            except IpamError:
                pass  # a MAC the API would not accept today: no link-local either
            if port.device_owner in ROUTER_INTERFACE_OWNERS and port.device_id:
                router_networks.setdefault(RouterId(port.device_id), set()).add(port.network_id)
        return cls(
            by_address={k: tuple(v) for k, v in by_address.items()},
            router_networks={k: frozenset(v) for k, v in router_networks.items()},
        )


def networks_for(snapshot: Snapshot, index: Index, kind: str, context_id: str) -> list[NetworkId]:
    """The networks a listener can hear guests on, in a stable order."""
    if kind == NETWORK:
        if NetworkId(context_id) not in snapshot.networks:
            raise UnknownContext(f"network {context_id} does not exist")
        return [NetworkId(context_id)]
    if kind == ROUTER:
        if RouterId(context_id) not in snapshot.routers:
            raise UnknownContext(f"router {context_id} does not exist")
        return sorted(index.router_networks.get(RouterId(context_id), frozenset()))
    raise UnknownContext(f"listener kind {kind!r} does not identify guests by address")


def resolve(
    snapshot: Snapshot,
    context_kind: str,
    context_id: str,
    ip: str,
    index: Index | None = None,
) -> tuple[Instance, Port]:
    """Return the one instance (and its port) at ``ip`` behind this listener."""
    index = index if index is not None else Index.build(snapshot)
    ip = canonical_ip(ip)  # idempotent; callers holding a raw peer address are safe too
    networks = networks_for(snapshot, index, context_kind, context_id)
    where = f"{context_kind} {context_id}"
    candidates: list[tuple[Instance, Port]] = []
    for network_id in networks:
        for port in index.by_address.get((network_id, ip), ()):
            instance = snapshot.instances.get(InstanceId(port.device_id))
            if instance is not None and instance.project_id == port.project_id:
                candidates.append((instance, port))
    if not candidates:
        if context_kind == ROUTER and not networks:
            raise InstanceNotFound(f"no instance at {ip}: router {context_id} has no interfaces")
        raise InstanceNotFound(f"no instance at {ip} on {where}")
    if len(candidates) > 1:
        ids = ", ".join(sorted(i.id for i, _ in candidates))
        raise AmbiguousInstance(f"{len(candidates)} instances hold {ip} on {where} ({ids}); refusing to guess")
    return candidates[0]
