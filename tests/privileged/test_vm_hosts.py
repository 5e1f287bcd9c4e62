"""A real VM on one of several simulated hosts: `netmeta vm boot --image` run on host H.

QEMU runs where the command runs — inside the simulated host, in *its*
fabric namespace, with its tap on *its* bridge for the network — and the
instance carries the host (``host`` = ``--host H``), so the VM's port has
``binding:host_id`` H as a namespace guest's does. The VM is not waited for
(a boot costs minutes on an emulated CPU; tests/privileged/test_vms.py waits
for cloud-init): it is deleted as soon as QEMU and its tap are checked, and
``netmeta down`` inside every host stops whatever is left, also on failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from netmeta.cli.multihost import MultiHost
from netmeta.client import Client
from netmeta.config import Config
from netmeta.drivers import processes, qemu
from netmeta.model import names
from netmeta.vm.image import DEFAULT_IMAGE, Images
from tests.privileged.multihost import make_cloud
from tests.privileged.stack import wait_until

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = os.environ.get("NETMETA_IMAGE_DIR") or str(REPO / ".cache" / "images")


@pytest.fixture
def two_hosts() -> Iterator[tuple[MultiHost, Client]]:
    if not qemu.available():
        pytest.skip(f"{qemu.QEMU} is not installed (scripts/setup.sh --test installs it)")
    Images(Config(image_dir=IMAGE_DIR)).build(DEFAULT_IMAGE, lambda line: None)  # cached: instant
    yield from make_cloud(("host-1", "host-2"), components=("agent",))


def test_a_vm_booted_on_host_2_runs_and_plugs_in_there(two_hosts: tuple[MultiHost, Client]) -> None:
    multi, client = two_hosts
    net = client.request("POST", "/v2.0/networks", {"network": {"name": "vmhosts"}})["network"]
    client.request("POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "ip_version": 4, "cidr": "192.168.161.0/24", "gateway_ip": None}})
    here, other = multi.host("host-2"), multi.host("host-1")
    fabric, bridge = here.config.fabric_namespace, names.bridge_name(net["id"])
    # The host serving the network's DHCP has its bridge (a host builds a network where it has a port);
    # host-2 gets its own when the VM's port is bound there, and vm boot waits for it.
    dhcp_host = wait_until(lambda: next((p["binding:host_id"] for p in client.get(
        "/v2.0/ports", network_id=net["id"], device_owner="network:dhcp")["ports"] if p.get("binding:host_id")), None),
        "the network's DHCP port bound to a host", timeout=60)
    served = multi.host(dhcp_host)
    wait_until(lambda: served.in_namespace(fabric, "ip", "link", "show", bridge).returncode == 0,
               f"{bridge} on {served.name}", timeout=60)

    boot = here.netmeta("vm", "boot", "vmh", "--network", net["id"], "--image", DEFAULT_IMAGE,
                        "--image-dir", IMAGE_DIR, "--vm-accel", "tcg", "--host", here.name, timeout=120)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    record = json.loads(Path(here.config.paths.machine_record("vmh")).read_text())
    pid = processes.read_pid_file(os.path.join(record["directory"], "qemu.pid"))
    try:
        # The port says where the VM runs, as a namespace guest's does.
        port = client.get(f"/v2.0/ports/{record['port_id']}")["port"]
        assert port["binding:host_id"] == "host-2", port
        # QEMU runs inside host-2 (its processes), its tap on host-2's bridge — and nothing on host-1's.
        assert pid is not None and pid in here.sim.pids_inside()
        tap = json.loads(here.in_namespace(fabric, "ip", "-j", "link", "show", record["tap"]).stdout)
        assert tap[0].get("master") == bridge, tap
        assert other.in_namespace(fabric, "ip", "link", "show", record["tap"]).returncode != 0
        listing = here.netmeta("vm", "list")
        assert "vmh" in listing.stdout and " vm " in listing.stdout, listing.stdout
    finally:
        deleted = here.netmeta("vm", "delete", "vmh")
    assert deleted.returncode == 0, deleted.stderr
    assert processes.wait_gone(pid, 10)
    assert here.in_namespace(fabric, "ip", "link", "show", record["tap"]).returncode != 0
