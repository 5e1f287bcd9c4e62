"""What port security costs (issue 8): metadata throughput and the agent's full pass.

Run as root from the repository root:

    .venv/bin/python bench/bench_portsec.py [--rounds 3] [--seconds 4] [--ports 200]

Everything lives in namespaces this script creates (one throwaway netmeta,
unique prefix) and is removed at the end. It prints:

* metadata requests/s from a guest whose port has port security on and a
  20-rule security group, beside a guest on the same network whose port has
  it off — same run, the two ``wrk`` runs alternating, ``--rounds`` rounds,
  median counted (one wrk thread, 8 keep-alive connections, from inside each
  guest's namespace to 169.254.169.254);
* the agent's full pass (restart → first pass, its ``last_pass_ms``) and its
  RSS with ``--ports`` extra guest ports on the network, first with port
  security off on all of them, then on, each in the 20-rule group.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netmeta.agent.service import read_status  # noqa: E402
from tests.privileged.stack import make_stack, wait_until  # noqa: E402
from tests.privileged.test_port_security import rules_in_force  # noqa: E402


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wrk(namespace: str, seconds: int) -> float:
    out = subprocess.run(["ip", "netns", "exec", namespace, "wrk", "-t1", "-c8", f"-d{seconds}s",
                          "http://169.254.169.254/openstack/latest/meta_data.json"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match or "Non-2xx" in out:
        raise SystemExit(f"wrk failed in {namespace}: {out}")
    return float(match.group(1))


def full_pass(stack: object) -> tuple[float, int]:
    agent = stack.agent  # type: ignore[attr-defined]
    agent.restart()
    status = wait_until(lambda: (s := read_status(stack.config.state_dir)) and s.get("pid") == agent.pid  # type: ignore[attr-defined]
                        and s, "the agent's first pass", timeout=120)
    return float(status["last_pass_ms"]), rss_kb(agent.pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--ports", type=int, default=200)
    args = parser.parse_args()
    gen = make_stack(enable_isolated_metadata=True)
    stack = next(gen)
    try:
        client = stack.client
        net, _ = stack.network("bench-portsec", "10.68.0.0/22", gateway=False)
        group = client.request("POST", "/v2.0/security-groups", {"security_group": {"name": "bench20"}})[
            "security_group"]
        for index in range(20):  # 20 rules: 18 TCP ports, ICMP, and members of the group
            rule: dict[str, object] = {"security_group_id": group["id"], "direction": "ingress"}
            if index < 18:
                rule.update(protocol="tcp", port_range_min=2000 + index, port_range_max=2000 + index,
                            remote_ip_prefix="10.0.0.0/8")
            elif index == 18:
                rule.update(protocol="icmp", remote_ip_prefix="10.68.0.0/22")
            else:
                rule.update(remote_group_id=group["id"])
            client.request("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
        on = stack.boot("ps-on", net["id"])
        off = stack.boot("ps-off", net["id"])
        client.request("PUT", f"/v2.0/ports/{on.port_id}", {"port": {"security_groups": [group["id"]]}})
        client.request("PUT", f"/v2.0/ports/{off.port_id}",
                       {"port": {"security_groups": [], "port_security_enabled": False}})
        rules_in_force(stack)
        stack.fetch(on, "/openstack/latest/meta_data.json")
        stack.fetch(off, "/openstack/latest/meta_data.json")
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            rates["on"].append(wrk(on.namespace, args.seconds))
            rates["off"].append(wrk(off.namespace, args.seconds))
        med_on, med_off = statistics.median(rates["on"]), statistics.median(rates["off"])
        print(f"metadata req/s, port security + 20-rule group: {med_on:.0f} (runs {[round(r) for r in rates['on']]})")
        print(f"metadata req/s, port security off:             {med_off:.0f} (runs {[round(r) for r in rates['off']]})")
        print(f"cost: {100 * (med_off - med_on) / med_off:.1f} %")

        ports = []
        for index in range(args.ports):
            ports.append(client.request("POST", "/v2.0/ports", {"port": {
                "network_id": net["id"], "device_owner": "compute:nova", "device_id": f"bench-{index}",
                "port_security_enabled": False}})["port"])
        rules_in_force(stack, timeout=120)
        off_ms, off_rss = full_pass(stack)
        for port in ports:
            client.request("PUT", f"/v2.0/ports/{port['id']}", {"port": {
                "port_security_enabled": True, "security_groups": [group["id"]]}})
        rules_in_force(stack, timeout=120)
        t = time.monotonic()
        on_ms, on_rss = full_pass(stack)
        restart = time.monotonic() - t
        print(f"agent full pass, {args.ports + 2} guest ports, port security off: {off_ms:.0f} ms, RSS {off_rss} KB")
        print(f"agent full pass, {args.ports + 1} of them with port security + 20 rules: {on_ms:.0f} ms, "
              f"RSS {on_rss} KB (restart to first pass {restart:.1f} s)")
    finally:
        gen.close()


if __name__ == "__main__":
    main()
