"""The metadata server on every core: one process vs ``metadata_workers``, beside haproxy.

Run as root from the repository root:

    .venv/bin/python bench/bench_workers.py [--duration 5] [--connections 32] [--threads 2]
    .venv/bin/python bench/bench_workers.py --rss-networks 200

For each worker setting (``1`` and the default, one per CPU) it builds its own
netmeta (``enable_isolated_metadata``, rate limiting off — this measures the
server, not the limit), one isolated network and one guest with a real DHCP
lease, and runs ``wrk -t2 -c32 -d5s --latency`` *inside the guest namespace*
against ``/openstack/latest/meta_data.json``, keep-alive and with
``Connection: close``. The ceiling, measured in the same stack between the
metadata runs, is haproxy with ``nbthread`` = CPUs (Neutron runs one haproxy
thread per core) inside the same qdhcp namespace, answering a fixed body of
the same size. Ratios are within one stack; the machine is shared, so compare
rows of one run only. With ``--rounds N`` each pair is measured N times,
netmeta and haproxy alternating, and the medians are compared, so that a
burst of load from elsewhere hits both sides alike.

``--rss-networks N`` instead creates N isolated networks (N qdhcp listeners in
every worker) and prints the whole metadata service's RSS and PSS (the
supervisor and every worker; PSS counts pages the forked workers share once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_paths import Haproxy, wrk  # noqa: E402
from netmeta.config import RateLimitConfig  # noqa: E402
from netmeta.metadata.service import read_status  # noqa: E402
from netmeta.model import names  # noqa: E402
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until  # noqa: E402

META_PATH = "/openstack/latest/meta_data.json"
OFF = RateLimitConfig(rate_limit_enabled=False)


def service_pids(stack: Stack) -> list[int]:
    top = stack.metadata.pid
    status = read_status(stack.config.state_dir) or {}
    return [top, *(int(w["pid"]) for w in status.get("workers", []))]  # type: ignore[union-attr]


def memory_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def throughput(workers: int, args: argparse.Namespace) -> list[tuple[str, str, float, float, int]]:
    rows: list[tuple[str, str, float, float, int]] = []
    for stack in make_stack(enable_isolated_metadata=True, metadata_workers=workers, rate_limiting=OFF):
        net, _ = stack.network("wbench", "10.94.0.0/24", gateway=False)
        dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
        guest = stack.boot("wbench1", net["id"])
        body_size = len(stack.fetch(guest, META_PATH).encode())
        wait_until(lambda: len((read_status(stack.config.state_dir) or {}).get("listeners", [])) >= 1,
                   "every worker's listener")
        # See bench_paths.py: let the guest reuse its own TIME_WAIT ports (per-netns sysctl).
        in_ns(guest.namespace, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
        workdir = tempfile.mkdtemp(prefix="nmt-wbench-")
        ceiling = Haproxy(names.dhcp_namespace(net["id"]), f"{dhcp_ip}:8080", "{" + " " * (body_size - 2) + "}",
                          workdir, "ceiling", nbthread=os.cpu_count() or 1)
        label = f"netmeta, {workers or os.cpu_count()} worker(s)" if workers else f"netmeta, default ({os.cpu_count()})"
        try:
            ceiling.start()
            for mode in ("keep-alive", "close"):
                pair = ((label, f"http://169.254.169.254{META_PATH}"),
                        (f"haproxy nbthread {os.cpu_count()}", f"http://{dhcp_ip}:8080/"))
                runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name, _ in pair}
                for _ in range(args.rounds):
                    for name, url in pair:
                        rps, p99, errors = wrk(guest.namespace, url, close=mode == "close", duration=args.duration,
                                               connections=args.connections, threads=args.threads)
                        runs[name].append((rps, p99, errors))
                        print(f"  {name:<28} {mode:<10} {rps:>8.0f}/s p99 {p99:.2f} ms errors {errors}", flush=True)
                for name, _ in pair:
                    got = runs[name]
                    rps = statistics.median(r for r, _, _ in got)
                    p99 = statistics.median(p for _, p, _ in got)
                    rows.append((name, mode, rps, p99, sum(e for _, _, e in got)))
        finally:
            ceiling.stop()
            for entry in os.listdir(workdir):
                os.unlink(os.path.join(workdir, entry))
            os.rmdir(workdir)
    return rows


def rss(networks: int) -> None:
    for stack in make_stack(enable_isolated_metadata=True, rate_limiting=OFF):
        started = time.monotonic()
        for i in range(networks):
            stack.network(f"rss{i}", f"10.{100 + i // 250}.{i % 250}.0/24", gateway=False)
        wait_until(lambda: len((read_status(stack.config.state_dir) or {}).get("listeners", [])) >= networks,
                   f"{networks} listeners in every worker", timeout=60 + networks * 3)
        time.sleep(2)
        pids = service_pids(stack)
        each = [memory_kib(pid) for pid in pids]
        print(f"{networks} networks (listeners up after {time.monotonic() - started:.0f} s), "
              f"metadata service = supervisor + {len(pids) - 1} workers")
        for pid, (r, p) in zip(pids, each):
            print(f"  pid {pid}: RSS {r / 1024:.1f} MiB, PSS {p / 1024:.1f} MiB")
        print(f"  total: RSS {sum(r for r, _ in each) / 1024:.1f} MiB, PSS {sum(p for _, p in each) / 1024:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per pair; medians are compared")
    parser.add_argument("--workers", default="1,0", help="metadata_workers settings to compare (0 = CPUs)")
    parser.add_argument("--rss-networks", type=int, default=0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_workers: needs root (namespaces)", file=sys.stderr)
        return 2
    if args.rss_networks:
        rss(args.rss_networks)
        return 0
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        rows += throughput(workers, args)
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency {META_PATH}, inside the guest "
          f"namespace; {os.cpu_count()} CPUs; median of {args.rounds} alternating run(s)")
    print(f"{'server':<30} {'mode':<10} {'req/s':>8} {'p99 ms':>7} {'errors':>6} {'vs haproxy':>10}")
    # Each netmeta row is compared with the haproxy row measured right after it, in the same stack.
    for index, (name, mode, rps, p99, errors) in enumerate(rows):
        ratio = "" if name.startswith("haproxy") else f"{rps / rows[index + 1][2]:.2f}"
        print(f"{name:<30} {mode:<10} {rps:>8.0f} {p99:>7.2f} {errors:>6} {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
