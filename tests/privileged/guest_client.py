"""Run real metadata clients *inside* a guest namespace and print one JSON line.

Why a separate script: the clients under test (cloud-init's readers,
botocore's IMDS fetchers) must see the guest's network — its DHCP lease and
the route to 169.254.169.254 it learnt from dnsmasq — and nothing else. The
test or benchmark starts this file with ``ip netns exec <guest namespace>
<venv python> tests/privileged/guest_client.py MODE …``, so every socket the
clients open lives in the guest namespace. Nothing here may ever run in the
root namespace, where 169.254.169.254 would be the host provider's service:
the script refuses to start when its network namespace is the root one.

Modes (each prints a JSON object on stdout; bytes are base64):

``openstack``  cloud-init's ``MetadataReader(...).read_v2()`` (which also
               runs its EC2 crawl of the hard-coded 169.254.169.254).
``ec2``        cloud-init's ``get_instance_metadata`` + ``get_instance_userdata``.
``crawl``      both of the above, timed — what the boot-storm bench runs.
``botocore``   botocore's ``IMDSFetcher`` token fetch and
               ``InstanceMetadataRegionFetcher`` against the default address.

The extracted cloud-init tree is given with ``--cloudinit`` (it is put first
on ``sys.path``); cloud-init is never installed on the host.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from typing import Any

METADATA = "http://169.254.169.254"


def _b64(value: Any) -> str:
    """JSON cannot carry bytes; the caller compares decoded bytes exactly."""
    if isinstance(value, str):
        value = value.encode()
    return base64.b64encode(value or b"").decode()


def _refuse_root_namespace() -> None:
    """Fail closed unless started in a named namespace: never query the host's IMDS.

    ``ip netns exec`` puts us in a namespace bound under ``/run/netns``; the
    root namespace never is, so "my namespace is one of those" is the check.
    """
    mine = os.stat("/proc/self/ns/net").st_ino
    named = set()
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        try:
            named.add(os.stat(os.path.join("/run/netns", name)).st_ino)
        except OSError:
            continue
    if mine not in named:
        sys.exit("guest_client: refusing to run outside a named network namespace (use ip netns exec)")


def read_openstack(timeout: float, retries: int, url: str = METADATA) -> dict[str, Any]:
    """cloud-init's OpenStack datasource read, exactly as the datasource calls it (``url``: a metadata_urls entry)."""
    from cloudinit.sources.helpers import openstack

    result = openstack.MetadataReader(url, timeout=timeout, retries=retries).read_v2()
    md = result["metadata"]
    return {
        "version": result.get("version"),
        "metadata": {k: v for k, v in md.items() if k != "random_seed"},
        "random_seed_len": len(md.get("random_seed") or b""),
        "userdata_b64": _b64(result.get("userdata")),
        "networkdata": result.get("networkdata"),
        "vendordata": result.get("vendordata"),
        "ec2_metadata": result.get("ec2-metadata"),
    }


def read_ec2(timeout: float, retries: int) -> dict[str, Any]:
    """cloud-init's EC2 helpers with the API version its non-AWS path starts with."""
    from cloudinit.sources.helpers import ec2

    md = ec2.get_instance_metadata(
        api_version="2009-04-04", metadata_address=METADATA, timeout=timeout, retries=retries
    )
    ud = ec2.get_instance_userdata(
        api_version="2009-04-04", metadata_address=METADATA, timeout=timeout, retries=retries
    )
    return {"metadata": dict(md), "userdata_b64": _b64(ud)}


def read_botocore() -> dict[str, Any]:
    """botocore's own IMDS code paths, default address, its default 1 s timeout."""
    from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher

    out: dict[str, Any] = {}
    try:
        token = IMDSFetcher(num_attempts=1)._fetch_metadata_token()
        out["token"] = bool(token)
    except Exception as exc:  # noqa: BLE001 - report what botocore raised
        out["token_error"] = f"{type(exc).__name__}: {exc}"
    try:
        out["region"] = InstanceMetadataRegionFetcher(num_attempts=1).retrieve_region()
    except Exception as exc:  # noqa: BLE001
        out["region_error"] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("openstack", "ec2", "crawl", "botocore"))
    parser.add_argument("--cloudinit", default="", help="dist-packages dir of an extracted cloud-init")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--libs", default="", help="a dist-packages dir put before everything (Debian's requests)")
    parser.add_argument("--metadata-url", default=METADATA,
                        help="the OpenStack reader's base URL, e.g. http://[fe80::a9fe:a9fe%%25eth0]")
    args = parser.parse_args(argv)
    _refuse_root_namespace()
    if args.cloudinit:
        sys.path.insert(0, args.cloudinit)
    if args.libs:
        sys.path.insert(0, args.libs)
    started = time.monotonic()
    out: dict[str, Any] = {}
    if args.mode in ("openstack", "crawl"):
        out["openstack"] = read_openstack(args.timeout, args.retries, args.metadata_url)
    if args.mode in ("ec2", "crawl"):
        out["ec2"] = read_ec2(args.timeout, args.retries)
    if args.mode == "botocore":
        out["botocore"] = read_botocore()
    out["seconds"] = round(time.monotonic() - started, 4)
    json.dump(out, sys.stdout, default=lambda o: _b64(o) if isinstance(o, bytes) else str(o))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
