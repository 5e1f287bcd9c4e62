"""What a command checks before it starts anything, and the state directory's lock.

``netmeta up`` (and each component run alone) first checks what it needs —
root or the capabilities, network namespaces in the kernel, the binaries, a
writable state directory, free ports, a path dnsmasq's unprivileged user can
walk to its own files — and stops with one line per problem
before anything is created, instead of half-starting and crash-looping.

:class:`StateLock` is an ``flock`` on a file in the state directory, held for
the life of the process: a second ``up`` (or a second agent) on the same
state directory is refused with the pid of the one holding it, and ``down``
refuses while anything holds it. The kernel drops the lock when the process
dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import shutil
import socket
import stat
import tempfile

from netmeta.config import Config
from netmeta.errors import StartupError
from netmeta.metrics import parse_bind

# Capability bits (linux/capability.h): namespaces need both.
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
BINARIES = {"agent": ("ip", "dnsmasq", "iptables-restore"), "guests": ("dhclient",)}
# The user dnsmasq drops to after binding (its compiled-in default; netmeta
# passes no --user): it re-reads its hosts and opts files as this user.
DNSMASQ_USER = "nobody"


def effective_capabilities() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def problems(config: Config, components: tuple[str, ...]) -> list[str]:
    """Everything that would stop ``components`` from starting (empty: go)."""
    found: list[str] = []
    if "agent" in components:
        # The capabilities, not the uid: root with them dropped (a container,
        # setpriv) is refused by the kernel just like any other user.
        caps = effective_capabilities()
        if not (caps >> CAP_NET_ADMIN & 1 and caps >> CAP_SYS_ADMIN & 1):
            found.append("agent: needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces; "
                         "run it as root")
        if not os.path.exists("/proc/self/ns/net"):
            found.append("agent: this kernel has no network namespaces (CONFIG_NET_NS)")
        missing = [b for b in BINARIES["agent"] if shutil.which(b) is None]
        if missing:
            found.append(f"agent: {', '.join(missing)} not found on PATH (install iproute2, dnsmasq-base, iptables)")
        problem = dnsmasq_reach_problem(config.paths.dhcp_root)
        if problem:
            found.append(problem)
    problem = state_dir_problem(config.state_dir)
    if problem:
        found.append(problem)
    binds = [("server", "API", config.bind)] if "server" in components else []
    for component in components:
        bind = getattr(config, f"{component}_metrics_bind", "")
        if bind:
            binds.append((component, "metrics", bind))
    for component, what, bind in binds:
        problem = port_problem(bind)
        if problem:
            option = "--bind" if what == "API" else f"{component}_metrics_bind"
            found.append(f"{component}: cannot listen on {bind} for its {what}: {problem} (choose another {option})")
    return found


def state_dir_problem(state_dir: str) -> str | None:
    """None when ``state_dir`` exists (or can be made) and takes a new file."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".preflight-"):
            pass
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        hint = " (remount it read-write or choose another --state-dir)" if exc.errno == errno.EROFS else \
            " (run as root or choose another --state-dir)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
        return f"state directory {state_dir} is not writable: {why}{hint}"
    return None


def dnsmasq_reach_problem(root: str, user: str = DNSMASQ_USER) -> str | None:
    """None when ``user`` can walk to ``root`` (dnsmasq's files; the agent makes what is missing, 0755).

    Each existing directory on the way must let ``user`` through (search
    permission as its owner, its group or other, as the kernel decides);
    otherwise DHCP would stop answering, silently, for every port created
    after dnsmasq started (it re-reads its files as ``user`` on SIGHUP).
    """
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return None  # dnsmasq then stays root (it cannot drop to a user that does not exist)
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    chain = [os.path.abspath(root)]
    while os.path.dirname(chain[-1]) != chain[-1]:
        chain.append(os.path.dirname(chain[-1]))
    for directory in reversed(chain):
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            return None  # the agent creates the rest with 0755
        except OSError as exc:
            return f"agent: cannot check {directory} for dnsmasq: {(exc.strerror or str(exc)).lower()}"
        bit = stat.S_IXUSR if info.st_uid == account.pw_uid else stat.S_IXGRP if info.st_gid in groups else stat.S_IXOTH
        if not info.st_mode & bit:
            return (f"agent: dnsmasq runs as {user} and could not reach its files in {root}: {directory} is mode "
                    f"{stat.S_IMODE(info.st_mode):04o}; run `chmod o+x {directory}`")
    return None


def port_problem(bind: str) -> str | None:
    try:
        host, port = parse_bind(bind)
    except ValueError as exc:
        return str(exc)
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return None


def check(config: Config, components: tuple[str, ...]) -> None:
    found = problems(config, components)
    if found:
        raise StartupError("; ".join(found) if len(found) == 1 else
                           f"{len(found)} problems: " + "; ".join(found))


class StateLock:
    """An exclusive ``flock`` on ``<state_dir>/<name>.lock`` for this process's life."""

    def __init__(self, state_dir: str, name: str) -> None:
        self.path = os.path.join(state_dir, f"{name}.lock")
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> "StateLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(f"{self.name}: cannot create {self.path}: {(exc.strerror or str(exc)).lower()}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise StartupError(
                f"{self.name}: another netmeta {self.name} (pid {holder or '?'}) already runs on "
                f"{os.path.dirname(self.path)}; stop it first, or choose another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holder(state_dir: str, name: str) -> int | None:
    """The pid holding ``<name>.lock`` in ``state_dir``, or None when nobody does."""
    path = os.path.join(state_dir, f"{name}.lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read(fd)
        return pid or -1
    finally:
        os.close(fd)
    return None


def _read(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
