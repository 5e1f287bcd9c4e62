"""The API's watch fan-out: one write, ten parked watchers, how long until every one has it.

Ten watcher threads (each its own keep-alive HTTP connection) long-poll
``/netmeta/v1/watch``; a writer creates networks one at a time, 50 ms apart
(the watchers park again in between). For each write: the time from the
write's start until each watcher's answer holds it, and until the *last*
of the ten has it. Two set-ups, side by side in one run:

* ``sqlite``: one server, ten watchers on it (the single-host default);
* ``postgresql``: two servers on one PostgreSQL (a throwaway cluster,
  tests/pg.py), five watchers on each, every write through the first — so
  half the watchers hear of it through LISTEN/NOTIFY.

Usage: ``.venv/bin/python bench/bench_fanout.py [--writes 100] [--watchers 10]``.
Aim (issue 13): a write reaches watchers of every server within 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_api import Client, percentile  # noqa: E402


def start(state_dir: str, *extra: str) -> tuple[Any, str, int]:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "netmeta.server", "--bind", "127.0.0.1:0", "--server-metrics-bind", "",
         "--state-dir", state_dir, "--auth-strategy", "noauth", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on http://" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    host, _, port = line.split("http://", 1)[1].strip().rpartition(":")
    return proc, host, int(port)


class Watcher(threading.Thread):
    def __init__(self, host: str, port: int, since: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(host, port)
        self.since = since
        self.arrived: dict[str, float] = {}
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                body = self.client.call("GET", f"/netmeta/v1/watch?since={self.since}&timeout=5")
            except OSError:  # the server was stopped at the end
                return
            at = time.monotonic()
            for event in body["events"]:
                self.arrived.setdefault(event["object"]["id"], at)
            self.since = body["revision"]


def measure(servers: list[tuple[str, int]], watchers: int, writes: int) -> dict[str, float]:
    writer = Client(*servers[0])
    since = writer.call("GET", "/netmeta/v1/state")["revision"]
    threads = [Watcher(*servers[i % len(servers)], since) for i in range(watchers)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    started: dict[str, float] = {}
    durations: list[float] = []
    for n in range(writes):
        t0 = time.monotonic()
        net = writer.call("POST", "/v2.0/networks", {"network": {"name": f"fan-{n}"}})["network"]
        durations.append(time.monotonic() - t0)
        started[net["id"]] = t0
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(len(t.arrived) >= writes for t in threads):
        time.sleep(0.05)
    for thread in threads:
        thread.stop = True
    each = [t.arrived[i] - t0 for t in threads for i, t0 in started.items() if i in t.arrived]
    last = [max(t.arrived.get(i, float("inf")) for t in threads) - t0 for i, t0 in started.items()]
    missing = sum(1 for t in threads for i in started if i not in t.arrived)
    return {"write_p50": statistics.median(durations), "each_p50": statistics.median(each), "each_p99": percentile(each, 0.99),
            "last_p50": statistics.median(last), "last_p99": percentile(last, 0.99), "missing": missing}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--watchers", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="netmeta-fanout-") as root:
        proc, host, port = start(os.path.join(root, "sqlite"))
        try:
            results["sqlite, 1 server"] = measure([(host, port)], args.watchers, args.writes)
        finally:
            proc.kill()
            proc.wait()
        from tests.pg import postgres_cluster

        with postgres_cluster() as db:
            procs = [start(os.path.join(root, f"pg{i}"), "--db", db) for i in range(2)]
            try:
                results["postgresql, 2 servers"] = measure([(h, p) for _, h, p in procs], args.watchers, args.writes)
            finally:
                for proc, _, _ in procs:
                    proc.kill()
                    proc.wait()
    print(f"{args.watchers} watchers, {args.writes} writes 50 ms apart; ms from the write's start")
    print("| set-up | the write itself p50 | each watcher p50 | p99 | last of all p50 | p99 | missed |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {1000 * r['write_p50']:.1f} | {1000 * r['each_p50']:.1f} | {1000 * r['each_p99']:.1f} | {1000 * r['last_p50']:.1f} | "
              f"{1000 * r['last_p99']:.1f} | {int(r['missing'])} |")


if __name__ == "__main__":
    main()
