"""``netmeta demo --vm``: the seed's story with real VMs and real cloud-init.

1. A network without a gateway (the seed's ``test-metadata-in-dhcp``) and a
   real VM on it: QEMU boots netmeta's Debian 12 image, cloud-init takes its
   lease from dnsmasq, follows the classless static route to the DHCP port and
   reads netmeta through the qdhcp listener — the console and the metadata
   process's access counts show it.
2. A network with a gateway, a router attached to it, and a second VM: its
   route to 169.254.169.254 goes via the gateway and the qrouter's REDIRECT
   to the listener on 9697 answers it.
3. ``vm exec`` on both, over SSH with the key netmeta injected through the
   metadata, from a namespace on each network.

Each boot takes about a minute under software emulation (KVM when it works).
"""

from __future__ import annotations

import os
import time
from typing import Any

from netmeta.client import Client
from netmeta.config import DEFAULT_STATE_DIR, Config
from netmeta.model import names

USER_DATA = b"""#!/bin/sh
echo "netmeta-demo: user data ran on $(hostname): $(ip -4 route show 169.254.169.254)"
"""


def image_dir_for(config: Config, state_dir_given: bool) -> str:
    """The demo's own state is thrown away; its image cache is not (a build takes minutes)."""
    if config.image_dir:
        return config.image_dir
    return os.path.join(config.state_dir if state_dir_given else DEFAULT_STATE_DIR, "images")


def walk(say: Any, config: Config, client: Client, components: list[Any], until: Any) -> None:
    from netmeta.metadata.service import read_status
    from netmeta.vm import console
    from netmeta.vm.image import DEFAULT_IMAGE, Images
    from netmeta.vm.machines import Machines

    machines = Machines(config, client)
    say.title(f"the image: {DEFAULT_IMAGE}, built from Debian's packages once, then reused")
    started = time.monotonic()
    image = Images(config).resolve(DEFAULT_IMAGE, say.say)
    say.say(f"{image.disk} ready in {time.monotonic() - started:.0f} s (kernel {os.path.basename(image.kernel)})")

    say.title("a network without a gateway, as in the report, and a real VM on it")
    net1 = client.request("POST", "/v2.0/networks", {"network": {"name": "test-metadata-in-dhcp"}})["network"]
    sub1 = client.request("POST", "/v2.0/subnets", {"subnet": {
        "name": "test-metadata-in-dhcp", "network_id": net1["id"], "ip_version": 4,
        "cidr": "192.168.111.0/24", "gateway_ip": None}})["subnet"]
    say.say(f"{net1['name']}: subnet {sub1['cidr']}, gateway {sub1['gateway_ip']}")
    vm1 = machines.boot("vm1", net1["id"], DEFAULT_IMAGE, user_data=USER_DATA, progress=say.say)
    _explain_vm(say, config, vm1)
    _wait_and_show(say, machines, vm1, read_status, console)

    say.title("a network with a gateway, a router on it, and a second VM")
    net2 = client.request("POST", "/v2.0/networks", {"network": {"name": "test-metadata-in-dhcp-with-gw"}})["network"]
    sub2 = client.request("POST", "/v2.0/subnets", {"subnet": {
        "name": "test-metadata-in-dhcp-with-gw", "network_id": net2["id"], "ip_version": 4,
        "cidr": "172.31.0.0/24"}})["subnet"]
    router = client.request("POST", "/v2.0/routers", {"router": {"name": "testrouter"}})["router"]
    client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub2["id"]})
    say.say(f"{net2['name']}: subnet {sub2['cidr']}, gateway {sub2['gateway_ip']} on router {router['id']}")
    vm2 = machines.boot("vm2", net2["id"], DEFAULT_IMAGE, user_data=USER_DATA, progress=say.say)
    _explain_vm(say, config, vm2)
    _wait_and_show(say, machines, vm2, read_status, console)

    say.title("vm exec: SSH with netmeta's key (from the metadata), from a namespace on each network")
    for vm in (vm1, vm2):
        for argv in (["ip", "-4", "route"], ["cloud-init", "status", "--long"],
                     ["curl", "-s", "http://169.254.169.254/openstack/latest/meta_data.json"]):
            done = machines.exec(vm.name, argv, capture=True, timeout=60)
            text = done.stdout if len(done.stdout) < 600 else done.stdout[:600] + "…"
            say.shell(f"netmeta vm exec {vm.name} -- {' '.join(argv)}", text + done.stderr)
    for vm in (vm1, vm2):
        machines.delete(vm.name)
    say.say("both VMs deleted: QEMU stopped, overlays and the SSH namespaces removed")


def _explain_vm(say: Any, config: Config, vm: Any) -> None:
    where = config.fabric_namespace or "the host namespace"
    say.say(f"{vm.name}: ip {vm.ip}, MAC {vm.mac}, instance {vm.instance_id}")
    say.say(f"QEMU ({vm.accel}) runs in {where}; its tap {vm.tap} is on bridge {names.bridge_name(vm.network_id)}; "
            "SMBIOS says 'OpenStack Nova', -uuid is the instance id")


def _wait_and_show(say: Any, machines: Any, vm: Any, read_status: Any, console: Any) -> None:
    started = time.monotonic()
    say.say(f"waiting for cloud-init (`netmeta vm console {vm.name} --follow` shows the boot) …")
    # About a minute on an idle machine; much longer on a busy one, and a demo should not give up.
    done = machines.wait_ready(vm.name, timeout=900.0)
    say.say(f"cloud-init {done.version} finished {time.monotonic() - started:.0f} s after boot "
            f"(up {done.uptime:.0f} s in the guest), datasource {done.datasource}")
    text = console.clean(vm.console_text())
    lines = [line.strip() for line in text.splitlines() if "netmeta-demo:" in line or " finished at " in line]
    say.shell(f"netmeta vm console {vm.name} | grep -e netmeta-demo -e 'finished at'", "\n".join(lines))
    status = read_status(machines.config.state_dir) or {}
    # The access log names a qdhcp listener by its network, a qrouter one by its router.
    where = {"network": "qdhcp-", "router": "qrouter-"}
    served = [f"the listener in {where.get(a['kind'], a['kind'] + ' ')}{a['id']}: {a['count']} requests"
              for a in status.get("access", []) if a["peer"] == vm.ip]
    say.say(f"the metadata process answered {vm.name} ({vm.ip}) on: " + ("; ".join(served) or "nothing yet"))
