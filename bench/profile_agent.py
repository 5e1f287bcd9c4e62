"""The agent, with a CPU account of where its time goes (bench_scale --profile-agent).

Run in place of ``python -m netmeta agent …`` (same arguments):

    python -m bench.profile_agent agent --config netmeta.ini

It times, in CPU seconds of the calling thread (``time.thread_time``) and in
wall seconds, every method of the agent's Host (each action and each
observation is one call), the rendering of the desired state in each pass,
and the change feed's parsing and snapshot building; and it runs cProfile on
every thread. At exit (SIGTERM) it writes ``<state_dir>/agent/profile.txt``:
the process's own CPU (user, system), the account by call, and cProfile's
top functions by own time.

py-spy samples wall time and cannot tell a thread waiting in a syscall from
one working in the kernel; this counts CPU per call instead.
"""

from __future__ import annotations

import cProfile
import functools
import io
import os
import pstats
import signal
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Callable

ACCOUNT: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # name -> [calls, cpu, wall]
_LOCK = threading.Lock()
_PROFILES: list[cProfile.Profile] = []


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            spent_cpu, spent_wall = time.thread_time() - cpu, time.monotonic() - wall
            with _LOCK:
                entry = ACCOUNT[name]
                entry[0] += 1
                entry[1] += spent_cpu
                entry[2] += spent_wall

    return wrapper


def _profile_threads() -> None:
    """cProfile in every thread started from now on, and in this one."""
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with _LOCK:
            _PROFILES.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    _PROFILES.append(main)
    main.enable()


def install() -> None:
    from netmeta import feed
    from netmeta.agent import driver_host, reconciler
    from netmeta.model import dhcp, l2, l3, portsec

    for name in dir(driver_host.DriverHost):
        attr = getattr(driver_host.DriverHost, name)
        if not name.startswith("_") and callable(attr):
            setattr(driver_host.DriverHost, name, timed(f"host.{name}", attr))
    for module, names in ((dhcp, ("desired_dhcp",)), (l3, ("desired_routers",)),
                          (l2, ("desired_vxlan", "local_networks")), (portsec, ("ruleset",))):
        for name in names:
            wrapped = timed(f"render.{name}", getattr(module, name))
            setattr(module, name, wrapped)
            if hasattr(reconciler, name):
                setattr(reconciler, name, wrapped)
    reconciler.Reconciler.converge = timed("pass.converge", reconciler.Reconciler.converge)  # type: ignore[method-assign]
    feed.FeedFollower._publish = timed("feed.publish", feed.FeedFollower._publish)  # type: ignore[method-assign]
    original_parsers = dict(feed.PARSERS)
    for kind, parser in original_parsers.items():
        feed.PARSERS[kind] = timed(f"feed.parse.{kind}", parser)
    _profile_threads()


def report(path: str) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
    out = io.StringIO()
    out.write(f"process CPU: user {user:.1f}s, system {system:.1f}s\n\n")
    out.write(f"{'call':40} {'calls':>7} {'cpu s':>8} {'wall s':>8}\n")
    with _LOCK:
        rows = sorted(ACCOUNT.items(), key=lambda kv: -kv[1][1])
    for name, (calls, cpu, wall) in rows:
        out.write(f"{name:40} {int(calls):7d} {cpu:8.2f} {wall:8.2f}\n")
    stats: pstats.Stats | None = None
    for profile in _PROFILES:
        profile.disable()
        try:
            stats = pstats.Stats(profile, stream=out) if stats is None else (stats.add(profile) or stats)
        except TypeError:  # a profile that saw nothing
            continue
    if stats is not None:
        out.write("\ncProfile, all threads, by own time:\n")
        stats.sort_stats("tottime").print_stats(45)
        out.write("\ncProfile, all threads, by cumulative time:\n")
        stats.sort_stats("cumulative").print_stats(60)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(out.getvalue())


def main() -> int:
    from netmeta import config
    from netmeta.cli.main import main as netmeta_main

    install()
    argv = sys.argv[1:]
    state_dir = config.load(argv[argv.index("--config") + 1]).state_dir if "--config" in argv else "."

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        return int(netmeta_main(argv) or 0)
    finally:
        report(os.path.join(state_dir, "agent", "profile.txt"))


if __name__ == "__main__":
    sys.exit(main())
