"""Which metadata listeners this host should have: pure, one decision each.

A listener lives in a namespace the agent makes, so the same predicates
decide both: :func:`netmeta.model.dhcp.has_qdhcp` (the agent makes
``qdhcp-<net>``) with :func:`netmeta.model.dhcp.dhcp_listener_wanted` (the
behaviour table's qdhcp column), and :func:`netmeta.model.l3.has_qrouter`
with ``enable_metadata_proxy`` (its qrouter column). The agent's specs carry
the same answers (``DhcpNetworkSpec.listener_wanted``,
``RouterSpec.listener_wanted``); the metadata process opens exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmeta.model import names
from netmeta.model.settings import DataPlaneSettings
from netmeta.model.dhcp import dhcp_listener_wanted, dhcp_port, has_qdhcp
from netmeta.model.l3 import has_qrouter
from netmeta.model.types import METADATA_IPV4, METADATA_IPV6, Snapshot


NETWORK, ROUTER = "network", "router"
# The key of a qdhcp's second, IPv6 listener (its guests are still the
# network's: the listener's kind stays NETWORK).
NETWORK_V6 = "network-v6"
# Guests reach a qdhcp listener directly at 169.254.169.254:80 (and IPv6
# guests at [fe80::a9fe:a9fe%tap]:80); a qrouter one behind the REDIRECT to
# metadata_port, on any address of the namespace: "::" is one dual-stack
# socket (Neutron's haproxy binds :::9697), IPv4 guests appear IPv4-mapped.
DHCP_PORT = 80
ROUTER_HOST = "::"


@dataclass(frozen=True)
class Listener:
    kind: str  # NETWORK or ROUTER: whose guests it hears
    id: str  # the network's or the router's id
    namespace: str
    host: str
    port: int
    # The device a link-local ``host`` is scoped to (the qdhcp tap); "" otherwise.
    device: str = ""


def desired_listeners(snapshot: Snapshot, config: DataPlaneSettings) -> dict[tuple[str, str], Listener]:
    """Every listener the snapshot asks for, keyed by (kind, id)."""
    wanted: dict[tuple[str, str], Listener] = {}
    for net_id in sorted(snapshot.networks):
        if has_qdhcp(snapshot, net_id) and dhcp_listener_wanted(snapshot, net_id, config):
            namespace = names.dhcp_namespace(net_id)
            wanted[(NETWORK, net_id)] = Listener(NETWORK, net_id, namespace, METADATA_IPV4, DHCP_PORT)
            port = dhcp_port(snapshot, net_id)
            # Neutron's need_ipv6_metadata: any IPv6 subnet puts fe80::a9fe:a9fe/128 on the tap.
            if port is not None and any(s.ip_version == 6 for s in snapshot.subnets_of(net_id)):
                wanted[(NETWORK_V6, net_id)] = Listener(NETWORK, net_id, namespace, METADATA_IPV6, DHCP_PORT,
                                                        device=names.tap_name(port.id))
    if config.enable_metadata_proxy:
        for router_id in sorted(snapshot.routers):
            if has_qrouter(snapshot, router_id):
                wanted[(ROUTER, router_id)] = Listener(
                    ROUTER, router_id, names.router_namespace(router_id), ROUTER_HOST, config.metadata_port
                )
    return wanted
