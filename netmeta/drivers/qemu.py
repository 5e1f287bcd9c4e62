"""Running QEMU for real VMs: the KVM probe, start with the tap on a bridge, stop.

**Where the tap lives.** A tap device is created in the network namespace of
the process that opens ``/dev/net/tun``, so QEMU runs *in the fabric
namespace* (``ip netns exec <fabric> qemu-system-x86_64 …``; in the host's
own namespace when ``fabric_namespace`` is empty) and creates the tap itself
(``-netdev tap,ifname=…,script=no``). Once QEMU has daemonized — its devices
exist by then — the tap is enslaved to the network's bridge and set up over
netlink. The tap is QEMU's: it disappears when QEMU exits, so a stopped or
crashed VM never leaves a device on the bridge.

**The KVM probe.** ``/dev/kvm`` being there says little: nested inside
another hypervisor it may open, create a VM, and then hang or fault the
guest. :func:`kvm_usable` boots SeaBIOS (no disk) under KVM and waits a few
seconds for it to reach "No bootable device" on its debug port (0x402); under
software emulation that takes half a second, under working KVM far less.
Anything else — an error, a hang, a crash — means software emulation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Sequence

from netmeta.drivers import links, processes
from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError, translate
from netmeta.drivers.netns import namespace_argv, netlink

QEMU = "qemu-system-x86_64"
PROBE_SECONDS = 4.0
_probe_cache: dict[str, bool] = {}


def available() -> bool:
    from shutil import which

    return which(QEMU) is not None


def kvm_usable(timeout: float = PROBE_SECONDS) -> bool:
    """True if a guest actually runs under KVM here (memoized per process)."""
    if "kvm" in _probe_cache:
        return _probe_cache["kvm"]
    _probe_cache["kvm"] = _probe_kvm(timeout)
    return _probe_cache["kvm"]


def _probe_kvm(timeout: float) -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    with tempfile.TemporaryDirectory(prefix="netmeta-kvm-probe-") as tmp:
        debug = os.path.join(tmp, "debugcon")
        argv = [QEMU, "-accel", "kvm", "-nodefaults", "-display", "none", "-m", "32", "-no-reboot",
                "-debugcon", f"file:{debug}", "-global", "isa-debugcon.iobase=0x402"]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        except OSError:
            return False
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with open(debug, "rb") as handle:
                        if b"No bootable device" in handle.read():
                            return True
                except FileNotFoundError:
                    pass
                time.sleep(0.05)
            return False
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def start(
    argv: Sequence[str], *, namespace: str | None, tap: str, bridge: str, pid_file: str, log: str,
    mtu: int = 1500, timeout: float = 60.0,
) -> int:
    """Run QEMU (which daemonizes) in ``namespace``, put its tap on ``bridge``; its pid.

    QEMU's own messages before it daemonizes (a missing file, a busy tap
    name) go to ``log`` and come back in the error.
    """
    if not argv or os.path.basename(argv[0]) != QEMU:
        raise PermanentDriverError(f"not a QEMU command line: {list(argv)[:1]}")
    if "-daemonize" not in argv or "-pidfile" not in argv:
        raise PermanentDriverError("QEMU must be started with -daemonize and -pidfile")
    links.check_ifname(tap)
    links.check_ifname(bridge)
    full = namespace_argv(namespace, argv) if namespace else list(argv)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    with open(log, "ab") as out:
        try:
            done = subprocess.run(full, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise TemporaryDriverError(f"QEMU did not start in {timeout:.0f}s") from exc
        except OSError as exc:
            raise translate(exc, f"run {QEMU}") from exc
    pid = processes.read_pid_file(pid_file)
    if done.returncode != 0 or pid is None or not processes.matches(pid, pid_file):
        raise PermanentDriverError(f"QEMU did not start (exit {done.returncode}): {_tail(log)}")
    try:
        attach_tap(namespace, tap, bridge, mtu)
    except BaseException:
        stop(pid, pid_file)
        raise
    return pid


def attach_tap(namespace: str | None, tap: str, bridge: str, mtu: int) -> None:
    """Enslave QEMU's tap to ``bridge`` and bring it up (idempotent)."""
    with netlink(namespace) as ipr:
        try:
            (br,) = ipr.link_lookup(ifname=bridge) or (None,)
            (dev,) = ipr.link_lookup(ifname=tap) or (None,)
            if br is None:
                raise TemporaryDriverError(f"bridge {bridge} missing in {namespace or 'the host namespace'}")
            if dev is None:
                raise PermanentDriverError(f"QEMU's tap {tap} is not in {namespace or 'the host namespace'}")
            ipr.link("set", index=dev, master=br, mtu=mtu, state="up")
        except (OSError, ValueError) as exc:
            raise translate(exc, f"attach {tap} to {bridge}") from exc
        except Exception as exc:  # pyroute2's NetlinkError
            if isinstance(exc, (TemporaryDriverError, PermanentDriverError)):
                raise
            raise translate(exc, f"attach {tap} to {bridge}") from exc


def running_pid(pid_file: str) -> int | None:
    """QEMU's pid if it still runs for this VM (its command line names the pid file)."""
    return processes.running_pid(pid_file, pid_file)


def stop(pid: int, pid_file: str, timeout: float = 10.0) -> bool:
    """SIGTERM (QEMU exits at once, as on a power cut), then SIGKILL; False if not running."""
    if not processes.matches(pid, pid_file):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not processes.wait_gone(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        processes.wait_gone(pid, 5.0)
    return True


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used (0 if gone): a boot's cost on an idle core."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"
