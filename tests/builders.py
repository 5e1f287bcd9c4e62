"""Snapshot builders shared by every test tier: one way to write a world.

``subnet``, ``port``, ``world`` build model values field by field; the
``*_port_at`` helpers give the owners the data plane cares about;
``tenant_network`` builds a whole DHCP-served network (network, subnet,
DHCP port) the way the API server would, and ``attach`` plugs a router in.
``metadata_cloud`` is the fixed cloud of the metadata tests (with
``MemoryPasswords``, their password store).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from netmeta.model.types import (
    FixedIP,
    HostRoute,
    Instance,
    InstanceId,
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


# --- the metadata tests' cloud ----------------------------------------------------

NET_A = NetworkId("aaaaaaaa-0000-4000-8000-000000000001")
NET_B = NetworkId("bbbbbbbb-0000-4000-8000-000000000002")
NET_C = NetworkId("cccccccc-0000-4000-8000-000000000003")
ROUTER = RouterId("eeeeeeee-0000-4000-8000-00000000000e")
VM1 = InstanceId("1b2c3d4e-1111-4111-8111-111111111111")
VM2 = InstanceId("2b2c3d4e-2222-4222-8222-222222222222")
VM3 = InstanceId("3b2c3d4e-3333-4333-8333-333333333333")
VM4 = InstanceId("4b2c3d4e-4444-4444-8444-444444444444")
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx7c0n3Xn0UHcfT3a3pQn4bQ7wWg0pU3fVlq0hNcR4a test@netmeta"
USER_DATA = b"#cloud-config\nhostname: vm1\nruncmd:\n  - echo hello\n"


def metadata_cloud() -> Snapshot:
    """A small, fixed cloud for metadata tests.

    Two guests share the address 127.0.0.1 on different networks, so a test
    talking over loopback can prove that the listener context, not the address
    alone, decides whose metadata is served.
    """
    subnets = [
        subnet("sub-a-loop", NET_A, "127.0.0.0/8", enable_dhcp=True, dns_nameservers=("10.0.0.2",)),
        subnet(
            "sub-a-static",
            NET_A,
            "192.168.50.0/24",
            enable_dhcp=False,
            gateway_ip="192.168.50.1",
            dns_nameservers=("10.0.0.2", "10.0.0.3"),
            host_routes=(HostRoute("172.16.0.0/16", "192.168.50.254"),),
        ),
        subnet("sub-b-loop", NET_B, "127.0.0.0/8"),
        subnet("sub-c", NET_C, "10.0.3.0/24", gateway_ip="10.0.3.1"),
        subnet("sub-a-v6", NET_A, "fd00:1::/64", ip_version=6, enable_dhcp=False, gateway_ip="fd00:1::1"),
    ]
    ports = [
        Port(
            PortId("p1aaaaaaaaaa-1111"),
            NET_A,
            "fa:16:3e:00:00:01",
            (FixedIP(SubnetId("sub-a-loop"), "127.0.0.1"),),
            device_id=VM1,
            device_owner="compute:nova",
        ),
        Port(
            PortId("p1bbbbbbbbbb-1112"),
            NET_A,
            "fa:16:3e:00:00:11",
            (FixedIP(SubnetId("sub-a-static"), "192.168.50.10"), FixedIP(SubnetId("sub-a-v6"), "fd00:1::10")),
            device_id=VM1,
            device_owner="compute:nova",
        ),
        Port(
            PortId("p2aaaaaaaaaa-2222"),
            NET_B,
            "fa:16:3e:00:00:02",
            (FixedIP(SubnetId("sub-b-loop"), "127.0.0.1"),),
            device_id=VM2,
            device_owner="compute:nova",
        ),
        Port(PortId("pdhcp-a"), NET_A, "fa:16:3e:00:00:0d", (FixedIP(SubnetId("sub-a-loop"), "127.0.0.2"),), device_id="dhcp-a", device_owner="network:dhcp"),
        Port(PortId("p3aaaaaaaaaa-3333"), NET_C, "fa:16:3e:00:00:03", (FixedIP(SubnetId("sub-c"), "10.0.3.5"),), device_id=VM3, device_owner="compute:nova"),
        # VM4 holds 127.0.0.5 on NET_C; VM1's network also... see ambiguity below.
        Port(PortId("p4aaaaaaaaaa-4444"), NET_C, "fa:16:3e:00:00:04", (FixedIP(SubnetId("sub-c"), "10.0.3.9"),), device_id=VM4, device_owner="compute:nova"),
        # Router interfaces on NET_A and NET_C.
        Port(PortId("pr-a"), NET_A, "fa:16:3e:00:00:a1", (FixedIP(SubnetId("sub-a-static"), "192.168.50.1"),), device_id=ROUTER, device_owner="network:router_interface"),
        Port(PortId("pr-c"), NET_C, "fa:16:3e:00:00:c1", (FixedIP(SubnetId("sub-c"), "10.0.3.1"),), device_id=ROUTER, device_owner="network:router_interface"),
        # A second port at 192.168.50.10 (NET_C side can't; put a stray on NET_A owned by VM3)
        Port(PortId("p3bbbbbbbbbb-3334"), NET_C, "fa:16:3e:00:00:33", (FixedIP(SubnetId("sub-c"), "10.0.3.77"),), device_id=VM3, device_owner="compute:nova"),
        Port(PortId("p4bbbbbbbbbb-4445"), NET_A, "fa:16:3e:00:00:44", (FixedIP(SubnetId("sub-a-static"), "192.168.50.77"),), device_id=VM4, device_owner="compute:nova"),
        Port(PortId("p1cccccccccc-1113"), NET_C, "fa:16:3e:00:00:13", (FixedIP(SubnetId("sub-c"), "10.0.3.77"),), device_id=VM1, device_owner="compute:nova"),
    ]
    instances = [
        Instance(
            VM1,
            "vm1",
            "vm1",
            "proj-1",
            availability_zone="nova",
            flavor="m1.small",
            user_data=base64.b64encode(USER_DATA).decode(),
            key_name="mykey",
            public_key=PUBKEY,
            meta={"role": "web"},
            launch_index=0,
            created_at="2025-01-02T03:04:05Z",
        ),
        Instance(VM2, "vm2", "vm2", "proj-2", availability_zone="az2", flavor="m1.tiny"),
        Instance(VM3, "vm3", "vm3", "proj-1"),
        Instance(VM4, "vm4", "vm4", "proj-1", password="already-set"),
    ]
    networks = [
        Network(NET_A, "net-a", "proj-1", mtu=1450),
        Network(NET_B, "net-b", "proj-2"),
        Network(NET_C, "net-c", "proj-1"),
    ]
    # An instance's ports are created in its project (the server does the same).
    owners = {i.id: i.project_id for i in instances}
    ports = [replace(p, project_id=owners.get(InstanceId(p.device_id), "proj-1")) for p in ports]
    return world(networks, subnets, ports, [Router(ROUTER, "r1", "proj-1")], instances, revision=7)


class MemoryPasswords:
    """A PasswordStore that remembers the first password per instance."""

    def __init__(self, preset: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(preset or {})

    async def set_password(self, instance_id: str, value: str) -> bool:
        if self.values.get(instance_id):
            return False
        self.values[instance_id] = value
        return True
