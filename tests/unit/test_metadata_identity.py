"""Identity resolution: (listener, source IP) → exactly one instance, or why not."""

from __future__ import annotations

import pytest

from netmeta.model.metadata.identity import AmbiguousInstance, Index, InstanceNotFound, UnknownContext, resolve
from tests.metadata_world import NET_A, NET_B, NET_C, ROUTER, VM1, VM2, VM3, VM4, world

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
    snap = world()
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

    snap = world()
    lonely = RouterId("lonely")
    snap = replace(snap, routers={**snap.routers, lonely: Router(lonely, "r2")})
    with pytest.raises(InstanceNotFound, match="has no interfaces"):
        resolve(snap, "router", lonely, "127.0.0.1")
