"""The network's DHCP port: kept in step with its subnets, made again when deleted.

Neutron's DHCP agent creates this port; netmeta's server does it in the same
transaction as the change that calls for it: a network with at least one
DHCP-enabled subnet has exactly one ``network:dhcp`` port holding one
address on each such subnet (on a SLAAC or DHCPv6-stateless subnet, the
EUI-64 address of its MAC, as Neutron's DHCP port gets). Networks (subnet create, update, delete) and
ports (deleting the DHCP port directly, which Neutron allows) both build on
this module, and it builds on :func:`netmeta.server.ports.new_port` — so the
two resource modules no longer import each other.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from netmeta.model import ipam
from netmeta.model.types import AGENT_DHCP, DEVICE_OWNER_DHCP
from netmeta.server import addresses, ports, scheduling
from netmeta.server.ports import RandBytes, new_port
from netmeta.server.standard_attrs import create, get_or_404, new_id, save
from netmeta.store.database import Txn

# Neutron names the DHCP port's device "dhcp<host uuid>-<network id>", the host
# uuid being uuid5(NAMESPACE_DNS, the agent's short host name). A port made
# before any DHCP agent registered (one host, no agents) uses a stable uuid
# for "this netmeta", so restarts keep the same name.
DHCP_HOST_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "dhcp.netmeta"))


def dhcp_device_id(network_id: str, host: str = "") -> str:
    """Neutron's ``get_dhcp_agent_device_id``; without a host, netmeta's single-host name."""
    if not host:
        return f"dhcp{DHCP_HOST_UUID}-{network_id}"
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host.split('.')[0])}-{network_id}"


def sync_dhcp_port(txn: Txn, network: dict[str, Any], randbytes: RandBytes, *, schedule: bool = True) -> None:
    """Make the network's DHCP ports match its DHCP-enabled subnets (IPv4 first) and its DHCP agents.

    One port per DHCP agent bound to the network (:mod:`.scheduling`), or a
    single unbound one while no DHCP agent has ever registered. A port whose
    agent left is handed to an agent that has none yet, addresses and all.
    ``schedule=False`` only follows the bindings (an admin just removed one).
    """
    wanted = sorted((s for s in txn.select("subnets", network_id=network["id"]) if s["enable_dhcp"]),
                    key=lambda s: s["ip_version"])
    existing = [p for p in txn.select("ports", network_id=network["id"]) if p["device_owner"] == DEVICE_OWNER_DHCP]
    if not wanted:
        for old in existing:
            txn.remove("ports", old)
        return
    if scheduling.agents_of(txn, AGENT_DHCP):
        if schedule:
            scheduling.schedule_network(txn, network["id"])
        targets = [(dhcp_device_id(network["id"], b["host"]), b["host"])
                   for b in scheduling.network_bindings(txn, network["id"])]
    else:
        targets = [(dhcp_device_id(network["id"]), "")]
    by_device = {p["device_id"]: p for p in existing}
    spare = [p for p in existing if p["device_id"] not in {d for d, _ in targets}]
    spare.sort(key=lambda p: (bool(p.get("binding:host_id")), p["id"]))  # unbound ones are adopted first
    wanted_ids = [s["id"] for s in wanted]
    for device_id, host in targets:
        port: dict[str, Any] | None = by_device.get(device_id)
        if port is None and spare:
            port = spare.pop(0)
        if port is None:
            port_id = new_id()
            obj = new_port(port_id, network, txn.now, randbytes)
            obj.update({"device_owner": DEVICE_OWNER_DHCP, "device_id": device_id, "binding:host_id": host,
                        "fixed_ips": _dhcp_addresses(txn, port_id, wanted, [], obj["mac_address"])})
            create(txn, "ports", obj)
            continue
        kept = [f for f in port["fixed_ips"] if f["subnet_id"] in wanted_ids]
        for gone in port["fixed_ips"]:
            if gone not in kept:
                txn.release(port["id"], gone["subnet_id"], gone["ip_address"])
        fixed = _dhcp_addresses(txn, port["id"], wanted, kept, port["mac_address"])
        if (fixed, device_id, host) != (port["fixed_ips"], port["device_id"], port.get("binding:host_id", "")):
            port.update({"fixed_ips": fixed, "device_id": device_id, "binding:host_id": host})
            save(txn, "ports", port)
    for extra in spare:
        txn.remove("ports", extra)


def _dhcp_addresses(
    txn: Txn, port_id: str, wanted: list[dict[str, Any]], kept: list[dict[str, str]], mac: str
) -> list[dict[str, str]]:
    have = {f["subnet_id"]: f for f in kept}
    out: list[dict[str, str]] = []
    for subnet in wanted:
        if subnet["id"] in have:
            out.append(have[subnet["id"]])
            continue
        if addresses.is_auto(subnet):
            eui64 = ipam.eui64_address(subnet["cidr"], mac)
            out.append({"subnet_id": subnet["id"], "ip_address": addresses.claim_exact(txn, subnet, port_id, eui64)})
            continue
        ip = addresses.allocate_next(txn, subnet, port_id)
        if ip is None:
            raise addresses.exhausted(subnet["id"])
        out.append({"subnet_id": subnet["id"], "ip_address": ip})
    return out


def delete_port(txn: Txn, port_id: str) -> None:
    """The port API's delete: the network still wants a DHCP port, so a fresh one follows.

    That is what Neutron's DHCP agent would do a moment later.
    """
    obj = get_or_404(txn, "ports", port_id)
    ports.delete_port(txn, port_id)
    if obj["device_owner"] == DEVICE_OWNER_DHCP:
        sync_dhcp_port(txn, get_or_404(txn, "networks", obj["network_id"]), random.randbytes)
