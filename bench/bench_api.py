"""Benchmark the control plane through its HTTP API on SQLite.

Starts ``python -m netmeta.server`` on a free 127.0.0.1 port with a fresh
state directory and measures, over keep-alive HTTP connections:

* sequential port creates per second (one transaction each, DHCP port and
  change-log row included);
* list latency with 10,000 ports (unfiltered, and with a filter, which
  parses every document);
* watch delivery latency: a write's start until a parked long-poll watcher
  has the event.

Usage: ``.venv/bin/python bench/bench_api.py [--ports 10000] [--creates 2000]``.
Targets: ≥ 300 creates/s, list of 10k < 0.5 s, watch < 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


class Client:
    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        if self.token:
            headers["X-Auth-Token"] = self.token
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return json.loads(data) if data else None


def start_server(state_dir: str, auth: str = "noauth") -> tuple[subprocess.Popen[bytes], str, int]:
    # noauth by default: these figures are the control plane's own cost
    # (bench_auth.py puts keystone beside it).
    proc = subprocess.Popen(
        [sys.executable, "-m", "netmeta.server", "--bind", "127.0.0.1:0", "--server-metrics-bind", "127.0.0.1:0",
         "--state-dir", state_dir, "--auth-strategy", auth],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on http://" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    host, _, port = line.split("http://", 1)[1].strip().rpartition(":")
    return proc, host, int(port)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=10000)
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--watch-samples", type=int, default=50)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="netmeta-bench-") as state_dir:
        proc, host, port = start_server(state_dir)
        try:
            api = Client(host, port)
            net = api.call("POST", "/v2.0/networks", {"network": {"name": "bench"}})["network"]
            api.call("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.128.0.0/16",
                                                          "ip_version": 4}})
            body = {"port": {"network_id": net["id"]}}
            began = time.perf_counter()
            for _ in range(args.creates):
                api.call("POST", "/v2.0/ports", body)
            elapsed = time.perf_counter() - began
            rows.append(("port create (sequential)", f"{args.creates / elapsed:,.0f} /s",
                         f"{elapsed / args.creates * 1000:.2f} ms each"))
            for _ in range(max(0, args.ports - args.creates - 1)):
                api.call("POST", "/v2.0/ports", body)
            total = len(api.call("GET", "/v2.0/ports")["ports"])
            for label, path in (("list ports, unfiltered", "/v2.0/ports"),
                                ("list ports, filtered", f"/v2.0/ports?network_id={net['id']}&admin_state_up=true")):
                samples = []
                for _ in range(7):
                    t0 = time.perf_counter()
                    api.call("GET", path)
                    samples.append(time.perf_counter() - t0)
                rows.append((f"{label} ({total})", f"{statistics.median(samples) * 1000:.0f} ms median",
                             f"max {max(samples) * 1000:.0f} ms"))
            t0 = time.perf_counter()
            state = api.call("GET", "/netmeta/v1/state")
            rows.append((f"state ({total} ports)", f"{(time.perf_counter() - t0) * 1000:.0f} ms", ""))
            revision = state["revision"]
            latencies: list[float] = []
            watcher = Client(host, port)
            for n in range(args.watch_samples):
                got: dict[str, float] = {}
                wrote: dict[str, float] = {}

                def watch(since: int = revision) -> None:
                    result = watcher.call("GET", f"/netmeta/v1/watch?since={since}&timeout=30")
                    got["at"] = time.perf_counter()
                    got["revision"] = result["revision"]

                thread = threading.Thread(target=watch)
                thread.start()
                time.sleep(0.02)  # let the watcher park on the server before writing
                wrote["at"] = time.perf_counter()
                api.call("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": f"bench{n}"}})
                thread.join()
                latencies.append(got["at"] - wrote["at"])
                revision = int(got["revision"])
            rows.append(("watch delivery (write start → watcher has it)",
                         f"{statistics.median(latencies) * 1000:.1f} ms median",
                         f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms"))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'result':>18}  detail")
    print("-" * (width + 40))
    for name, value, detail in rows:
        print(f"{name.ljust(width)}  {value:>18}  {detail}")


if __name__ == "__main__":
    main()
