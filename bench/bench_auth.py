"""What authentication costs: the same API work under noauth and keystone, one run.

For each mode a fresh ``python -m netmeta.server`` (SQLite, fresh state
directory) gets the same work over one keep-alive connection:

* sequential port creates per second;
* list latency with ``--ports`` ports (median of 7).

Under keystone the work is done by a *member* of an ordinary project (its
token is verified and Neutron's policy applied on every request; its list
goes through the per-project filter), and the list is also timed as the
admin (token verified, no filtering). Under noauth everything is the
implicit admin.

Usage: ``.venv/bin/python bench/bench_auth.py [--ports 10000] [--creates 2000]``.
Aim: keystone within 10 % of noauth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_api import Client, start_server  # noqa: E402


def login(host: str, port: int, user: str, password: str, project: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    request = urllib.request.Request(f"http://{host}:{port}/identity/v3/auth/tokens", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["X-Subject-Token"])


def median_ms(api: Client, path: str, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        api.call("GET", path)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


class Mode:
    """One server, set up for the work; see the module docstring."""

    def __init__(self, mode: str, state_dir: str) -> None:
        self.mode = mode
        self.proc, host, port = start_server(state_dir, mode)
        self.admin = Client(host, port)
        self.api = self.admin
        if mode == "keystone":
            from netmeta.server.identity import add_user

            with open(os.path.join(state_dir, "clouds.yaml"), encoding="utf-8") as handle:
                creds = json.load(handle)["clouds"]["netmeta"]["auth"]
            self.admin = Client(host, port, login(host, port, creds["username"], creds["password"], "admin"))
            add_user(state_dir, "bench", "bench-pw", "bench", ["member"])
            self.api = Client(host, port, login(host, port, "bench", "bench-pw", "bench"))
        net = self.api.call("POST", "/v2.0/networks", {"network": {"name": "bench"}})["network"]
        self.api.call("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.128.0.0/16",
                                                           "ip_version": 4}})
        self.body = {"port": {"network_id": net["id"]}}

    def creates(self, count: int) -> float:
        began = time.perf_counter()
        for _ in range(count):
            self.api.call("POST", "/v2.0/ports", self.body)
        return time.perf_counter() - began

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=10000)
    parser.add_argument("--creates", type=int, default=2000)
    args = parser.parse_args()
    # Both servers run at once and take turns, batch by batch, so a busy
    # machine slows both alike and the ratio stays meaningful.
    rounds = 10
    times = {"noauth": 0.0, "keystone": 0.0}
    lists: dict[str, list[float]] = {k: [] for k in ("noauth", "keystone", "noauth_admin", "keystone_admin")}
    with tempfile.TemporaryDirectory(prefix="netmeta-bench-auth-") as state_dir:
        modes = {m: Mode(m, os.path.join(state_dir, m)) for m in ("noauth", "keystone")}
        try:
            batch = max(1, args.creates // rounds)
            for _ in range(rounds):
                for name, mode in modes.items():
                    times[name] += mode.creates(batch)
            for mode in modes.values():
                mode.creates(max(0, args.ports - batch * rounds - 1))
            total = len(modes["noauth"].api.call("GET", "/v2.0/ports")["ports"])
            for _ in range(7):
                for name, mode in modes.items():
                    lists[name].append(median_ms(mode.api, "/v2.0/ports", runs=1))
                    lists[name + "_admin"].append(median_ms(mode.admin, "/v2.0/ports", runs=1))
        finally:
            for mode in modes.values():
                mode.stop()
    done = batch * rounds
    noauth = {"creates": done / times["noauth"], "total": total, "list": statistics.median(lists["noauth"]),
              "list_admin": statistics.median(lists["noauth_admin"])}
    keystone = {"creates": done / times["keystone"], "list": statistics.median(lists["keystone"]),
                "list_admin": statistics.median(lists["keystone_admin"])}
    rows = [
        ("port creates /s (sequential)", f"{noauth['creates']:,.0f}", f"{keystone['creates']:,.0f}",
         keystone["creates"] / noauth["creates"]),
        (f"list {int(noauth['total'])} ports, as the project (ms)", f"{noauth['list']:.0f}",
         f"{keystone['list']:.0f}", keystone["list"] / noauth["list"]),
        (f"list {int(noauth['total'])} ports, as admin (ms)", f"{noauth['list_admin']:.0f}",
         f"{keystone['list_admin']:.0f}", keystone["list_admin"] / noauth["list_admin"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'noauth':>8}  {'keystone':>8}  keystone/noauth")
    for name, a, b, ratio in rows:
        print(f"{name.ljust(width)}  {a:>8}  {b:>8}  {ratio:.2f}")


if __name__ == "__main__":
    main()
