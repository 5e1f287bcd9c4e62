"""Both sides of Neutron's signed-header contract, with real processes.

The metadata process is configured as a Neutron-style proxy in front of "Nova"
(``metadata_backend = nova``), and that Nova is netmeta itself: its signed
listener (Nova's ``metadata_listen``). A guest's request goes qdhcp listener →
forwarded with ``X-Instance-ID``, ``X-Tenant-ID`` and the HMAC signature →
the signed listener checks them → the guest gets its own document back.
"""

from __future__ import annotations

import http.client
import json
from typing import Iterator

import pytest

from netmeta.model.metadata.signing import sign
from tests.privileged.stack import Stack, free_port, make_stack, wait_until

pytestmark = pytest.mark.privileged

SECRET = "shared-s3cret"


@pytest.fixture
def chained() -> Iterator[tuple[Stack, int]]:
    port = free_port()
    yield from (
        (stack, port)
        for stack in make_stack(
            enable_isolated_metadata=True,
            metadata_backend="nova",
            nova_metadata_host="127.0.0.1",
            nova_metadata_port=port,
            metadata_listen="127.0.0.1",
            metadata_listen_port=port,
            metadata_proxy_shared_secret=SECRET,
        )
    )


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_guest_is_served_through_a_signed_hop(chained: tuple[Stack, int]) -> None:
    stack, port = chained
    net, _ = stack.network("signed", "10.84.0.0/24", gateway=False)
    guest = stack.boot("signed1", net["id"], meta={"via": "nova"})
    meta = json.loads(stack.fetch(guest, "/openstack/latest/meta_data.json"))
    assert meta["uuid"] == guest.instance_id and meta["meta"] == {"via": "nova"}
    assert stack.fetch(guest, "/latest/meta-data/local-ipv4").strip() == guest.ip

    # The signed listener itself, as a neutron-metadata-agent would call it.
    project = stack.client.get(f"/netmeta/v1/instances/{guest.instance_id}")["instance"]["project_id"]
    good = {"X-Instance-ID": guest.instance_id, "X-Tenant-ID": project,
            "X-Instance-ID-Signature": sign(SECRET, guest.instance_id), "X-Forwarded-For": guest.ip}
    wait_until(lambda: _get(port, "/openstack", good)[0] == 200, "the signed listener")
    status, body = _get(port, "/openstack/latest/meta_data.json", good)
    assert status == 200 and json.loads(body)["uuid"] == guest.instance_id
    assert _get(port, "/openstack/latest/meta_data.json", {**good, "X-Instance-ID-Signature": "0" * 64}) == (
        403, b"Invalid proxy request signature.\n")
    assert _get(port, "/openstack/latest/meta_data.json", {k: v for k, v in good.items() if k != "X-Tenant-ID"})[0] == 400
    assert _get(port, "/openstack/latest/meta_data.json", {**good, "X-Tenant-ID": "someone-else"})[0] == 404
