"""Real VMs: QEMU boots netmeta's Debian 12 image and real cloud-init reads netmeta.

Two VMs boot at once (2 cores, 512 MB each: both fit, and the pair costs the
time of one): ``iso`` on an isolated network, which reaches 169.254.169.254
through the qdhcp namespace, and ``rtd`` on a routed network, which reaches
it through the qrouter. Both networks are dual-stack, so the same boot
shows IPv6 in a real guest: ``iso``'s network has an isolated
``dhcpv6-stateful`` subnet (the address from dnsmasq's DHCPv6, metadata at
``fe80::a9fe:a9fe`` on the DHCP tap), ``rtd``'s a ``slaac`` subnet on the
router (the EUI-64 address from the router's advertisements, metadata at
``fe80::a9fe:a9fe`` through the qrouter, by the route the advertisement
carries). Everything is checked from outside the guest — its serial console
and the metadata process's access counts — and then over SSH with the key
netmeta injected, from the access namespace on each network.

A boot costs minutes on an emulated CPU, so the same two VMs then serve the
rest: ``explain`` on each (and on one whose QEMU was killed), ``vm renew``
after a subnet change, ``vm delete``, and ``netmeta down`` stopping what is
left together with a third VM that is still booting. Only the root-namespace
bridge mode needs a stack of its own (a stand-in host), and it waits for a
DHCP lease, not for cloud-init.

The image is built once into ``NETMETA_IMAGE_DIR`` (default
``<repo>/.cache/images``) and reused by later runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from netmeta.cli.commands import teardown_host
from netmeta.cli.explain import explain_machine
from netmeta.config import Config
from netmeta.drivers import links, netns, processes
from netmeta.metadata.service import read_status as metadata_status
from netmeta.model import ipam, names
from netmeta.model.types import snapshot_from_state
from netmeta.vm import console
from netmeta.vm.image import DEFAULT_IMAGE, Images
from netmeta.vm.machines import Machine, MachineError, Machines

from .stack import Stack, in_ns, make_stack, wait_until

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = os.environ.get("NETMETA_IMAGE_DIR") or str(REPO / ".cache" / "images")


def boot_bound(base: float = 300.0, cap: float = 1200.0) -> float:
    """Each boot's bound: 300 s, stretched by how busy the machine is when the module starts.

    On a quiet 2-core machine (CI) both VMs are done in about a minute, so
    300 s is a wide margin and stays the bound. An emulated vCPU is one busy
    host thread, so on a machine shared with other work a boot takes longer
    in proportion to the load per core (measured here: the pair took 573 s
    at a load of 10-13 on 2 cores); the bound follows that, up to ``cap``.
    ``NETMETA_VM_BOOT_SECONDS`` sets it outright.
    """
    if os.environ.get("NETMETA_VM_BOOT_SECONDS"):
        return float(os.environ["NETMETA_VM_BOOT_SECONDS"])
    busy = os.getloadavg()[0] / (os.cpu_count() or 1)
    return min(cap, base * max(1.0, busy))

USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJzLW93bi1rZXktZm9yLXRlc3RzLW9ubHk= user@laptop"


def user_data(marker: str) -> bytes:
    """A script that prints what the test checks on the console, after the marker.

    The IPv6 lines wait (60 s at most each) for a global address that is no
    longer tentative and for ``meta_data.json`` at ``fe80::a9fe:a9fe`` on the
    VM's interface, the way an IPv6-only guest's cloud-init would ask for it.
    """
    return f"""#!/bin/sh
echo "{marker} begin"
echo "{marker} hostname $(hostname)"
echo "{marker} instance-id $(cat /var/lib/cloud/data/instance-id)"
echo "{marker} route $(ip -4 route show 169.254.169.254)"
echo "{marker} addr $(ip -4 -o addr show scope global | awk '{{print $4}}')"
sed "s/^/{marker} key /" /home/debian/.ssh/authorized_keys
ifc=$(ip -o link show | awk -F': ' '$2 != "lo" {{print $2; exit}}')
i=0
until ip -6 -o addr show dev "$ifc" scope global | grep -qv tentative || [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done
echo "{marker} addr6 $(ip -6 -o addr show dev "$ifc" scope global | awk '{{print $4}}' | tr '\\n' ' ')"
i=0
md6="http://[fe80::a9fe:a9fe%25$ifc]/openstack/latest/meta_data.json"
until curl -sfg --max-time 5 -o /run/md6.json "$md6" || [ $i -ge 60 ]; do sleep 1; i=$((i+1)); done
echo "{marker} md6 $(python3 -c 'import json; print(json.load(open("/run/md6.json"))["uuid"])' 2>&1)"
echo "{marker} route6 $(ip -6 route show fe80::a9fe:a9fe)"
echo "{marker} end"
""".encode()


def marked(text: str, marker: str, what: str) -> list[str]:
    prefix = f"{marker} {what} "
    return [line.split(prefix, 1)[1].strip() for line in console.clean(text).splitlines() if prefix in line]


@pytest.fixture(scope="module")
def image_dir() -> str:
    images = Images(Config(image_dir=IMAGE_DIR))
    started = time.monotonic()
    images.build(DEFAULT_IMAGE, lambda line: None)
    print(f"image {DEFAULT_IMAGE} ready in {time.monotonic() - started:.0f} s")
    return IMAGE_DIR


@pytest.fixture
def vm_stack(image_dir: str) -> Iterator[Stack]:
    # Router advertisements every few seconds (Neutron's are up to 100 s apart).
    yield from make_stack(enable_isolated_metadata=True, image_dir=image_dir,
                          min_rtr_adv_interval=3, max_rtr_adv_interval=4)


def qemu_pids_for(stack: Stack) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and processes.matches(int(entry), os.path.join(stack.config.state_dir, "machines")):
            if "qemu-system-x86_64" in " ".join(processes.cmdline(int(entry))):
                found.append(int(entry))
    return found


def test_two_vms_read_netmeta_through_qdhcp_and_qrouter(vm_stack: Stack) -> None:
    stack = vm_stack
    machines = Machines(stack.config, stack.client)
    iso_net, iso_sub = stack.network("vm-isolated", "192.168.131.0/24", gateway=False)
    rtd_net, rtd_sub = stack.network("vm-routed", "192.168.132.0/24")
    # The IPv6 halves: an isolated stateful DHCPv6 subnet, and a SLAAC one on the router.
    stack.client.request("POST", "/v2.0/subnets", {"subnet": {
        "network_id": iso_net["id"], "ip_version": 6, "cidr": "2001:db8:131::/64", "gateway_ip": None,
        "ipv6_address_mode": "dhcpv6-stateful"}})
    rtd_sub6 = stack.client.request("POST", "/v2.0/subnets", {"subnet": {
        "network_id": rtd_net["id"], "ip_version": 6, "cidr": "2001:db8:132::/64",
        "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}})["subnet"]
    router = stack.router("vm-router", rtd_sub, rtd_sub6)
    stack.converged()
    dhcp_ip = stack.dhcp_port(iso_net["id"])["fixed_ips"][0]["ip_address"]
    gateway = rtd_sub["gateway_ip"]

    bound = boot_bound()
    print(f"each boot bounded at {bound:.0f} s (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    marks = {name: f"NMT-{secrets.token_hex(4)}" for name in ("iso", "rtd")}
    vms: dict[str, Machine] = {}
    started = time.monotonic()
    try:
        vms["iso"] = machines.boot("iso", iso_net["id"], DEFAULT_IMAGE, user_data=user_data(marks["iso"]),
                                   key_name="laptop", public_key=USER_KEY)
        vms["rtd"] = machines.boot("rtd", rtd_net["id"], DEFAULT_IMAGE, user_data=user_data(marks["rtd"]))
        for vm in vms.values():
            # QEMU runs in the fabric namespace, its tap on the network's bridge there.
            pid = vm.pid()
            assert pid is not None
            assert processes.network_namespace_inode(pid) == netns.namespace_inode(stack.config.fabric_namespace)
            tap = links.get_link(stack.config.fabric_namespace, vm.tap)
            assert tap is not None and tap.get("master") == names.bridge_name(vm.network_id), tap
            assert vm.tap == names.guest_outer_name(vm.port_id)
        finished = {}
        for name in vms:
            remaining = bound - (time.monotonic() - started)
            finished[name] = machines.wait_ready(name, timeout=max(remaining, 1.0))
        boot_seconds = time.monotonic() - started
        print(f"both VMs: cloud-init done {boot_seconds:.0f} s after boot; "
              + ", ".join(f"{n} up {f.uptime:.0f} s" for n, f in finished.items()))

        expected_route = {"iso": dhcp_ip, "rtd": gateway}
        instance_ids = {}
        for name, vm in vms.items():
            done = finished[name]
            # Not DataSourceNone: cloud-init read netmeta as an OpenStack metadata service.
            assert done.openstack, f"{name}: cloud-init used {done.datasource}"
            text = vm.console_text()
            mark = marks[name]
            assert f"{mark} begin" in text and f"{mark} end" in text, f"{name}: the user data did not run"
            assert marked(text, mark, "addr") == [f"{vm.ip}/24"]
            (route,) = marked(text, mark, "route")
            assert re.match(rf"169\.254\.169\.254 via {re.escape(expected_route[name])} dev \S+", route), route
            assert marked(text, mark, "hostname") == [name]
            assert marked(text, mark, "instance-id") == [vm.instance_id]
            keys = marked(text, mark, "key")
            own_key = Path(machines.key + ".pub").read_text().strip()
            assert own_key in keys
            assert (USER_KEY in keys) == (name == "iso")
            instance_ids[name] = vm.instance_id
            # IPv6: the API's address (EUI-64 of the MAC on SLAAC, dnsmasq's lease on stateful),
            # and meta_data.json from fe80::a9fe:a9fe on the VM's own interface.
            assert vm.ip6, f"{name}: the port has no IPv6 address"
            if name == "rtd":
                assert vm.ip6 == ipam.eui64_address("2001:db8:132::/64", vm.mac)
            addr6 = " ".join(marked(text, mark, "addr6")).split()
            assert any(a.split("/")[0] == vm.ip6 for a in addr6), (name, vm.ip6, addr6)
            assert marked(text, mark, "md6") == [vm.instance_id], marked(text, mark, "md6")

        # The routed VM took the advertised route to fe80::a9fe:a9fe via the router's link-local.
        rport = stack.client.get("/v2.0/ports", device_id=router["id"], network_id=rtd_net["id"])["ports"]
        router_ll = {ipam.link_local_address(p["mac_address"]) for p in rport}
        route6 = " ".join(marked(vms["rtd"].console_text(), marks["rtd"], "route6"))
        assert re.match(r"fe80::a9fe:a9fe via \S+ dev \S+ proto ra", route6), route6
        assert route6.split()[2] in router_ll, (route6, router_ll)

        # Which listener answered each VM: qdhcp for the isolated one, qrouter for the routed one —
        # over IPv4 by its address, over IPv6 by its link-local (the access counts reach the status
        # file on the metadata service's tick).
        link_local = {name: ipam.link_local_address(vm.mac) for name, vm in vms.items()}

        def served() -> dict[tuple[str, str, str], int]:
            status = metadata_status(stack.config.state_dir) or {}
            return {(a["kind"], a["id"], a["peer"]): a["count"] for a in status.get("access", [])}

        wait_until(lambda: served().get(("network", iso_net["id"], link_local["iso"]), 0) > 0
                   and served().get(("router", router["id"], link_local["rtd"]), 0) > 0,
                   "the IPv6 requests in the access counts", timeout=30)
        counts = served()
        for name, kind in (("iso", "network"), ("rtd", "router")):
            for peer in (vms[name].ip, link_local[name]):
                assert [k for k in counts if k[2] == peer and counts[k] > 0 and k[0] == kind], (name, peer, counts)
                assert not [k for k in counts if k[2] == peer and k[0] != kind], (name, peer, counts)
        assert counts[("network", iso_net["id"], vms["iso"].ip)] > 0
        assert counts[("router", router["id"], vms["rtd"].ip)] > 0

        # Over SSH, with netmeta's key, from the access namespace on each network.
        for name, vm in vms.items():
            done_json = machines.exec(name, ["cloud-init", "status", "--format", "json"], capture=True, timeout=60)
            assert done_json.returncode == 0, done_json.stderr
            report = json.loads(done_json.stdout)
            assert report["status"] == "done" and report["errors"] == [], report
            ident = machines.exec(name, ["cat", "/var/lib/cloud/data/instance-id"], capture=True, timeout=60)
            assert ident.stdout.strip() == instance_ids[name]
            access = machines.access(vm)
            assert access.namespace.startswith("nmssh-")
            stack.namespaces_seen.add(access.namespace)
            # The SSH client's address is a port of the network, not the host's.
            peer = machines.exec(name, ["sh", "-c", "echo $SSH_CLIENT"], capture=True, timeout=60)
            assert peer.stdout.split()[0] == access.ip
            # `vm exec <vm> ip -6 addr` shows the API's IPv6 address.
            shown6 = machines.exec(name, ["ip", "-6", "addr"], capture=True, timeout=60)
            assert f"inet6 {vm.ip6}/" in shown6.stdout, shown6.stdout

        # A host key the console did not show is refused.
        vm = vms["rtd"]
        Path(vm.known_hosts).write_text(f"{vm.ip} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5vdC10aGUtdm0=\n")
        from netmeta.drivers import ssh

        forged = ssh.run(machines.access(vm).namespace,
                         ssh.ssh_argv(machines.key, vm.known_hosts, "debian", vm.ip, ["true"]),
                         capture=True, timeout=60)
        assert forged.returncode != 0 and "host key" in forged.stderr.lower(), forged.stderr

        # `netmeta explain` walks each VM's path: port, QEMU, tap, lease, cloud-init, the
        # listener that served it, then (over SSH) its own route, the namespace behind it, a fetch.
        snapshot = snapshot_from_state(stack.client.state())
        for name, path in (("iso", "dhcp"), ("rtd", "router")):
            vm = machines.get(name)  # the record again: known_hosts was forged above
            result = explain_machine(stack.config, vm, snapshot)
            said = [f"{f.severity} {f.code}: {f.text}" for f in result.findings]
            assert result.consistent, said
            assert result.path == path and result.next_hop == expected_route[name], said
            assert {"port", "qemu", "tap", "lease", "datasource", "served", "route", "next-hop", "listener",
                    "identity", "fetch"} <= {f.code for f in result.findings if f.ok}, said
        assert result.namespace == names.router_namespace(router["id"])

        # `vm renew` over SSH: the VM asks dnsmasq again and takes the options changed since its boot.
        extra = "10.131.7.0/24"
        stack.client.request("PUT", f"/v2.0/subnets/{iso_sub['id']}", {"subnet": {
            "host_routes": [{"destination": extra, "nexthop": dhcp_ip}]}})
        wait_until(lambda: any(f"{extra},{dhcp_ip}" in line for line in stack.opts(iso_net["id"])),
                   "the new host route in the opts file", timeout=30)
        before = machines.lease(vms["iso"])
        assert before is not None and before.ip == vms["iso"].ip
        renewed = machines.renew("iso")
        assert renewed is not None and renewed.ip == vms["iso"].ip and renewed.expiry > before.expiry
        route = machines.exec("iso", ["ip", "-4", "route", "show", extra], capture=True, timeout=60)
        assert f"via {dhcp_ip}" in route.stdout, route.stdout + route.stderr

        # A dead QEMU is named as the cause, and renew says why it cannot.
        pid = vms["rtd"].pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # our own QEMU, by its pid
        assert processes.wait_gone(pid, 10)
        dead = explain_machine(stack.config, vms["rtd"], snapshot)
        assert [f.code for f in dead.problems] == ["qemu-dead"], dead.findings
        with pytest.raises(MachineError, match="not running"):
            machines.renew("rtd")

        # `vm delete` stops QEMU and removes the overlay; `netmeta down` (teardown_host) stops every
        # VM left — one still booting, without waiting for it, and the dead one — and removes them.
        iso_pid = vms["iso"].pid()
        machines.delete("iso")
        assert iso_pid is not None and processes.wait_gone(iso_pid, 10) and not os.path.exists(vms["iso"].directory)
        vms["down1"] = machines.boot("down1", iso_net["id"], DEFAULT_IMAGE)
        down_pid = vms["down1"].pid()
        assert down_pid is not None and os.path.exists(vms["down1"].disk)
        removed = teardown_host(stack.config)
        assert {"VM down1", "VM rtd"} <= set(removed), removed
        assert processes.wait_gone(down_pid, 10) and not os.path.exists(vms["down1"].directory)
    except BaseException:
        for name, vm in vms.items():  # what the VM said, for the CI log
            print(f"--- console of {name} (last 3000 characters) ---\n{console.clean(vm.console_text())[-3000:]}")
        raise
    finally:
        for name in list(vms):
            if machines.exists(name):
                machines.delete(name)
    assert qemu_pids_for(stack) == []
    assert not os.path.exists(machines.root) or os.listdir(machines.root) in ([], [".access"])


def test_root_namespace_bridges_inside_a_stand_in_host(netns_scope: Any, image_dir: str) -> None:
    """``fabric_namespace = ""``: bridges and the VM's tap live in the host's own namespace.

    The real root namespace is never touched: the whole netmeta runs inside a
    namespace that stands for the host, where "the host's namespace" is that one.
    """
    host = netns_scope.namespace("host")
    state = netns_scope.path("state")
    port = 9696
    # Each command takes only the settings it reads.
    where = ["--state-dir", state, "--fabric-namespace", ""]
    vm_args = [*where, "--bind", f"127.0.0.1:{port}", "--image-dir", image_dir]
    netmeta = [str(REPO / ".venv" / "bin" / "netmeta")]
    log = open(netns_scope.path("up.log"), "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(netns.namespace_argv(host, [*netmeta, "up", *where, "--bind", f"127.0.0.1:{port}",
                                                      "--enable-isolated-metadata"]), stdout=log, stderr=log)
    netns_scope.track(up.pid, "netmeta")

    def cli(*argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return in_ns(host, *netmeta, *argv, timeout=timeout)

    def api(method: str, path: str, body: Any = None) -> Any:
        """netmeta's own client, run inside the stand-in host (the API listens on its loopback)."""
        code = ("import json, sys; from netmeta.client import Client; from netmeta.config import Config; "
                f"c = Client.for_config(Config(state_dir={state!r}, bind='127.0.0.1:{port}'), admin=True); "
                "print(json.dumps(c.request(*json.loads(sys.argv[1]))))")
        done = in_ns(host, str(REPO / ".venv" / "bin" / "python"), "-c", code, json.dumps([method, path, body]))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    try:
        wait_until(lambda: _api_up(api), "the API in the stand-in host", 60, poll=0.5)
        net = api("POST", "/v2.0/networks", {"network": {"name": "rootns"}})["network"]
        api("POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": "192.168.134.0/24", "gateway_ip": None}})
        boot = cli("vm", "boot", "rootvm", "--network", "rootns", "--image", DEFAULT_IMAGE, *vm_args)
        assert boot.returncode == 0, boot.stdout + boot.stderr
        bridge = names.bridge_name(net["id"])
        # The bridge and the tap are in the stand-in host's own namespace, and so is QEMU.
        links_json = json.loads(in_ns(host, "ip", "-j", "link").stdout)
        taps = [link for link in links_json if link["ifname"].startswith("g-")]
        assert len(taps) == 1 and taps[0].get("master") == bridge, links_json
        qemu_pid = processes.read_pid_file(os.path.join(state, "machines", "rootvm", "qemu.pid"))
        assert qemu_pid is not None
        assert processes.network_namespace_inode(qemu_pid) == netns.namespace_inode(host)
        # It takes its lease from dnsmasq through that bridge.
        record = json.loads(Path(state, "machines", "rootvm", "machine.json").read_text())
        leases = Path(Config(state_dir=state).paths.dhcp_file(net["id"], "leases"))
        wait_until(lambda: leases.exists() and record["mac"] in leases.read_text(), "the VM's DHCP lease",
                   timeout=boot_bound(), poll=1.0)
        listing = cli("vm", "list", *vm_args)
        assert re.search(r"rootvm\s+\S+\s+\S+\s+vm\s+(booting|ready)", listing.stdout), listing.stdout
        shown = cli("vm", "console", "rootvm", *vm_args)
        assert shown.returncode == 0 and "Linux version" in shown.stdout, shown.stderr
        deleted = cli("vm", "delete", "rootvm", *vm_args)
        assert deleted.returncode == 0, deleted.stderr
        assert processes.wait_gone(qemu_pid, 10)
    finally:
        up.terminate()
        up.wait(30)
        log.close()
        down = cli("down", "--purge", *where)
        assert down.returncode == 0, down.stdout + down.stderr


def _api_up(api: Any) -> bool:
    try:
        api("GET", "/v2.0/networks")
    except AssertionError:
        return False
    return True
