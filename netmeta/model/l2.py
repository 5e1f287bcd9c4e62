"""Layer 2 between hosts: which VXLAN device each bridge carries, with which entries.

Neutron's linuxbridge agent with ``[vxlan] enable_vxlan`` and
``l2_population`` puts, on the bridge of every VXLAN network a host has a
port on, a device ``vxlan-<vni>`` over the host's ``local_ip``, with
learning off and forwarding entries pushed by the l2population driver:

* per other host with a port on the network (by ``binding:host_id``), whose
  L2 agent reports a ``tunneling_ip``: one *flood* entry
  ``00:00:00:00:00:00 → that VTEP`` (broadcast, unknown unicast and
  multicast are copied to every one of them);
* per port bound to such a host: ``<port MAC> → its VTEP``.

Ports bound to this host, or not bound at all, need no entry: the bridge
learns them locally. This module decides that, purely, from the snapshot:
:func:`desired_vxlan` gives one :class:`VxlanSpec` per VXLAN network of
this host, which the agent makes exact (``agent/plan.py`` ``plan_vxlan``,
``drivers/vxlan.py``). Its VNI is the network's ``provider:segmentation_id``;
its MTU the network's ``mtu``, which the server has already lowered by
VXLAN's 50 bytes over IPv4 (Neutron's ``global_physnet_mtu`` − 50).

:func:`local_networks` says which networks get a bridge on this host at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from netmeta.model import names
from netmeta.model.types import Network, NetworkId, Snapshot

FLOOD_MAC = "00:00:00:00:00:00"
# IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14).
VXLAN_IPV4_OVERHEAD = 50


class L2Settings(Protocol):
    """Neutron's ``host`` and linuxbridge ``[vxlan]`` options, as model reads them."""

    @property
    def host(self) -> str: ...
    @property
    def local_ip(self) -> str: ...
    @property
    def udp_dstport(self) -> int: ...


@dataclass(frozen=True)
class VxlanSpec:
    """One network's VXLAN device in the fabric and its remote forwarding entries."""

    network_id: NetworkId
    device: str  # vxlan-<vni>
    vni: int
    local_ip: str
    bridge: str
    mtu: int
    port: int  # UDP destination port; 0: the kernel's default (8472)
    fdb: tuple[tuple[str, str], ...]  # sorted (MAC, remote VTEP), flood entries included


def vxlan_device(vni: int) -> str:
    """Neutron linuxbridge's name: ``vxlan-<vni>`` (at most 14 bytes for 24-bit VNIs)."""
    return f"vxlan-{vni}"


def is_vxlan(network: Network) -> bool:
    return network.network_type == "vxlan" and network.segmentation_id is not None


def local_networks(snapshot: Snapshot, host: str) -> list[NetworkId]:
    """The networks whose bridge this host keeps, sorted.

    With no agents registered (one host, as before issue 13) every network.
    Otherwise, as in Neutron, a host builds a network's bridge only where it
    has a port: one bound to it, or an unbound one (which any host may be
    about to plug). A network with no port at all is built nowhere — the
    DHCP port the scheduler binds with the first subnet, or a guest's port
    (``vm boot`` binds it to its host and waits for the bridge), brings it
    where it is needed, instead of every host building it and all but one
    removing it again moments later.
    """
    if not snapshot.agents:
        return sorted(snapshot.networks)
    out = []
    for net_id in sorted(snapshot.networks):
        if any(p.binding_host_id in (host, "") for p in snapshot.ports_of(net_id)):
            out.append(net_id)
    return out


def remote_entries(snapshot: Snapshot, network_id: NetworkId, host: str, local_ip: str) -> tuple[tuple[str, str], ...]:
    """l2population's entries for one network as seen from ``host``: flood per VTEP, then per-port MACs."""
    endpoints = snapshot.tunnel_endpoints()
    vteps: dict[str, str] = {}
    for other in snapshot.hosts_with_ports(network_id):
        ip = endpoints.get(other)
        if other and other != host and ip and ip != local_ip:
            vteps[other] = ip
    entries = {(FLOOD_MAC, ip) for ip in vteps.values()}
    for port in snapshot.ports_of(network_id):
        ip = vteps.get(port.binding_host_id)
        if ip is not None:
            entries.add((port.mac_address.lower(), ip))
    return tuple(sorted(entries))


def desired_vxlan(snapshot: Snapshot, settings: L2Settings) -> dict[NetworkId, VxlanSpec]:
    """One spec per VXLAN network this host keeps a bridge for; none without a ``local_ip``."""
    if not settings.local_ip:
        return {}
    out: dict[NetworkId, VxlanSpec] = {}
    for net_id in local_networks(snapshot, settings.host):
        network = snapshot.networks[net_id]
        if not is_vxlan(network):
            continue
        vni = int(network.segmentation_id or 0)
        out[net_id] = VxlanSpec(
            network_id=net_id,
            device=vxlan_device(vni),
            vni=vni,
            local_ip=settings.local_ip,
            bridge=names.bridge_name(net_id),
            mtu=network.mtu,
            port=settings.udp_dstport,
            fdb=remote_entries(snapshot, net_id, settings.host, settings.local_ip),
        )
    return out
