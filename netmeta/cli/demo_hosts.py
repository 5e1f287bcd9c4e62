"""``netmeta demo --hosts 3``: the seed report on three controllers, for real.

The seed was taken on a cloud of several controllers: its opts file lists
three DNS servers because three DHCP agents serve the network, and its
author restarts "neutron-dhcp-agent on the controller where the active
router is running". This scenario builds that cloud on this machine
(:mod:`netmeta.cli.multihost`: one API server, then ``controller-1`` …
``controller-N``, each a simulated host with its own namespaces, agent and
metadata process, joined by VXLAN over an underlay) and walks it:

1. the agents register (``openstack network agent list``);
2. the report's two networks: every controller's DHCP agent hosts them
   (``dhcp_agents_per_network = N``), so the opts line names N DNS servers
   and each dnsmasq advertises the metadata route via its *own* port;
3. the router on ``controller-1``; guests on the other controllers get a
   lease and metadata across VXLAN, from whichever server answered;
4. ``controller-1``'s agent is restarted: on every controller the same
   dnsmasq pids, the same files, the same routes, and metadata still answers.

Everything is removed at the end (``--keep`` leaves it running).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import tempfile
import time
from typing import Any

from netmeta.cli.demo import Narrator, seed_networks
from netmeta.cli.multihost import HostStack, MultiHost
from netmeta.client import Client
from netmeta.config import Config
from netmeta.drivers import files
from netmeta.model import names


def cmd_demo_hosts(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli import multihost
    from netmeta.cli.waiting import until

    count = int(args.hosts)
    tag = secrets.token_hex(3)
    prefix = f"nmdemo{tag}-"
    base = args.state_dir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    settings: dict[str, Any] = {
        "enable_isolated_metadata": True,  # the seed's dhcp_agent.ini
        "force_metadata": bool(config.force_metadata),
        "dhcp_agents_per_network": count,
        "vni_ranges": "1001:2000",
    }
    say = Narrator()
    hosts = [f"controller-{i}" for i in range(1, count + 1)]
    say.title(f"starting netmeta on {count} simulated controllers ({', '.join(hosts)}), state in {base}")
    say.say("each controller: its own mount + network namespace and /run/netns, an underlay address, "
            "its own agent and metadata process; one API server")
    multi = multihost.start(base, prefix, hosts, settings)
    try:
        client = Client.for_config(multi.config, admin=True)
        # Several controllers on a shared machine: patient, and gentle polling.
        _walk(say, multi, client, lambda cond, what, timeout=90.0: until(cond, what, timeout, 0.2))
        say.title("done: every step above happened on real namespaces, VXLAN, dnsmasq, dhclient and iptables")
        return 0
    finally:
        if args.keep:
            print(f"\n(kept under {base}: the processes and namespaces run until you stop them; "
                  f"see {base}/*/netmeta.ini)")
        else:
            problems = multi.close()
            for problem in problems:
                print(f"netmeta demo: could not remove {problem}")
            print("\ncleaned up: every simulated host, its namespaces and processes, and the demo's state are gone")


def _agents(client: Client) -> str:
    rows = sorted(client.get("/v2.0/agents")["agents"], key=lambda a: (a["host"], a["agent_type"]))
    lines = [f"{'Agent Type':20} {'Host':14} {'Alive':6} {'State':5} Binary"]
    lines += [f"{a['agent_type']:20} {a['host']:14} {':-)' if a['alive'] else 'XXX':6} "
              f"{'UP' if a['admin_state_up'] else 'DOWN':5} {a['binary']}" for a in rows]
    return "\n".join(lines)


def _read(path: str) -> str:
    return files.read_text(path) or ""


def _fetch(host: HostStack, namespace: str, path: str) -> str:
    out = host.in_namespace(namespace, "curl", "-s", "-f", "--max-time", "3", f"http://169.254.169.254{path}")
    if out.returncode != 0:
        return ""
    return str(out.stdout)


def _walk(say: Narrator, multi: MultiHost, client: Client, until: Any) -> None:
    c1 = multi.hosts[0]
    others = multi.hosts[1:] or multi.hosts
    say.title("the agents registered themselves (openstack network agent list)")
    until(lambda: len(client.get("/v2.0/agents")["agents"]) >= 4 * len(multi.hosts), "every agent to register")
    say.shell("openstack network agent list", _agents(client))

    say.title("the report's two networks (openstack network/subnet create)")
    (net1, sub1), (net2, sub2) = seed_networks(client)
    for net, sub in ((net1, sub1), (net2, sub2)):
        say.say(f"{net['name']}: {sub['cidr']}, gateway {sub['gateway_ip']}, "
                f"{net['provider:network_type']} segment {net['provider:segmentation_id']}, mtu {net['mtu']}")

    def dhcp_ports(net: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in client.get("/v2.0/ports", network_id=net["id"], device_owner="network:dhcp")["ports"]
                if p.get("binding:host_id")]

    for net in (net1, net2):
        until(lambda net=net: len(dhcp_ports(net)) == len(multi.hosts), f"a DHCP port per controller on {net['name']}")
    say.title(f"one DHCP port per controller on {net1['name']} (dhcp_agents_per_network = {len(multi.hosts)})")
    say.shell(f"openstack port list --network {net1['name']} --device-owner network:dhcp -c binding:host_id -c fixed_ips",
              "\n".join(f"{p['binding:host_id']:14} {p['fixed_ips'][0]['ip_address']}"
                        for p in sorted(dhcp_ports(net1), key=lambda p: p["binding:host_id"])))
    opts1 = c1.config.paths.dhcp_file(net1["id"], "opts")
    until(lambda: "option:dns-server" in _read(opts1), "controller-1's opts file")
    say.say("the seed's three-server dns-server line, and controller-1's metadata route via its own port:")
    say.shell(f"{c1.name}: cat {opts1}", _read(opts1))

    say.title("the router, on controller-1 (openstack network agent add router --l3)")
    router = client.request("POST", "/v2.0/routers", {"router": {"name": "testrouter"}})["router"]
    client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub2["id"]})
    agents = {(a["host"], a["agent_type"]): a["id"] for a in client.get("/v2.0/agents")["agents"]}
    for agent in until(lambda: client.get(f"/v2.0/routers/{router['id']}/l3-agents")["agents"], "the router's L3 agent"):
        if agent["host"] != c1.name:
            client.request("DELETE", f"/v2.0/agents/{agent['id']}/l3-routers/{router['id']}")
    if not any(a["host"] == c1.name for a in client.get(f"/v2.0/routers/{router['id']}/l3-agents")["agents"]):
        client.request("POST", f"/v2.0/agents/{agents[(c1.name, 'L3 agent')]}/l3-routers", {"router_id": router["id"]})
    qrouter = names.router_namespace(router["id"])
    until(lambda: all((qrouter in h.sim.inner_namespaces()) == (h is c1) for h in multi.hosts),
          "the qrouter on controller-1 only")
    for host in multi.hosts:
        say.say(f"{host.name}: {'has' if qrouter in host.sim.inner_namespaces() else 'no'} {qrouter}")

    say.title("a guest on each of the other controllers, a real dhclient each")
    vm1 = others[0].boot("vm1", net1["id"])
    vm2 = others[-1].boot("vm2", net2["id"])
    for host, vm, net in ((others[0], vm1, net1), (others[-1], vm2, net2)):
        lease = _read(os.path.join(host.config.state_dir, "vms", vm["name"], "dhclient.leases"))
        server = [line.split()[-1].rstrip(";") for line in lease.splitlines() if "dhcp-server-identifier" in line]
        say.say(f"{vm['name']} on {host.name}: ip {vm['ip']} from the DHCP server {server[-1] if server else '?'}")
        say.shell(f"{host.name}: netmeta vm exec {vm['name']} -- ip route",
                  host.in_namespace(vm["namespace"], "ip", "route").stdout)
        body = until(lambda host=host, vm=vm: _fetch(host, vm["namespace"], "/latest/meta-data/instance-id"),
                     "metadata across VXLAN")
        say.shell(f"{host.name}: netmeta vm exec {vm['name']} -- curl -s http://169.254.169.254/latest/meta-data/instance-id",
                  body)
        device = f"vxlan-{net['provider:segmentation_id']}"
        fabric = host.config.fabric_namespace
        say.shell(f"{host.name}: bridge fdb show dev {device}   (l2population's entries: flood + per port)",
                  host.in_namespace(fabric, "bridge", "fdb", "show", "dev", device).stdout)

    say.title("restart the DHCP agent on controller-1, where the router runs (as the report's author did)")
    before = _state(multi, (net1, net2), ((others[0], vm1), (others[-1], vm2)))
    component = c1.components["agent"]
    old = component.pid
    c1.stop("agent")
    c1.start("agent")
    until(lambda: (s := c1.status()) and s.get("pid") == component.pid and s.get("last_pass_full"),
          "the restarted agent's first full pass", timeout=60)
    after = _state(multi, (net1, net2), ((others[0], vm1), (others[-1], vm2)))
    say.say(f"{c1.name}: agent pid {old} -> {component.pid}")
    for key in sorted(before):
        say.say(f"{key}: {after[key]} ({'same' if before[key] == after[key] else 'CHANGED'})")
    for host, vm in ((others[0], vm1), (others[-1], vm2)):
        started = time.monotonic()
        until(lambda host=host, vm=vm: _fetch(host, vm["namespace"], "/latest/meta-data/instance-id"), "metadata")
        say.say(f"{vm['name']} still reads its metadata ({1000 * (time.monotonic() - started):.0f} ms)")
    if before != after:
        raise SystemExit("demo: the agent restart changed a controller's state")


def _state(multi: MultiHost, networks: tuple[dict[str, Any], ...],
           vms: tuple[tuple[HostStack, dict[str, str]], ...]) -> dict[str, str]:
    state: dict[str, str] = {}
    for host in multi.hosts:
        for net in networks:
            pid = _read(host.config.paths.dhcp_file(net["id"], "pid")).strip()
            opts = _read(host.config.paths.dhcp_file(net["id"], "opts"))
            state[f"{host.name} dnsmasq pid ({net['name']})"] = pid
            state[f"{host.name} opts sha256 ({net['name']})"] = hashlib.sha256(opts.encode()).hexdigest()[:16]
    for host, vm in vms:
        routes = host.in_namespace(vm["namespace"], "ip", "-j", "route").stdout
        state[f"routes ({vm['name']})"] = " | ".join(
            f"{r['dst']} via {r.get('gateway', 'link')}" for r in json.loads(routes or "[]"))
    return state
