"""Run dnsmasq inside a namespace and manage it by pid.

dnsmasq daemonizes: the process we launch forks, the daemon initialises
(binds its sockets, writes the pid file, drops to ``nobody``) and reports back
through a pipe, and only then does the launcher exit — 0 when the daemon is
ready, non-zero with the reason on stderr otherwise. So :func:`start` waits
for the launcher's exit status — a real readiness signal — instead of
sleeping, and then reads the pid file.

The command line is built by the caller (pure code in ``model``); this module
only runs it. Changes to hosts/opts files are applied with :func:`reload`
(SIGHUP re-reads ``--dhcp-hostsfile`` and ``--dhcp-optsfile`` without dropping
leases); only a changed command line needs :func:`stop` + :func:`start`.
Files dnsmasq reads must stay readable by ``nobody``: see
:func:`netmeta.drivers.files.write_file_atomic`; they live outside the state
directory (:attr:`netmeta.config.Config.dhcp_dir`), and :func:`adopt_layout`
moves an older agent's ``<state_dir>/dhcp`` there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

from netmeta.drivers import processes
from netmeta.drivers.daemons import start_daemon
from netmeta.drivers.errors import translate
from netmeta.drivers.files import ensure_dir, write_file_atomic
from netmeta.drivers.netns import namespace_argv, namespace_exists
from netmeta.drivers.processes import cmdline, running_pid

__all__ = [
    "start", "reload", "stop", "running_pid", "cmdline", "write_file_atomic", "adopt_layout",
]


def start(namespace: str, argv: Sequence[str], pid_file: str, *, timeout: float = 10.0) -> int:
    """Start dnsmasq (``argv[0]`` is the binary) in ``namespace``; its pid.

    dnsmasq's launcher exits only once the daemon is ready (0) or has failed
    (non-zero, the reason on stderr): see :func:`netmeta.drivers.daemons.start_daemon`.
    """
    return start_daemon(namespace, argv, pid_file, what="dnsmasq", timeout=timeout)


def reload(pid: int, expected_cmdline_substr: str | None = None) -> None:
    """SIGHUP: dnsmasq re-reads hosts and opts files, keeps leases and pid.

    Raises :class:`netmeta.drivers.errors.ProcessGone` if it is not running.
    """
    processes.signal_pid(pid, signal.SIGHUP, expected_cmdline_substr)


def stop(pid: int, timeout: float = 5.0, expected_cmdline_substr: str | None = None) -> bool:
    """SIGTERM, wait, then SIGKILL; False if it was not running."""
    return processes.stop_pid(pid, expected_cmdline_substr, timeout)


def adopt_layout(link: str, root: str) -> list[str]:
    """Make ``root`` dnsmasq's directory and ``link`` (``<state_dir>/dhcp``) point to it.

    Agents before this layout kept dnsmasq's files in ``<state_dir>/dhcp/<net>``
    itself. A dnsmasq started there by such an agent still holds its DHCP and
    DNS sockets, so the one the next pass starts from ``root`` could not bind:
    each is stopped here (by the path it was started with, pid file or not),
    its leases file carried over so guests keep their addresses, and the
    old directory removed. The networks it stopped are returned; the agent's
    first pass starts their dnsmasq again from ``root`` moments later (a
    guest renewing in that gap retries, as it would across a dnsmasq restart).
    """
    ensure_dir(os.path.dirname(root))  # /run/netmeta/<id>: netmeta's own, 0755
    ensure_dir(root)
    stopped: list[str] = []
    try:
        if os.path.isdir(link) and not os.path.islink(link):
            old_root = link.rstrip("/") + "/"
            for pid in processes.pids_mentioning("dnsmasq", old_root):
                argv = processes.cmdline(pid)
                net = next((a.split(old_root, 1)[1].split("/", 1)[0] for a in argv if old_root in a), "")
                if processes.stop_pid(pid, old_root):
                    stopped.append(net)
            for entry in sorted(os.scandir(link), key=lambda e: e.name):
                leases = os.path.join(entry.path, "leases")
                new_leases = os.path.join(root, entry.name, "leases")
                if entry.is_dir(follow_symlinks=False) and os.path.isfile(leases) and not os.path.exists(new_leases):
                    ensure_dir(os.path.dirname(new_leases))
                    shutil.copyfile(leases, new_leases)
            shutil.rmtree(link)
        if not (os.path.islink(link) and os.readlink(link) == root):
            tmp = f"{link}.tmp-{os.getpid()}"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(root, tmp)
            os.replace(tmp, link)
    except OSError as exc:
        raise translate(exc, f"move dnsmasq's files from {link} to {root}") from exc
    return sorted(stopped)


def release_argv(interface: str, ip: str, mac: str, client_id: str = "") -> list[str]:
    """dnsmasq-utils' ``dhcp_release``: a DHCPRELEASE for ``ip`` as the client would send it.

    The client id is the lease's (dnsmasq finds a lease that has one by it);
    "*" in the leases file means none.
    """
    argv = ["dhcp_release", interface, ip, mac]
    if client_id and client_id != "*":
        argv.append(client_id)
    return argv


def release(namespace: str, interface: str, ip: str, mac: str, client_id: str = "") -> bool:
    """Make dnsmasq forget a lease whose client is gone (Neutron's DHCP agent does this for a deleted port).

    A client that dies without releasing keeps its address leased to its MAC,
    and dnsmasq will not hand that address to the next port that is given it
    (with static host entries it answers "no address available"). False when
    ``dhcp_release`` is not installed or the namespace is gone.
    """
    if shutil.which("dhcp_release") is None or not namespace_exists(namespace):
        return False
    try:
        done = subprocess.run(namespace_argv(namespace, release_argv(interface, ip, mac, client_id)),
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise translate(exc, "dhcp_release") from exc
    return done.returncode == 0
