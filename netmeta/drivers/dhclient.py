"""A real DHCP client (ISC dhclient) for test and demo guests.

A guest is a namespace with one veth end; dhclient runs in it through
``ip netns exec`` and is confined to the guest's own directory:

* its own config (``-cf``), lease file (``-lf``) and pid file (``-pf``), so
  it never reads or writes ``/var/lib/dhcp/dhclient.leases``;
* our script (``-sf``, ``dhclient-script.sh`` from this package, copied into
  the guest directory with mode 0755 because dhclient execs it directly),
  which sets only the interface and its routes and records the received
  options in ``<dir>/env`` — it never touches ``/etc/resolv.conf``.

dhclient's script environment is built by dhclient itself, not inherited, so
the guest directory reaches the script with ``-e NETMETA_GUEST_DIR=…``.

``-1`` makes dhclient try once: it exits non-zero if no lease arrives within
the config's ``timeout``; on success it forks into the background after the
script has configured the interface. So :func:`start` returning means the
address and routes are in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources

from netmeta.drivers import processes
from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError, translate
from netmeta.drivers.files import ensure_dir, write_file_atomic
from netmeta.drivers.links import check_ifname
from netmeta.drivers.netns import namespace_argv, namespace_exists

REQUESTED_OPTIONS = (
    "subnet-mask", "broadcast-address", "routers", "rfc3442-classless-static-routes",
    "domain-name-servers", "domain-name", "host-name", "interface-mtu",
)


@dataclass(frozen=True)
class GuestPaths:
    """Every file one guest's DHCP client uses, under one directory."""

    dir: str

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "dhclient.conf")

    @property
    def lease(self) -> str:
        return os.path.join(self.dir, "dhclient.leases")

    @property
    def pid(self) -> str:
        return os.path.join(self.dir, "dhclient.pid")

    @property
    def lease6(self) -> str:
        return os.path.join(self.dir, "dhclient6.leases")

    @property
    def pid6(self) -> str:
        return os.path.join(self.dir, "dhclient6.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "dhclient.log")

    @property
    def env(self) -> str:
        """``key=value`` lines of the latest script run (reason, new_*)."""
        return os.path.join(self.dir, "env")

    @property
    def events(self) -> str:
        """One line per script run: ``REASON ip``."""
        return os.path.join(self.dir, "events")

    @property
    def script(self) -> str:
        return os.path.join(self.dir, "dhclient-script")


def render_conf(timeout: int = 20) -> str:
    """The dhclient.conf: what to request and how fast to retry.

    ``initial-interval 1`` and a short backoff make the first DISCOVER
    retransmit within a second if it was lost while the bridge port came up.
    """
    return "\n".join([
        "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;",
        f"timeout {timeout};",
        "retry 1;",
        "initial-interval 1;",
        "backoff-cutoff 2;",
        "request " + ", ".join(REQUESTED_OPTIONS) + ";",
        "",
    ])


def prepare(paths: GuestPaths, timeout: int = 20) -> None:
    """Create the guest directory, its config and an executable script copy."""
    ensure_dir(paths.dir, 0o755)
    write_file_atomic(paths.conf, render_conf(timeout))
    source = resources.files("netmeta.drivers").joinpath("dhclient-script.sh")
    write_file_atomic(paths.script, source.read_text(), mode=0o755)


def read_env(paths: GuestPaths) -> dict[str, str]:
    """The options the script recorded last (empty before any event)."""
    try:
        with open(paths.env, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def running_pid(paths: GuestPaths) -> int | None:
    """The guest's dhclient pid, if it runs with our pid file."""
    return processes.running_pid(paths.pid, paths.pid)


def _argv(ifname: str, paths: GuestPaths, *extra: str) -> list[str]:
    return [
        "dhclient", "-4", *extra, "-cf", paths.conf, "-lf", paths.lease,
        "-pf", paths.pid, "-sf", paths.script, "-e", f"NETMETA_GUEST_DIR={paths.dir}",
        check_ifname(ifname),
    ]


def _argv6(ifname: str, paths: GuestPaths, *extra: str) -> list[str]:
    return [
        "dhclient", "-6", *extra, "-cf", paths.conf, "-lf", paths.lease6,
        "-pf", paths.pid6, "-sf", paths.script, "-e", f"NETMETA_GUEST_DIR={paths.dir}",
        check_ifname(ifname),
    ]


def _run(ns: str, argv: list[str], paths: GuestPaths, timeout: float) -> int:
    full = namespace_argv(ns, argv)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    # A file, not a pipe: the daemonized dhclient inherits the descriptor.
    with open(paths.log, "ab") as log:
        try:
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, env=env, close_fds=True)
        except OSError as exc:
            raise translate(exc, f"run {' '.join(full)}") from exc
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise TemporaryDriverError(f"dhclient in {ns} did not finish in {timeout}s") from exc


def start(ns: str, ifname: str, paths: GuestPaths, timeout: float = 30.0) -> int:
    """Get a lease on ``ifname`` in ``ns`` and leave dhclient running; its pid.

    Raises :class:`TemporaryDriverError` (with the tail of dhclient's log) if
    no lease arrived — the DHCP server may simply not be up yet.
    """
    if not namespace_exists(ns):
        raise TemporaryDriverError(f"namespace {ns} does not exist")
    if running_pid(paths) is not None:
        raise PermanentDriverError(f"dhclient already runs for {paths.dir}")
    prepare(paths, timeout=max(1, int(timeout) - 2))
    code = _run(ns, _argv(ifname, paths, "-1", "-v"), paths, timeout)
    if code != 0:
        raise TemporaryDriverError(f"dhclient in {ns} got no lease (exit {code}): {_log_tail(paths)}")
    return _bound_pid(paths.pid, f"dhclient in {ns}", paths)


def start6(ns: str, ifname: str, paths: GuestPaths, *, stateless: bool, timeout: float = 30.0) -> int | None:
    """DHCPv6 on ``ifname``: a lease (stateful), or only options (``stateless``: ``-S``, Information-Request).

    The interface's link-local address must be usable (not tentative) first:
    dhclient binds to it (:func:`netmeta.drivers.links.wait_link_local`).
    Returns the pid of the dhclient left running (stateful), None for
    stateless (it exits once the options are in).
    """
    if not namespace_exists(ns):
        raise TemporaryDriverError(f"namespace {ns} does not exist")
    prepare(paths, timeout=max(1, int(timeout) - 2))
    extra = ("-S", "-1", "-v") if stateless else ("-1", "-v")
    code = _run(ns, _argv6(ifname, paths, *extra), paths, timeout)
    if code != 0:
        raise TemporaryDriverError(f"dhclient -6 in {ns} got no answer (exit {code}): {_log_tail(paths)}")
    if stateless:
        return None
    return _bound_pid(paths.pid6, f"dhclient -6 in {ns}", paths)


def _bound_pid(pid_file: str, what: str, paths: GuestPaths) -> int:
    """The pid of the dhclient left running once bound.

    dhclient forks into the background once bound and the *child* writes the
    pid file, so the launcher's exit can come first: wait for the file to name
    a live dhclient (on a loaded host this takes a moment), not for a fixed time.
    """
    deadline = time.monotonic() + 5.0
    while True:
        pid = processes.read_pid_file(pid_file)
        if pid is not None and processes.matches(pid, pid_file):
            return pid
        if time.monotonic() >= deadline:
            raise TemporaryDriverError(f"{what} got a lease but is not running: {_log_tail(paths)}")
        time.sleep(0.01)


def stop(ns: str, paths: GuestPaths, timeout: float = 5.0) -> bool:
    """Stop the guest's dhclient without releasing; False if it was not running.

    The lease stays in the lease file and the address on the interface, so a
    following :func:`start` does INIT-REBOOT: it asks for the same address
    and receives the server's current options. ``ns`` is not needed to find
    the process (the pid file is per guest); it keeps the call symmetric
    with :func:`start`.
    """
    pid6 = processes.running_pid(paths.pid6, paths.pid6)
    if pid6 is not None:
        processes.stop_pid(pid6, paths.pid6, timeout)
    pid = running_pid(paths)
    if pid is None:
        return False
    return processes.stop_pid(pid, paths.pid, timeout)


def renew(ns: str, ifname: str, paths: GuestPaths, timeout: float = 30.0) -> int:
    """Stop and start again so the guest sees the server's current options."""
    stop(ns, paths)
    return start(ns, ifname, paths, timeout)


def release(ns: str, ifname: str, paths: GuestPaths, timeout: float = 15.0) -> None:
    """Release the lease (DHCPRELEASE), flush the interface, stop dhclient.

    ``dhclient -r`` with our pid file signals the running daemon and runs our
    script with RELEASE; it is run even when no daemon is left so the server
    still frees the address.
    """
    if not namespace_exists(ns):
        return
    code = _run(ns, _argv(ifname, paths, "-r", "-v"), paths, timeout)
    pid = processes.read_pid_file(paths.pid)
    if pid is not None:
        processes.stop_pid(pid, paths.pid)
    if code != 0:
        raise TemporaryDriverError(f"dhclient -r in {ns} exited {code}: {_log_tail(paths)}")


def remove(paths: GuestPaths) -> None:
    """Delete the guest directory (stop dhclient first)."""
    shutil.rmtree(paths.dir, ignore_errors=True)


def _log_tail(paths: GuestPaths, lines: int = 8) -> str:
    try:
        with open(paths.log, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
