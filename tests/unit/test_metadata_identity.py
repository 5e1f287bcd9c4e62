"""Identity resolution: (listener, source IP) → exactly one instance, or why not."""

from __future__ import annotations

import pytest

from netmeta.model.metadata.identity import AmbiguousInstance, Index, InstanceNotFound, UnknownContext, resolve
from tests.builders import NET_A, NET_B, NET_C, ROUTER, VM1, VM2, VM3, VM4, metadata_cloud

CASES = [
    # kind, id, ip, instance (or error type, message fragment)
    ("network", NET_A, "127.0.0.1", VM1),
    ("network", NET_B, "127.0.0.1", VM2),
    ("network", NET_A, "::ffff:127.0.0.1", VM1),
    ("network", NET_A, "192.168.50.10", VM1),
    ("network", NET_A, "192.168.50.77", VM4),
    ("network", NET_C, "10.0.3.5", VM3),
    ("router", ROUTER, "10.0.3.5", VM3),
    ("router", ROUTER, "192.168.50.10", VM1),
    ("router", ROUTER, "127.0.0.1", VM1),  # NET_B is not behind the router
    ("network", NET_A, "127.0.0.2", (InstanceNotFound, "no instance at 127.0.0.2 on network")),  # the DHCP port
    ("network", NET_A, "10.0.3.5", (InstanceNotFound, "no instance at 10.0.3.5")),
    ("network", NET_C, "10.0.3.77", (AmbiguousInstance, "2 instances hold 10.0.3.77")),
    ("router", ROUTER, "10.0.3.77", (AmbiguousInstance, "refusing to guess")),
    ("network", "nope", "127.0.0.1", (UnknownContext, "network nope does not exist")),
    ("router", "nope", "127.0.0.1", (UnknownContext, "router nope does not exist")),
    ("signed", "", "127.0.0.1", (UnknownContext, "does not identify guests by address")),
]


@pytest.mark.parametrize("kind, context_id, ip, expected", CASES)
def test_resolve(kind: str, context_id: str, ip: str, expected: object) -> None:
    snap = metadata_cloud()
    if isinstance(expected, tuple):
        error, fragment = expected
        with pytest.raises(error, match=fragment):
            resolve(snap, kind, context_id, ip)
        return
    instance, port = resolve(snap, kind, context_id, ip, Index.build(snap))
    assert instance.id == expected and port.device_id == expected
    assert any(f.ip_address == ip.removeprefix("::ffff:") for f in port.fixed_ips)


def test_router_without_interfaces_says_so() -> None:
    from dataclasses import replace

    from netmeta.model.types import Router, RouterId

    snap = metadata_cloud()
    lonely = RouterId("lonely")
    snap = replace(snap, routers={**snap.routers, lonely: Router(lonely, "r2")})
    with pytest.raises(InstanceNotFound, match="has no interfaces"):
        resolve(snap, "router", lonely, "127.0.0.1")


def _foreign_port_with_device_id(project: str) -> "tuple[object, str]":
    """World plus a port of ``project`` on NET_C carrying VM1's device_id."""
    from dataclasses import replace

    from netmeta.model.types import FixedIP, Port, PortId, SubnetId

    snap = metadata_cloud()
    thief = Port(PortId("pthief"), NET_C, "fa:16:3e:00:00:66", (FixedIP(SubnetId("sub-c"), "10.0.3.66"),),
                 device_id=VM1, device_owner="compute:nova", project_id=project)
    return replace(snap, ports={**snap.ports, thief.id: thief}), "10.0.3.66"


def test_a_port_of_another_project_naming_an_instance_is_an_unknown_guest() -> None:
    # Nova's check: the port's project must be the instance's. device_id is
    # free text any project may set on its own port.
    snap, ip = _foreign_port_with_device_id("proj-evil")
    with pytest.raises(InstanceNotFound, match=f"no instance at {ip} on network"):
        resolve(snap, "network", NET_C, ip)
    with pytest.raises(InstanceNotFound, match=f"no instance at {ip} on router"):
        resolve(snap, "router", ROUTER, ip)


def test_the_same_port_in_the_instances_project_is_served() -> None:
    snap, ip = _foreign_port_with_device_id("proj-1")
    instance, port = resolve(snap, "network", NET_C, ip)
    assert instance.id == VM1 and port.id == "pthief"
