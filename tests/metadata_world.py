"""A small, fixed cloud for metadata tests, built from the model types.

Two guests share the address 127.0.0.1 on different networks, so a test
talking over loopback can prove that the listener context, not the address
alone, decides whose metadata is served.
"""

from __future__ import annotations

import base64
from dataclasses import replace

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


def _subnet(sid: str, net: NetworkId, cidr: str, **kw: object) -> Subnet:
    return Subnet(id=SubnetId(sid), network_id=net, cidr=cidr, **kw)  # type: ignore[arg-type]


def world() -> Snapshot:
    subnets = [
        _subnet("sub-a-loop", NET_A, "127.0.0.0/8", enable_dhcp=True, dns_nameservers=("10.0.0.2",)),
        _subnet(
            "sub-a-static",
            NET_A,
            "192.168.50.0/24",
            enable_dhcp=False,
            gateway_ip="192.168.50.1",
            dns_nameservers=("10.0.0.2", "10.0.0.3"),
            host_routes=(HostRoute("172.16.0.0/16", "192.168.50.254"),),
        ),
        _subnet("sub-b-loop", NET_B, "127.0.0.0/8"),
        _subnet("sub-c", NET_C, "10.0.3.0/24", gateway_ip="10.0.3.1"),
        _subnet("sub-a-v6", NET_A, "fd00:1::/64", ip_version=6, enable_dhcp=False, gateway_ip="fd00:1::1"),
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
    return Snapshot(
        revision=7,
        networks={n.id: n for n in networks},
        subnets={s.id: s for s in subnets},
        ports={p.id: p for p in ports},
        routers={ROUTER: Router(ROUTER, "r1", "proj-1")},
        instances={i.id: i for i in instances},
    )


class MemoryPasswords:
    """A PasswordStore that remembers the first password per instance."""

    def __init__(self, preset: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(preset or {})

    async def set_password(self, instance_id: str, value: str) -> bool:
        if self.values.get(instance_id):
            return False
        self.values[instance_id] = value
        return True
