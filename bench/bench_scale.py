"""Several hosts at scale (issue 13): 1,000 networks over three simulated hosts, on one machine.

Run as root from the repository root:

    .venv/bin/python bench/bench_scale.py [--hosts 3] [--networks 1000] [--ports 1000] [--guests 30]
                                          [--clients 4] [--bulk 100] [--writes 50] [--watchers 10] [--bound 1500]

It starts one API server and ``--hosts`` simulated hosts (netmeta.cli.multihost:
each its own mount + network namespace with its agent and metadata process,
VXLAN between them over an underlay) and prints:

* **convergence**: from empty, ``--networks`` isolated VXLAN networks with a
  subnet each (one DHCP agent per network, spread by the scheduler) and
  ``--ports`` ports, one per network, bound round-robin to the hosts
  (``binding:host_id``: each makes its network local on that host, with
  l2population's entries on the others) are created through the API by
  ``--clients`` clients at once, ``--bulk`` resources a request (Neutron's
  bulk create, as an operator's script would; 0: one request a resource); then the time until every host's agent has
  applied the server's revision with nothing pending;
* **guests**: ``--guests`` real dhclient guests (``netmeta vm boot`` inside a
  host, one host at a time in parallel), each on a host other than its
  network's DHCP server (the lease crosses VXLAN), and one metadata request
  from each;
* **memory**: RSS of each host's agent and metadata process, its qdhcp
  namespaces and dnsmasq processes;
* **fan-out**: ``--watchers`` long-polling watchers of the loaded server, and
  ``--writes`` writes 50 ms apart: ms from each write's start until each
  watcher, and the last, has it.

Bounded on purpose. Real guests stay few: the kernel's neighbour table
(``gc_thresh3`` = 1024 entries) is one table for every namespace on the
machine, and each guest costs two or three entries, so the API's ports stand
for the issue's 1,000 guests and a sample of real ones leases and reads
metadata. ``--bound`` ends the run (SIGALRM) and everything is removed, as on
any failure.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import signal
import statistics
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_multihost import converged, fetch, rss_mb, start_simulated  # noqa: E402

from netmeta.cli.multihost import HostStack, MultiHost  # noqa: E402
from netmeta.client import Client  # noqa: E402


class Bound(Exception):
    pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _subnet(i: int, net_id: str) -> dict[str, Any]:
    return {"network_id": net_id, "ip_version": 4, "cidr": f"10.{64 + i // 250}.{i % 250}.0/24", "gateway_ip": None}


def _parallel(multi: MultiHost, clients: int, jobs: list[Any], work: Any) -> None:
    """``work(client, job)`` for every job, by ``clients`` threads at once; any failure ends the run."""
    pending: queue.Queue[Any] = queue.Queue()
    for job in jobs:
        pending.put(job)
    errors: list[str] = []

    def worker() -> None:
        client = Client.for_config(multi.config, admin=True, timeout=120.0)
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                work(client, job)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors.append(f"{job if not isinstance(job, list) else job[:1]}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(max(1, clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} API calls failed, e.g. {errors[:3]}")


def create_all(multi: MultiHost, networks: int, ports: int, clients: int, bulk: int) -> list[dict[str, Any]]:
    """Networks with a subnet each, then ports bound round-robin to the hosts; by ``clients`` at once.

    With ``bulk`` > 0, as an operator's script would do it: Neutron's bulk
    create, ``bulk`` resources a request (networks, then their subnets, then
    the ports). With 0, three calls per network, one resource each.
    """
    hosts = [h.name for h in multi.hosts]
    made: dict[int, dict[str, Any]] = {}

    def port(i: int, net_id: str) -> dict[str, Any]:
        return {"network_id": net_id, "name": f"p{i}", "binding:host_id": hosts[i % len(hosts)]}

    if bulk <= 0:
        def one(client: Client, i: int) -> None:
            net = client.request("POST", "/v2.0/networks", {"network": {"name": f"s{i}"}})["network"]
            client.request("POST", "/v2.0/subnets", {"subnet": _subnet(i, net["id"])})
            if i < ports:
                client.request("POST", "/v2.0/ports", {"port": port(i, net["id"])})
            made[i] = net

        _parallel(multi, clients, list(range(networks)), one)
        return [made[i] for i in sorted(made)]

    chunks = [list(range(lo, min(networks, lo + bulk))) for lo in range(0, networks, bulk)]

    def nets(client: Client, chunk: list[int]) -> None:
        out = client.request("POST", "/v2.0/networks", {"networks": [{"name": f"s{i}"} for i in chunk]})["networks"]
        made.update(zip(chunk, out))

    def subnets(client: Client, chunk: list[int]) -> None:
        client.request("POST", "/v2.0/subnets", {"subnets": [_subnet(i, made[i]["id"]) for i in chunk]})

    def bound(client: Client, chunk: list[int]) -> None:
        client.request("POST", "/v2.0/ports", {"ports": [port(i, made[i]["id"]) for i in chunk]})

    _parallel(multi, clients, chunks, nets)
    _parallel(multi, clients, chunks, subnets)
    _parallel(multi, clients, [[i for i in chunk if i < ports] for chunk in chunks if chunk[0] < ports], bound)
    return [made[i] for i in sorted(made)]


def boot_guests(multi: MultiHost, nets: list[dict[str, Any]], count: int) -> tuple[list[tuple[HostStack, dict[str, str]]], list[float]]:
    """``count`` guests, each on a host other than its network's DHCP server; hosts boot in parallel."""
    dhcp: dict[str, HostStack] = {}
    for host in multi.hosts:
        for ns in host.sim.inner_namespaces():
            if ns.startswith("qdhcp-"):
                dhcp[ns[len("qdhcp-"):]] = host
    plan: dict[str, list[tuple[str, str]]] = {h.name: [] for h in multi.hosts}
    for g in range(count):
        net = nets[(g * 37) % len(nets)]  # spread over the networks
        elsewhere = [h for h in multi.hosts if h is not dhcp.get(net["id"])] or multi.hosts
        plan[elsewhere[g % len(elsewhere)].name].append((f"g{g}", net["id"]))
    booted: list[tuple[HostStack, dict[str, str]]] = []
    times: list[float] = []
    lock = threading.Lock()

    def boot(host: HostStack) -> None:
        for name, net_id in plan[host.name]:
            t = time.monotonic()
            try:
                vm = {**host.boot(name, net_id, timeout=120), "network": net_id}
            except RuntimeError as exc:  # counted: a guest that got no lease in time
                print(f"  guest {name} on {host.name}: {exc}", flush=True)
                continue
            with lock:
                times.append(time.monotonic() - t)
                booted.append((host, vm))

    threads = [threading.Thread(target=boot, args=(h,)) for h in multi.hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return booted, times


def fan_out(multi: MultiHost, watchers: int, writes: int) -> dict[str, float]:
    from bench.bench_api import Client as RawClient
    from bench.bench_fanout import Watcher

    host, _, port = multi.config.bind.rpartition(":")
    token = Client.for_config(multi.config, admin=True).tokens.get()  # type: ignore[union-attr]
    writer = RawClient(host, int(port), token)
    since = writer.call("GET", "/netmeta/v1/state")["revision"]
    threads = [Watcher(host, int(port), since) for _ in range(watchers)]
    for thread in threads:
        thread.client.token = token
        thread.start()
    time.sleep(0.5)
    started: dict[str, float] = {}
    durations = []
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
    return {"write_p50": statistics.median(durations), "each_p50": statistics.median(each),
            "each_p99": percentile(each, 0.99), "last_p50": statistics.median(last),
            "last_p99": percentile(last, 0.99), "missing": missing}


def cpu_s(pid: int | None) -> tuple[float, float]:
    """CPU seconds (user + system) ``pid`` has used so far: its own, and its reaped children's."""
    if not pid:
        return 0.0, 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:13]) / ticks, sum(int(f) for f in fields[13:15]) / ticks


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def probe(host: HostStack, namespace: str) -> str:
    """One metadata request from a guest: "" if answered, else what went wrong (curl's exit, HTTP status, time)."""
    t = time.monotonic()
    out = host.in_namespace(namespace, "curl", "-s", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
                            "http://169.254.169.254/latest/meta-data/instance-id", timeout=10)
    if out.returncode == 0 and out.stdout.strip() == "200":
        return ""
    return f"curl exit {out.returncode}, HTTP {out.stdout.strip() or '-'}, after {time.monotonic() - t:.1f}s"


def restart(multi: MultiHost, guests: list[tuple[HostStack, dict[str, str]]], before: float = 10.0) -> None:
    """host-1's agent stopped and started; the guests keep reading metadata meanwhile.

    The guests read for ``before`` seconds first with nothing restarting, so
    a failure the machine's load causes anyway is told from one the restart
    causes: each failure is listed with when it happened, relative to the
    SIGTERM.
    """
    h1 = multi.hosts[0]
    counts = {"requests": 0, "failed": 0, "baseline": 0, "baseline_failed": 0}
    failures: list[str] = []
    stop = threading.Event()
    sigterm = [math.inf]

    def reader() -> None:
        while not stop.is_set() and guests:
            for host, vm in guests:
                t = time.monotonic()
                problem = probe(host, vm["namespace"])
                during = t >= sigterm[0]
                counts["requests" if during else "baseline"] += 1
                if problem:
                    counts["failed" if during else "baseline_failed"] += 1
                    failures.append(f"{vm['name']} on {host.name} at {t - sigterm[0]:+.1f}s: {problem}")

    served = {ns[len("qdhcp-"):] for ns in h1.sim.inner_namespaces() if ns.startswith("qdhcp-")}
    renewer = next(((h, vm) for h, vm in guests if vm.get("network") in served), None)

    def renewing() -> None:
        while renewer is not None and not stop.is_set():
            counts["renewals"] += 1
            counts["renewals_failed"] += renewer[0].netmeta("vm", "renew", renewer[1]["name"], timeout=60).returncode != 0

    counts.update(renewals=0, renewals_failed=0)
    threads = [threading.Thread(target=reader), threading.Thread(target=renewing)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(before)
        component = h1.components["agent"]
        t = sigterm[0] = time.monotonic()
        component.stop()
        stopped = time.monotonic() - t
        component.start()
        while True:
            status = h1.status()
            if status.get("pid") == component.pid and status.get("startup", {}).get("first_pass") is not None:
                break
            if not component.alive():
                raise RuntimeError(f"agent exited: {component.last_words()}")
            time.sleep(0.05)
        total = time.monotonic() - t
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    steps = status.get("startup", {})
    changed = {k: len(status.get(k) or []) for k in ("applied", "spawned", "signalled", "removed")}
    print(f"restart: {h1.name}'s agent, {total:.1f}s from SIGTERM to its first full pass: stop {stopped:.2f}s, "
          f"process start {total - stopped - float(steps.get('first_pass', 0)):.2f}s, registered after "
          f"{steps.get('registered')}s, listed after {steps.get('synced')}s, the pass "
          f"{float(status.get('last_pass_ms') or 0) / 1000:.2f}s; it changed {changed}; metadata failed "
          f"{counts['failed']}/{counts['requests']} (in the {before:.0f}s before: {counts['baseline_failed']}/"
          f"{counts['baseline']}), DHCP renewals (both windows; {renewer[1]['name'] if renewer else 'no guest'}, served by "
          f"{h1.name}) failed "
          f"{counts['renewals_failed']}/{counts['renewals']}; load {os.getloadavg()[0]:.1f}", flush=True)
    for failure in failures:
        print(f"  metadata failed: {failure}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--guests", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--bulk", type=int, default=100, help="resources per bulk create request (Neutron's "
                        "{\"networks\": [...]}); 0 = one request per resource, as before")
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--bound", type=float, default=1500.0)
    parser.add_argument("--restart", action="store_true", help="then restart host-1's agent once over the intact host "
                        "(while the guests read metadata) and time it to its first full pass")
    parser.add_argument("--profile-agent", default="", help="run host-1's agent under bench/profile_agent.py (CPU "
                        "per Host call, per rendering, cProfile of every thread) and copy its account here")
    parser.add_argument("--profile", default="", help="py-spy (CPU, not idle) of the server and host-1's agent "
                        "during creation and convergence, summaries in this directory")
    args = parser.parse_args()
    if args.guests > 120:
        raise SystemExit("--guests above 120 would crowd the machine-wide neighbour table (gc_thresh3 = 1024)")
    if args.networks > 2000:
        raise SystemExit("--networks above 2000: this bench's subnets are 10.64.0.0/24 .. 10.71.249.0/24")

    def expired(signum: int, frame: object) -> None:
        raise Bound(f"bound of {args.bound:.0f}s reached")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(args.bound))
    started = time.monotonic()
    multi = start_simulated(args.hosts)
    try:
        client = Client.for_config(multi.config, admin=True, timeout=60.0)
        if args.profile_agent:
            host1 = multi.hosts[0]
            host1.stop("agent")
            host1.components["agent"].module = "bench.profile_agent"
            host1.start("agent")
        spies: list[tuple[str, Any]] = []
        if args.profile:
            import subprocess

            os.makedirs(args.profile, exist_ok=True)
            spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
            for label, pid in (("server", multi.server.pid if multi.server else None),
                               ("agent", multi.hosts[0].components["agent"].pid)):
                out = os.path.join(args.profile, f"{label}.raw")
                spies.append((out, subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate",
                                                     "100", "--output", out], stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL)))
        t0 = time.monotonic()
        nets = create_all(multi, args.networks, args.ports, args.clients, args.bulk)
        api = time.monotonic() - t0
        settle = converged(multi, client, max(60.0, args.bound - (time.monotonic() - started) - 60))
        for out, proc in spies:
            from bench_restart import profile_summary

            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            if os.path.exists(out):
                with open(out, encoding="utf-8", errors="replace") as handle:
                    summary = profile_summary(handle.read(), top=40)
                with open(out[:-4] + ".txt", "w", encoding="utf-8") as handle:
                    handle.write(summary)
        total = api + settle
        per_host = {}
        for host in multi.hosts:
            inner = host.sim.inner_namespaces()
            per_host[host.name] = len([n for n in inner if n.startswith("qdhcp-")])
        print(f"convergence: {args.networks} networks + subnets, {min(args.ports, args.networks)} bound ports: API "
              f"{api:.1f}s ({args.clients} clients, {f'bulk of {args.bulk}' if args.bulk > 0 else 'one resource a call'}), every host converged {settle:.1f}s after the last call: "
              f"{total:.1f}s from empty; qdhcp per host {per_host}; load {os.getloadavg()[0]:.1f}", flush=True)
        cpu = {"server": cpu_s(multi.server.pid if multi.server else None)}
        for host in multi.hosts:
            cpu[f"{host.name} agent"] = cpu_s(host.components["agent"].pid)
            cpu[f"{host.name} metadata"] = cpu_s(host.components["metadata"].pid)
        print("  CPU seconds so far (own + the commands it ran): " + ", ".join(
            f"{k} {v[0]:.1f} + {v[1]:.1f}" for k, v in cpu.items()), flush=True)

        guests, boots = boot_guests(multi, nets, args.guests)
        ok = sum(fetch(h, vm["namespace"]) for h, vm in guests)
        if boots:
            print(f"guests: {len(guests)} real guests, each on a host other than its DHCP server's: vm boot p50 "
                  f"{statistics.median(boots):.1f}s, max {max(boots):.1f}s; metadata {ok}/{len(guests)} answered",
                  flush=True)

        for host in multi.hosts:
            agent, meta = host.components["agent"].pid, host.components["metadata"].pid
            daemons = [p for p in host.sim.pids_inside() if _comm(p) == "dnsmasq"]
            print(f"memory: {host.name}: agent {rss_mb(agent):.0f} MB, metadata {rss_mb(meta):.0f} MB; "
                  f"{per_host[host.name]} qdhcp, {len(daemons)} dnsmasq of {sum(rss_mb(p) for p in daemons):.0f} MB "
                  f"together", flush=True)

        if args.profile_agent:
            import shutil

            host1 = multi.hosts[0]
            host1.stop("agent")
            shutil.copy(os.path.join(host1.config.state_dir, "agent", "profile.txt"), args.profile_agent)
            print(f"profile: host-1's agent, until converged: {args.profile_agent}", flush=True)
            host1.start("agent")

        if args.restart:
            restart(multi, guests)

        r = fan_out(multi, args.watchers, args.writes)
        print(f"fan-out: {args.watchers} watchers of the server holding {args.networks} networks, {args.writes} "
              f"writes 50 ms apart (ms from the write's start): the write p50 {1000 * r['write_p50']:.1f}; each "
              f"watcher p50 {1000 * r['each_p50']:.1f}, p99 {1000 * r['each_p99']:.1f}; the last of all p50 "
              f"{1000 * r['last_p50']:.1f}, p99 {1000 * r['last_p99']:.1f}; missed {int(r['missing'])}; load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        signal.alarm(0)
        t = time.monotonic()
        problems = multi.close()
        print(f"cleanup: {time.monotonic() - t:.1f}s" + (", problems:" if problems else ", nothing left"), flush=True)
        for problem in problems:
            print("  ", problem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
