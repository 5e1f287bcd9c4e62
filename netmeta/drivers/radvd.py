"""Run radvd (router advertisements) inside a qrouter namespace, by pid.

radvd forks into the background and writes its pid file; SIGHUP makes it
re-read its configuration (a prefix added or removed) without a restart,
which is how the agent applies a changed ``radvd.conf``. The configuration
text and the command line are pure (:mod:`netmeta.model.ra`); this module
only runs them.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from netmeta.drivers import processes
from netmeta.drivers.daemons import start_daemon
from netmeta.drivers.processes import running_pid

__all__ = ["start", "reload", "stop", "running_pid"]


def start(namespace: str, argv: Sequence[str], pid_file: str, *, timeout: float = 10.0) -> int:
    """Start radvd in ``namespace``; its pid once the pid file names it."""
    return start_daemon(namespace, argv, pid_file, what="radvd", timeout=timeout)


def reload(pid: int, expected_cmdline_substr: str | None = None) -> None:
    """SIGHUP: radvd re-reads its configuration."""
    processes.signal_pid(pid, signal.SIGHUP, expected_cmdline_substr)


def stop(pid: int, timeout: float = 5.0, expected_cmdline_substr: str | None = None) -> bool:
    """SIGTERM (radvd then sends its final advertisements with lifetime 0), wait, then SIGKILL."""
    return processes.stop_pid(pid, expected_cmdline_substr, timeout)
