"""Server CPU time per request: the metadata service (one worker) beside haproxy (one thread), same guest.

Run as root from the repository root:

    .venv/bin/python bench/bench_metadata_cpu.py [--rounds 3] [--duration 3]

Requests/s from a guest move with whatever else the machine runs (wrk, the
kernel's softirq work and both servers share its cores), so this bench also
reads what each *server* spent: its utime + stime from ``/proc/<pid>/stat``
over a ``wrk -t2 -c32`` run, divided by the requests wrk counted. One stack as
in ``bench_workers.py`` (``enable_isolated_metadata``, rate limiting off, one
guest with a real lease); haproxy answers a fixed body of the same size from
the same qdhcp namespace. netmeta and haproxy alternate, ``--rounds`` times per
mode; the medians are printed, with ``haproxy / netmeta`` — the share of
haproxy's efficiency netmeta reaches, which more cores do not change (each
worker and each haproxy thread costs the same per request).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_paths import Haproxy  # noqa: E402
from bench.bench_workers import META_PATH, OFF, service_pids  # noqa: E402
from netmeta.model import names  # noqa: E402
from tests.privileged.stack import in_ns, make_stack  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_metadata_cpu: needs root (namespaces)", file=sys.stderr)
        return 2
    per_request: dict[tuple[str, str], list[float]] = {}
    for stack in make_stack(enable_isolated_metadata=True, metadata_workers=1, rate_limiting=OFF):
        net, _ = stack.network("cbench", "10.95.0.0/24", gateway=False)
        dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
        guest = stack.boot("cbench1", net["id"])
        size = len(stack.fetch(guest, META_PATH).encode())
        in_ns(guest.namespace, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")  # see bench_paths.py
        workdir = tempfile.mkdtemp(prefix="nmt-cbench-")
        haproxy = Haproxy(names.dhcp_namespace(net["id"]), f"{dhcp_ip}:8080", "{" + " " * (size - 2) + "}",
                          workdir, "ceiling", nbthread=1)
        try:
            haproxy.start()
            time.sleep(1)
            with open(haproxy.pidfile, encoding="ascii") as handle:
                haproxy_pid = int(handle.read().split()[0])
            servers = (("netmeta", service_pids(stack)[-1], f"http://169.254.169.254{META_PATH}"),
                       ("haproxy", haproxy_pid, f"http://{dhcp_ip}:8080/"))
            for _ in range(args.rounds):
                for mode in ("keep-alive", "close"):
                    for name, pid, url in servers:
                        argv = ["ip", "netns", "exec", guest.namespace, "wrk", "-t2", "-c32", f"-d{args.duration}s"]
                        argv += ["-H", "Connection: close"] if mode == "close" else []
                        before = cpu_seconds(pid)
                        out = subprocess.run([*argv, url], capture_output=True, text=True,
                                             timeout=args.duration + 30).stdout
                        spent = cpu_seconds(pid) - before
                        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                        per_request.setdefault((mode, name), []).append(spent / requests * 1e6)
        finally:
            haproxy.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"server CPU per request (utime+stime / requests), wrk -t2 -c32 -d{args.duration}s {META_PATH}, "
          f"median of {args.rounds}; {os.cpu_count()} CPUs")
    print(f"{'mode':<10} {'netmeta 1 worker':>17} {'haproxy 1 thread':>17} {'haproxy/netmeta':>16}")
    for mode in ("keep-alive", "close"):
        ours = statistics.median(per_request[(mode, "netmeta")])
        theirs = statistics.median(per_request[(mode, "haproxy")])
        print(f"{mode:<10} {ours:>14.1f} us {theirs:>14.1f} us {theirs / ours:>16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
