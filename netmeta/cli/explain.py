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
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from netmeta.client import ApiError, Client
from netmeta.config import Config
from netmeta.model import names
from netmeta.model.diagnosis import NOTE, OK, Explanation, Ipv6Observations, NamespaceFacts, Observations
from netmeta.model.placement import (
    AgentState, agent_states, explain_on_hosts, explain_port, namespace_host, network_dhcp_agents,
    placement_findings,
)
from netmeta.model.types import (
    DEVICE_OWNER_DHCP, METADATA_IPV4, METADATA_IPV6, NetworkId, Port, PortId, Snapshot, snapshot_from_state,
)
from netmeta.model.dhcp import parse_dnsmasq_leases
from netmeta.model.vm_diagnosis import VmFacts, dhclient_lease_routes, explain_vm, lease_for

if TYPE_CHECKING:
    from netmeta.agent.host import Host
    from netmeta.vm.guests import Guest
    from netmeta.vm.machines import Machine

# curl exit codes worth a word instead of a number
CURL_ERRORS = {6: "could not resolve host", 7: "connection refused or no route to host",
               28: "timed out (packets dropped on the way?)", 52: "empty reply", 56: "connection reset"}


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


# What the guest itself is asked, in its own namespace or over SSH in a VM.
PATH_COMMANDS: dict[str, list[str]] = {
    "route": ["ip", "-j", "route", "get", METADATA_IPV4],
    "table": ["ip", "-j", "-4", "route", "show"],
    "fetch": ["curl", "-sS", "--max-time", "3", "-o", "/dev/stdout", "-w", "\n%{http_code}",
              f"http://{METADATA_IPV4}/openstack/latest/meta_data.json"],
}
Ran = Mapping[str, tuple[int, str]]  # command key → (exit code, stdout)


def observe_path(config: Config, snapshot: Snapshot, ran: Ran, *, name: str, ip: str, instance_id: str,
                 network_id: str, dhcp_routes: str) -> Observations:
    """The guest's route, the opts file, the namespace behind its next hop and a fetch, as Observations."""
    code, out = ran.get("route", (1, ""))
    gateway, found = None, False
    if code == 0:
        entries = json.loads(out or "[]")
        if entries:
            found = True
            gateway = entries[0].get("gateway")
    code, out = ran.get("table", (1, ""))
    specific = any(r.get("dst") in (METADATA_IPV4, f"{METADATA_IPV4}/32")
                   for r in json.loads(out or "[]")) if code == 0 else False
    owner = _next_hop_owner(snapshot, network_id, gateway)
    # Only this host's namespaces can be looked at; another host's is named, not called missing.
    where = namespace_host(snapshot, owner) if owner is not None else None
    elsewhere = where if where and where != config.host else ""
    opts = _opts_lines(config, network_id) or _remote_opts(config, snapshot, network_id, owner)
    facts = _namespace_facts(owner) if owner is not None and not elsewhere else None
    fetch_code, fetched = ran.get("fetch", (-1, ""))
    body, _, status_text = fetched.rpartition("\n")
    status = int(status_text) if status_text.isdigit() and status_text != "000" else None
    error = ""
    if status is None:
        error = f"curl exit {fetch_code}"
        if fetch_code in CURL_ERRORS:
            error += f": {CURL_ERRORS[fetch_code]}"
    return Observations(
        guest_name=name, guest_ip=ip, instance_id=instance_id, network_id=network_id,
        route_gateway=gateway, route_found=found, route_specific=specific, dhcp_routes=dhcp_routes,
        opts_lines=opts, namespace=facts, fetch_status=status, fetch_body=body if status else "",
        fetch_error=error, namespace_host=elsewhere,
    )


def _remote_opts(config: Config, snapshot: Snapshot, network_id: str, owner: Port | None) -> tuple[str, ...]:
    """The opts another host's dnsmasq serves the network with, when no DHCP agent of this host hosts it.

    Its file is on that host; the model says what its agent writes there —
    the host behind the guest's next hop if that is a DHCP port (each
    advertises the metadata route via its own port), else the first.
    """
    from netmeta.model.dhcp import opts_lines

    hosts = [host for _, host in network_dhcp_agents(snapshot, network_id)]
    if not hosts or config.host in hosts:
        return ()
    if owner is not None and owner.device_owner == DEVICE_OWNER_DHCP and owner.binding_host_id in hosts:
        hosts.insert(0, owner.binding_host_id)
    return tuple(opts_lines(snapshot.for_host(hosts[0]), NetworkId(network_id), config))


def _opts_lines(config: Config, network_id: str) -> tuple[str, ...]:
    try:
        with open(config.paths.dhcp_file(network_id, "opts"), encoding="utf-8") as handle:
            return tuple(handle.read().splitlines())
    except OSError:
        return ()


def observe(config: Config, guest: Guest, snapshot: Snapshot) -> Observations:
    """Look at the guest, its DHCP lease, the opts file and the namespace behind its next hop."""
    from netmeta.drivers import dhclient, netns

    ran = {}
    for key, argv in PATH_COMMANDS.items():
        done = netns.run_in_namespace(guest.namespace, argv, check=False)
        ran[key] = (done.returncode, done.stdout or "")
    env = dhclient.read_env(guest.paths)
    found = observe_path(config, snapshot, ran, name=guest.name, ip=guest.ip, instance_id=guest.instance_id,
                         network_id=guest.network_id,
                         dhcp_routes=env.get("new_rfc3442_classless_static_routes", ""))
    if any(s.ip_version == 6 for s in snapshot.subnets_of(NetworkId(guest.network_id))):
        found = replace(found, ipv6=_observe_ipv6(guest))
    return found


def _observe_ipv6(guest: Guest) -> Ipv6Observations:
    """The guest's usable IPv6 addresses, its route to fe80::a9fe:a9fe on eth0, one fetch there."""
    from netmeta.drivers import links, netns

    ns = guest.namespace
    try:
        addresses = tuple(cidr.split("/")[0] for cidr, usable in links.ipv6_addresses(ns, "eth0") if usable)
    except Exception:  # noqa: BLE001 - a guest without eth0 has no IPv6 to show
        addresses = ()
    route = netns.run_in_namespace(ns, ["ip", "-j", "-6", "route", "get", METADATA_IPV6, "oif", "eth0"], check=False)
    entries = json.loads(route.stdout or "[]") if route.returncode == 0 else []
    fetch = netns.run_in_namespace(
        ns, ["curl", "-sSg", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://[{METADATA_IPV6}%eth0]/openstack/latest/meta_data.json"], check=False)
    code = (fetch.stdout or "").strip()
    status = int(code) if code.isdigit() and code != "000" else None
    error = "" if status else f"curl exit {fetch.returncode}" + (
        f": {CURL_ERRORS[fetch.returncode]}" if fetch.returncode in CURL_ERRORS else "")
    return Ipv6Observations(addresses, entries[0].get("gateway") if entries else None, bool(entries), status, error)


# A VM is also asked for its dhclient lease file (ifupdown's, one per interface).
VM_COMMANDS: dict[str, list[str]] = {
    **PATH_COMMANDS, "lease": ["sh", "-c", "cat /var/lib/dhcp/dhclient*.leases 2>/dev/null"],
}
Ask = Callable[[Mapping[str, Sequence[str]]], Ran]


def observe_vm(config: Config, machine: Machine, snapshot: Snapshot, host: Host,
               access: Sequence[Mapping[str, Any]], ask: Ask) -> tuple[VmFacts, Observations | None]:
    """What the host shows of a VM (through ``host``), then — if it answers SSH — what the VM itself sees.

    ``ask`` runs commands in the VM (over SSH) or raises
    :class:`~netmeta.vm.machines.MachineError` saying why it cannot.
    """
    from netmeta.drivers.errors import DriverError
    from netmeta.vm import console
    from netmeta.vm.machines import MachineError

    pid = _qemu_pid(host, machine.pid_file)
    in_fabric = True
    if pid is not None:
        expected = host.namespace_inode(machine.fabric) if machine.fabric else host.process_namespace_inode(os.getpid())
        in_fabric = expected is not None and host.process_namespace_inode(pid) == expected
    try:
        tap = host.observe_links(None).get(machine.tap)
    except DriverError:
        tap = None
    done = console.finished(host.read_file(machine.console_log) or "")
    leases = host.read_file(config.paths.dhcp_file(machine.network_id, "leases")) or ""
    lease = lease_for(leases, machine.mac)
    held = [other for other in parse_dnsmasq_leases(leases)
            if other.ip == machine.ip and other.mac != machine.mac.lower()]
    counts = tuple((str(a["kind"]), str(a["id"]), int(a["count"])) for a in access if a.get("peer") == machine.ip)
    facts = VmFacts(
        name=machine.name, port_id=machine.port_id, network_id=machine.network_id,
        mac=machine.mac, ip=machine.ip, tap=machine.tap, qemu_pid=pid, qemu_in_fabric=in_fabric,
        tap_master=None if tap is None else str(tap.get("master") or ""),
        tap_up=bool(tap.get("up", True)) if tap is not None else False,
        lease=lease, address_held_by=held[-1] if held else None, cloud_init=done.datasource if done else None, uptime=done.uptime if done else None,
        access=counts, qemu_log="\n".join((host.read_file(machine.qemu_log) or "").splitlines()[-5:]),
    )
    if pid is None or tap is None:
        return replace(facts, ssh="the VM is not running" if pid is None else "its tap is missing"), None
    try:
        ran = ask(VM_COMMANDS)
    except MachineError as exc:
        return replace(facts, ssh=str(exc)), None
    if "fetch" not in ran:
        return replace(facts, ssh="SSH ended before the commands did"), None
    inside = observe_path(config, snapshot, ran, name=machine.name, ip=machine.ip,
                          instance_id=machine.instance_id, network_id=machine.network_id,
                          dhcp_routes=dhclient_lease_routes(ran.get("lease", (1, ""))[1]))
    return facts, inside


def _qemu_pid(host: Host, pid_file: str) -> int | None:
    text = (host.read_file(pid_file) or "").strip()
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if any(pid_file in arg for arg in host.process_argv(pid)) else None


def _find(config: Config, key: str) -> Guest | Machine:
    from netmeta.vm.guests import GuestError, Guests
    from netmeta.vm.machines import Machines

    everyone: list[Guest | Machine] = [*Machines(config).list_all(), *Guests(config).list_all()]
    for found in everyone:
        if key in (found.name, found.instance_id, found.ip):
            return found
    raise GuestError(f"no guest or VM on this host is named, has the instance id or the IP {key!r}")


def explain_machine(config: Config, machine: Machine, snapshot: Snapshot,
                    states: Mapping[str, AgentState] | None = None) -> Explanation:
    """Observe a VM on this host and explain it."""
    from netmeta.agent.driver_host import DriverHost
    from netmeta.metadata.service import read_status
    from netmeta.vm.machines import Machines

    machines = Machines(config)
    host = DriverHost(config.paths, machine.fabric or None)
    access = (read_status(config.state_dir) or {}).get("access", [])
    facts, inside = observe_vm(config, machine, snapshot, host, access,
                               lambda commands: machines.run_batch(machine.name, commands, timeout=90))
    out = explain_vm(snapshot, facts, inside, opts_lines=_opts_lines(config, machine.network_id),
                     metadata_port=config.metadata_port, fabric=machine.fabric or "the host's namespace")
    if states is None:
        states = _agent_states(config)
    out.findings[0:0] = placement_findings(snapshot, snapshot.ports.get(PortId(machine.port_id)), machine.network_id,
                                           states, uses_router=out.path == "router" if out.path != "none" else None)
    return out


def _agent_states(config: Config) -> dict[str, AgentState]:
    """``/v2.0/agents`` as the admin sees it; empty when it cannot be read (no agent is then called alive)."""
    try:
        rows = Client.for_config(config, admin=True).get("/v2.0/agents").get("agents", [])
    except (ApiError, OSError, AttributeError):
        return {}
    return agent_states([r for r in rows if isinstance(r, dict)])


def _api_port(snapshot: Snapshot, key: str) -> Port | None:
    """A port named by its id, or the first port of an instance named by its id or name."""
    port = snapshot.ports.get(PortId(key))
    if port is not None:
        return port
    for instance in sorted(snapshot.instances.values(), key=lambda i: i.id):
        if key in (instance.id, instance.name):
            ports = [snapshot.ports[p] for p in instance.port_ids if p in snapshot.ports]
            ports = ports or sorted(snapshot.ports_of_device(instance.id), key=lambda p: p.id)
            if ports:
                return ports[0]
    return None


def cmd_explain(args: argparse.Namespace, config: Config) -> int:
    from netmeta.vm.guests import GuestError
    from netmeta.vm.machines import Machine

    found: Guest | Machine | Port | None
    try:
        snapshot = snapshot_from_state(Client.for_config(config).state())
        try:
            found = _find(config, args.guest)
        except GuestError:
            # Not a guest of this host: a port or an instance of the cloud, placed on its hosts.
            found = _api_port(snapshot, args.guest)
            if found is None:
                raise
    except (GuestError, ApiError, OSError) as exc:
        print(f"netmeta: {exc}", file=sys.stderr)
        return 1
    states = _agent_states(config)
    if isinstance(found, Machine):
        result = explain_machine(config, found, snapshot, states)
    elif isinstance(found, Port):
        result = explain_port(snapshot, found, states)
    else:
        result = explain_on_hosts(snapshot, observe(config, found, snapshot), states,
                                  metadata_port=config.metadata_port)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        kind = " (VM)" if isinstance(found, Machine) else " (port)" if isinstance(found, Port) else ""
        if isinstance(found, Port):
            print(f"{result.guest}{kind}: where its parts are (its guest's path is explained on the host it runs on)")
        else:
            print(f"{result.guest}{kind}: metadata path {result.path}"
                  + (f" via {result.next_hop}" if result.next_hop else ""))
        marks = {OK: "ok  ", NOTE: "note"}
        for finding in result.findings:
            print(f"  {marks.get(finding.severity, 'BAD ')}  {finding.text}")
        print("consistent" if result.consistent else "INCONSISTENT: see the lines marked BAD")
    return 0 if result.consistent else 3
