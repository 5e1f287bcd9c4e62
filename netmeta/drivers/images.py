"""Disk images: a Debian root file system from Debian's packages, made bootable.

The steps, each a program from Debian's own packages:

1. ``mmdebstrap`` installs a suite and a package list into a directory
   (``--mode=root``: the build runs as root anyway, and the other modes need
   user namespaces that a container may not have). Hooks run in that
   directory after apt is done: they write fstab and cloud-init's settings.
2. ``mke2fs -d`` makes an ext4 file system *from* that directory into a
   sparse file — no loop device, no mount, nothing in the host's mount table.
3. ``qemu-img convert`` turns it into a qcow2 that VMs use as the read-only
   base of their copy-on-write overlays (``qemu-img create -b``).

The kernel and initrd are copied out next to the disk: netmeta's images are
booted directly (``-kernel``), so they need no boot loader or partition table.

Progress lines (mmdebstrap's ``I: …``) go to a callback as they come.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from typing import Any, Callable, Sequence

from netmeta.drivers.errors import PermanentDriverError, translate

Progress = Callable[[str], None]
REQUIRED = {"mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs", "qemu-img": "qemu-utils"}


def missing_tools() -> list[str]:
    """``tool (package)`` for each program an image build needs but lacks."""
    return [f"{tool} ({pkg})" for tool, pkg in REQUIRED.items() if shutil.which(tool) is None]


def _stream(argv: Sequence[str], progress: Progress, what: str, timeout: float) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, text=True, errors="replace")
    except OSError as exc:
        raise translate(exc, what) from exc
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-15:]
                progress(line)
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise PermanentDriverError(f"{what} did not finish in {timeout:.0f}s") from exc
    finally:
        proc.stdout.close()
    if code != 0:
        raise PermanentDriverError(f"{what} failed (exit {code}):\n  " + "\n  ".join(tail))


def debootstrap(
    target: str, suite: str, packages: Sequence[str], hooks: Sequence[str], progress: Progress,
    *, timeout: float = 1800.0,
) -> None:
    """Install ``suite`` with ``packages`` into the (absent or empty) directory ``target``.

    Each hook is a shell command run after the installation with ``$1`` the
    root directory (mmdebstrap's ``--customize-hook``).
    """
    argv = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory"]
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [f"--customize-hook={hook}" for hook in hooks]
    argv += [suite, target]
    _stream(argv, progress, "mmdebstrap", timeout)


def boot_files(root: str) -> tuple[str, str]:
    """The newest kernel and its initrd under ``<root>/boot``."""
    kernels = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
    if not kernels:
        raise PermanentDriverError(f"no kernel in {root}/boot (is a linux-image package in the list?)")
    kernel = kernels[-1]
    initrd = os.path.join(root, "boot", "initrd.img-" + os.path.basename(kernel)[len("vmlinuz-"):])
    if not os.path.exists(initrd):
        raise PermanentDriverError(f"kernel {kernel} has no initrd {initrd}")
    return kernel, initrd


def make_ext4(root: str, raw: str, size_mb: int, label: str, progress: Progress) -> None:
    """An ext4 file system holding ``root``'s tree, as a sparse file of ``size_mb``."""
    _stream(["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", root, raw, f"{size_mb}M"],
            progress, "mke2fs", 600.0)


def to_qcow2(raw: str, qcow2: str, progress: Progress) -> None:
    _stream(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], progress, "qemu-img convert", 600.0)


def info(path: str) -> dict[str, Any]:
    """``qemu-img info`` of a disk image (format, virtual size, backing file)."""
    try:
        done = subprocess.run(["qemu-img", "info", "--output=json", "-U", path],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise translate(exc, f"qemu-img info {path}") from exc
    if done.returncode != 0:
        raise PermanentDriverError(f"{path} is not a disk image QEMU can read: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def create_overlay(base: str, base_format: str, overlay: str) -> None:
    """A qcow2 that reads from ``base`` and keeps every write to itself."""
    try:
        done = subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(base), "-F", base_format, overlay],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise translate(exc, f"qemu-img create {overlay}") from exc
    if done.returncode != 0:
        raise PermanentDriverError(f"cannot create overlay {overlay} on {base}: {done.stderr.strip()}")
