"""Contract: every URL both trees serve for one guest, with content types.

The crawl follows listings from ``/`` and ``/openstack`` the way cloud-init
does (a line ending in ``/`` is a directory, ``N=name`` means ``N/``), through
:class:`MetadataApp`, and pins the exact set of ``latest`` URLs. Every listed
URL of every version must answer 200: a listed leaf that fails makes
cloud-init discard the whole crawl.
"""

from __future__ import annotations

import json

from netmeta.config import Config, RateLimitConfig
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import ListenerContext, Request, Response
from tests.builders import NET_A, MemoryPasswords, metadata_cloud

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"

LATEST_EC2 = {
    "/latest": TEXT,
    "/latest/dynamic/": TEXT,
    "/latest/dynamic/instance-identity/": TEXT,
    "/latest/dynamic/instance-identity/document": TEXT,
    "/latest/user-data": TEXT,
    "/latest/meta-data/": TEXT,
    **{
        f"/latest/meta-data/{k}": TEXT
        for k in (
            "ami-id", "ami-launch-index", "ami-manifest-path", "hostname", "instance-id", "local-ipv4",
            "reservation-id", "security-groups", "local-hostname", "public-hostname", "public-ipv4",
            "instance-type", "instance-action", "block-device-mapping/", "block-device-mapping/ami",
            "block-device-mapping/root", "placement/", "placement/availability-zone", "public-keys/",
            "public-keys/0/", "public-keys/0/openssh-key", "mac", "network/", "network/interfaces/",
            "network/interfaces/macs/",
        )
    },
}


def _with_interfaces(expected: dict[str, str], seen: dict[str, str]) -> dict[str, str]:
    """Add each network/interfaces/macs/<mac>/ leaf (AWS's names; the MACs are the world's)."""
    leaves = ("", "device-number", "interface-id", "local-hostname", "local-ipv4s", "mac", "owner-id",
              "subnet-id", "subnet-ipv4-cidr-block", "vpc-id")
    macs = {p.split("/")[6] for p in seen if p.startswith("/latest/meta-data/network/interfaces/macs/") and
            len(p.split("/")) > 7}
    return {**expected, **{f"/latest/meta-data/network/interfaces/macs/{m}/{leaf}": TEXT
                           for m in macs for leaf in leaves}}
LATEST_OPENSTACK = {
    "/openstack/latest": TEXT,
    "/openstack/latest/meta_data.json": JSON,
    "/openstack/latest/user_data": TEXT,
    "/openstack/latest/password": TEXT,
    "/openstack/latest/vendor_data.json": JSON,
    "/openstack/latest/network_data.json": TEXT,
    "/openstack/latest/vendor_data2.json": JSON,
}


async def crawl() -> dict[str, Response]:
    snap = metadata_cloud()
    # Every URL from one guest in a moment: more than the default rate limit allows a guest.
    app = MetadataApp(Config(rate_limiting=RateLimitConfig(rate_limit_enabled=False)), lambda: snap, MemoryPasswords())
    ctx = ListenerContext("network", NET_A)
    seen: dict[str, Response] = {}

    async def fetch(path: str) -> Response:
        resp = await app.handle(Request("GET", path, path, "", [], b"", "127.0.0.1", ctx))
        seen[path] = resp
        return resp

    # (path, is a directory): "/" lists EC2 versions, "/openstack" OpenStack
    # versions, a version lists its files; below that, "/" marks directories.
    todo: list[tuple[str, bool]] = [("/", True), ("/openstack", True)]
    while todo:
        path, is_dir = todo.pop()
        resp = await fetch(path)
        assert resp.status == 200, (path, resp.status, resp.body)
        if not is_dir:
            continue
        base = path.rstrip("/")
        for line in filter(None, resp.body.decode().split("\n")):
            if path in ("/", "/openstack"):
                todo.append((f"{base}/{line}", True))
            elif "=" in line:
                todo.append((f"{base}/{line.split('=', 1)[0]}/", True))
            elif line.endswith("/"):
                todo.append((f"{base}/{line}", True))
            else:
                todo.append((f"{base}/{line}", False))
    await app.close()
    return seen


async def test_every_url_of_both_trees_answers_and_latest_is_pinned() -> None:
    seen = await crawl()
    latest_ec2 = {p: r.content_type for p, r in seen.items() if p.startswith("/latest")}
    latest_os = {p: r.content_type for p, r in seen.items() if p.startswith("/openstack/latest")}
    assert latest_ec2 == _with_interfaces(LATEST_EC2, latest_ec2)
    assert any("/macs/fa:16:3e" in p for p in latest_ec2)
    assert latest_os == LATEST_OPENSTACK
    # Every version of both trees was crawled.
    assert {p.split("/")[1] for p in seen if not p.startswith("/openstack") and p != "/"} == {
        "1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
        "2008-09-01", "2009-04-04", "latest",
    }
    assert len({p.split("/")[2] for p in seen if p.startswith("/openstack/")}) == 11


async def test_json_keys_are_pinned() -> None:
    seen = await crawl()
    md = json.loads(seen["/openstack/latest/meta_data.json"].body)
    assert sorted(md) == sorted([
        "uuid", "meta", "public_keys", "keys", "hostname", "name", "launch_index", "availability_zone",
        "random_seed", "project_id", "devices", "dedicated_cpus",
    ])
    nd = json.loads(seen["/openstack/latest/network_data.json"].body)
    assert sorted(nd) == ["links", "networks", "services"]
    assert sorted(nd["links"][0]) == ["ethernet_mac_address", "id", "mtu", "type", "vif_id"]
    doc = json.loads(seen["/latest/dynamic/instance-identity/document"].body)
    assert sorted(doc) == sorted([
        "accountId", "architecture", "availabilityZone", "billingProducts", "devpayProductCodes",
        "marketplaceProductCodes", "imageId", "instanceId", "instanceType", "kernelId", "pendingTime",
        "privateIp", "ramdiskId", "region", "version",
    ])
