"""Snapshot builders shared by every test tier: one way to write a world.

``subnet``, ``port``, ``world`` build model values field by field; the
``*_port_at`` helpers give the owners the data plane cares about;
``tenant_network`` builds a whole DHCP-served network (network, subnet,
DHCP port) the way the API server would, and ``attach`` plugs a router in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from netmeta.model.types import (
    FixedIP,
    Instance,
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


def subnet(id: str, network_id: str, cidr: str, gateway_ip: str | None = None, **kw: Any) -> Subnet:
    return Subnet(id=SubnetId(id), network_id=NetworkId(network_id), cidr=cidr, gateway_ip=gateway_ip, **kw)


def port(
    id: str, network_id: str, ips: Iterable[tuple[str, str]] = (), *, mac: str = "fa:16:3e:00:00:01",
    owner: str = "", device_id: str = "", **kw: Any,
) -> Port:
    return Port(
        id=PortId(id),
        network_id=NetworkId(network_id),
        mac_address=mac,
        fixed_ips=tuple(FixedIP(SubnetId(s), ip) for s, ip in ips),
        device_owner=owner,
        device_id=device_id,
        **kw,
    )


def dhcp_port_at(id: str, network_id: str, subnet_id: str, ip: str, mac: str = "fa:16:3e:dd:dd:dd") -> Port:
    return port(id, network_id, [(subnet_id, ip)], mac=mac, owner="network:dhcp", device_id=f"dhcp-{network_id}")


def router_port_at(
    id: str, network_id: str, subnet_id: str, ip: str, router_id: str, *,
    mac: str = "fa:16:3e:aa:aa:01", owner: str = "network:router_interface",
) -> Port:
    return port(id, network_id, [(subnet_id, ip)], mac=mac, owner=owner, device_id=router_id)


def world(
    networks: Iterable[Network] = (),
    subnets: Iterable[Subnet] = (),
    ports: Iterable[Port] = (),
    routers: Iterable[Router] = (),
    instances: Iterable[Instance] = (),
    revision: int = 1,
) -> Snapshot:
    return Snapshot(
        revision=revision,
        networks={n.id: n for n in networks},
        subnets={s.id: s for s in subnets},
        ports={p.id: p for p in ports},
        routers={r.id: r for r in routers},
        instances={i.id: i for i in instances},
    )


def merge(*snapshots: Snapshot, revision: int | None = None) -> Snapshot:
    """One snapshot holding every object of the given ones."""
    out = Snapshot(revision=revision if revision is not None else max((s.revision for s in snapshots), default=1))
    for snap in snapshots:
        out = dataclasses.replace(
            out,
            networks={**out.networks, **snap.networks},
            subnets={**out.subnets, **snap.subnets},
            ports={**out.ports, **snap.ports},
            routers={**out.routers, **snap.routers},
            instances={**out.instances, **snap.instances},
        )
    return out


def tenant_network(n: int, *, mtu: int = 1500, revision: int = 1) -> Snapshot:
    """Network ``net<n>`` with subnet ``10.<n>.0.0/24`` (gateway .1) and its DHCP port at .2."""
    net, sub = f"net{n}", f"sub{n}"
    return world(
        networks=[Network(NetworkId(net), net, "p", mtu=mtu)],
        subnets=[subnet(sub, net, f"10.{n}.0.0/24", gateway_ip=f"10.{n}.0.1")],
        ports=[dhcp_port_at(f"dhcp{n}", net, sub, f"10.{n}.0.2", mac=f"fa:16:3e:dd:00:{n:02x}")],
        revision=revision,
    )


def attach(snapshot: Snapshot, n: int, router_id: str = "r1", *, revision: int | None = None) -> Snapshot:
    """``snapshot`` with router ``router_id`` holding net<n>'s gateway (10.<n>.0.1)."""
    router = world(
        ports=[router_port_at(f"rp{n}", f"net{n}", f"sub{n}", f"10.{n}.0.1", router_id, mac=f"fa:16:3e:aa:00:{n:02x}")],
        routers=[Router(RouterId(router_id), router_id)],
    )
    return merge(snapshot, router, revision=revision if revision is not None else snapshot.revision + 1)
