"""Boot storm: many guests boot at once and each runs cloud-init's full metadata read.

Why: a cloud's worst metadata moment is not a steady request rate but a
mass boot — every new VM takes a DHCP lease and then crawls both metadata
trees within seconds of each other, and each must find its own data at once
(cloud-init gives up on a 404 for ``meta_data.json``). This measures exactly
that on the real data plane, end to end per guest:

    instance created (API) → namespace + veth → dhclient lease (real dnsmasq)
    → cloud-init ``MetadataReader.read_v2()`` (OpenStack tree + its EC2 crawl)
    → cloud-init ``get_instance_metadata`` + ``get_instance_userdata`` (EC2)

all from inside the guest's namespace through its DHCP-learnt route, and
checks every answer belongs to that guest. Run as root from the repo root:

    .venv/bin/python bench/bench_boot_storm.py [--guests 100] [--concurrency 20]

It builds its own stack (unique prefix, own state dir and fabric namespace),
bounds work by ``--guests`` (≤ 500), ``--concurrency`` (≤ 64) and per-guest
timeouts (boot 45 s, crawl ``--crawl-timeout``). Each of ``--concurrency``
worker threads runs a guest's boot as its own ``netmeta vm boot`` process
(API create, namespace, veth, dhclient) and then its crawl; and removes every namespace and process at the end — also on
failure or Ctrl-C. The host's ``/etc/resolv.conf`` is checked unchanged.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from collections.abc import Generator
from typing import Any, cast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from netmeta.metadata.service import read_status as metadata_status  # noqa: E402
from tests.privileged.stack import Stack, make_stack  # noqa: E402

CLIENT = os.path.join(REPO, "tests", "privileged", "guest_client.py")
CLOUDINIT = os.path.join(REPO, ".cache", "cloud-init", "usr", "lib", "python3", "dist-packages")
USER_DATA = b"#cloud-config\nruncmd: [echo boot-storm]\n# \xff\xfe\n"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBootStormBenchKeyOnly storm@netmeta"
MAX_GUESTS = 500
MAX_CONCURRENCY = 64


@dataclass
class Result:
    """One guest's timeline (seconds from its own start) and verdict."""

    name: str
    ok: bool
    boot_s: float = 0.0
    crawl_s: float = 0.0
    total_s: float = 0.0
    error: str = ""


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: with 100 samples p99 is the 99th, not an interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def check_crawl(out: dict[str, Any], guest: Any) -> str:
    """Empty if the crawl returned *this* guest's data, else what is wrong."""
    os_ = out["openstack"]
    md = os_["metadata"]
    ec2 = out["ec2"]["metadata"]
    problems = []
    if md.get("uuid") != guest.instance_id:
        problems.append(f"uuid {md.get('uuid')} != {guest.instance_id}")
    if md.get("name") != guest.name:
        problems.append(f"name {md.get('name')}")
    if base64.b64decode(os_["userdata_b64"]) != USER_DATA or base64.b64decode(out["ec2"]["userdata_b64"]) != USER_DATA:
        problems.append("user data differs")
    if md.get("public_keys") != {"storm": PUBLIC_KEY} or ec2.get("public-keys") != {"storm": PUBLIC_KEY}:
        problems.append("public keys differ")
    links = (os_.get("networkdata") or {}).get("links") or []
    if [link.get("ethernet_mac_address") for link in links] != [guest.mac]:
        problems.append("network_data links")
    for tree in (ec2, os_.get("ec2_metadata") or {}):
        if tree.get("local-ipv4") != guest.ip or not str(tree.get("instance-id", "")).startswith("i-"):
            problems.append(f"ec2 local-ipv4/instance-id {tree.get('local-ipv4')} {tree.get('instance-id')}")
    return "; ".join(problems)


def boot_argv(stack: Stack, name: str, net_id: str, files: dict[str, str]) -> list[str]:
    """``netmeta vm boot`` for this stack: one process per guest, like a real VM's own boot.

    Why not ``stack.boot`` in threads: pyroute2 opens a netlink socket in a
    named namespace by *forking* a helper, and a fork taken while other
    threads hold locks can deadlock the child (seen: a 20-guest storm hung
    for good). Separate processes have no such shared state.
    """
    c = stack.config
    return [sys.executable, "-m", "netmeta", "vm", "boot", name,
            "--state-dir", c.state_dir, "--bind", c.bind, "--fabric-namespace", c.fabric_namespace,
            "--network", net_id, "--user-data", files["user_data"], "--key-name", "storm",
            "--public-key", files["public_key"], "--meta", "bench=boot-storm", "--timeout", "30"]


def one_guest(stack: Stack, index: int, net_id: str, files: dict[str, str], crawl_timeout: float,
              stop: threading.Event) -> Result:
    """Boot one guest and crawl from inside it; never raises (failures are results)."""
    name = f"storm{index:03d}"
    if stop.is_set():
        return Result(name, False, error="cancelled")
    start = time.monotonic()
    try:
        booting = subprocess.run(boot_argv(stack, name, net_id, files), capture_output=True, text=True,
                                 timeout=45, cwd=REPO)
        if booting.returncode != 0:
            return Result(name, False, total_s=time.monotonic() - start,
                          error=f"boot rc {booting.returncode}: {booting.stderr.strip()[-300:]}")
        guest = stack.guests.get(name)
        stack.namespaces_seen.add(guest.namespace)  # make_stack asserts it is gone afterwards
    except Exception as exc:  # noqa: BLE001 - report, keep the storm going
        return Result(name, False, total_s=time.monotonic() - start, error=f"boot: {exc!r}")
    booted = time.monotonic()
    argv = ["ip", "netns", "exec", guest.namespace, sys.executable, CLIENT, "crawl", "--cloudinit", CLOUDINIT]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=crawl_timeout)
    except subprocess.TimeoutExpired:
        end = time.monotonic()
        return Result(name, False, booted - start, end - booted, end - start, f"crawl: timed out after {crawl_timeout}s")
    end = time.monotonic()
    result = Result(name, False, booted - start, end - booted, end - start)
    if done.returncode != 0:
        result.error = f"crawl rc {done.returncode}: {done.stderr.strip()[-300:]}"
        return result
    try:
        result.error = check_crawl(json.loads(done.stdout), guest)
    except (ValueError, KeyError, TypeError) as exc:
        result.error = f"crawl output: {exc!r} {done.stdout[-200:]!r} {done.stderr.strip()[-300:]}"
    result.ok = not result.error
    return result


def _digest(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return "absent"


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a running process (the service side of the storm)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def service_cpu(stack: Stack, net_id: str) -> dict[str, float]:
    """CPU used so far by server, agent, metadata and the network's dnsmasq."""
    out = {c.name: cpu_seconds(c.pid) for c in stack.components}
    out["dnsmasq"] = cpu_seconds(stack.dnsmasq_pid(net_id))
    return out


def run(guests: int, concurrency: int, crawl_timeout: float, cidr: str) -> dict[str, Any]:
    """Build a stack, storm it, tear it down; return the figures."""
    gen = cast(Generator[Stack, None, None], make_stack(enable_isolated_metadata=True))
    stack = next(gen)
    stop = threading.Event()
    try:
        net, _ = stack.network("boot-storm", cidr, gateway=False)
        stack.converged()
        files = {"user_data": os.path.join(stack.config.state_dir, "storm-user-data"),
                 "public_key": os.path.join(stack.config.state_dir, "storm-key.pub")}
        with open(files["user_data"], "wb") as handle:
            handle.write(USER_DATA)
        with open(files["public_key"], "w", encoding="utf-8") as handle:
            handle.write(PUBLIC_KEY + "\n")
        cpu_before = service_cpu(stack, net["id"])
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        results: list[Result] = []
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="storm") as pool:
            futures = [pool.submit(one_guest, stack, i, net["id"], files, crawl_timeout, stop) for i in range(guests)]
            try:
                for future in as_completed(futures):
                    results.append(future.result())
            except BaseException:
                stop.set()  # queued guests return at once; running ones finish within their timeouts
                raise
        wall = time.monotonic() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Only reaped children count: the boot and crawl processes, not the components.
        client_cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
        cpu_after = service_cpu(stack, net["id"])
        cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after}
        status = metadata_status(stack.config.state_dir) or {}
        requests = sum(int(a["count"]) for a in status.get("access", []))  # type: ignore[union-attr]
    finally:
        stop.set()
        teardown_started = time.monotonic()
        gen.close()  # make_stack's finally: stop components, remove every namespace, assert none left
        teardown = time.monotonic() - teardown_started
    totals = [r.total_s for r in results if r.ok]
    failures = [r for r in results if not r.ok]
    return {
        "guests": guests,
        "concurrency": concurrency,
        "succeeded": len(totals),
        "all_succeeded": not failures and len(totals) == guests,
        "end_to_end_s": {"max": max(totals, default=float("nan")), "p50": percentile(totals, 50),
                         "p99": percentile(totals, 99)},
        "boot_s": {"max": max((r.boot_s for r in results if r.ok), default=float("nan")),
                   "p50": percentile([r.boot_s for r in results if r.ok], 50)},
        "crawl_s": {"max": max((r.crawl_s for r in results if r.ok), default=float("nan")),
                    "p50": percentile([r.crawl_s for r in results if r.ok], 50)},
        "wall_s": wall,
        "teardown_s": teardown,
        "metadata_requests_answered": requests,
        "cpus": os.cpu_count(),
        "client_cpu_s": round(client_cpu, 2),
        "service_cpu_s": cpu,
        "failures": [asdict(r) for r in sorted(failures, key=lambda r: r.name)][:20],
    }


MAIN_PID = os.getpid()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM cleans up like Ctrl-C: make_stack's finally removes everything.

    Only in this process: pyroute2 forks helpers that inherit this handler and
    are stopped with SIGTERM; they must simply die, not unwind our stack.
    """
    if os.getpid() != MAIN_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100, help=f"guests to boot (1..{MAX_GUESTS})")
    parser.add_argument("--concurrency", type=int, default=20, help=f"guests booting at once (1..{MAX_CONCURRENCY})")
    parser.add_argument("--crawl-timeout", type=float, default=60.0, help="seconds one guest's crawl may take")
    parser.add_argument("--cidr", default="10.213.0.0/22", help="the storm network (must hold --guests + 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--target", type=float, default=20.0, help="slowest end-to-end seconds to call a pass")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: guests are network namespaces with a real dhclient")
    if not 1 <= args.guests <= MAX_GUESTS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--guests must be 1..{MAX_GUESTS} and --concurrency 1..{MAX_CONCURRENCY}")
    if not os.path.isdir(os.path.join(CLOUDINIT, "cloudinit")):
        parser.error(f"cloud-init not unpacked at {CLOUDINIT}: run scripts/setup.sh --test")
    signal.signal(signal.SIGTERM, _interrupt)
    resolv_before = _digest("/etc/resolv.conf")
    figures = run(args.guests, args.concurrency, args.crawl_timeout, args.cidr)
    figures["host_resolv_conf_unchanged"] = _digest("/etc/resolv.conf") == resolv_before
    figures["target_s"] = args.target
    figures["pass"] = bool(figures["all_succeeded"] and figures["end_to_end_s"]["max"] < args.target
                           and figures["host_resolv_conf_unchanged"])
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        e2e, boot, crawl = figures["end_to_end_s"], figures["boot_s"], figures["crawl_s"]
        print(f"boot storm: {args.guests} guests, {args.concurrency} at a time, one isolated network (qdhcp path)")
        print(f"  succeeded        {figures['succeeded']}/{args.guests}  (all: {figures['all_succeeded']})")
        print(f"  end-to-end       max {e2e['max']:.2f}s  p50 {e2e['p50']:.2f}s  p99 {e2e['p99']:.2f}s"
              f"  (target: slowest < {args.target:.0f}s)")
        print(f"  boot→lease       max {boot['max']:.2f}s  p50 {boot['p50']:.2f}s")
        print(f"  cloud-init crawl max {crawl['max']:.2f}s  p50 {crawl['p50']:.2f}s")
        print(f"  wall time        {figures['wall_s']:.2f}s  (teardown {figures['teardown_s']:.2f}s)")
        print(f"  metadata answers {figures['metadata_requests_answered']}")
        print(f"  CPU ({figures['cpus']} CPUs): guest-side boot+crawl processes {figures['client_cpu_s']:.1f}s"
              f" ({figures['client_cpu_s'] / args.guests:.2f}s/guest); service "
              + ", ".join(f"{k} {v:.1f}s" for k, v in figures["service_cpu_s"].items()))
        print(f"  host resolv.conf unchanged: {figures['host_resolv_conf_unchanged']}")
        for failure in figures["failures"]:
            print(f"  FAILED {failure['name']}: {failure['error']}")
        print("PASS" if figures["pass"] else "FAIL")
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
