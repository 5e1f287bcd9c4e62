"""Signalling processes we started, safely, by pid.

A pid on its own is a weak handle: the process may have exited and the pid
been reused by something unrelated. Every function that signals therefore
takes the substring its command line must contain (usually its own pid-file
path, which is unique per network or guest) and refuses otherwise.

Daemons (dnsmasq, dhclient) are re-parented to pid 1 when they fork; if pid 1
does not reap children (containers, microVM init), an exited daemon lingers
as a zombie that ``kill(pid, 0)`` still reports alive, so liveness here also
reads ``/proc/<pid>/stat`` and treats state ``Z`` as dead.
"""

from __future__ import annotations

import os
import signal
import time

from netmeta.drivers.errors import ProcessGone, TemporaryDriverError


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` from ``/proc``; empty if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def network_namespace_inode(pid: int) -> int | None:
    """The inode of the network namespace ``pid`` lives in (None if it is gone).

    Compared with :func:`netmeta.drivers.netns.namespace_inode`, it tells a
    process in *the* ``qdhcp-…`` namespace from one left running in an old
    namespace that was deleted and made again under the same name.
    """
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (exists and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) S …": comm may contain spaces or ')' — split at the last ')'.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def read_pid_file(path: str) -> int | None:
    """The pid written in ``path``, or None if absent or garbled."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def matches(pid: int, expected_cmdline_substr: str) -> bool:
    """True if ``pid`` is alive and its command line mentions the substring."""
    return pid_alive(pid) and any(expected_cmdline_substr in arg for arg in cmdline(pid))


def running_pid(pid_file: str, expected_cmdline_substr: str) -> int | None:
    """The pid from ``pid_file`` if that process still runs and is ours."""
    pid = read_pid_file(pid_file)
    if pid is None or not matches(pid, expected_cmdline_substr):
        return None
    return pid


def signal_pid(pid: int, signum: int, expected_cmdline_substr: str | None = None) -> None:
    """Send ``signum`` to ``pid``; :class:`ProcessGone` if it is not running (or not ours)."""
    if expected_cmdline_substr is not None and not matches(pid, expected_cmdline_substr):
        raise ProcessGone(f"pid {pid} is not running {expected_cmdline_substr!r}")
    try:
        os.kill(pid, signum)
    except ProcessLookupError as exc:
        raise ProcessGone(f"pid {pid} has exited") from exc


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone (or a zombie); True if it went in time.

    A daemon that is not our child cannot be waited for with waitpid(2), and
    pidfd polling would not see a zombie as gone either, so this polls /proc.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def stop_pid(
    pid: int, expected_cmdline_substr: str | None = None, timeout: float = 5.0
) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; False if it was not running.

    With ``expected_cmdline_substr``, a pid whose command line does not match
    is left alone (pid reuse) and reported as not running.
    """
    if expected_cmdline_substr is not None and not matches(pid, expected_cmdline_substr):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait_gone(pid, timeout):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    if not wait_gone(pid, 5.0):
        raise TemporaryDriverError(f"pid {pid} survived SIGKILL")
    return True


def pids_mentioning(binary: str, substr: str) -> list[int]:
    """Live processes of ``binary`` (argv[0]'s base name) whose command line mentions ``substr``.

    For teardown whatever the state: a daemon whose pid file is gone (or was
    never written) is still found by the unique path it was started with.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = cmdline(int(entry))
        if argv and os.path.basename(argv[0]) == binary and any(substr in arg for arg in argv) \
                and pid_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)
