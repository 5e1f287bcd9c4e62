"""Worker processes: fork N, keep N alive, stop them together.

The parent forks before it has started an event loop or a thread (so a fork
copies nothing half-done), then only waits: a worker that dies is forked
again — at most once a second per slot, so a worker that crashes at start
does not spin — while the others keep serving. SIGTERM or SIGINT to the
parent is passed on to every worker; the parent returns once all have exited.

Whatever the workers must share is made before :func:`supervise` is called
(an anonymous shared mmap, a random key): a respawned worker is forked from
the same parent, so it gets the same.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import resource
import signal
import time
from typing import Callable

log = logging.getLogger(__name__)

RESPAWN_INTERVAL = 1.0


def _die_with_parent() -> None:
    """SIGTERM this process when the parent dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _fork(index: int, work: Callable[[int], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            _die_with_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            work(index)
        except BaseException:  # noqa: BLE001 - reported, then the parent respawns
            log.exception("metadata worker %d failed", index)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def supervise(count: int, work: Callable[[int], None], on_exit: Callable[[int], None] | None = None) -> int:
    """Run ``work(index)`` in ``count`` forked processes until SIGTERM/SIGINT; 0 on a clean stop.

    ``on_exit(pid)`` is called in the parent for every worker that exits, before its replacement is forked.
    """
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    workers: dict[int, int] = {}  # pid -> slot
    started: dict[int, float] = {}  # slot -> when last forked
    previous = (signal.signal(signal.SIGTERM, stop), signal.signal(signal.SIGINT, stop))
    try:
        for index in range(count):
            started[index] = time.monotonic()
            workers[_fork(index, work)] = index
        log.info("metadata: %d workers: %s", count, sorted(workers))
        while workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = workers.pop(pid, -1)
            if index >= 0 and on_exit is not None:
                try:
                    on_exit(pid)
                except Exception:  # noqa: BLE001 - never stop supervising for it
                    log.exception("metadata: after worker %d (pid %d) exited", index, pid)
            if index < 0 or stopping:
                continue
            log.warning("metadata worker %d (pid %d) exited (status %d); starting another", index, pid, status)
            wait = started[index] + RESPAWN_INTERVAL - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if stopping:
                continue
            started[index] = time.monotonic()
            workers[_fork(index, work)] = index
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    return 0


def shared_memory(size: int) -> mmap.mmap:
    """Zeroed memory that this process and every worker forked later see the same (MAP_SHARED)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    return int(soft)
