"""Kernel object names, spelled the way Neutron spells them.

Operators debug netmeta with the commands they already know
(``ip netns exec qdhcp-<net> ip a``), so every namespace, device and bridge
carries Neutron's name. Linux limits interface names to 15 characters
(``IFNAMSIZ`` - 1); Neutron keeps 14 (``DEV_NAME_LEN``), which is why the
device names below take only the first 11 characters of a port or network id
after a three-character prefix.
"""

from __future__ import annotations

DHCP_NS_PREFIX = "qdhcp-"
ROUTER_NS_PREFIX = "qrouter-"
TAP_PREFIX = "tap"
ROUTER_PORT_PREFIX = "qr-"
BRIDGE_PREFIX = "brq"
# Neutron's DEV_NAME_LEN (14) = prefix (3) + 11 characters of the id.
ID_CHARS = 11


def _device(prefix: str, ident: str) -> str:
    return prefix + ident[:ID_CHARS]


def dhcp_namespace(network_id: str) -> str:
    """``qdhcp-<network_id>``: the namespace holding a network's DHCP tap."""
    return DHCP_NS_PREFIX + network_id


def router_namespace(router_id: str) -> str:
    """``qrouter-<router_id>``: the namespace holding a router's qr- ports."""
    return ROUTER_NS_PREFIX + router_id


def tap_name(port_id: str) -> str:
    """``tap<port_id[:11]>``: the DHCP port's device inside qdhcp."""
    return _device(TAP_PREFIX, port_id)


def router_port_name(port_id: str) -> str:
    """``qr-<port_id[:11]>``: a router interface inside qrouter.

    The ``qr-+`` wildcard in the router's iptables rules matches exactly these.
    """
    return _device(ROUTER_PORT_PREFIX, port_id)


def bridge_name(network_id: str) -> str:
    """``brq<network_id[:11]>``: the Linux bridge of a tenant network."""
    return _device(BRIDGE_PREFIX, network_id)


# --- netmeta's own devices: the fabric-side ends of veth pairs, and guests ---
# Each veth has one end in a qdhcp/qrouter/guest namespace and one on the
# network's bridge in the fabric namespace. The fabric ends are named for the
# side they lead to, so `ip -n <fabric> link` reads like a patch panel.
DHCP_OUTER_PREFIX = "d-"
ROUTER_OUTER_PREFIX = "r-"
GUEST_OUTER_PREFIX = "g-"
GUEST_NS_PREFIX = "vm-"


def dhcp_outer_name(port_id: str) -> str:
    """``d-<port_id[:11]>``: the bridge side of a DHCP tap."""
    return _device(DHCP_OUTER_PREFIX, port_id[:11])


def router_outer_name(port_id: str) -> str:
    """``r-<port_id[:11]>``: the bridge side of a qr- device."""
    return _device(ROUTER_OUTER_PREFIX, port_id[:11])


def guest_outer_name(port_id: str) -> str:
    """``g-<port_id[:11]>``: the bridge side of a guest's eth0."""
    return _device(GUEST_OUTER_PREFIX, port_id[:11])


def guest_namespace(name: str, instance_id: str) -> str:
    """``vm-<name>-<instance_id[:8]>``: a test guest; the id keeps two hosts' vm1 apart."""
    return f"{GUEST_NS_PREFIX}{name}-{instance_id[:8]}"

