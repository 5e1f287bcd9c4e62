"""The same guest, the same request, two paths: through the router and through qdhcp.

Run as root from the repository root:

    .venv/bin/python bench/bench_paths.py [--duration 5] [--connections 16]

It builds its own netmeta (unique state dir and fabric namespace, removed at
the end, also on failure) with ``enable_isolated_metadata=True``: one
network with a gateway, one guest booted *before* a router is attached — so
its lease routes 169.254.169.254 via the DHCP port — and then the router.
Without renewing, the guest switches paths by replacing its own /32 route:

* ``dhcp``:   ``169.254.169.254 via <DHCP port IP>`` → the qdhcp listener on :80;
* ``router``: ``169.254.169.254 via <gateway>`` → qr- device, mangle MARK,
  nat REDIRECT to 9697 → the qrouter listener.

Each path is measured with ``wrk`` run *inside the guest namespace*
(``wrk -t1 -c16 -d5s --latency http://169.254.169.254/openstack/latest/meta_data.json``),
keep-alive and with ``Connection: close``, beside a ceiling measured in the
same run: a haproxy started inside the same namespace as the listener
(qdhcp: on the DHCP port IP:8080; qrouter: on the qr IP:8081), answering a
constant body of exactly the size of ``meta_data.json`` — the cost of the
namespace hop plus the cheapest possible HTTP server, so the ratio shows
what netmeta's one-hop Python server costs on top. Every metadata run is
checked against the metadata process's per-listener access counts, so the
table says which listener really answered.

The figures depend on the machine (wrk, the listener and haproxy share its
cores); compare rows of one run, not runs of different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netmeta.metadata.service import read_status  # noqa: E402
from netmeta.model import names  # noqa: E402
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until  # noqa: E402

META_PATH = "/openstack/latest/meta_data.json"
HAPROXY_STRING_LIMIT = 1500  # haproxy config lines are limited (2048 by default): longer bodies go in a file


@dataclass
class Run:
    path: str
    mode: str
    target: str
    rps: float
    p99_ms: float
    errors: int
    answered_by: str = ""


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unparsed wrk latency {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(namespace: str, url: str, *, close: bool, duration: int, connections: int,
        threads: int = 1) -> tuple[float, float, int]:
    """(requests/s, p99 ms, errors) of one wrk run inside ``namespace``."""
    argv = ["ip", "netns", "exec", namespace, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(g) for g in m.groups())
    return rps, p99, errors


class Haproxy:
    """A constant-answer haproxy inside one namespace, started and stopped by its own pid."""

    def __init__(self, namespace: str, bind: str, body: str, workdir: str, name: str, nbthread: int | None = None) -> None:
        self.namespace, self.bind = namespace, bind
        self.pidfile = os.path.join(workdir, f"{name}.pid")
        self.config = os.path.join(workdir, f"{name}.cfg")
        if len(body) <= HAPROXY_STRING_LIMIT and '"' not in body and "\\" not in body:
            answer = f'string "{body}"'
        else:
            body_file = os.path.join(workdir, f"{name}.body")
            with open(body_file, "w", encoding="utf-8") as handle:
                handle.write(body)
            answer = f"file {body_file}"
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(
                "global\n  maxconn 1024\n" + (f"  nbthread {nbthread}\n" if nbthread else "") + "\n"
                "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n"
                f"frontend ceiling\n  bind {bind}\n"
                f"  http-request return status 200 content-type application/json {answer}\n"
            )
        self.pid: int | None = None

    def start(self) -> None:
        subprocess.run(["ip", "netns", "exec", self.namespace, "haproxy", "-D", "-p", self.pidfile, "-f", self.config],
                       check=True, capture_output=True, text=True, timeout=20)
        self.pid = int(wait_until(lambda: os.path.exists(self.pidfile) and open(self.pidfile).read().split()[0],
                                  f"haproxy's pid file in {self.namespace}", timeout=10))
        host, port = self.bind.rsplit(":", 1)
        wait_until(lambda: f"{host}:{port}" in in_ns(self.namespace, "ss", "-Hntl").stdout,
                   f"haproxy listening on {self.bind}", timeout=10)

    def stop(self) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_until(lambda: not os.path.exists(f"/proc/{self.pid}"), f"haproxy {self.pid} to exit", timeout=10)
        self.pid = None


def access(stack: Stack) -> dict[tuple[str, str], int]:
    status = read_status(stack.config.state_dir) or {}
    out: dict[tuple[str, str], int] = {}
    for entry in status.get("access", []):  # type: ignore[union-attr]
        key = (entry["kind"], entry["id"])
        out[key] = out.get(key, 0) + int(entry["count"])
    return out


def settled_access(stack: Stack) -> dict[tuple[str, str], int]:
    """Access counts once the metadata process has published the last requests (two equal reads)."""
    previous: list[dict[tuple[str, str], int]] = [access(stack)]

    def stable() -> dict[tuple[str, str], int] | None:
        time.sleep(0.6)  # bounded polling: the status file is written at most every 0.5 s
        now = access(stack)
        same = now == previous[0]
        previous[0] = now
        return now if same else None

    return wait_until(stable, "the access counts to settle", timeout=15)  # type: ignore[no-any-return]


def bench(stack: Stack, duration: int, connections: int, order: tuple[str, ...] = ("router", "dhcp")) -> list[Run]:
    net, sub = stack.network("bench", "10.93.0.0/24")
    dhcp_ip = stack.dhcp_port(net["id"])["fixed_ips"][0]["ip_address"]
    gw = sub["gateway_ip"]
    guest = stack.boot("bench1", net["id"])
    route = {r["dst"]: r.get("gateway") for r in stack.routes(guest)}
    assert route.get("169.254.169.254") == dhcp_ip, route
    router = stack.router("benchrouter", sub)
    stack.converged()
    wait_until(lambda: any(l["kind"] == "router" for l in (read_status(stack.config.state_dir) or {})
                           .get("listeners", [])), "the router's listener")  # type: ignore[union-attr]
    body_size = len(stack.fetch(guest, META_PATH).encode())
    body = "{" + " " * (body_size - 2) + "}"
    qdhcp, qrouter = names.dhcp_namespace(net["id"]), names.router_namespace(router["id"])
    contexts = {"dhcp": ("network", net["id"]), "router": ("router", router["id"])}
    hops = {"dhcp": dhcp_ip, "router": gw}
    print(f"guest {guest.ip}, DHCP port {dhcp_ip} ({qdhcp}), gateway {gw} ({qrouter}), "
          f"meta_data.json {body_size} bytes", flush=True)

    # With "Connection: close" the guest ends up holding every closed connection
    # in TIME_WAIT for 60 s, all towards 169.254.169.254:80 whichever path served
    # them; a second close run then starves for ephemeral ports (measured: ~300
    # req/s instead of ~3000, whichever path came second). A real guest would not
    # make 15k connections a minute to one address; let this one reuse TIME_WAIT
    # ports so that the order of the runs does not matter. The sysctl is the
    # guest namespace's own (per-netns), never the host's.
    in_ns(guest.namespace, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    workdir = tempfile.mkdtemp(prefix="nmt-bench-")
    ceilings = {"dhcp": Haproxy(qdhcp, f"{dhcp_ip}:8080", body, workdir, "dhcp"),
                "router": Haproxy(qrouter, f"{gw}:8081", body, workdir, "router")}
    runs: list[Run] = []
    try:
        for proxy in ceilings.values():
            proxy.start()
        for path in order:
            in_ns(guest.namespace, "ip", "route", "replace", "169.254.169.254", "via", hops[path], "dev", "eth0")
            assert stack.fetch(guest, META_PATH)
            for mode in ("keep-alive", "close"):
                before = settled_access(stack)
                waiting = len(in_ns(guest.namespace, "ss", "-Htan", "state", "time-wait").stdout.splitlines())
                url = f"http://169.254.169.254{META_PATH}"
                rps, p99, errors = wrk(guest.namespace, url, close=mode == "close",
                                       duration=duration, connections=connections)
                after = settled_access(stack)
                grew = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
                who = ",".join(f"{k[0]}" for k in grew) or "nobody"
                if set(grew) != {contexts[path]}:
                    raise AssertionError(f"{path} path answered by {grew}, expected only {contexts[path]}")
                runs.append(Run(path, mode, url, rps, p99, errors, f"{who} listener ({sum(grew.values())} req)"))
                ceiling_url = f"http://{ceilings[path].bind}/"
                rps, p99, errors = wrk(guest.namespace, ceiling_url, close=mode == "close",
                                       duration=duration, connections=connections)
                runs.append(Run(f"{path} ceiling", mode, ceiling_url, rps, p99, errors, "haproxy"))
                print(f"  measured {path} {mode} (guest had {waiting} TIME_WAIT sockets before)", flush=True)
    finally:
        for proxy in ceilings.values():
            proxy.stop()
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    return runs


def table(runs: list[Run]) -> str:
    ceilings = {(r.path.split()[0], r.mode): r.rps for r in runs if r.path.endswith("ceiling")}
    lines = [f"{'path':<15} {'mode':<10} {'req/s':>9} {'p99 ms':>8} {'errors':>6} {'vs ceiling':>10}  answered by",
             "-" * 86]
    for r in runs:
        ratio = r.rps / ceilings[(r.path.split()[0], r.mode)]
        lines.append(f"{r.path:<15} {r.mode:<10} {r.rps:>9.0f} {r.p99_ms:>8.2f} {r.errors:>6} {ratio:>10.3f}  "
                     f"{r.answered_by}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--order", default="router,dhcp", help="paths in the order measured (default router,dhcp)")
    parser.add_argument("--json", action="store_true", help="also print the runs as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_paths: needs root (namespaces, iptables)", file=sys.stderr)
        return 2
    started = time.monotonic()
    from netmeta.config import RateLimitConfig

    # The server is measured, not the default rate limit (which a wrk flood meets at once).
    stacks = make_stack(enable_isolated_metadata=True, rate_limiting=RateLimitConfig(rate_limit_enabled=False))
    stack = next(stacks)
    try:
        runs = bench(stack, args.duration, args.connections, tuple(args.order.split(",")))
    finally:
        stacks.close()  # the stack's teardown: components, namespaces, state dir
    print()
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s --latency, inside the guest namespace "
          f"(whole bench {time.monotonic() - started:.0f} s)")
    print(table(runs))
    if args.json:
        print(json.dumps([r.__dict__ for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
