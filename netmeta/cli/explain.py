"""``netmeta explain GUEST``: gather what the seed's author looked at, then explain.

This half only observes — the guest's route to 169.254.169.254 (``ip -j route
get``), what its DHCP client received, the opts file, the addresses, iptables
rules and TCP listeners of the namespace behind the next hop, and a real
``meta_data.json`` fetch from inside the guest — and hands everything to the
pure :func:`netmeta.model.diagnosis.explain`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from netmeta.client import ApiError, Client
from netmeta.config import Config
from netmeta.model import names
from netmeta.model.diagnosis import NamespaceFacts, Observations, explain
from netmeta.model.types import METADATA_IPV4, snapshot_from_state


def _find_guest(config: Config, key: str) -> object:
    from netmeta.vm.guests import GuestError, Guests

    guests = Guests(config)
    for guest in guests.list():
        if key in (guest.name, guest.instance_id, guest.ip):
            return guest
    raise GuestError(f"no guest on this host is named, has the instance id or the IP {key!r}")


def observe(config: Config, guest: object, snapshot: object) -> Observations:
    from netmeta.drivers import dhclient, iptables, links, netns

    g: object = guest
    ns = g.namespace  # type: ignore[attr-defined]
    route = netns.run_in_namespace(ns, ["ip", "-j", "route", "get", METADATA_IPV4], check=False)
    gateway, found = None, False
    if route.returncode == 0:
        entries = json.loads(route.stdout or "[]")
        if entries:
            found = True
            gateway = entries[0].get("gateway")
    env = dhclient.read_env(g.paths)  # type: ignore[attr-defined]
    net_id = g.network_id  # type: ignore[attr-defined]
    opts_path = os.path.join(config.state_dir, "dhcp", net_id, "opts")
    try:
        with open(opts_path, encoding="utf-8") as handle:
            opts = tuple(handle.read().splitlines())
    except OSError:
        opts = ()
    facts = None
    owner = None
    for port in snapshot.ports.values():  # type: ignore[attr-defined]
        if port.network_id == net_id and any(f.ip_address == gateway for f in port.fixed_ips):
            owner = port
    if owner is None and gateway is None:
        # No route: still look at the DHCP namespace (an unused address is worth naming).
        dhcp = [p for p in snapshot.ports.values() if p.network_id == net_id and p.device_owner == "network:dhcp"]  # type: ignore[attr-defined]
        owner = dhcp[0] if dhcp else None
    if owner is not None:
        if owner.device_owner == "network:dhcp":
            name, device = names.dhcp_namespace(net_id), names.tap_name(owner.id)
        else:
            name, device = names.router_namespace(owner.device_id), names.router_port_name(owner.id)
        if netns.namespace_exists(name):
            addresses = tuple(sorted(links.get_addresses(name, device))) if links.link_exists(name, device) else ()
            rules = iptables.save(name) if owner.device_owner != "network:dhcp" else ""
            ss = netns.run_in_namespace(name, ["ss", "-Hntl"], check=False).stdout
            listening = tuple(sorted({line.split()[3] for line in ss.splitlines() if len(line.split()) > 3}))
            facts = NamespaceFacts(name, True, addresses, rules, listening)
        else:
            facts = NamespaceFacts(name, False)
    fetch = netns.run_in_namespace(
        ns, ["curl", "-s", "--max-time", "3", "-o", "/dev/stdout", "-w", "\n%{http_code}",
             f"http://{METADATA_IPV4}/openstack/latest/meta_data.json"], check=False)
    body, _, code = (fetch.stdout or "").rpartition("\n")
    status = int(code) if code.isdigit() and code != "000" else None
    return Observations(
        guest_name=g.name, guest_ip=g.ip, instance_id=g.instance_id, network_id=net_id,  # type: ignore[attr-defined]
        route_gateway=gateway, route_found=found,
        dhcp_routes=env.get("new_rfc3442_classless_static_routes", ""),
        opts_lines=opts, namespace=facts, fetch_status=status, fetch_body=body,
        fetch_error="" if status else (fetch.stderr.strip() or f"curl exit {fetch.returncode}"),
    )


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.guests import GuestError

    try:
        guest = _find_guest(config, args.guest)
        snapshot = snapshot_from_state(Client(config.api_url).state())
    except (GuestError, ApiError) as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    result = explain(snapshot, observe(config, guest, snapshot), metadata_port=config.metadata_port)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{result.guest}: metadata path {result.path}" + (f" via {result.next_hop}" if result.next_hop else ""))
        for finding in result.findings:
            print(f"  {'ok ' if finding.ok else 'BAD'}  {finding.text}")
        print("consistent" if result.consistent else "INCONSISTENT: see the lines marked BAD")
    return 0 if result.consistent else 3
