"""``netmeta image …`` and the real-VM side of ``netmeta vm …`` (QEMU + cloud-init).

``vm boot --image`` makes a VM instead of a namespace guest; ``vm exec``,
``vm list`` and ``vm delete`` work on both kinds, ``vm console`` on VMs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from netmeta.config import Config

if TYPE_CHECKING:
    from netmeta.model.dhcp import DhcpLease

Adder = Callable[[str, Any, str], argparse.ArgumentParser]


def add_image_parsers(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    from netmeta.cli.options import GUESTS

    image = sub.add_parser("image", help="cloud images for real VMs: build, list",
                           description="cloud images for real VMs: build, list")
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = add("build", cmd_image_build, "build a Debian 12 cloud image from Debian's packages (mmdebstrap); "
                "cached in the image directory, a second call is instant", (GUESTS,), image_sub)
    build.add_argument("name", nargs="?", default="debian-12", help="image to build (default debian-12)")
    build.add_argument("--rebuild", action="store_true", help="build again even if cached")
    add("list", cmd_image_list, "list the built images", (GUESTS,), image_sub)


def add_vm_options(boot: argparse.ArgumentParser, add_vm: Adder) -> None:
    """``--image`` and friends on ``vm boot``; ``vm console``."""
    g = boot.add_argument_group("real VM (QEMU)")
    g.add_argument("--image", help="boot a real VM: an image name (debian-12, built if needed) or a .qcow2 file")
    g.add_argument("--wait", action="store_true", help="wait until cloud-init has finished")
    g.add_argument("--ssh-user", dest="ssh_user", default="debian", help="the image's default user (debian)")
    con = add_vm("console", cmd_vm_console, "show a VM's serial console")
    con.add_argument("name", help="the VM's name")
    con.add_argument("-f", "--follow", action="store_true", help="keep showing what the VM prints")


def _progress(line: str) -> None:
    print(line, flush=True)


def cmd_image_build(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.image import ImageError, Images

    images = Images(config)
    cached = images.get(args.name)
    if cached is not None and not args.rebuild:
        print(f"{args.name}: cached ({cached.disk}, built in {cached.build_seconds:.0f} s)")
        return 0
    try:
        images.build(args.name, _progress, rebuild=args.rebuild)
    except ImageError as exc:
        print(f"netmeta: image build: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_image_list(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.image import Images, image_dir

    cfg = config
    found = Images(cfg).list_all()
    print(f"{'NAME':14} {'SIZE':>8} {'BUILT':20} {'BUILD':>7} DISK")
    for image in found:
        size = os.stat(image.disk).st_blocks * 512 // (1024 * 1024) if os.path.exists(image.disk) else 0
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(image.built))
        print(f"{image.name:14} {size:>6}MB {built:20} {image.build_seconds:>6.0f}s {image.disk}")
    if not found:
        print(f"(none in {image_dir(cfg)}: `netmeta image build`)")
    return 0


def cmd_vm_boot(args: argparse.Namespace, config: Config, user_data: bytes | None, public_key: str | None,
                meta: dict[str, str]) -> int:
    from netmeta.client import ApiError
    from netmeta.vm.machines import MachineError, Machines

    machines = Machines(config)
    try:
        machine = machines.boot(
            args.name, args.network, args.image, user_data=user_data, key_name=args.key_name,
            public_key=public_key, meta=meta, ssh_user=args.ssh_user, progress=_progress,
        )
    except (MachineError, ApiError, OSError) as exc:
        print(f"netmeta: vm boot {args.name}: {exc}", file=sys.stderr)
        return 1
    ip6 = f"  ip6 {machine.ip6}" if machine.ip6 else ""
    print(f"{machine.name}  ip {machine.ip}{ip6}  instance {machine.instance_id}  VM ({machine.accel})  "
          f"console: netmeta vm console {machine.name} --follow")
    if args.wait:
        started = time.monotonic()
        try:
            done = machines.wait_ready(machine.name, timeout=max(args.timeout, 300.0))
        except MachineError as exc:
            print(f"netmeta: {exc}", file=sys.stderr)
            return 1
        print(f"{machine.name}: cloud-init {done.version} finished after {time.monotonic() - started:.0f} s, "
              f"datasource {done.datasource}")
        if not done.openstack:
            print(f"netmeta: {machine.name}: cloud-init fell back to {done.datasource}: it did not read netmeta",
                  file=sys.stderr)
            return 1
    return 0


def cmd_vm_console(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.machines import MachineError, Machines

    try:
        machine = Machines(config).get(args.name)
    except MachineError as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    try:
        with open(machine.console_log, "rb") as handle:
            while True:
                chunk = handle.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                    continue
                if not args.follow or machine.pid() is None:
                    return 0
                time.sleep(0.2)
    except FileNotFoundError:
        print(f"netmeta: {args.name} has no console log yet", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def is_machine(config: Config, name: str) -> bool:
    from netmeta.vm.machines import Machines

    return Machines(config).exists(name)


def cmd_vm_exec(args: argparse.Namespace, config: Config) -> int:
    from netmeta.client import ApiError
    from netmeta.vm.machines import MachineError, Machines

    try:
        return Machines(config).exec(args.name, args.argv).returncode
    except (MachineError, ApiError) as exc:
        print(f"netmeta: vm exec {args.name}: {exc}", file=sys.stderr)
        return 1


def renewed(name: str, lease: DhcpLease | None) -> str:
    """What `vm renew` says after a VM renewed its lease."""
    if lease is None:
        return f"{name}: lease renewed from inside the VM (dnsmasq shows no lease for it yet)"
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(lease.expiry))
    return f"{name}: lease renewed from inside the VM (dnsmasq's lease of {lease.ip} now runs until {until})"


def list_rows(config: Config) -> list[tuple[str, str, str, str, str, str]]:
    """(name, kind, state, ip, instance, where) for every guest and VM on this host."""
    from netmeta.drivers import netns
    from netmeta.vm.guests import Guests
    from netmeta.vm.machines import Machines

    rows = []
    for g in Guests(config).list_all():
        state = "running" if netns.namespace_exists(g.namespace) else "gone"
        rows.append((g.name, "namespace", state, g.ip, g.instance_id, g.namespace))
    for m in Machines(config).list_all():
        rows.append((m.name, "vm", m.state(), m.ip, m.instance_id, f"{m.image} ({m.accel})"))
    return sorted(rows)
