"""What Prometheus metrics cost per request: the same load with them on and off, one run.

Four servers side by side, on 127.0.0.1 only:

* two API servers (``python -m netmeta.server``, noauth, SQLite, 20
  networks), the real entry point;
* two metadata servers (the real :class:`HttpProtocol` + :class:`MetadataApp`
  with the test world's vm1 at 127.0.0.1, as ``bench_metadata_app.py``).

In each pair the "off" server is the same code with the metric updates
replaced by no-ops before it starts (the API's request counter and latency
histogram; the metadata service's ``metrics.observe``: one counter and one
histogram per answer) — exactly what a request pays for ``/metrics``. The
access log is the same in both (not configured: dropped at the level
check). wrk (1 thread) runs alternate on, off, on, … so drift on this shared
machine hits both alike; the median run counts. Two figures per run:
requests/s (what wrk sees: on a loaded machine it moves with everything
else), and the server's own CPU time per request (utime + stime of its
process from ``/proc``, over the requests wrk counted), which other load
barely moves — the difference between the two CPU figures *is* the cost.

    .venv/bin/python bench/bench_metrics.py [--duration 5] [--connections 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The "off" API server: its metric objects swapped for no-ops, then the usual entry point.
API_CHILD = """
import sys
import netmeta.server.metrics as m

class Null:
    def labels(self, *args, **kwargs):
        return self
    def inc(self, *args):
        pass
    def observe(self, *args):
        pass

if sys.argv[1] == "off":
    m.REQUESTS = m.LATENCY = Null()
from netmeta.server.__main__ import main
main(sys.argv[2:])
"""


def start_api(mode: str, state_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", API_CHILD, mode, "--bind", "127.0.0.1:0", "--server-metrics-bind", "127.0.0.1:0",
         "--state-dir", state_dir, "--auth-strategy", "noauth", "--no-log-console"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on http://" not in line:
        proc.kill()
        raise SystemExit(f"API server ({mode}) did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def serve_metadata(mode: str, port_queue: "multiprocessing.Queue[int]") -> None:
    from bench_metadata_app import serve

    from netmeta.config import Config
    from netmeta.metadata import metrics

    if mode == "off":
        metrics.observe = lambda *args: ""  # type: ignore[assignment]
    serve(Config().imds_tokens, port_queue)  # bench_metadata_app's server, tokens at their default


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wrk(pid: int, port: int, path: str, duration: int, connections: int) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) of one wrk run."""
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", f"http://127.0.0.1:{port}{path}"]
    before = cpu_seconds(pid)
    out = subprocess.run(args, capture_output=True, text=True).stdout
    used = cpu_seconds(pid) - before
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"wrk saw {bad.group(1)} error responses on {path}:\n{out}")
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, used / max(count, 1) * 1e6


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per mode; the median counts")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[multiprocessing.Process] = []
    targets: dict[str, dict[str, tuple[int, int, str]]] = {}  # what -> mode -> (server pid, port, path)
    with tempfile.TemporaryDirectory(prefix="netmeta-bench-metrics-") as tmp:
        try:
            for mode in ("on", "off"):
                state = os.path.join(tmp, mode)
                os.mkdir(state, 0o700)
                proc, port = start_api(mode, state)
                procs.append(proc)
                nets = [post(port, "/v2.0/networks", {"network": {"name": f"n{i}"}})["network"] for i in range(20)]
                targets.setdefault("API GET /v2.0/networks (20)", {})[mode] = (proc.pid, port, "/v2.0/networks")
                targets.setdefault("API GET /v2.0/networks/{id}", {})[mode] = (proc.pid, port, f"/v2.0/networks/{nets[0]['id']}")
                queue: "multiprocessing.Queue[int]" = multiprocessing.Queue()
                worker = multiprocessing.Process(target=serve_metadata, args=(mode, queue), daemon=True)
                worker.start()
                workers.append(worker)
                md_port = queue.get(timeout=30)
                md_pid = worker.pid
                assert md_pid is not None
                targets.setdefault("metadata meta_data.json", {})[mode] = (md_pid, md_port, "/openstack/latest/meta_data.json")
                targets.setdefault("metadata EC2 instance-id", {})[mode] = (md_pid, md_port, "/latest/meta-data/instance-id")
            results: dict[str, dict[str, tuple[float, float]]] = {}
            for what, modes in targets.items():
                runs: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
                for mode, (pid, port, path) in modes.items():
                    wrk(pid, port, path, 1, opts.connections)  # warm-up
                for _ in range(opts.rounds):
                    for mode, (pid, port, path) in modes.items():
                        runs[mode].append(wrk(pid, port, path, opts.duration, opts.connections))
                results[what] = {mode: (statistics.median(r for r, _ in got), statistics.median(c for _, c in got))
                                 for mode, got in runs.items()}
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
                if proc.stdout is not None:
                    proc.stdout.close()
            for worker in workers:
                worker.terminate()
                worker.join(5)
    print(f"{'load':<30} {'req/s on':>9} {'req/s off':>10} {'CPU/req on':>11} {'CPU/req off':>12} {'metrics cost':>13}")
    for what, got in results.items():
        (rps_on, cpu_on), (rps_off, cpu_off) = got["on"], got["off"]
        print(f"{what:<30} {rps_on:>9.0f} {rps_off:>10.0f} {cpu_on:>9.0f}µs {cpu_off:>10.0f}µs "
              f"{cpu_on - cpu_off:>+8.0f}µs ({100 * (cpu_on - cpu_off) / cpu_off:+.0f}%)")

if __name__ == "__main__":
    main()
