"""The EC2-compatible tree (``/<version>/meta-data/...``), as Nova serves it.

Keys and their version gating follow Nova's ``get_ec2_metadata``; every key
listed must be servable, because cloud-init's crawler throws the whole crawl
away when one listed leaf fails. So ``public-ipv4`` is listed with an empty
value (as Nova does without a floating IP) and ``kernel-id``/``ramdisk-id``
are never listed.

Nova's EC2 ids are ``%08x`` of database integers. netmeta has no such
integers, so :func:`ec2_int` takes the first 32 bits of the instance UUID:
``i-1b2c3d4e`` then visibly belongs to instance ``1b2c3d4e-…``, is stable
across restarts and hosts, and needs no table. Ids that are not UUIDs fall
back to the first 32 bits of their SHA-256. There are no images, so the AMI
is one fixed ``ami-00000001``.

``mac`` and ``network/interfaces/macs/<mac>/`` (device-number, interface-id,
local-hostname, local-ipv4s, mac, owner-id, subnet-id,
subnet-ipv4-cidr-block, vpc-id — the network id) are AWS's, not Nova's (Nova
34 answers 404): served from 2009-04-04 (and so ``latest``) because EC2
tools, cloud-init's Ec2 datasource among them, configure interfaces from
them. The first port attached is the primary interface.

``/<version>/dynamic/instance-identity/document`` is AWS's, not Nova's; it
is served from 2009-04-04 (and so ``latest``) for tools such as botocore and
ec2-metadata that read the region and account from it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Sequence

from netmeta.model.metadata.tree import InstanceData, Leaf, Named, Node, VersionSet, render, walk

VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
IMAGE_INT = 1
IDENTITY_DOCUMENT_VERSION = "2017-09-30"


def ec2_int(instance_id: str) -> int:
    """A stable 32-bit integer for an instance id (see the module docstring)."""
    try:
        return uuid.UUID(instance_id).int >> 96
    except ValueError:
        return int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:4], "big")


def instance_ec2_id(instance_id: str) -> str:
    return "i-%08x" % ec2_int(instance_id)


def reservation_id(instance_id: str) -> str:
    """Nova's ``r-`` plus eight base-36 characters, derived instead of random."""
    n = int.from_bytes(hashlib.sha256(b"reservation:" + instance_id.encode()).digest()[:8], "big")
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(8):
        n, r = divmod(n, 36)
        out += chars[r]
    return "r-" + out


EC2_VERSIONS = VersionSet(VERSIONS, "", "EC2")


def version_listing() -> Leaf:
    """``/``: answered without knowing who asks, like Nova."""
    return EC2_VERSIONS.listing()


def _at_least(required: str, version: str) -> bool:
    return VERSIONS.index(version) >= VERSIONS.index(required)


def meta_data(data: InstanceData, version: str) -> dict[str, Node]:
    inst = data.instance
    ips = data.fixed_ipv4()
    md: dict[str, Node] = {
        "ami-id": "ami-%08x" % IMAGE_INT,
        "ami-launch-index": inst.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": instance_ec2_id(inst.id),
        "hostname": data.hostname,
        "local-ipv4": ips[0] if ips else data.address,
        "reservation-id": reservation_id(inst.id),
        # netmeta has no security groups; Nova prints an empty list as "".
        "security-groups": [],
    }
    if inst.key_name and inst.public_key:
        md["public-keys"] = {"0": Named(f"0={inst.key_name}", {"openssh-key": inst.public_key})}
    if _at_least("2007-01-19", version):
        md["local-hostname"] = data.hostname
        md["public-hostname"] = data.hostname
        md["public-ipv4"] = ""  # no floating IPs: Nova lists it empty too
    if _at_least("2007-08-29", version):
        md["instance-type"] = inst.flavor
    if _at_least("2007-12-15", version):
        md["block-device-mapping"] = {"ami": "vda", "root": "/dev/vda"}
    if _at_least("2008-02-01", version):
        md["placement"] = {"availability-zone": inst.availability_zone}
    if _at_least("2008-09-01", version):
        md["instance-action"] = "none"
    if _at_least("2009-04-04", version) and data.ports:
        md["mac"] = data.ports[0].mac_address
        md["network"] = interfaces(data)
    return md


def interfaces(data: InstanceData) -> dict[str, Node]:
    """AWS's ``network/interfaces/macs/<mac>/`` (not Nova's: see the module docstring)."""
    macs: dict[str, Node] = {}
    for number, port in enumerate(data.ports):
        v4 = [(data.subnets[f.subnet_id], f.ip_address) for f in port.fixed_ips
              if f.subnet_id in data.subnets and data.subnets[f.subnet_id].ip_version == 4]
        entry: dict[str, Node] = {
            "device-number": number,
            "interface-id": port.id,
            "local-hostname": data.hostname,
            "local-ipv4s": "\n".join(ip for _, ip in v4),
            "mac": port.mac_address,
            "owner-id": data.instance.project_id,
            "vpc-id": port.network_id,
        }
        if v4:
            entry["subnet-id"] = v4[0][0].id
            entry["subnet-ipv4-cidr-block"] = v4[0][0].cidr
        macs[port.mac_address] = entry
    return {"interfaces": {"macs": macs}}


def identity_document(data: InstanceData) -> dict[str, Any]:
    inst = data.instance
    ips = data.fixed_ipv4()
    return {
        "accountId": inst.project_id,
        "architecture": data.architecture,
        "availabilityZone": inst.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-%08x" % IMAGE_INT,
        "instanceId": instance_ec2_id(inst.id),
        "instanceType": inst.flavor,
        "kernelId": None,
        "pendingTime": inst.created_at,
        "privateIp": ips[0] if ips else data.address,
        "ramdiskId": None,
        "region": data.region,
        "version": IDENTITY_DOCUMENT_VERSION,
    }


def tree(data: InstanceData, version: str) -> dict[str, Node]:
    """Everything under ``/<version>/`` for this instance."""
    out: dict[str, Node] = {"meta-data": meta_data(data, version)}
    user_data = data.user_data
    if user_data is not None:
        out["user-data"] = user_data
    if _at_least("2009-04-04", version):
        doc = json.dumps(identity_document(data), indent=2)
        out["dynamic"] = {"instance-identity": {"document": doc}}
    return out


def lookup(data: InstanceData, tokens: Sequence[str]) -> Leaf:
    """Answer ``/<version>/...``; ``tokens`` excludes a leading ``ec2``."""
    if not tokens:
        return version_listing()
    version = EC2_VERSIONS.resolve(tokens[0])
    node = walk(tree(data, version), tokens[1:], "/" + tokens[0])
    return render(node)
