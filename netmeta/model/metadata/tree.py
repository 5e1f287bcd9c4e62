"""Rules shared by both metadata trees: paths, listings, leaves, not-found.

Nova normalises every path with ``posixpath.normpath`` (so a trailing slash
and ``//`` or ``/./`` are ignored), sends ``/`` to the EC2 version list, and
treats any first segment other than ``openstack`` or ``ec2`` as EC2. Listings
are sorted keys, sub-trees as ``key/``, joined by ``\\n`` with no trailing
newline. Those rules live here once so the two trees cannot drift apart.

:class:`InstanceData` is everything a tree needs about one instance, gathered
once from a :class:`~netmeta.model.types.Snapshot` by :func:`instance_data`.
"""

from __future__ import annotations

import binascii
import base64
import functools
import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Sequence, Union

from netmeta.model.types import DEVICE_OWNER_DHCP, Instance, Network, NetworkId, Port, Snapshot, Subnet, SubnetId

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


@dataclass(frozen=True)
class Leaf:
    """A finished answer: bytes and the content type Nova gives them."""

    body: bytes
    content_type: str = TEXT


@dataclass(frozen=True)
class Named:
    """A sub-tree listed under a label other than ``key/`` (``0=mykey``)."""

    label: str
    children: Mapping[str, "Node"]


Node = Union[str, bytes, int, list[str], Mapping[str, Any], Named]


class PathNotFound(LookupError):
    """Nothing lives at this path; ``reason`` says which part was not found."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def message(self) -> str:
        return f"Not found: {self.path} ({self.reason})"


def split_path(path: str) -> tuple[str, ...]:
    """Nova's normalisation: ``normpath`` then split; ``()`` is the root.

    Remembered for short paths: guests ask the same few paths again and again.
    """
    return _split_memo(path) if len(path) <= 256 else _split(path)


def _split(path: str) -> tuple[str, ...]:
    norm = posixpath.normpath("/" + path.lstrip("/"))
    # normpath keeps a leading "//" (POSIX allows it to mean something else).
    norm = "/" + norm.lstrip("/")
    return tuple(t for t in norm.split("/") if t)


_split_memo = functools.lru_cache(maxsize=4096)(_split)


def listing(items: list[str]) -> Leaf:
    return Leaf("\n".join(items).encode())


@dataclass(frozen=True)
class VersionSet:
    """The dated versions of one metadata tree, oldest first; ``latest`` is the newest."""

    versions: tuple[str, ...]
    root: str  # where the tree hangs, for messages: "/openstack", or "" for EC2's
    name: str  # "OpenStack", "EC2"

    def resolve(self, version: str) -> str:
        if version == "latest":
            return self.versions[-1]
        if version not in self.versions:
            raise PathNotFound(f"{self.root}/{version}", f"unknown {self.name} metadata version {version!r}")
        return version

    def listing(self) -> Leaf:
        """What the tree's root lists: every version, then ``latest`` (Nova's order)."""
        return listing([*self.versions, "latest"])


def render(node: Node) -> Leaf:
    """Turn a tree node into what Nova's ``ec2_md_print`` prints."""
    if isinstance(node, Named):
        node = node.children
    if isinstance(node, Mapping):
        lines = []
        for key in sorted(node):
            child = node[key]
            if isinstance(child, Named):
                lines.append(child.label)
            elif isinstance(child, Mapping):
                lines.append(f"{key}/")
            else:
                lines.append(key)
        return listing(lines)
    if isinstance(node, list):
        return listing([str(v) for v in node])
    if isinstance(node, bytes):
        return Leaf(node)
    return Leaf(str(node).encode())


def walk(node: Node, tokens: Sequence[str], where: str) -> Node:
    """Follow ``tokens`` down a nested mapping; name the first missing part."""
    for depth, token in enumerate(tokens):
        if isinstance(node, Named):
            node = node.children
        if not isinstance(node, Mapping) or token not in node:
            parent = "/".join([where, *tokens[:depth]])
            full = "/".join([where, *tokens[: depth + 1]])
            if isinstance(node, Mapping):
                raise PathNotFound(full, f"no {token!r} in {parent}/")
            raise PathNotFound(full, f"{parent} is a value, not a directory")
        node = node[token]
    return node


def decode_user_data(raw: str | None) -> bytes | None:
    """User data is stored base64 (as Nova stores it) and served decoded."""
    if raw is None:
        return None
    try:
        return base64.b64decode(raw)
    except (binascii.Error, ValueError):
        # Stored text that is not base64 is served as it is rather than lost.
        return raw.encode()


@dataclass(frozen=True)
class InstanceData:
    """One instance and the network objects its metadata is built from."""

    instance: Instance
    # The instance's ports in attach order (then by id): Nova's VIF order.
    ports: tuple[Port, ...]
    subnets: Mapping[SubnetId, Subnet]
    networks: Mapping[NetworkId, Network]
    # The address the guest asked from (its own port IP), served as local-ipv4.
    address: str
    dhcp_domain: str = "novalocal"
    vendordata: Mapping[str, Any] = field(default_factory=dict)
    password: str | None = None
    region: str = "RegionOne"
    architecture: str = "x86_64"
    # Subnets of the instance's networks where a DHCP port holds an address
    # (Nova's "dhcp_server" on its subnet model).
    dhcp_subnets: frozenset[SubnetId] = frozenset()

    @property
    def hostname(self) -> str:
        """Nova's ``_get_hostname``: ``<hostname>.<dhcp_domain>`` when a domain is set."""
        host = self.instance.hostname or self.instance.name
        return f"{host}.{self.dhcp_domain}" if self.dhcp_domain else host

    @cached_property
    def user_data(self) -> bytes | None:
        # Decoded once per view (up to 64 KiB of base64), not per request.
        return decode_user_data(self.instance.user_data)

    def fixed_ipv4(self) -> list[str]:
        """Every fixed IPv4 of the instance in Nova's order (``NetworkInfo.fixed_ips``).

        Ports in attach order; within a port its subnets by id; within a subnet the
        port's order. So ``local-ipv4`` is the first port's address on its
        lowest-id IPv4 subnet, whichever address the guest asked from, as in
        Nova.
        """
        found: list[str] = []
        for port in self.ports:
            for subnet_id in sorted({f.subnet_id for f in port.fixed_ips}):
                subnet = self.subnets.get(subnet_id)
                if subnet is None or subnet.ip_version != 4:
                    continue
                found.extend(f.ip_address for f in port.fixed_ips if f.subnet_id == subnet_id)
        return found


def instance_data(
    snapshot: Snapshot,
    instance: Instance,
    address: str,
    *,
    dhcp_domain: str = "novalocal",
    vendordata: Mapping[str, Any] | None = None,
    password: str | None = None,
    region: str = "RegionOne",
    architecture: str = "x86_64",
) -> InstanceData:
    """Gather the instance's ports and their subnets and networks from ``snapshot``."""
    # Attach order, as Nova keeps its network info; ports the instance list
    # does not name (bound some other way) follow, by id.
    found = snapshot.ports_of_device(instance.id)
    rank = {port_id: i for i, port_id in enumerate(instance.port_ids)}
    ports = tuple(sorted(found, key=lambda p: (rank.get(p.id, len(rank)), p.id)))
    subnet_ids = {f.subnet_id for p in ports for f in p.fixed_ips}
    network_ids = {p.network_id for p in ports}
    dhcp_subnets = frozenset(
        f.subnet_id
        for network_id in network_ids
        for p in snapshot.ports_of(network_id)
        if p.device_owner == DEVICE_OWNER_DHCP
        for f in p.fixed_ips
    )
    return InstanceData(
        instance=instance,
        ports=ports,
        subnets={s: snapshot.subnets[s] for s in subnet_ids if s in snapshot.subnets},
        networks={n: snapshot.networks[n] for n in network_ids if n in snapshot.networks},
        address=address,
        dhcp_domain=dhcp_domain,
        vendordata=dict(vendordata or {}),
        password=password if password is not None else instance.password,
        region=region,
        architecture=architecture,
        dhcp_subnets=dhcp_subnets,
    )
