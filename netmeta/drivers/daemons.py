"""Starting a daemon inside a namespace and waiting for a real readiness signal.

dnsmasq and radvd both daemonize: the process launched forks, the daemon
initialises and writes its pid file, and the launcher exits (dnsmasq only
once the daemon is ready, non-zero with the reason on stderr otherwise).
:func:`start_daemon` waits for the launcher's exit status and then for the pid
file to name a live process that is ours, instead of sleeping.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence

from netmeta.drivers.errors import PermanentDriverError, TemporaryDriverError, translate
from netmeta.drivers.netns import namespace_argv, namespace_exists
from netmeta.drivers.processes import running_pid


def start_daemon(namespace: str, argv: Sequence[str], pid_file: str, *, what: str, timeout: float = 10.0) -> int:
    """Start a daemon (``argv[0]`` is the binary) in ``namespace``; its pid.

    ``argv`` must make it write ``pid_file`` (``--pid-file=…``) and must
    not keep it in the foreground. Raises :class:`PermanentDriverError` with
    its own message when it refuses to start (bad option, address in
    use …), :class:`TemporaryDriverError` when the namespace is missing or
    start-up is too slow.
    """
    if not any(pid_file in arg for arg in argv):
        raise PermanentDriverError(f"{what} argv does not name its pid file {pid_file}")
    if any(a in ("-d", "-k", "--keep-in-foreground", "--no-daemon") for a in argv):
        raise PermanentDriverError(f"{what} must daemonize for start() to see readiness")
    if not namespace_exists(namespace):
        raise TemporaryDriverError(f"namespace {namespace} does not exist")
    try:
        os.unlink(pid_file)  # a stale file would make us report a dead pid
    except FileNotFoundError:
        pass
    full = namespace_argv(namespace, argv)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    # stderr goes to a file, not a pipe: the daemon inherits the descriptor and
    # a pipe would then never reach EOF while it lives.
    with tempfile.TemporaryFile() as err:
        try:
            launcher = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=env, close_fds=True,
            )
        except OSError as exc:
            raise translate(exc, f"run {' '.join(full)}") from exc
        try:
            code = launcher.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            launcher.kill()
            launcher.wait()
            raise TemporaryDriverError(f"{what} in {namespace} not ready after {timeout}s") from exc
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if code != 0:
        raise PermanentDriverError(f"{what} in {namespace} exited {code}: {message}")
    deadline = time.monotonic() + timeout
    while True:
        pid = running_pid(pid_file, pid_file)
        if pid is not None:
            return pid
        if time.monotonic() >= deadline:
            raise TemporaryDriverError(f"{what} in {namespace} reported ready but {pid_file} names no live {what}")
        time.sleep(0.01)
