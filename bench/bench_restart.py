"""Several hosts (issue 13): one agent restart to its first full pass, on simulated hosts.

Run as root from the repository root:

    .venv/bin/python bench/bench_restart.py [--hosts 3] [--networks 60] [--guests 6] [--restarts 3]
                                            [--profile DIR] [--bound 900]

It starts one API server and ``--hosts`` simulated hosts (netmeta.cli.multihost,
as bench_multihost.py does), creates ``--networks`` isolated VXLAN networks (one
DHCP agent each, spread by the scheduler), boots ``--guests`` real dhclient
guests on hosts other than their DHCP server, and then restarts host-1's agent
``--restarts`` times over the intact host. For each restart it prints:

* the whole restart: SIGTERM to the old agent until the new one's status file
  says its first full pass is done; split into the old agent's stop, the new
  process's start-up (imports) and, as the agent reports them (status
  ``startup``), registration, the first list and the pass itself;
* what that pass changed: an intact host should need nothing (0 spawned,
  signalled, applied);
* failures meanwhile: every guest keeps reading metadata, and a guest served
  by host-1's dnsmasq keeps renewing its lease.

``--profile DIR`` runs py-spy (``pip install py-spy``) on each new agent and
writes DIR/restart-N.txt: wall-clock samples per netmeta function (idle
included), the hottest first. ``--bound`` stops everything after that many
seconds (SIGALRM), cleaning up as on any failure.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_multihost import converged, fetch, rss_mb, start_simulated  # noqa: E402

from netmeta.cli.multihost import HostStack, MultiHost  # noqa: E402
from netmeta.client import Client  # noqa: E402


class Bound(Exception):
    pass


def make_networks(client: Client, count: int) -> list[dict[str, str]]:
    nets = []
    for i in range(count):
        net = client.request("POST", "/v2.0/networks", {"network": {"name": f"b{i}"}})["network"]
        client.request("POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": f"10.{100 + i // 250}.{i % 250}.0/24",
            "gateway_ip": None}})
        nets.append(net)
    return nets


def boot_guests(multi: MultiHost, nets: list[dict[str, str]], count: int) -> list[tuple[HostStack, dict[str, str]]]:
    """Guests on hosts other than their DHCP server's; the first ones on networks host-1 serves."""
    dhcp_host = {n["id"]: h for h in multi.hosts for n in nets if f"qdhcp-{n['id']}" in h.sim.inner_namespaces()}
    first = multi.hosts[0]
    ordered = [n for n in nets if dhcp_host.get(n["id"]) is first] + [n for n in nets if dhcp_host.get(n["id"]) is not first]
    guests = []
    for g in range(count):
        net = ordered[g % len(ordered)]
        elsewhere = [h for h in multi.hosts if h is not dhcp_host.get(net["id"])] or multi.hosts
        host = elsewhere[g % len(elsewhere)]
        vm = host.boot(f"g{g}", net["id"], timeout=90)
        guests.append((host, {**vm, "network": net["id"], "dhcp": dhcp_host[net["id"]].name}))
    return guests


def profile_summary(raw: str, top: int = 25) -> str:
    """py-spy's collapsed stacks → samples per innermost netmeta frame (and per leaf), hottest first."""
    ours: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        mine = [f for f in frames if "netmeta/" in f]
        ours[mine[-1] if mine else "(outside netmeta)"] += n
        leaves[frames[-1]] += n
    out = [f"{total} samples (all threads, idle included)", "innermost netmeta frame:"]
    out += [f"  {n:6d} {100 * n / max(total, 1):5.1f}%  {f}" for f, n in ours.most_common(top)]
    out += ["leaf frame:"]
    out += [f"  {n:6d} {100 * n / max(total, 1):5.1f}%  {f}" for f, n in leaves.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--networks", type=int, default=60)
    parser.add_argument("--guests", type=int, default=6)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--profile", default="")
    parser.add_argument("--bound", type=float, default=900.0)
    args = parser.parse_args()
    if args.guests > 120:
        raise SystemExit("--guests above 120 would crowd the machine-wide neighbour table (gc_thresh3 = 1024)")
    if args.profile and shutil.which("py-spy") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "py-spy")):
        raise SystemExit("--profile needs py-spy (pip install py-spy)")

    def expired(signum: int, frame: object) -> None:
        raise Bound(f"bound of {args.bound:.0f}s reached")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(args.bound))
    multi = start_simulated(args.hosts)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        client = Client.for_config(multi.config, admin=True)
        t0 = time.monotonic()
        nets = make_networks(client, args.networks)
        api = time.monotonic() - t0
        settle = converged(multi, client, 600)
        h1 = multi.hosts[0]
        served = len([n for n in h1.sim.inner_namespaces() if n.startswith("qdhcp-")])
        print(f"setup: {args.networks} networks (API {api:.1f}s, converged {settle:.1f}s later); "
              f"{served} qdhcp on {h1.name}", flush=True)
        guests = boot_guests(multi, nets, args.guests)
        renewer = next(((h, vm) for h, vm in guests if vm["dhcp"] == h1.name), None)
        print(f"guests: {len(guests)}; renewing guest {renewer[1]['name'] if renewer else '(none)'} "
              f"served by {h1.name}", flush=True)

        rows = []
        for n in range(1, args.restarts + 1):
            counts = {"requests": 0, "metadata_failed": 0, "renewals": 0, "renewals_failed": 0}
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set() and guests:
                    for host, vm in guests:
                        counts["requests"] += 1
                        if not fetch(host, vm["namespace"]):
                            counts["metadata_failed"] += 1

            def renewing() -> None:
                while renewer is not None and not stop.is_set():
                    counts["renewals"] += 1
                    if renewer[0].netmeta("vm", "renew", renewer[1]["name"], timeout=60).returncode != 0:
                        counts["renewals_failed"] += 1

            threads = [threading.Thread(target=reader), threading.Thread(target=renewing)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            component = h1.components["agent"]
            t = time.monotonic()
            component.stop()
            stopped = time.monotonic() - t
            component.start()
            if args.profile:
                os.makedirs(args.profile, exist_ok=True)
                spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
                spies.append(subprocess.Popen(
                    [spy, "record", "--pid", str(component.pid), "--idle", "--threads", "--format", "raw",
                     "--rate", "200", "--output", os.path.join(args.profile, f"restart-{n}.raw")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            while True:
                status = h1.status()
                if status.get("pid") == component.pid and (
                        status.get("startup", {}).get("first_pass") is not None
                        # an agent from before the status had "startup": its first status is its first pass
                        or ("startup" not in status and status.get("last_pass_full"))):
                    break
                if not component.alive():
                    raise RuntimeError(f"agent exited: {component.last_words()}")
                time.sleep(0.02)
            total = time.monotonic() - t
            time.sleep(2.0)
            stop.set()
            for t_ in threads:
                t_.join()
            if spies:
                spy_proc = spies.pop()
                spy_proc.send_signal(signal.SIGINT)
                spy_proc.wait(30)
                raw_path = os.path.join(args.profile, f"restart-{n}.raw")
                if os.path.exists(raw_path):
                    with open(raw_path, encoding="utf-8", errors="replace") as handle:
                        summary = profile_summary(handle.read())
                    with open(os.path.join(args.profile, f"restart-{n}.txt"), "w", encoding="utf-8") as handle:
                        handle.write(summary)
            steps = status.get("startup", {})
            # The process's own start-up (imports, settings): from the spawn until the Agent existed.
            agent_total = float(steps.get("first_pass", 0))
            row = {
                "total": total, "stop": stopped, "start": total - stopped - agent_total,
                "registered": float(steps.get("registered", 0)),
                "list": float(steps.get("synced", 0)) - float(steps.get("registered", 0)),
                "pass": float(status.get("last_pass_ms") or 0) / 1000,
                "changed": {k: len(status.get(k) or []) for k in ("applied", "spawned", "signalled", "removed")},
                **counts,
            }
            rows.append(row)
            split = (f"stop {row['stop']:.2f}s + process start {row['start']:.2f}s + register "
                     f"{row['registered']:.2f}s + list {row['list']:.2f}s + pass {row['pass']:.2f}s" if steps
                     else f"stop {row['stop']:.2f}s + (no startup steps in this agent's status) pass {row['pass']:.2f}s")
            print(f"restart {n}: {row['total']:.2f}s to the first full pass = {split}; the pass changed {row['changed']}; "
                  f"metadata failed {counts['metadata_failed']}/{counts['requests']}, renewals failed "
                  f"{counts['renewals_failed']}/{counts['renewals']}; load {os.getloadavg()[0]:.1f}", flush=True)
        if rows:
            med = {k: statistics.median(r[k] for r in rows) for k in ("total", "stop", "start", "registered", "list", "pass")}
            print("median of {}: {}".format(len(rows), ", ".join(f"{k} {v:.2f}s" for k, v in med.items())))
        for host in multi.hosts:
            print(f"memory: {host.name}: agent {rss_mb(host.components['agent'].pid):.0f} MB, metadata "
                  f"{rss_mb(host.components['metadata'].pid):.0f} MB")
    finally:
        signal.alarm(0)
        for spy_proc in spies:
            spy_proc.kill()
            spy_proc.wait()
        problems = multi.close()
        if problems:
            print("cleanup problems:", *problems, sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
