"""Cloud images for real VMs: netmeta's own, built from Debian's packages, or a user's file.

``netmeta image build`` makes ``debian-12``: Debian 12 with the cloud kernel,
systemd, cloud-init, ifupdown with ISC dhclient (what cloud-init's Debian
renderer writes for), openssh-server, sudo and curl — the pieces of Debian's
own cloud images that a metadata service talks to, and nothing of the rest.
It is built once into the image directory (``image_dir``; by default
``<state_dir>/images``) and reused: a second build, or a ``vm boot`` of the
name, finds ``<name>/image.json`` and is instant. A build goes to a
temporary directory and is renamed into place only when complete, under a
lock, so an interrupted or concurrent build never leaves a half image that
looks cached.

The image has no boot loader: QEMU boots its kernel and initrd directly,
with the serial console on ``ttyS0``. Cloud-init keeps Debian's default
datasource list — so, as on a real cloud, it only picks OpenStack because
the firmware says ``OpenStack Nova``. The one change to cloud-init's
defaults: host keys are ed25519 and ECDSA only (RSA key generation costs
seconds under software emulation), and no root resize (the file system is
the whole disk, already its size). The locale is ``C.UTF-8``, which needs
no generation.

IPv6 comes up from what cloud-init renders out of ``network_data.json``
(ifupdown: ``inet6 auto`` for ``ipv6_slaac``, ``inet6 dhcp`` — ISC
``dhclient -6`` — for ``ipv6_dhcpv6-stateful``), so the kernel takes router
advertisements as any Debian host does. One sysctl is added: route
information options up to /128 (``accept_ra_rt_info_max_plen``; Linux's
default 0 ignores them). A Neutron router advertises its route to the
metadata address ``fe80::a9fe:a9fe/128`` that way, and Neutron expects the
guest OS to pick it up: without it a routed guest resolves the address on
its own link and never reaches the router (a DHCP namespace holding the
address answers instead, when there is one).

A user's own image (``--image FILE.qcow2``) is used as it is, booting from
its disk; only its format is read.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from netmeta.config import Config
from netmeta.drivers import images
from netmeta.drivers.errors import DriverError

Progress = Callable[[str], None]
DEFAULT_IMAGE = "debian-12"
# Bumped whenever a recipe changes: a cached image of another version is rebuilt.
RECIPE_VERSION = 3


class ImageError(Exception):
    """An image cannot be built or used; the message says why and what to do."""


@dataclass(frozen=True)
class Recipe:
    suite: str
    packages: tuple[str, ...]
    cmdline: str
    size_mb: int = 2048
    # Shell commands run by mmdebstrap after the install, "$1" the root.
    hooks: tuple[str, ...] = ()
    # (path under the root, content) written after the hooks.
    files: tuple[tuple[str, str], ...] = ()


_CLOUD_CFG = """\
# netmeta: RSA host keys take seconds to generate under software emulation.
ssh_genkeytypes: [ed25519, ecdsa]
# The root file system is the whole disk (no partition to grow), made to its size.
resize_rootfs: false
growpart: {mode: "off"}
"""

# Neutron routers advertise fe80::a9fe:a9fe/128 as a route information option;
# Linux takes none by default. ``default`` for interfaces made after this is
# applied, the glob for those that already exist (udev re-applies it to each
# new interface by name).
_SYSCTL_IPV6 = """\
# netmeta: accept the route to the metadata address fe80::a9fe:a9fe that routers advertise.
net.ipv6.conf.default.accept_ra_rt_info_max_plen = 128
net.ipv6.conf.*.accept_ra_rt_info_max_plen = 128
"""

RECIPES: dict[str, Recipe] = {
    "debian-12": Recipe(
        suite="bookworm",
        packages=(
            "linux-image-cloud-amd64", "systemd-sysv", "udev", "cloud-init", "ifupdown",
            "isc-dhcp-client", "openssh-server", "netbase", "iproute2", "sudo", "curl", "procps",
        ),
        # No Spectre mitigations: they cost a software-emulated guest dearly
        # and protect nothing in a throwaway test VM.
        cmdline="root=/dev/vda rw console=ttyS0,115200n8 mitigations=off",
        files=(
            ("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"),
            ("etc/cloud/cloud.cfg.d/90-netmeta.cfg", _CLOUD_CFG),
            ("etc/sysctl.d/60-netmeta-ipv6.conf", _SYSCTL_IPV6),
            # Every VM gets its own machine id (systemd makes one on first boot).
            ("etc/machine-id", ""),
            ("etc/hostname", "localhost\n"),
            # A locale that needs no locale-gen: cloud-init then leaves it as it is
            # (generating en_US.UTF-8 costs tens of seconds under emulation).
            ("etc/default/locale", "LANG=C.UTF-8\n"),
            # Nothing in a test VM runs VMs: udev would load KVM for the virtual CPU.
            ("etc/modprobe.d/netmeta.conf", "blacklist kvm\nblacklist kvm_amd\nblacklist kvm_intel\n"),
        ),
        hooks=(
            # Every VM gets its own host keys (cloud-init makes them); no DNS of the build host.
            'rm -f "$1"/etc/ssh/ssh_host_* "$1/etc/resolv.conf"',
            'systemctl --root="$1" mask e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer',
        ),
    ),
}


@dataclass(frozen=True)
class Image:
    """A bootable disk: the base of every VM overlay made from it."""

    name: str
    disk: str
    format: str
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    built: float = 0.0
    build_seconds: float = 0.0
    recipe_version: int = 0
    packages: list[str] = field(default_factory=list)

    @property
    def own(self) -> bool:
        """True for netmeta's images (direct kernel boot), False for a user's file."""
        return bool(self.kernel)


def image_dir(config: Config) -> str:
    return config.image_dir or config.paths.images_dir


class Images:
    def __init__(self, config: Config) -> None:
        self.root = image_dir(config)

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def get(self, name: str) -> Image | None:
        """The cached image ``name``, or None if it is not built (or is of an old recipe)."""
        try:
            with open(os.path.join(self._dir(name), "image.json"), encoding="utf-8") as handle:
                record = json.load(handle)
        except (FileNotFoundError, ValueError):
            return None
        image = Image(**record)
        recipe = RECIPES.get(name)
        if recipe is not None:
            if image.recipe_version != RECIPE_VERSION:
                return None
            # The command line is not on the disk: the recipe's current one applies.
            image = dataclasses.replace(image, cmdline=recipe.cmdline)
        return image

    def list_all(self) -> list[Image]:
        if not os.path.isdir(self.root):
            return []
        found = [self.get(name) for name in sorted(os.listdir(self.root)) if not name.startswith(".")]
        return [image for image in found if image is not None]

    def resolve(self, ref: str, progress: Progress | None = None) -> Image:
        """``ref`` as a built image name (built now if it is a known recipe) or a disk file."""
        if os.sep in ref or ref.endswith((".qcow2", ".img", ".raw")):
            return self.user_image(ref)
        found = self.get(ref)
        if found is not None:
            return found
        if ref in RECIPES:
            return self.build(ref, progress or (lambda line: None))
        known = ", ".join(sorted({*RECIPES, *(i.name for i in self.list_all())}))
        raise ImageError(f"no image named {ref!r} (known: {known}); or give a path to a .qcow2 file")

    def user_image(self, path: str) -> Image:
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise ImageError(f"image file {path} does not exist")
        try:
            found = images.info(path)
        except DriverError as exc:
            raise ImageError(str(exc)) from exc
        fmt = str(found.get("format", ""))
        if fmt not in ("qcow2", "raw"):
            raise ImageError(f"{path} is a {fmt or 'unknown'} image: use qcow2 or raw")
        return Image(name=os.path.basename(path), disk=path, format=fmt)

    def build(self, name: str, progress: Progress, *, rebuild: bool = False) -> Image:
        """Build ``name`` from its recipe unless a complete build is cached."""
        recipe = RECIPES.get(name)
        if recipe is None:
            raise ImageError(f"no recipe for {name!r}: netmeta builds {', '.join(sorted(RECIPES))}")
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        with self._locked(name):
            cached = self.get(name)
            if cached is not None and not rebuild:
                return cached
            missing = images.missing_tools()
            if missing:
                raise ImageError("an image build needs " + ", ".join(missing)
                                 + ": run `bash scripts/setup.sh --vm` (or apt-get install them)")
            return self._build(name, recipe, progress)

    @staticmethod
    def _lock_path(root: str, name: str) -> str:
        return os.path.join(root, f".{name}.lock")

    def _locked(self, name: str) -> "_Lock":
        return _Lock(self._lock_path(self.root, name))

    def _build(self, name: str, recipe: Recipe, progress: Progress) -> Image:
        started = time.monotonic()
        work = os.path.join(self.root, f".{name}.build-{os.getpid()}")
        _remove_tree(work)
        os.makedirs(work, mode=0o755)
        rootfs = os.path.join(work, "rootfs")
        try:
            progress(f"building {name}: Debian {recipe.suite} with {len(recipe.packages)} packages (mmdebstrap)")
            images.debootstrap(rootfs, recipe.suite, recipe.packages, recipe.hooks, progress)
            for relative, content in recipe.files:
                _write_into(rootfs, relative, content)
            kernel, initrd = images.boot_files(rootfs)
            shutil.copyfile(kernel, os.path.join(work, "vmlinuz"))
            shutil.copyfile(initrd, os.path.join(work, "initrd.img"))
            progress(f"making an ext4 file system of {recipe.size_mb} MB from the tree")
            raw = os.path.join(work, "disk.raw")
            images.make_ext4(rootfs, raw, recipe.size_mb, "netmeta-root", progress)
            _remove_tree(rootfs)
            progress("converting to qcow2")
            images.to_qcow2(raw, os.path.join(work, "disk.qcow2"), progress)
            os.unlink(raw)
            final = self._dir(name)
            image = Image(
                name=name, disk=os.path.join(final, "disk.qcow2"), format="qcow2",
                kernel=os.path.join(final, "vmlinuz"), initrd=os.path.join(final, "initrd.img"),
                cmdline=recipe.cmdline, built=time.time(), build_seconds=round(time.monotonic() - started, 1),
                recipe_version=RECIPE_VERSION, packages=list(recipe.packages),
            )
            with open(os.path.join(work, "image.json"), "w", encoding="utf-8") as handle:
                json.dump(asdict(image), handle, indent=1)
            _remove_tree(final)
            os.rename(work, final)
        except DriverError as exc:
            _remove_tree(work)
            raise ImageError(f"building {name}: {exc}") from exc
        except BaseException:
            _remove_tree(work)
            raise
        progress(f"built {name} in {image.build_seconds:.0f} s: {image.disk}")
        return image

    def remove(self, name: str) -> bool:
        path = self._dir(name)
        if not os.path.isdir(path):
            return False
        _remove_tree(path)
        return True


class _Lock:
    """An exclusive ``flock`` on a file: one build of a name at a time, across processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_Lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _write_into(root: str, relative: str, content: str) -> None:
    """Write a file of the image, refusing any path that leads out of its root."""
    path = os.path.realpath(os.path.join(root, relative))
    if not path.startswith(os.path.realpath(root) + os.sep):
        raise ImageError(f"{relative!r} is outside the image")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, 0o644)


def _mounts_under(path: str) -> Iterator[str]:
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                point = line.split()[4].replace("\\040", " ")
                if point.startswith(prefix) or point == prefix.rstrip("/"):
                    yield point
    except OSError:
        return


def _remove_tree(path: str) -> None:
    """``rm -rf`` a build tree — never while something is mounted inside it.

    A root file system being built may, if mmdebstrap died half-way, still
    have the host's ``/dev`` or ``/proc`` bound into it: deleting through
    those would delete the host's files.
    """
    if not os.path.lexists(path):
        return
    mounted = list(_mounts_under(path))
    if mounted:
        raise ImageError(f"refusing to delete {path}: still mounted inside it: {', '.join(mounted)}")
    shutil.rmtree(path, ignore_errors=True)
