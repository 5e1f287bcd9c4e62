"""Real VMs: QEMU booting a cloud image on a netmeta network, with real cloud-init.

A machine is an instance created through the API, as for a namespace guest,
plus on this host, under ``<state_dir>/machines/<name>/``:

- ``disk.qcow2``, a copy-on-write overlay of the image (the image is never
  written);
- QEMU, running in the fabric namespace with a tap ``g-<port_id[:11]>`` on the
  network's bridge — the name every guest device on a bridge has, so the
  agent's per-port rules apply to it as to any guest — the port's MAC, the
  instance's UUID and Nova's SMBIOS identity (see :mod:`netmeta.vm.qemu`);
- ``console.log``, the serial console, which tells when cloud-init is done
  and from which datasource (:mod:`netmeta.vm.console`).

``vm exec`` logs in over SSH as the image's default user with netmeta's own
key pair (``<state_dir>/ssh/id_ed25519``), which reached the VM through the
metadata like any OpenStack key: the instance's ``public_key`` is netmeta's
key, after the user's own key if one was given (one key per line; cloud-init
writes each line to ``authorized_keys``). SSH runs from an *access
namespace* on the VM's network — a Neutron port of its own (device owner
``netmeta:ssh``), its MAC and fixed IP on a veth on the bridge — never from
the host's namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

from netmeta.client import ApiError, Client
from netmeta.config import Config
from netmeta.drivers import dnsmasq, images, links, netns, processes, qemu, ssh
from netmeta.drivers.errors import DriverError
from netmeta.model import names
from netmeta.model.dhcp import DhcpLease
from netmeta.model.vm_diagnosis import lease_for
from netmeta.vm import console, qemu as qemu_cli
from netmeta.vm.guests import (
    GuestError, Records, check_new_name, first_ipv6, first_port, instance_fields, wait_for_bridge,
)
from netmeta.vm.image import Image, ImageError, Images

Progress = Callable[[str], None]
ACCESS_OWNER = "netmeta:ssh"
ACCESS_NS_PREFIX = "nmssh-"
NETMETA_KEY_NAME = "netmeta"
DEFAULT_SSH_USER = "debian"

# `vm renew` on a VM, run as root in the VM with its address as $1: find the
# interface holding it and make its DHCP client ask again. ifupdown's dhclient
# (netmeta's image) is stopped *without* releasing (-x) and started again with
# its own command line, so it sends a DHCPREQUEST for the same address and runs
# its hooks with the fresh options; the SSH session survives the moment the
# address is re-applied. systemd-networkd and dhcpcd have a renew of their own.
RENEW_SCRIPT = r"""set -u
ifc=$(ip -o -4 addr show to "$1" | awk '{print $2; exit}')
[ -n "$ifc" ] || { echo "no interface in the VM holds $1" >&2; exit 4; }
pidf=/run/dhclient.$ifc.pid
pid=$(cat "$pidf" 2>/dev/null || true)
if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    args=$(tr '\0' ' ' < "/proc/$pid/cmdline")
    dhclient -x -pf "$pidf" && exec $args
elif command -v networkctl >/dev/null 2>&1 && networkctl status "$ifc" >/dev/null 2>&1; then
    exec networkctl renew "$ifc"
elif command -v dhcpcd >/dev/null 2>&1; then
    exec dhcpcd -n "$ifc"
fi
echo "no DHCP client netmeta knows (ifupdown's dhclient, systemd-networkd, dhcpcd) manages $ifc" >&2
exit 5
"""


class MachineError(GuestError):
    """A VM operation failed; the message says what and why."""


@dataclass
class Machine:
    name: str
    instance_id: str
    port_id: str
    network_id: str
    mac: str
    ip: str
    directory: str
    image: str
    accel: str
    tap: str
    fabric: str
    ssh_user: str = DEFAULT_SSH_USER
    ip6: str = ""  # the port's first IPv6 address (EUI-64 on slaac/stateless subnets), "" without one

    @property
    def console_log(self) -> str:
        return os.path.join(self.directory, "console.log")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.directory, "qemu.pid")

    @property
    def qemu_log(self) -> str:
        return os.path.join(self.directory, "qemu.log")

    @property
    def disk(self) -> str:
        return os.path.join(self.directory, "disk.qcow2")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.directory, "known_hosts")

    def pid(self) -> int | None:
        return qemu.running_pid(self.pid_file)

    def console_text(self) -> str:
        try:
            with open(self.console_log, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def state(self) -> str:
        if self.pid() is None:
            return "stopped"
        done = console.finished(self.console_text())
        if done is None:
            return "booting"
        return f"ready ({done.datasource})"


@dataclass(frozen=True)
class Access:
    """The namespace that SSH runs from on one network."""

    network_id: str
    port_id: str
    namespace: str
    mac: str
    ip: str
    prefixlen: int


class Machines(Records[Machine]):
    def __init__(self, config: Config, client: Client | None = None) -> None:
        super().__init__(config.paths.machines_dir, config.paths.machine_record, Machine,
                         "no VM named {name!r} on this host (see `netmeta vm list`)", MachineError)
        self.config = config
        self.client = client or Client.for_config(config)
        # The SSH access port is the host's own plumbing, on any project's
        # network: the operator makes it (a given client is used as it is).
        self._admin = client
        self.key = config.paths.ssh_key

    # --- lifecycle ----------------------------------------------------------
    def boot(
        self,
        name: str,
        network: str,
        image: str,
        *,
        user_data: bytes | None = None,
        key_name: str | None = None,
        public_key: str | None = None,
        meta: dict[str, str] | None = None,
        ssh_user: str = DEFAULT_SSH_USER,
        progress: Progress | None = None,
        timeout: float = 60.0,
    ) -> Machine:
        """Create the instance and start QEMU; returns once QEMU runs (cloud-init comes later)."""
        say = progress or (lambda line: None)
        check_new_name(self.config, name, "VM", MachineError)
        if not qemu.available():
            raise MachineError(f"{qemu.QEMU} is not installed: run `bash scripts/setup.sh --vm`")
        try:
            base = Images(self.config).resolve(image, say)
            own_key = ssh.ensure_key(self.key, comment=f"netmeta@{self.config.state_dir}")
        except (ImageError, DriverError) as exc:
            raise MachineError(str(exc)) from exc
        net = self.client.find("networks", network)
        keys = [k.strip() for k in (public_key or "").splitlines() if k.strip()] + [own_key]
        instance = self.client.create_instance(**instance_fields(
            name, net["id"], host=self.config.host, user_data=user_data, key_name=key_name or NETMETA_KEY_NAME,
            public_key="\n".join(keys), meta=meta))
        try:
            port, ip = first_port(self.client, instance)
            machine = Machine(
                name=name, instance_id=instance["id"], port_id=port["id"], network_id=net["id"],
                mac=port["mac_address"], ip=ip,
                directory=os.path.join(self.root, name), image=base.name,
                accel=self._accelerator(), tap=names.guest_outer_name(port["id"]),
                fabric=self.config.fabric_namespace, ssh_user=ssh_user, ip6=first_ipv6(port),
            )
            self.save(name, machine)
            self._start(machine, base, net.get("mtu") or 1500, timeout)
        except BaseException:
            self._teardown_local(name)
            self.client.delete_instance(instance["id"])
            raise
        say(f"{name}: QEMU pid {machine.pid()} ({machine.accel}), tap {machine.tap} on "
            f"{names.bridge_name(machine.network_id)}, console {machine.console_log}")
        return machine

    def _accelerator(self) -> str:
        if self.config.vm_accel != "auto":
            return self.config.vm_accel
        return "kvm" if qemu.kvm_usable() else "tcg"

    def _start(self, machine: Machine, base: Image, mtu: int, timeout: float) -> None:
        fabric = machine.fabric or None
        bridge = names.bridge_name(machine.network_id)
        wait_for_bridge(fabric, bridge, timeout)
        try:
            images.create_overlay(base.disk, base.format, machine.disk)
            spec = qemu_cli.VmSpec(
                name=machine.name, instance_id=machine.instance_id, mac=machine.mac, tap=machine.tap,
                disk=machine.disk, console_log=machine.console_log, pid_file=machine.pid_file,
                accel=machine.accel, vcpus=self.config.vm_vcpus, memory_mb=self.config.vm_memory_mb,
                kernel=base.kernel, initrd=base.initrd, cmdline=base.cmdline,
            )
            qemu.start(qemu_cli.argv(spec), namespace=fabric, tap=machine.tap, bridge=bridge,
                       pid_file=machine.pid_file, log=machine.qemu_log, mtu=mtu, timeout=timeout)
        except (DriverError, qemu_cli.SpecError) as exc:
            raise MachineError(f"{machine.name}: {exc}") from exc

    def wait_ready(self, name: str, timeout: float = 300.0, poll: float = 1.0) -> console.Finished:
        """Wait for cloud-init's final message on the console."""
        machine = self.get(name)
        deadline = time.monotonic() + timeout
        while True:
            done = console.finished(machine.console_text())
            if done is not None:
                return done
            if machine.pid() is None:
                raise MachineError(f"{name}: QEMU exited before cloud-init finished (see {machine.console_log})")
            if time.monotonic() > deadline:
                raise MachineError(f"{name}: cloud-init did not finish in {timeout:.0f}s "
                                   f"(see `netmeta vm console {name}`)")
            time.sleep(poll)

    def delete(self, name: str) -> None:
        machine = self.get(name)
        self._teardown_local(name)
        self._release_lease(machine)
        try:
            self.client.delete_instance(machine.instance_id)
        except ApiError as exc:
            if exc.status != 404:
                raise MachineError(f"VM {name} removed from this host, but its instance remains: {exc}") from exc
        if not any(m.network_id == machine.network_id for m in self.list_all()):
            self.remove_access(machine.network_id, delete_port=True)

    def _teardown_local(self, name: str) -> None:
        try:
            machine = self.get(name)
        except MachineError:
            return
        pid = machine.pid()
        if pid is not None:
            processes.stop_pid(pid, machine.pid_file, timeout=10.0)
        # QEMU's tap goes with QEMU; a tap left by a QEMU killed half-way is removed here.
        if not machine.fabric or netns.namespace_exists(machine.fabric):
            links.delete_link(machine.fabric or None, machine.tap)
        shutil.rmtree(machine.directory, ignore_errors=True)

    def teardown_all_local(self) -> list[str]:
        """Stop every VM and remove its overlay and access namespaces (``netmeta down``)."""
        removed = super().teardown_all_local()
        for access in self._accesses():
            self.remove_access(access.network_id, delete_port=False)
            removed.append(access.namespace)
        return removed

    # --- SSH ----------------------------------------------------------------
    @property
    def admin(self) -> Client:
        if self._admin is None:
            self._admin = Client.for_config(self.config, admin=True)
        return self._admin

    def _access_path(self, network_id: str) -> str:
        return os.path.join(self.root, ".access", f"{network_id}.json")

    def _accesses(self) -> list[Access]:
        folder = os.path.join(self.root, ".access")
        if not os.path.isdir(folder):
            return []
        found = []
        for entry in sorted(os.listdir(folder)):
            with open(os.path.join(folder, entry), encoding="utf-8") as handle:
                found.append(Access(**json.load(handle)))
        return found

    def access(self, machine: Machine, timeout: float = 30.0) -> Access:
        """The access namespace on ``machine``'s network, made (with its port) if needed."""
        path = self._access_path(machine.network_id)
        try:
            with open(path, encoding="utf-8") as handle:
                known = Access(**json.load(handle))
        except FileNotFoundError:
            known = None
        if known is None:
            ports = self.admin.get("/v2.0/ports", network_id=machine.network_id, device_owner=ACCESS_OWNER)["ports"]
            port = ports[0] if ports else self.admin.request("POST", "/v2.0/ports", {"port": {
                "network_id": machine.network_id, "name": "netmeta-ssh", "device_owner": ACCESS_OWNER,
            }})["port"]
            ipv4 = [f for f in port["fixed_ips"] if ":" not in f["ip_address"]]
            if not ipv4:
                raise MachineError(f"network {machine.network_id} gave the SSH port no IPv4 address")
            subnet = self.admin.get(f"/v2.0/subnets/{ipv4[0]['subnet_id']}")["subnet"]
            known = Access(
                network_id=machine.network_id, port_id=port["id"],
                namespace=ACCESS_NS_PREFIX + port["id"][:11], mac=port["mac_address"],
                ip=ipv4[0]["ip_address"], prefixlen=int(subnet["cidr"].split("/")[1]),
            )
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(asdict(known), handle, indent=1)
        fabric = machine.fabric or None
        try:
            wait_for_bridge(fabric, names.bridge_name(machine.network_id), timeout)
            netns.ensure_namespace(known.namespace)
            links.ensure_veth_into(known.namespace, "eth0", fabric, names.guest_outer_name(known.port_id),
                                   names.bridge_name(machine.network_id), known.mac)
            links.ensure_addresses(known.namespace, "eth0", {f"{known.ip}/{known.prefixlen}"})
        except DriverError as exc:
            raise MachineError(f"access namespace {known.namespace}: {exc}") from exc
        return known

    def remove_access(self, network_id: str, *, delete_port: bool) -> None:
        path = self._access_path(network_id)
        try:
            with open(path, encoding="utf-8") as handle:
                known = Access(**json.load(handle))
        except FileNotFoundError:
            return
        fabric = self.config.fabric_namespace or None
        if fabric is None or netns.namespace_exists(fabric):
            links.delete_link(fabric, names.guest_outer_name(known.port_id))
        netns.delete_namespace(known.namespace)
        if delete_port:
            try:
                self.admin.request("DELETE", f"/v2.0/ports/{known.port_id}")
            except ApiError as exc:
                if exc.status != 404:
                    raise MachineError(f"SSH port {known.port_id} remains: {exc}") from exc
        os.unlink(path)

    def exec(self, name: str, argv: Sequence[str], *, capture: bool = False,
             timeout: float | None = None) -> ssh.Result:
        """Run ``argv`` in the VM over SSH, from the access namespace on its network."""
        machine = self.get(name)
        if machine.pid() is None:
            raise MachineError(f"{name} is not running")
        keys = console.host_keys(machine.console_text())
        if not keys:
            raise MachineError(f"{name} has not printed its SSH host keys yet: cloud-init is still booting "
                               f"(`netmeta vm console {name} --follow`)")
        with open(machine.known_hosts, "w", encoding="ascii") as handle:
            handle.write(console.known_hosts(machine.ip, keys))
        where = self.access(machine)
        command = ssh.ssh_argv(self.key, machine.known_hosts, machine.ssh_user, machine.ip, list(argv))
        try:
            return ssh.run(where.namespace, command, capture=capture, timeout=timeout)
        except DriverError as exc:
            raise MachineError(f"{name}: {exc}") from exc

    def run_batch(self, name: str, commands: Mapping[str, Sequence[str]], *,
                  timeout: float = 90.0) -> dict[str, tuple[int, str]]:
        """Run several commands in the VM over one SSH connection: key → (exit code, output)."""
        done = self.exec(name, ssh.batch_script(commands), capture=True, timeout=timeout)
        found = ssh.split_batch(done.stdout or "")
        if not found and done.returncode != 0:
            raise MachineError(f"{name}: ssh exited {done.returncode}: {(done.stderr or '').strip()[-300:]}")
        return found

    def renew(self, name: str, timeout: float = 120.0) -> DhcpLease | None:
        """Renew the VM's DHCP lease from inside it, over SSH; dnsmasq's lease for it afterwards."""
        machine = self.get(name)
        done = self.exec(name, ["sudo", "-n", "sh", "-c", RENEW_SCRIPT, "renew", machine.ip], capture=True,
                         timeout=timeout)
        if done.returncode != 0:
            said = " ".join(line for line in (done.stderr or "").splitlines()
                            if line.strip() and "unable to resolve host" not in line)
            raise MachineError(f"{name}: the lease was not renewed (exit {done.returncode}): {said[-400:]}")
        return self.lease(machine)

    def _release_lease(self, machine: Machine) -> None:
        """Release the stopped VM's lease in this host's qdhcp namespace.

        A namespace guest's dhclient releases its lease when it is deleted; a
        VM's QEMU is just stopped, so netmeta releases for it — otherwise the
        next port given the same address would get no lease from dnsmasq
        until this one expired (a day by default).
        """
        lease = self.lease(machine)
        if lease is None:
            return
        namespace = names.dhcp_namespace(machine.network_id)
        try:
            taps = [t for t in links.list_links(namespace) if t.startswith(names.TAP_PREFIX)]
            for tap in taps:
                dnsmasq.release(namespace, tap, lease.ip, lease.mac, lease.client_id)
        except DriverError:
            pass  # the network's DHCP namespace is gone: so is its lease

    def lease(self, machine: Machine) -> DhcpLease | None:
        """dnsmasq's lease for the VM's MAC, if it holds one."""
        try:
            with open(self.config.paths.dhcp_file(machine.network_id, "leases"), encoding="utf-8") as handle:
                return lease_for(handle.read(), machine.mac)
        except FileNotFoundError:
            return None
