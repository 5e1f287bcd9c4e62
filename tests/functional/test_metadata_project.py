"""A port of another project carrying an instance's ``device_id`` reads nothing.

``device_id`` is free text: any project may write a victim's instance id on a
port of its own. Built through the real API server (projects from
``X-Project-Id``), then served by the real :class:`MetadataApp` with the
thief port's address as the peer. The control case is the same port, same
request, with only its project changed to the victim's: then the victim's
data comes back, so it is the project comparison that stops the attack.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from netmeta.config import Config
from netmeta.metadata.app import MetadataApp
from netmeta.metadata.http import ListenerContext, Request
from netmeta.model.types import snapshot_from_state
from tests.functional.conftest import Api
from tests.builders import MemoryPasswords

SECRET = b"#cloud-config\n# B's secret\n"


def _as(project: str) -> dict[str, str]:
    return {"X-Project-Id": project}


def _ask(api: Api, network_id: str, ip: str, path: str, **config: Any) -> tuple[int, bytes]:
    snap = snapshot_from_state(api.state())
    app = MetadataApp(Config(**config), lambda: snap, MemoryPasswords())
    request = Request("GET", path, path, "", [], b"", ip, ListenerContext("network", network_id))
    response = asyncio.run(app.handle(request))
    return response.status, response.body


def _world(api: Api, thief_project: str) -> tuple[str, str, str]:
    net = api.ok("POST", "/v2.0/networks", {"network": {"name": f"proj-net-{thief_project}"}},
                 headers=_as("project-b"))["network"]
    api.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.77.0.0/24",
                                                "ip_version": 4}}, headers=_as("project-b"))
    victim = api.ok("POST", "/netmeta/v1/instances", {"instance": {
        "name": "victim-b", "networks": [{"uuid": net["id"]}],
        "user_data": base64.b64encode(SECRET).decode()}}, headers=_as("project-b"))["instance"]
    # The thief's port, on the victim's (shared-looking) network, naming B.
    thief = api.ok("POST", "/v2.0/ports", {"port": {
        "network_id": net["id"], "device_id": victim["id"], "device_owner": "compute:nova",
        "project_id": thief_project}}, headers=_as(thief_project))["port"]
    return net["id"], thief["fixed_ips"][0]["ip_address"], victim["id"]


def test_a_port_of_another_project_with_the_victims_device_id_gets_404(api: Api) -> None:
    net_id, thief_ip, victim_id = _world(api, "project-evil")
    for path in ("/openstack/latest/user_data", "/openstack/latest/meta_data.json",
                 "/latest/meta-data/instance-id", "/openstack/latest/password"):
        status, body = _ask(api, net_id, thief_ip, path)
        assert status == 404, (path, status, body)
        assert b"no instance at " + thief_ip.encode() in body  # the words an unknown guest gets
        assert victim_id.encode() not in body and b"secret" not in body
    # Tokens are for resolved ports only: nobody gets one for this address.
    snap = snapshot_from_state(api.state())
    app = MetadataApp(Config(imds_tokens="optional"), lambda: snap, MemoryPasswords())
    put = Request("PUT", "/latest/api/token", "/latest/api/token", "",
                  [("X-aws-ec2-metadata-token-ttl-seconds", "60")], b"", thief_ip,
                  ListenerContext("network", net_id))
    assert asyncio.run(app.handle(put)).status == 404


def test_the_same_port_in_the_victims_project_is_served(api: Api) -> None:
    # Control: everything as above but the port's project. The request shape
    # works; only the project comparison refuses the attacker.
    net_id, ip, victim_id = _world(api, "project-b")
    status, body = _ask(api, net_id, ip, "/openstack/latest/user_data")
    assert (status, body) == (200, SECRET)
    assert _ask(api, net_id, ip, "/openstack/latest/meta_data.json")[1].count(victim_id.encode()) == 1


def test_an_instance_cannot_take_a_port_of_another_project(api: Api) -> None:
    net = api.network("proj-attach")
    port = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "project_id": "project-evil"}},
                  headers=_as("project-evil"))["port"]
    before = api.state()
    status, body = api.call("POST", "/netmeta/v1/instances", {"instance": {
        "name": "borrower", "networks": [{"port": port["id"]}]}}, headers=_as("project-b"))
    assert status == 409 and body["NeutronError"]["type"] == "PortNotUsable"
    assert api.state() == before
