"""Named network namespaces: create, remove, inspect, and run code inside.

Namespaces are the ``ip netns`` kind: a bind mount of ``/proc/<pid>/ns/net``
under ``/run/netns/<name>``, so that ``ip netns exec`` and every operator tool
see them. Creation and removal use pyroute2's :mod:`pyroute2.netns`.

Code runs inside a namespace in one of two ways:

* processes: ``ip netns exec <ns> argv…`` (:func:`run_in_namespace`), which
  also bind-mounts ``/etc/netns/<ns>/*`` over ``/etc`` for that process;
* Python calls: :func:`call_in_namespace` runs a function in a short-lived
  thread that has ``setns(2)``-ed into the namespace. Network namespace
  membership is per thread, so the rest of the process (the agent's event
  loop, other workers) never leaves its own namespace, and the thread dies
  afterwards so it can never be reused by accident. Sockets created there keep
  that namespace for life, and ``/proc/sys/net`` opened there shows that
  namespace's sysctls.

Nothing here may act on the root namespace: every function takes a namespace
name and refuses an empty one (:func:`check_name`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Iterator, TypeVar

from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from netmeta.drivers.errors import (
    DriverError,
    PermanentDriverError,
    TemporaryDriverError,
    translate,
)
from netmeta.drivers.rtnl import Rtnl

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
# Linux limits a bind-mount file name to NAME_MAX; iproute2 refuses '/' too.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_SYSCTL_RE = re.compile(r"^net\.[A-Za-z0-9_.\-]+$")

T = TypeVar("T")
_libc: ctypes.CDLL | None = None


def check_name(name: str | None) -> str:
    """Return ``name`` if it can only mean a named namespace, else raise.

    An empty or None name would silently mean "the namespace I am in", which
    for the agent is the host's root namespace: refusing it here is the one
    guard every driver shares.
    """
    if not name or not _NAME_RE.match(name) or name in (".", ".."):
        raise PermanentDriverError(f"invalid network namespace name {name!r}")
    return name


def namespace_path(name: str) -> str:
    """The bind-mount file that pins the namespace."""
    return os.path.join(NETNS_DIR, check_name(name))


def _nsfs_device() -> int:
    # Every namespace file lives on the kernel's nsfs; our own is one.
    return os.stat("/proc/self/ns/net").st_dev


def _pinned_stat(name: str) -> os.stat_result | None:
    """The stat of ``/run/netns/<name>`` once it is a mounted namespace.

    ``ip netns add`` and pyroute2 first create an empty file and then
    bind-mount the namespace onto it; in between the file exists but is no
    namespace (opening it for setns fails with EINVAL). Only a file on nsfs
    counts, so another process's half-made namespace reads as "not yet".
    """
    try:
        st = os.stat(namespace_path(name))
    except FileNotFoundError:
        return None
    return st if st.st_dev == _nsfs_device() else None


def namespace_exists(name: str) -> bool:
    """True if ``/run/netns/<name>`` is a mounted namespace (not a half-made one)."""
    return _pinned_stat(name) is not None


def list_namespaces() -> list[str]:
    """Names of all pinned namespaces, sorted (includes other owners' ones)."""
    return sorted(pr_netns.listnetns(NETNS_DIR))


def namespace_inode(name: str) -> int | None:
    """Inode of the namespace, or None if it does not exist.

    A namespace deleted and re-created under the same name gets a new inode;
    the agent and the metadata process compare it to know that their sockets
    or links belong to a namespace that no longer exists.
    """
    st = _pinned_stat(name)
    return st.st_ino if st is not None else None


@contextmanager
def netlink(name: str | None) -> Iterator[Rtnl]:
    """A netlink session (:class:`netmeta.drivers.rtnl.Rtnl`) bound to an existing namespace, always closed.

    The netlink socket is made by a short-lived thread that has joined the
    namespace (a socket keeps the namespace it was made in for life), and
    handed over by its descriptor. pyroute2's own ``netns=`` forks the
    whole process for every socket, which is what made a full pass over a
    few hundred namespaces take many seconds; a missing namespace cannot be
    created by accident this way either (pyroute2's default is ``O_CREAT``).

    ``None`` — never an empty string — means the host's own namespace. Only
    the link functions for the fabric side accept it, for deployments that
    configure ``fabric_namespace = ""`` to plug real VM taps; tests never
    pass it.
    """
    if name is None:
        try:
            ipr = Rtnl()
        except OSError as exc:
            raise translate(exc, "netlink socket in the host namespace") from exc
        try:
            yield ipr
        finally:
            ipr.close()
        return
    sock = netlink_socket(name)
    try:
        ipr = Rtnl(fileno=sock)
    except OSError as exc:
        raise translate(exc, f"netlink socket in {name}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


def netlink_socket(name: str) -> int:
    """A NETLINK_ROUTE socket's descriptor, made inside the namespace ``name`` (the caller closes it)."""
    path = namespace_path(name)
    # Open the namespace here and join it by this fd: a missing namespace
    # fails cleanly, and the fd pins the namespace we looked at.
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise TemporaryDriverError(f"namespace {name} does not exist") from exc
    except OSError as exc:
        raise translate(exc, f"open namespace {name}") from exc
    made: list[int] = []
    failure: list[OSError] = []

    def body() -> None:
        try:
            _setns_fd(ns_fd, path)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                      NETLINK_ROUTE).detach())
        except OSError as exc:
            failure.append(exc)

    try:
        # The thread exists for this one socket: setns(2) changes the calling
        # thread for good, and no other code may ever run in it.
        thread = threading.Thread(target=body, name=f"netlink:{name}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(ns_fd)
    if failure:
        raise translate(failure[0], f"netlink socket in {name}") from failure[0]
    return made[0]


def ensure_namespace(name: str) -> bool:
    """Create the namespace if absent and bring its ``lo`` up.

    Returns True if it was created. Idempotent: an existing namespace only gets
    ``lo`` checked, so a crashed agent can run it again.
    """
    created = False
    if not namespace_exists(name):
        try:
            _create(name)
            created = True
        except FileExistsError:
            # Another creator is between "create the file" and "mount": give it
            # a moment; a file nobody mounts is a leftover of a crash: replace it.
            deadline = time.monotonic() + 1.0
            while not namespace_exists(name) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not namespace_exists(name):
                _remove_stale_file(name)
                try:
                    _create(name)
                    created = True
                except OSError as exc:
                    raise translate(exc, f"create namespace {name}") from exc
        except OSError as exc:
            raise translate(exc, f"create namespace {name}") from exc
    with netlink(name) as ipr:
        try:
            (lo,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=lo, state="up")
        except (OSError, NetlinkError, ValueError) as exc:
            raise translate(exc, f"bring lo up in {name}") from exc
    return created


def _create(name: str) -> None:
    """A new namespace pinned at ``/run/netns/<name>``, as ``ip netns add`` does it.

    A short-lived thread leaves for a new network namespace (unshare(2)
    moves only the calling thread) and the namespace is bind-mounted from
    that thread's ``/proc/self/task/<tid>/ns/net`` while it lives; pyroute2's
    own ``create`` forks the whole process for the same. The thread ends
    right after: nothing else ever runs in it.
    """
    check_name(name)
    failure: list[BaseException] = []

    def body() -> None:
        global _libc
        try:
            if _libc is None:
                _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            # pyroute2's attach is its create without the fork: the run
            # directory made shared, the file made (O_EXCL), the bind mount.
            pr_netns.attach(name, f"self/task/{threading.get_native_id()}")
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-create:{name}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _remove_stale_file(name: str) -> bool:
    """Unlink ``/run/netns/<name>`` if it is a plain file, not a mounted namespace."""
    try:
        if os.stat(namespace_path(name)).st_dev != _nsfs_device():
            os.unlink(namespace_path(name))
            return True
    except FileNotFoundError:
        pass
    return False


def delete_namespace(name: str) -> bool:
    """Remove the namespace; False if it was already gone.

    Callers stop the processes living inside first: the kernel keeps a
    namespace alive while any process or socket still uses it, and its
    interfaces would outlive the name.
    """
    if not namespace_exists(name):
        return _remove_stale_file(name)
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise translate(exc, f"remove namespace {name}") from exc
    return True


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd, path)
    finally:
        os.close(fd)


def _setns_fd(fd: int, path: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({path}): {os.strerror(err)}")


def call_in_namespace(name: str, func: Callable[[], T], *, timeout: float = 10.0) -> T:
    """Run ``func()`` in a fresh thread that has joined the namespace.

    The thread exists only for this call: setns(2) changes the calling thread
    for good, and a pooled thread left in a guest's namespace would be a bug
    waiting to happen. Exceptions from ``func`` are re-raised here.
    """
    path = namespace_path(name)
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(path)
            result.append(func())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TemporaryDriverError(f"call in namespace {name} timed out")
    if failure:
        exc = failure[0]
        if isinstance(exc, DriverError):
            raise exc
        if isinstance(exc, FileNotFoundError) and not namespace_exists(name):
            raise TemporaryDriverError(f"namespace {name} does not exist") from exc
        if isinstance(exc, OSError):
            raise translate(exc, f"in namespace {name}") from exc
        raise exc
    return result[0]


def _sysctl_path(key: str) -> str:
    if not _SYSCTL_RE.match(key) or ".." in key:
        raise PermanentDriverError(f"refusing sysctl {key!r}: only net.* keys")
    return "/proc/sys/" + key.replace(".", "/")


def get_sysctl(name: str, key: str) -> str:
    """Read a ``net.*`` sysctl as the namespace sees it."""
    path = _sysctl_path(key)

    def read() -> str:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()

    return call_in_namespace(name, read)


def set_sysctl(name: str, key: str, value: str | int) -> bool:
    """Set a ``net.*`` sysctl inside the namespace; True if it changed.

    ``/proc/sys/net`` is resolved against the opening thread's namespace, so
    the write happens from a thread inside ``name``; the root namespace's
    value (e.g. ``net.ipv4.ip_forward``) is never touched.
    """
    path = _sysctl_path(key)
    wanted = str(value)

    def write() -> bool:
        with open(path, encoding="ascii") as handle:
            if handle.read().strip() == wanted:
                return False
        with open(path, "w", encoding="ascii") as handle:
            handle.write(wanted)
        return True

    return call_in_namespace(name, write)


def namespace_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec <name> argv…`` — the argv that runs a command inside."""
    if not argv:
        raise PermanentDriverError("empty command")
    return ["ip", "netns", "exec", check_name(name), *argv]


def run_in_namespace(
    name: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace and wait for it.

    ``capture=True`` (the default) collects stdout/stderr as text and applies
    a 30 s timeout unless ``timeout`` says otherwise; ``capture=False``
    inherits the caller's terminal (``netmeta vm exec``) and waits without a
    limit unless given one. ``check=True`` turns a non-zero exit into
    :class:`PermanentDriverError` carrying stderr (a command that failed once
    with the same input will fail again); a timeout is temporary. LANG=C
    keeps messages parseable.
    """
    full = namespace_argv(name, argv)
    run_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    if not capture:
        run_env = dict(os.environ)  # an interactive command keeps TERM, HOME …
    if env:
        run_env.update(env)
    if timeout is None and capture:
        timeout = 30.0
    try:
        done = subprocess.run(
            full,
            input=input,
            capture_output=capture,
            text=True,
            timeout=timeout,
            env=run_env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TemporaryDriverError(f"{' '.join(full)} timed out after {timeout}s") from exc
    except OSError as exc:
        raise translate(exc, f"run {' '.join(full)}") from exc
    if check and done.returncode != 0:
        if not namespace_exists(name):
            raise TemporaryDriverError(f"namespace {name} does not exist")
        raise PermanentDriverError(
            f"{' '.join(full)} exited {done.returncode}: {(done.stderr or '').strip()}"
        )
    return done
