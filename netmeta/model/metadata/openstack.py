"""The OpenStack metadata tree (``/openstack/...``), as Nova serves it.

Versions are dates; ``latest`` is the newest. Each file appears only from the
version that introduced it, because guests pick a version from the listing and
then expect exactly that version's files (cloud-init picks the newest it knows
among 2012-08-10 … 2018-08-27). The gating below follows Nova's
``InstanceMetadata._handle_version`` and ``_metadata_as_json``:

========================  ==========
file / field              from
========================  ==========
meta_data.json            2012-08-10
password, random_seed     2013-04-04
vendor_data.json          2013-10-17
network_data.json,        2015-10-15
  project_id
devices                   2016-06-30
vendor_data2.json         2016-10-06
dedicated_cpus            2020-10-14
========================  ==========

``network_data.json`` is only *listed* from 2015-10-15: Nova answers it in
every version (its handler has no version check), and so does netmeta.

``random_seed`` must be fresh on every request, so randomness is a parameter:
the caller passes 512 random bytes and tests pass fixed ones.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any, Sequence

from netmeta.model.metadata.tree import JSON, TEXT, InstanceData, Leaf, PathNotFound, VersionSet, listing

FOLSOM = "2012-08-10"
GRIZZLY = "2013-04-04"
HAVANA = "2013-10-17"
LIBERTY = "2015-10-15"
NEWTON_ONE = "2016-06-30"
NEWTON_TWO = "2016-10-06"
OCATA = "2017-02-22"
ROCKY = "2018-08-27"
VICTORIA = "2020-10-14"
EPOXY = "2025-04-04"
VERSIONS = (FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY, VICTORIA, EPOXY)

MD_JSON = "meta_data.json"
USER_DATA = "user_data"
PASSWORD = "password"
VD_JSON = "vendor_data.json"
NW_JSON = "network_data.json"
VD2_JSON = "vendor_data2.json"

# The password file is not a static value: GET reads and POST writes it.
PASSWORD_HANDLER = "password-handler"


OPENSTACK_VERSIONS = VersionSet(VERSIONS, "/openstack", "OpenStack")


def at_least(required: str, version: str) -> bool:
    """Version strings are ISO dates, so string order is date order."""
    return version >= required


def files(data: InstanceData, version: str) -> list[str]:
    """What ``/openstack/<version>/`` lists, in Nova's order."""
    out = [MD_JSON]
    if data.user_data is not None:
        out.append(USER_DATA)
    if at_least(GRIZZLY, version):
        out.append(PASSWORD)
    if at_least(HAVANA, version):
        out.append(VD_JSON)
    if at_least(LIBERTY, version):
        out.append(NW_JSON)
    if at_least(NEWTON_TWO, version):
        out.append(VD2_JSON)
    return out


def meta_data(data: InstanceData, version: str, random_bytes: bytes) -> dict[str, Any]:
    """``meta_data.json`` with Nova's keys, in Nova's order."""
    inst = data.instance
    md: dict[str, Any] = {"uuid": inst.id}
    if inst.meta:
        md["meta"] = dict(inst.meta)
    if inst.key_name and inst.public_key:
        md["public_keys"] = {inst.key_name: inst.public_key}
        md["keys"] = [{"name": inst.key_name, "type": "ssh", "data": inst.public_key}]
    md["hostname"] = data.hostname
    md["name"] = inst.name
    md["launch_index"] = inst.launch_index
    md["availability_zone"] = inst.availability_zone
    if at_least(GRIZZLY, version):
        md["random_seed"] = base64.b64encode(random_bytes).decode()
    if at_least(LIBERTY, version):
        md["project_id"] = inst.project_id
    if at_least(NEWTON_ONE, version):
        # netmeta guests have no tagged devices to describe.
        md["devices"] = []
    if at_least(VICTORIA, version):
        md["dedicated_cpus"] = []
    return md


def _port_subnets(data: InstanceData, port: Any) -> list[tuple[Any, list[str]]]:
    """The subnets a port has addresses on, by subnet id, each with its addresses in the port's order.

    This is the order Nova's network model has them in: it asks Neutron for
    the port's subnets by id and Neutron lists them by primary key.
    """
    out: list[tuple[Any, list[str]]] = []
    for subnet_id in sorted({f.subnet_id for f in port.fixed_ips}):
        subnet = data.subnets.get(subnet_id)
        if subnet is not None:
            out.append((subnet, [f.ip_address for f in port.fixed_ips if f.subnet_id == subnet_id]))
    return out


def _dhcp_served(data: InstanceData, subnet: Any) -> bool:
    """Nova sees a DHCP server on a subnet when Neutron says DHCP is on, or a DHCP port holds an address there."""
    return bool(subnet.enable_dhcp) or subnet.id in data.dhcp_subnets


def network_data(data: InstanceData) -> dict[str, Any]:
    """``network_data.json``, Nova's ``get_network_metadata``.

    One link per port that has an address (``tap<port[:11]>``, Nova's device
    name), in attach order. Per port, the first IPv4 and the first IPv6 subnet by
    subnet id (see :func:`_port_subnets`), each with the port's first address
    there. A subnet with an ``ipv6_address_mode`` is ``ipv6_slaac``,
    ``ipv6_dhcpv6-stateful`` or ``ipv6_dhcpv6-stateless`` with its address,
    netmask, routes and services spelled out; otherwise a DHCP subnet is
    ``ipv4_dhcp``/``ipv6_dhcp`` alone, and any other is ``ipv4``/``ipv6``
    in full. Unlike Nova, ``mtu`` is the network's MTU even on DHCP networks:
    the value is known and harmless, and Nova's ``null`` only reflects that it
    lets DHCP carry it.
    """
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    net_num = 0
    for port in data.ports:
        network = data.networks.get(port.network_id)
        subnets = _port_subnets(data, port)
        first: dict[int, tuple[Any, list[str]]] = {}
        for subnet, ips in subnets:
            first.setdefault(subnet.ip_version, (subnet, ips))
        if not first:
            continue
        link_id = f"tap{port.id[:11]}"
        links.append(
            {
                "id": link_id,
                "vif_id": port.id,
                "type": "bridge",  # netmeta plugs guests into Linux bridges
                "mtu": network.mtu if network else None,
                "ethernet_mac_address": port.mac_address,
            }
        )
        for version in (4, 6):
            if version not in first:
                continue
            subnet, ips = first[version]
            dns = [{"type": "dns", "address": ip} for ip in subnet.dns_nameservers]
            services.extend(d for d in dns if d not in services)
            entry: dict[str, Any] = {"id": f"network{net_num}"}
            net_num += 1
            mode = subnet.ipv6_address_mode if version == 6 else None
            if not mode and _dhcp_served(data, subnet):
                entry.update({"type": f"ipv{version}_dhcp", "link": link_id, "network_id": port.network_id})
                networks.append(entry)
                continue
            net = ipaddress.ip_network(subnet.cidr, strict=False)
            routes: list[dict[str, str]] = []
            if subnet.gateway_ip:
                zero = "0.0.0.0" if version == 4 else "::"
                routes.append({"network": zero, "netmask": zero, "gateway": subnet.gateway_ip})
            for route in subnet.host_routes:
                dest = ipaddress.ip_network(route.destination, strict=False)
                routes.append(
                    {"network": str(dest.network_address), "netmask": str(dest.netmask), "gateway": route.nexthop}
                )
            entry.update(
                {
                    "type": f"ipv{version}_{mode}" if mode else f"ipv{version}",
                    "link": link_id,
                    "ip_address": ips[0],
                    "netmask": str(net.netmask),
                    "routes": routes,
                    "network_id": port.network_id,
                    "services": dns,
                }
            )
            networks.append(entry)
    return {"links": links, "networks": networks, "services": services}


# Stands in for random_seed while the rest of meta_data.json is serialized once.
_SEED_SLOT = "\x00random-seed\x00"


class MetaDataTemplate:
    """``meta_data.json`` serialized once, with a slot for the per-request seed.

    Everything but ``random_seed`` is fixed for an instance and version, and
    JSON-encoding the document was most of the cost of serving it; so it is
    encoded once and each answer only splices in fresh base64.
    """

    __slots__ = ("head", "tail")

    def __init__(self, data: InstanceData, version: str) -> None:
        md = meta_data(data, version, b"")
        if "random_seed" not in md:  # versions before 2013-04-04
            self.head, self.tail = json.dumps(md).encode(), b""
            return
        md["random_seed"] = _SEED_SLOT
        head, _, tail = json.dumps(md).encode().partition(json.dumps(_SEED_SLOT).encode())
        self.head, self.tail = head + b'"', b'"' + tail

    def render(self, random_bytes: bytes) -> bytes:
        if not self.tail:
            return self.head
        return b"".join((self.head, binascii.b2a_base64(random_bytes, newline=False), self.tail))


def meta_data_template(data: InstanceData, version_token: str) -> MetaDataTemplate:
    """The template for ``/openstack/<version_token>/meta_data.json``."""
    return MetaDataTemplate(data, OPENSTACK_VERSIONS.resolve(version_token))


def _json(value: Any, content_type: str = JSON) -> Leaf:
    return Leaf(json.dumps(value).encode(), content_type)


def lookup(data: InstanceData, tokens: Sequence[str], random_bytes: bytes) -> Leaf | str:
    """Answer ``/openstack/<tokens...>``; ``tokens`` excludes ``openstack``.

    Returns :data:`PASSWORD_HANDLER` for the password file, whose answer
    depends on the method and on state the pure tree does not hold.
    """
    if not tokens:
        return OPENSTACK_VERSIONS.listing()
    version = OPENSTACK_VERSIONS.resolve(tokens[0])
    if len(tokens) == 1:
        return listing(files(data, version))
    name = "/".join(tokens[1:])
    path = "/openstack/" + "/".join(tokens)
    if name == NW_JSON:
        # Listed from 2015-10-15, but Nova answers it in every version.
        return _json(network_data(data), TEXT)
    if name not in files(data, version):
        if name in (MD_JSON, USER_DATA, PASSWORD, VD_JSON, NW_JSON, VD2_JSON):
            why = "this instance has no user data" if name == USER_DATA else f"not in version {tokens[0]}"
            raise PathNotFound(path, why)
        raise PathNotFound(path, f"no file {name!r} in /openstack/{tokens[0]}/")
    if name == MD_JSON:
        return Leaf(MetaDataTemplate(data, version).render(random_bytes), JSON)
    if name == USER_DATA:
        return Leaf(data.user_data or b"", TEXT)
    if name == PASSWORD:
        return PASSWORD_HANDLER
    if name == VD_JSON:
        return _json(dict(data.vendordata))
    if name == NW_JSON:
        return _json(network_data(data), TEXT)
    return _json({"static": dict(data.vendordata)})
