"""``netmeta explain GUEST``: gather what the seed's author looked at, then explain.

This half only observes — the guest's route to 169.254.169.254 (``ip -j route
get``, and whether the guest's table holds a route for that address itself),
what its DHCP client received, the opts file, the addresses, iptables rules
and TCP listeners of the namespace behind the next hop, and a real
``meta_data.json`` fetch from inside the guest — and hands everything to the
pure :func:`netmeta.model.diagnosis.explain`, so the reasoning is tested
without root and the observation is the only part that needs it.

Exit status: 0 when the story is consistent (including "metadata is off by
configuration"), 3 when a problem was named, 1 when the guest is unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from netmeta.client import ApiError, Client
from netmeta.config import Config
from netmeta.model import names
from netmeta.model.diagnosis import NOTE, OK, NamespaceFacts, Observations, explain
from netmeta.model.types import DEVICE_OWNER_DHCP, METADATA_IPV4, Port, Snapshot, snapshot_from_state

if TYPE_CHECKING:
    from netmeta.vm.guests import Guest

# curl exit codes worth a word instead of a number
CURL_ERRORS = {6: "could not resolve host", 7: "connection refused or no route to host",
               28: "timed out (packets dropped on the way?)", 52: "empty reply", 56: "connection reset"}


def _find_guest(config: Config, key: str) -> Guest:
    from netmeta.vm.guests import GuestError, Guests

    for guest in Guests(config).list_all():
        if key in (guest.name, guest.instance_id, guest.ip):
            return guest
    raise GuestError(f"no guest on this host is named, has the instance id or the IP {key!r}")


def _next_hop_owner(snapshot: Snapshot, net_id: str, gateway: str | None) -> Port | None:
    """The port behind the guest's next hop; with no route, the DHCP port (its tap is worth a look)."""
    if gateway is not None:
        for port in snapshot.ports.values():
            if port.network_id == net_id and any(f.ip_address == gateway for f in port.fixed_ips):
                return port
        return None
    dhcp = sorted((p for p in snapshot.ports.values() if p.network_id == net_id and p.device_owner == DEVICE_OWNER_DHCP),
                  key=lambda p: p.id)
    return dhcp[0] if dhcp else None


def _namespace_facts(owner: Port) -> NamespaceFacts:
    from netmeta.drivers import iptables, links, netns

    if owner.device_owner == DEVICE_OWNER_DHCP:
        name, device = names.dhcp_namespace(owner.network_id), names.tap_name(owner.id)
    else:
        name, device = names.router_namespace(owner.device_id), names.router_port_name(owner.id)
    if not netns.namespace_exists(name):
        return NamespaceFacts(name, False, device=device)
    addresses = tuple(sorted(links.get_addresses(name, device))) if links.link_exists(name, device) else ()
    rules = iptables.save(name) if owner.device_owner != DEVICE_OWNER_DHCP else ""
    ss = netns.run_in_namespace(name, ["ss", "-Hntl"], check=False).stdout
    listening = tuple(sorted({line.split()[3] for line in ss.splitlines() if len(line.split()) > 3}))
    return NamespaceFacts(name, True, addresses, rules, listening, device)


def observe(config: Config, guest: Guest, snapshot: Snapshot) -> Observations:
    """Look at the guest, its DHCP lease, the opts file and the namespace behind its next hop."""
    from netmeta.drivers import dhclient, netns

    ns = guest.namespace
    route = netns.run_in_namespace(ns, ["ip", "-j", "route", "get", METADATA_IPV4], check=False)
    gateway, found = None, False
    if route.returncode == 0:
        entries = json.loads(route.stdout or "[]")
        if entries:
            found = True
            gateway = entries[0].get("gateway")
    table = netns.run_in_namespace(ns, ["ip", "-j", "-4", "route", "show"], check=False)
    specific = any(r.get("dst") in (METADATA_IPV4, f"{METADATA_IPV4}/32")
                   for r in json.loads(table.stdout or "[]")) if table.returncode == 0 else False
    env = dhclient.read_env(guest.paths)
    opts_path = config.paths.dhcp_file(guest.network_id, "opts")
    try:
        with open(opts_path, encoding="utf-8") as handle:
            opts = tuple(handle.read().splitlines())
    except OSError:
        opts = ()
    owner = _next_hop_owner(snapshot, guest.network_id, gateway)
    facts = _namespace_facts(owner) if owner is not None else None
    fetch = netns.run_in_namespace(
        ns, ["curl", "-sS", "--max-time", "3", "-o", "/dev/stdout", "-w", "\n%{http_code}",
             f"http://{METADATA_IPV4}/openstack/latest/meta_data.json"], check=False)
    body, _, code = (fetch.stdout or "").rpartition("\n")
    status = int(code) if code.isdigit() and code != "000" else None
    error = ""
    if status is None:
        error = f"curl exit {fetch.returncode}"
        if fetch.returncode in CURL_ERRORS:
            error += f": {CURL_ERRORS[fetch.returncode]}"
    return Observations(
        guest_name=guest.name, guest_ip=guest.ip, instance_id=guest.instance_id, network_id=guest.network_id,
        route_gateway=gateway, route_found=found, route_specific=specific,
        dhcp_routes=env.get("new_rfc3442_classless_static_routes", ""),
        opts_lines=opts, namespace=facts, fetch_status=status, fetch_body=body if status else "",
        fetch_error=error,
    )


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.guests import GuestError

    try:
        guest = _find_guest(config, args.guest)
        snapshot = snapshot_from_state(Client.for_config(config).state())
    except (GuestError, ApiError, OSError) as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    result = explain(snapshot, observe(config, guest, snapshot), metadata_port=config.metadata_port)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{result.guest}: metadata path {result.path}" + (f" via {result.next_hop}" if result.next_hop else ""))
        marks = {OK: "ok  ", NOTE: "note"}
        for finding in result.findings:
            print(f"  {marks.get(finding.severity, 'BAD ')}  {finding.text}")
        print("consistent" if result.consistent else "INCONSISTENT: see the lines marked BAD")
    return 0 if result.consistent else 3
