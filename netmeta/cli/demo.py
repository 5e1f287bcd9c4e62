"""``netmeta demo``: the seed report, replayed for real and narrated.

It starts its own server, agent and metadata process (a fresh state
directory, a fabric namespace of its own, the API on a free loopback port,
``enable_isolated_metadata = True`` as in the report), then walks the seed:

1. a network without a gateway and one with a gateway, a guest on each with a
   real DHCP client; it prints what the report's author looked at — the
   addresses in ``qdhcp-…``, the opts file, the guest's routes, who listens on
   port 80 — and the metadata each guest reads;
2. a router attached to the gateway network: the opts file changes at once,
   without any restart; the guest renews and its route moves to the router,
   where the REDIRECT rule and a listener on 9697 answer;
3. the agent is restarted: same dnsmasq PIDs, same files, same routes.

Everything is removed at the end (``--keep`` leaves it for a look around).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import socket
import tempfile
import time
from typing import Any

from netmeta.client import Client
from netmeta.config import Config
from netmeta.model import names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Narrator:
    def __init__(self) -> None:
        self.step = 0

    def title(self, text: str) -> None:
        self.step += 1
        print(f"\n=== {self.step}. {text}", flush=True)

    def say(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def shell(self, prompt: str, output: str) -> None:
        print(f"  # {prompt}", flush=True)
        for line in output.rstrip("\n").splitlines():
            print(f"    {line}", flush=True)


def _in_ns(ns: str, *argv: str) -> str:
    from netmeta.drivers import netns

    result = netns.run_in_namespace(ns, list(argv), check=False)
    return str(result.stdout or "") + str(result.stderr or "")


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()[:16]


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from netmeta.cli.commands import start_stack, teardown_host
    from netmeta.cli.waiting import until
    from netmeta.drivers.supervise import stop_all
    from netmeta.vm.guests import Guests

    if getattr(args, "hosts", 1) > 1:
        from netmeta.cli import demo_hosts

        return demo_hosts.cmd_demo_hosts(args, config)
    tag = secrets.token_hex(3)
    state_dir_given = bool(args.state_dir)
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="netmeta-demo-")  # 0700, as netmeta makes it
    port = _free_port()
    args.state_dir = state_dir
    args.bind = f"127.0.0.1:{port}"
    args.fabric_namespace = args.fabric_namespace or f"nmdemo-{tag}"
    if args.enable_isolated_metadata is None and args.force_metadata is None:
        args.enable_isolated_metadata = True  # the seed's dhcp_agent.ini
    for component in ("server", "agent", "metadata"):
        # a demo must not take (or fail on) the ports of a netmeta already running here
        if getattr(args, f"{component}_metrics_bind", None) is None:
            setattr(args, f"{component}_metrics_bind", "127.0.0.1:0")
    config = config.replace(
        state_dir=state_dir, bind=args.bind, fabric_namespace=args.fabric_namespace,
        enable_isolated_metadata=bool(args.enable_isolated_metadata or config.enable_isolated_metadata),
    )
    if getattr(args, "vm", False):
        from netmeta.cli import demo_vm

        config = config.replace(image_dir=demo_vm.image_dir_for(config, state_dir_given))
    say = Narrator()
    say.title(f"starting netmeta: API {config.api_url}, state in {state_dir}")
    say.say(f"enable_isolated_metadata = {config.enable_isolated_metadata}, force_metadata = {config.force_metadata}")
    components = start_stack(args, config)
    client = Client.for_config(config, admin=True)  # the operator, as clouds.yaml's "netmeta" cloud
    guests = Guests(config, client)
    try:
        if getattr(args, "vm", False):
            from netmeta.cli import demo_vm

            demo_vm.walk(say, config, client, components, until)
        else:
            _walk(say, config, client, guests, components, until)
        say.title("done: every step above happened on real namespaces, dnsmasq, dhclient and iptables")
        return 0
    finally:
        stop_all(components)
        if args.keep:
            print(f"\n(kept: `netmeta down --state-dir {state_dir} --fabric-namespace {config.fabric_namespace}` removes it)")
        else:
            teardown_host(config, purge=True)
            print("\ncleaned up: namespaces, links, dnsmasq, dhclient and the demo's state are gone")


def seed_networks(client: Client) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
    """The report's two networks, each with its subnet: one without a gateway, one with."""
    made = []
    for name, cidr, gateway in (("test-metadata-in-dhcp", "192.168.111.0/24", {"gateway_ip": None}),
                                ("test-metadata-in-dhcp-with-gw", "172.31.0.0/24", {})):
        net = client.request("POST", "/v2.0/networks", {"network": {"name": name}})["network"]
        sub = client.request("POST", "/v2.0/subnets", {"subnet": {
            "name": name, "network_id": net["id"], "ip_version": 4, "cidr": cidr, **gateway}})["subnet"]
        made.append((net, sub))
    return tuple(made)


def _walk(say: Narrator, config: Config, client: Client, guests: Any, components: list[Any], until: Any) -> None:
    say.title("two networks, as in the report (openstack network/subnet create)")
    (net1, sub1), (net2, sub2) = seed_networks(client)
    say.say(f"{net1['name']}: subnet {sub1['cidr']}, gateway {sub1['gateway_ip']}")
    say.say(f"{net2['name']}: subnet {sub2['cidr']}, gateway {sub2['gateway_ip']}")

    say.title("a guest on each network, with a real dhclient asking for option 121")
    user_data = b"#cloud-config\nhostname: seed-guest\n"
    vm1 = guests.boot("vm1", net1["id"], user_data=user_data, meta={"seed": "no-gateway"})
    vm2 = guests.boot("vm2", net2["id"], user_data=user_data, meta={"seed": "with-gateway"})
    for vm in (vm1, vm2):
        say.say(f"{vm.name}: ip {vm.ip}, instance {vm.instance_id}, namespace {vm.namespace}")

    for net, vm in ((net1, vm1), (net2, vm2)):
        ns = names.dhcp_namespace(net["id"])
        opts = config.paths.dhcp_file(net["id"], "opts")
        say.title(f"what the report looked at, for {net['name']}")
        say.shell(f"ip netns exec {ns} ip -4 a", _in_ns(ns, "ip", "-4", "a"))
        say.shell(f"cat {opts}", open(opts, encoding="utf-8").read())
        say.shell(f"ip netns exec {ns} ss -ntlp 'sport = :80'", _in_ns(ns, "ss", "-ntlp", "sport = :80"))
        say.shell(f"netmeta vm exec {vm.name} -- ip route", _in_ns(vm.namespace, "ip", "route"))
        body = until(lambda: _fetch(vm.namespace, "/openstack/latest/meta_data.json"), "metadata to answer")
        say.shell(f"netmeta vm exec {vm.name} -- curl -s http://169.254.169.254/openstack/latest/meta_data.json", body)

    say.title("attach a router to the network with a gateway (openstack router add subnet)")
    router = client.request("POST", "/v2.0/routers", {"router": {"name": "testrouter"}})["router"]
    client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub2["id"]})
    opts2 = config.paths.dhcp_file(net2["id"], "opts")
    gw_route = f"169.254.169.254/32,{sub2['gateway_ip']}"
    started = time.monotonic()
    until(lambda: gw_route in open(opts2, encoding="utf-8").read(), "the opts file to follow the router")
    say.say(f"the opts file changed {1000 * (time.monotonic() - started):.0f} ms after the API call — no restart:")
    say.shell(f"cat {opts2}", open(opts2, encoding="utf-8").read())
    qrouter = names.router_namespace(router["id"])
    until(lambda: "REDIRECT" in _in_ns(qrouter, "iptables-save"), "the router's REDIRECT rule")
    say.shell(f"ip netns exec {qrouter} iptables-save | grep REDIRECT",
              "\n".join(l for l in _in_ns(qrouter, "iptables-save").splitlines() if "REDIRECT" in l))
    say.say("the guest still holds its old lease, so its route still points at the DHCP port (which still answers):")
    say.shell("netmeta vm exec vm2 -- ip route", _in_ns(vm2.namespace, "ip", "route"))
    say.shell("… curl meta_data.json", until(lambda: _fetch(vm2.namespace, "/openstack/latest/meta_data.json"), "metadata"))
    guests.renew("vm2")
    say.say("after `netmeta vm renew vm2` the route goes to the router:")
    say.shell("netmeta vm exec vm2 -- ip route", _in_ns(vm2.namespace, "ip", "route"))
    until(lambda: "9697" in _in_ns(qrouter, "ss", "-ntl"), "the router listener")
    say.shell(f"ip netns exec {qrouter} ss -ntlp 'sport = :9697'", _in_ns(qrouter, "ss", "-ntlp", "sport = :9697"))
    say.shell("netmeta vm exec vm2 -- curl -s http://169.254.169.254/latest/meta-data/instance-id",
              until(lambda: _fetch(vm2.namespace, "/latest/meta-data/instance-id"), "metadata through the router"))

    say.title("restart the agent: a restart computes the same state and changes nothing")
    before = _host_state(config, (net1, net2), (vm1, vm2))
    agent = components[1]
    old_pid = agent.pid
    agent.restart()
    # The new agent lists, runs a full pass over the kernel, and must find nothing to do.
    until(lambda: _agent_converged(config, agent.pid), "the restarted agent to converge", timeout=30)
    after = _host_state(config, (net1, net2), (vm1, vm2))
    say.say(f"agent pid {old_pid} -> {agent.pid}")
    for key in sorted(before):
        same = "same" if before[key] == after[key] else "CHANGED"
        say.say(f"{key}: {after[key]} ({same})")
    if before != after:
        raise SystemExit("demo: the agent restart changed the host's state")


def _fetch(namespace: str, path: str) -> str:
    out = _in_ns(namespace, "curl", "-s", "-f", "--max-time", "2", f"http://169.254.169.254{path}")
    if not out or "curl:" in out:
        return ""
    if path.endswith(".json"):
        # 512 fresh random bytes per request are noise on a terminal: shorten them.
        body = json.loads(out)
        if "random_seed" in body:
            body["random_seed"] = body["random_seed"][:16] + "…"
        return json.dumps(body, indent=1)
    return out


def _agent_converged(config: Config, pid: int | None) -> bool:
    from netmeta.agent.service import read_status

    status = read_status(config.state_dir)
    return bool(status and status.get("pid") == pid and status.get("last_pass_full"))


def _host_state(config: Config, networks: tuple[Any, ...], vms: tuple[Any, ...]) -> dict[str, str]:
    from netmeta.drivers import dnsmasq

    state: dict[str, str] = {}
    for net in networks:
        pid_file, opts_file = config.paths.dhcp_file(net["id"], "pid"), config.paths.dhcp_file(net["id"], "opts")
        state[f"dnsmasq pid ({net['name']})"] = str(dnsmasq.running_pid(pid_file, net["id"]))
        state[f"opts sha256 ({net['name']})"] = _digest(opts_file)
    for vm in vms:
        state[f"routes ({vm.name})"] = " | ".join(_in_ns(vm.namespace, "ip", "route").strip().splitlines())
    return state
