"""Several hosts (issue 13): convergence, an agent restart, memory per host — on simulated hosts.

Run as root from the repository root:

    .venv/bin/python bench/bench_multihost.py [--hosts 3] [--networks 60] [--guests 24]

It starts one API server and ``--hosts`` simulated hosts (netmeta.cli.multihost:
each its own mount + network namespace, agent and metadata process, VXLAN
between them over an underlay), all removed at the end. It prints:

* convergence: ``--networks`` isolated VXLAN networks created through the API
  (one DHCP agent each, spread by the scheduler), then the time until every
  host's agent has applied the server's revision with nothing pending;
* guests: ``--guests`` real dhclient guests spread round-robin over the hosts
  and the networks (most get their lease from a dnsmasq on another host,
  across VXLAN), then one metadata request from each (failures counted);
* restart: host-1's agent restarted — time to its first full pass, while
  every guest keeps reading metadata and one guest served by host-1 renews
  its lease (failures counted);
* memory: RSS of each host's agent and metadata process, dnsmasq per host.

Bounded on purpose: the kernel's neighbour table (gc_thresh3 = 1024) is
shared by the whole machine and every guest costs two or three entries, so
the guest count stays in the tens here, far below the issue's 1,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netmeta.cli import multihost  # noqa: E402
from netmeta.cli.multihost import HostStack, MultiHost  # noqa: E402
from netmeta.client import Client  # noqa: E402


def start_simulated(hosts: int) -> MultiHost:
    """``hosts`` simulated hosts (VXLAN, isolated metadata, one DHCP agent per network) under a fresh prefix.

    The benches of several hosts all start here; ``MultiHost.close`` removes everything again.
    """
    prefix = f"nmt{uuid.uuid4().hex[:8]}-"
    base = tempfile.mkdtemp(prefix=prefix)
    os.chmod(base, 0o755)
    names = [f"host-{i}" for i in range(1, hosts + 1)]
    started = time.monotonic()
    multi = multihost.start(base, prefix, names, {"vni_ranges": "1000:9999", "enable_isolated_metadata": True,
                                                   "dhcp_agents_per_network": 1})
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{hosts} simulated hosts up in {time.monotonic() - started:.1f}s", flush=True)
    return multi


def rss_mb(pid: int | None) -> float:
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def converged(multi: MultiHost, client: Client, timeout: float) -> float:
    """Seconds until every host's agent shows the server's revision with nothing pending."""
    started = time.monotonic()
    target = int(client.state()["revision"])
    while time.monotonic() - started < timeout:
        done = 0
        for host in multi.hosts:
            status = host.status()
            if int(status.get("revision") or 0) >= target and not status.get("pending"):
                done += 1
        if done == len(multi.hosts):
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"not converged after {timeout:.0f}s")


def fetch(host: HostStack, namespace: str) -> bool:
    out = host.in_namespace(namespace, "curl", "-sf", "--max-time", "3",
                            "http://169.254.169.254/latest/meta-data/instance-id", timeout=10)
    return bool(out.returncode == 0 and out.stdout.startswith("i-"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--networks", type=int, default=60)
    parser.add_argument("--guests", type=int, default=24)
    args = parser.parse_args()
    if args.guests > 120:
        raise SystemExit("--guests above 120 would crowd the machine-wide neighbour table (gc_thresh3 = 1024)")
    multi = start_simulated(args.hosts)
    try:
        client = Client.for_config(multi.config, admin=True)
        t0 = time.monotonic()
        nets = []
        for i in range(args.networks):
            net = client.request("POST", "/v2.0/networks", {"network": {"name": f"b{i}"}})["network"]
            client.request("POST", "/v2.0/subnets", {"subnet": {
                "network_id": net["id"], "ip_version": 4, "cidr": f"10.{100 + i // 250}.{i % 250}.0/24",
                "gateway_ip": None}})
            nets.append(net)
        api = time.monotonic() - t0
        settle = converged(multi, client, 600)
        per_host = {h.name: len([n for n in h.sim.inner_namespaces() if n.startswith("qdhcp-")]) for h in multi.hosts}
        print(f"convergence: {args.networks} networks: API {api:.1f}s, every host converged {settle:.1f}s after "
              f"the last call ({api + settle:.1f}s from empty); qdhcp per host {per_host}")

        dhcp_host = {n["id"]: h for h in multi.hosts for n in nets if f"qdhcp-{n['id']}" in h.sim.inner_namespaces()}
        guests: list[tuple[HostStack, dict[str, str]]] = []
        boots = []
        for g in range(args.guests):
            net = nets[g % len(nets)]
            # Each guest on a host other than its network's DHCP server: its lease comes across VXLAN.
            elsewhere = [h for h in multi.hosts if h is not dhcp_host.get(net["id"])] or multi.hosts
            host = elsewhere[g % len(elsewhere)]
            t = time.monotonic()
            vm = host.boot(f"g{g}", net["id"], timeout=90)
            boots.append(time.monotonic() - t)
            guests.append((host, {**vm, "network": net["id"]}))
        ok = sum(fetch(h, vm["namespace"]) for h, vm in guests)
        print(f"guests: {len(guests)} booted on hosts other than their DHCP server's (netmeta vm boot inside the "
              f"host, lease included): p50 {statistics.median(boots):.1f}s, max {max(boots):.1f}s; "
              f"metadata {ok}/{len(guests)} answered")

        h1 = multi.hosts[0]
        served_by_h1 = {n for n in h1.sim.inner_namespaces() if n.startswith("qdhcp-")}
        renewer = next(((h, vm) for h, vm in guests if dhcp_host.get(vm["network"]) is h1), None)
        failures = {"metadata": 0, "requests": 0, "renewals": 0, "renewal_failures": 0}
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                for host, vm in guests:
                    failures["requests"] += 1
                    if not fetch(host, vm["namespace"]):
                        failures["metadata"] += 1

        def renewing() -> None:
            if renewer is None:
                return
            while not stop.is_set():
                failures["renewals"] += 1
                if renewer[0].netmeta("vm", "renew", renewer[1]["name"], timeout=60).returncode != 0:
                    failures["renewal_failures"] += 1

        threads = [threading.Thread(target=reader), threading.Thread(target=renewing)]
        for t in threads:
            t.start()
        component = h1.components["agent"]
        t = time.monotonic()
        h1.stop("agent")
        h1.start("agent")  # returns after the new agent's first pass (its status names its pid)
        while not (h1.status().get("pid") == component.pid and h1.status().get("last_pass_full")):
            time.sleep(0.05)
        restart = time.monotonic() - t
        pass_ms = float(h1.status().get("last_pass_ms") or 0)
        time.sleep(2)
        stop.set()
        for t_ in threads:
            t_.join()
        print(f"restart: {h1.name}'s agent stopped and restarted, first full pass after {restart:.1f}s "
              f"(the pass itself {pass_ms / 1000:.1f}s; {len(served_by_h1)} qdhcp there); metadata failures {failures['metadata']}/{failures['requests']}, "
              f"DHCP renewals failed {failures['renewal_failures']}/{failures['renewals']} (guest served by {h1.name})")

        for host in multi.hosts:
            agent, meta = host.components["agent"].pid, host.components["metadata"].pid
            dnsmasq = len([n for n in host.sim.inner_namespaces() if n.startswith("qdhcp-")])
            print(f"memory: {host.name}: agent {rss_mb(agent):.0f} MB, metadata {rss_mb(meta):.0f} MB, "
                  f"{dnsmasq} dnsmasq")
    finally:
        problems = multi.close()
        if problems:
            print("cleanup problems:", *problems, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
