"""The QEMU command line of a real VM, as a pure function of what it boots.

A netmeta VM must look to cloud-init exactly like a Nova instance, or
cloud-init quietly settles for ``DataSourceNone`` and still says "done":

- SMBIOS type 1 ``product=OpenStack Nova`` (``manufacturer``, ``family`` and
  ``serial``/``uuid`` as Nova's libvirt driver writes them): cloud-init's
  ``ds-identify`` enables the OpenStack datasource on that product name;
- ``-uuid`` is the instance id, so the firmware's system UUID matches it;
- one ``virtio-net`` NIC with the port's MAC: dnsmasq hands the port's fixed
  IP only to that MAC, and the metadata service knows the guest by it.

The NIC's backend is a tap named like every other guest device on a
network's bridge (``g-<port_id[:11]>``), which the driver creates on the
bridge before QEMU opens it (``script=no``: QEMU never runs helper scripts
as root). The serial console goes to a file, which ``netmeta vm console``
shows.

The accelerator is KVM only when a short probe showed it works
(:func:`netmeta.drivers.qemu.kvm_usable`); otherwise TCG with one thread per
vCPU and a 256 MB translation cache — the default cache of a 512 MB guest is
smaller and makes a cloud-init boot slower under software emulation.

Nothing here does I/O: :func:`argv` turns a :class:`VmSpec` into an argv
that :mod:`netmeta.drivers.qemu` runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("kvm", "tcg")
# TCG translation-block cache, MB: large enough that a booting Debian does
# not keep retranslating (measured in BENCHMARKS.md).
TCG_TB_SIZE = 256
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TAP = re.compile(r"^[^/\s:,=]{1,15}$")

# Nova's libvirt driver (nova/virt/libvirt/config.py, sysinfo) writes these.
SMBIOS_MANUFACTURER = "OpenStack Foundation"
SMBIOS_PRODUCT = "OpenStack Nova"
SMBIOS_FAMILY = "Virtual Machine"


class SpecError(ValueError):
    """A VM spec that QEMU must not be started with; the message says why."""


@dataclass(frozen=True)
class VmSpec:
    """Everything that decides a VM's QEMU command line."""

    name: str
    instance_id: str
    mac: str
    tap: str
    disk: str
    console_log: str
    pid_file: str
    accel: str = "tcg"
    vcpus: int = 1
    memory_mb: int = 512
    # Direct kernel boot (netmeta's own images have no boot loader); empty
    # for a user's cloud image, which boots from its disk.
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    # Nova's version string in SMBIOS; cloud-init does not read it.
    smbios_version: str = "netmeta"

    def __post_init__(self) -> None:
        if self.accel not in ACCELERATORS:
            raise SpecError(f"accelerator {self.accel!r}: expected one of {', '.join(ACCELERATORS)}")
        if not _UUID.match(self.instance_id):
            raise SpecError(f"instance id {self.instance_id!r} is not a lower-case UUID")
        if not _MAC.match(self.mac):
            raise SpecError(f"MAC {self.mac!r} is not a lower-case unicast address")
        if int(self.mac[:2], 16) & 1:
            raise SpecError(f"MAC {self.mac!r} is a multicast address")
        if not _TAP.match(self.tap):
            raise SpecError(f"tap name {self.tap!r}: at most 15 characters, no '/', ':', ',', '=' or spaces")
        if not 1 <= self.vcpus <= 64:
            raise SpecError("vcpus must be between 1 and 64")
        if not 64 <= self.memory_mb <= 65536:
            raise SpecError("memory must be between 64 and 65536 MB")
        if bool(self.kernel) != bool(self.initrd):
            raise SpecError("a direct kernel boot needs both a kernel and an initrd")
        if self.cmdline and not self.kernel:
            raise SpecError("a kernel command line needs a kernel")
        for label, value in (("name", self.name), ("disk", self.disk), ("console log", self.console_log),
                             ("pid file", self.pid_file), ("kernel", self.kernel), ("initrd", self.initrd),
                             ("kernel command line", self.cmdline), ("SMBIOS version", self.smbios_version)):
            if "\0" in value or "\n" in value:
                raise SpecError(f"{label} contains a NUL or newline")
        for label, value in (("disk", self.disk), ("console log", self.console_log), ("pid file", self.pid_file)):
            if not value.startswith("/"):
                raise SpecError(f"{label} {value!r} must be an absolute path")
        if "," in self.console_log:
            # ``-serial file:`` takes no escaping.
            raise SpecError(f"console log {self.console_log!r} must not contain a comma")


def escape(value: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return value.replace(",", ",,")


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,thread=multi,tb-size={TCG_TB_SIZE}"]


def smbios(spec: VmSpec) -> str:
    fields = (
        ("manufacturer", SMBIOS_MANUFACTURER),
        ("product", SMBIOS_PRODUCT),
        ("version", spec.smbios_version),
        ("serial", spec.instance_id),
        ("uuid", spec.instance_id),
        ("family", SMBIOS_FAMILY),
    )
    return "type=1," + ",".join(f"{key}={escape(value)}" for key, value in fields)


def argv(spec: VmSpec) -> list[str]:
    """The full argv: QEMU daemonizes once its devices are set up, writing its pid file."""
    out = [
        QEMU,
        "-name", f"{escape(spec.name)},process=netmeta-vm-{escape(spec.name)}",
        "-machine", "pc",
        *accel_args(spec.accel),
        "-smp", str(spec.vcpus),
        "-m", str(spec.memory_mb),
        "-uuid", spec.instance_id,
        "-smbios", smbios(spec),
        "-nodefaults",
        "-display", "none",
        "-vga", "none",
        "-serial", f"file:{spec.console_log}",
        "-drive", f"file={escape(spec.disk)},if=virtio,format=qcow2,discard=unmap,cache=writeback",
        "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={spec.mac}",
        # A booting guest waits for entropy (sshd host keys, crng init).
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
        "-rtc", "base=utc",
        "-pidfile", spec.pid_file,
        "-daemonize",
    ]
    if spec.kernel:
        out += ["-kernel", spec.kernel, "-initrd", spec.initrd]
        if spec.cmdline:
            out += ["-append", spec.cmdline]
    return out
