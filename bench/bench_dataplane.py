"""Data-plane benchmarks (issue: convergence, footprint, restart).

Run as root from the repository root:

    .venv/bin/python bench/bench_dataplane.py [--networks 100] [--attach 30]

Everything lives in namespaces this script creates (unique prefix) and is
removed at the end, as in the privileged tests. It prints:

* convergence: from the API call that attaches a router interface to the
  opts file rewritten with the gateway route (dnsmasq is signalled in the same
  step), p50/p99 over ``--attach`` attachments with ``--networks`` present;
* footprint: processes per network (dnsmasq only) and the metadata process's
  RSS growth per network (one listening socket each);
* restart: time for a restarted agent to finish its first full pass, while a
  guest keeps fetching metadata (every failure is counted).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netmeta.agent.service import read_status  # noqa: E402
from netmeta.metadata.service import read_status as read_metadata_status  # noqa: E402
from netmeta.model.paths import StatePaths  # noqa: E402
from tests.privileged.stack import make_stack, wait_until  # noqa: E402


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dnsmasq_count(paths: StatePaths) -> int:
    root = paths.dhcp_root
    count = 0
    for net in os.listdir(root) if os.path.isdir(root) else ():
        try:
            pid = int(open(paths.dhcp_file(net, "pid")).read())
            count += os.path.exists(f"/proc/{pid}")
        except (OSError, ValueError):
            pass
    return count


def _listeners(stack: object) -> int:
    status = read_metadata_status(stack.config.state_dir)  # type: ignore[attr-defined]
    return len(status["listeners"]) if status else 0  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=100)
    parser.add_argument("--attach", type=int, default=30)
    args = parser.parse_args()

    for stack in make_stack(enable_isolated_metadata=True):
        meta_pid = stack.metadata.pid
        assert meta_pid is not None
        wait_until(lambda: read_status(stack.config.state_dir), "agent", timeout=30)
        subnets = []
        warm = min(10, args.networks // 2)
        rss0 = 0
        t0 = time.monotonic()
        for i in range(args.networks):
            if i == warm:
                # Measure growth after a warm-up batch: the first listeners load
                # code and allocate pools that later ones share.
                stack.converged(timeout=300)
                wait_until(lambda: _listeners(stack) >= warm, "the warm-up listeners", timeout=60)
                rss0 = rss_kb(meta_pid)
            net, sub = stack.network(f"b{i}", f"10.{100 + i // 250}.{i % 250}.0/24")
            subnets.append((net, sub))
        stack.converged(timeout=300)
        build = time.monotonic() - t0
        wait_until(lambda: len(stack.client.get("/v2.0/networks")["networks"]) == args.networks, "networks")
        wait_until(lambda: dnsmasq_count(stack.config.paths) == args.networks, "every dnsmasq", timeout=120)
        wait_until(lambda: _listeners(stack) >= args.networks, "every listener", timeout=120)
        rss1 = rss_kb(meta_pid)

        router = stack.client.request("POST", "/v2.0/routers", {"router": {"name": "bench"}})["router"]
        lat = []
        for net, sub in subnets[: args.attach]:
            want = f"169.254.169.254/32,{sub['gateway_ip']}"
            t = time.monotonic()
            stack.client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            wait_until(lambda: any(want in line for line in stack.opts(net["id"])), "opts", timeout=10, poll=0.001)
            lat.append(1000 * (time.monotonic() - t))

        vm = stack.boot("benchvm", subnets[-1][0]["id"])
        stack.fetch(vm, "/openstack/latest/meta_data.json")
        failures = 0
        fetched = 0
        renewed = 0
        renew_failures = 0
        stop = threading.Event()

        def hammer() -> None:
            nonlocal failures, fetched, renewed, renew_failures
            while not stop.is_set():
                out = stack.curl(vm, "/openstack/latest/meta_data.json", "-f")
                fetched += 1
                failures += out.returncode != 0
                if fetched % 25 == 0:
                    # A DHCP exchange while the agent restarts: dnsmasq must keep answering.
                    try:
                        stack.guests.renew(vm.name, timeout=10)
                        renewed += 1
                    except Exception:  # noqa: BLE001 - counted, reported
                        renew_failures += 1

        worker = threading.Thread(target=hammer)
        worker.start()
        stack.agent.stop()
        t = time.monotonic()
        stack.agent.start()
        stack.agent_pass(timeout=60)
        restart = time.monotonic() - t
        time.sleep(1)
        stop.set()
        worker.join()

        lat.sort()
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        print(f"networks: {args.networks} (built and converged in {build:.1f}s)")
        print(f"convergence attach→opts: p50 {statistics.median(lat):.0f} ms, p99 {p99:.0f} ms, max {lat[-1]:.0f} ms (n={len(lat)})")
        print(f"processes per network: {dnsmasq_count(stack.config.paths) / args.networks:.2f} (dnsmasq)")
        print(f"metadata RSS: {rss0} KB with {warm} networks -> {rss1} KB with {args.networks}: "
              f"{(rss1 - rss0) / (args.networks - warm):.1f} KB per network")
        print(f"agent restart to first full pass: {restart:.2f}s; metadata fetches meanwhile: {fetched}, failed: {failures}; "
              f"DHCP renewals meanwhile: {renewed}, failed: {renew_failures}")


if __name__ == "__main__":
    main()
