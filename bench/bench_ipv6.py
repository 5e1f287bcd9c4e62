"""IPv6 metadata beside IPv4, from one dual-stack guest, in the same run.

Run as root from the repository root:

    .venv/bin/python bench/bench_ipv6.py [--duration 4] [--connections 16] [--rounds 2]

It builds its own netmeta (unique state dir and fabric namespace, removed at
the end, also on failure; rate limiting off) with one dual-stack network —
an IPv4 subnet and a SLAAC IPv6 subnet — behind one router, and one guest
that took its DHCPv4 lease and formed its SLAAC address. Both families go
the router path to the same dual-stack ``[::]:9697`` listener:

* ``ipv4``: ``http://169.254.169.254/…`` via the gateway, nat REDIRECT to 9697;
* ``ipv6``: ``http://[fe80::a9fe:a9fe%eth0]/…`` via the router's link-local
  (the RA's route), ip6tables nat REDIRECT to 9697.

``wrk -t1 -c16 --latency`` runs inside the guest namespace, keep-alive and
with ``Connection: close``, the two families alternating (and which goes
first alternating too) for ``--rounds`` rounds; each row is the
median of its rounds, and the metadata process's access counts (keyed by
the caller's address: IPv4, or the guest's link-local) say which family's
requests were answered. The figure asked for is the ratio ipv6 / ipv4.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_paths import settled_access, wrk  # noqa: E402
from netmeta.metadata.service import read_status  # noqa: E402
from netmeta.model import ipam  # noqa: E402
from tests.privileged.stack import Stack, in_ns, make_stack, wait_until  # noqa: E402

META_PATH = "/openstack/latest/meta_data.json"
URLS = {"ipv4": f"http://169.254.169.254{META_PATH}", "ipv6": f"http://[fe80::a9fe:a9fe%eth0]{META_PATH}"}


def peers(stack: Stack) -> dict[str, int]:
    status = read_status(stack.config.state_dir) or {}
    out: dict[str, int] = {}
    for entry in status.get("access", []):  # type: ignore[union-attr]
        out[entry["peer"]] = out.get(entry["peer"], 0) + int(entry["count"])
    return out


def bench(stack: Stack, duration: int, connections: int, rounds: int) -> list[tuple[str, str, float, float, int]]:
    net, sub4 = stack.network("bench46", "10.94.0.0/24")
    sub6 = stack.client.request("POST", "/v2.0/subnets", {"subnet": {
        "network_id": net["id"], "ip_version": 6, "cidr": "2001:db8:94::/64",
        "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}})["subnet"]
    stack.router("bench46", sub4, sub6)
    stack.converged()
    guest = stack.boot("bench46", net["id"])
    eui = ipam.eui64_address(sub6["cidr"], guest.mac)
    wait_until(lambda: eui in in_ns(guest.namespace, "ip", "-6", "addr", "show", "eth0").stdout
               and "tentative" not in in_ns(guest.namespace, "ip", "-6", "addr", "show", "eth0").stdout,
               "the SLAAC address", timeout=30)
    for url in URLS.values():  # both paths answer before anything is timed
        wait_until(lambda: in_ns(guest.namespace, "curl", "-sfg", "--max-time", "3", "-o", "/dev/null", url)
                   .returncode == 0, url, timeout=30)
    link_local = ipam.link_local_address(guest.mac)
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for round_ in range(rounds):
        for mode in ("keep-alive", "close"):
            # Alternate which family goes first, so drift on a shared machine hits both alike.
            for family in (("ipv4", "ipv6") if round_ % 2 == 0 else ("ipv6", "ipv4")):
                before = settled_access(stack) and peers(stack)
                rps, p99, errors = wrk(guest.namespace, URLS[family], close=mode == "close",
                                       duration=duration, connections=connections)
                settled_access(stack)
                after = peers(stack)
                caller = guest.ip if family == "ipv4" else link_local
                answered = after.get(caller, 0) - before.get(caller, 0)
                if answered < rps * duration * 0.5:
                    raise RuntimeError(f"{family}: the metadata process counted {answered} requests from {caller}")
                results.setdefault((family, mode), []).append((rps, p99, errors))
                print(f"round {round_} {mode} {family}: {rps:.0f} req/s, p99 {p99:.1f} ms", file=sys.stderr)
    rows = []
    for (family, mode), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append((family, mode, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                     sum(r[2] for r in runs)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from netmeta.config import RateLimitConfig

    stacks = make_stack(rate_limiting=RateLimitConfig(rate_limit_enabled=False),
                        min_rtr_adv_interval=3, max_rtr_adv_interval=4)
    stack = next(stacks)
    try:
        rows = bench(stack, args.duration, args.connections, args.rounds)
    finally:
        stacks.close()
    by = {(f, m): rps for f, m, rps, _, _ in rows}
    print("| family | mode | req/s | p99 | errors | ipv6/ipv4 |")
    print("|---|---|---|---|---|---|")
    for family, mode, rps, p99, errors in rows:
        ratio = f"{by[('ipv6', mode)] / by[('ipv4', mode)]:.2f}" if family == "ipv6" else ""
        print(f"| {family} | {mode} | {rps:.0f} | {p99:.1f} ms | {errors} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
