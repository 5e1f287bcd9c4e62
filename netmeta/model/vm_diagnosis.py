"""Why does (or doesn't) a real VM reach netmeta? — the pure half of ``explain`` for QEMU VMs.

A namespace guest can be looked into from the host; a VM cannot until it
answers SSH. So ``explain`` on a VM walks its path from the outside in, the
way an operator would, and stops at the first broken link with its cause:

1. its port in the API (the MAC QEMU was given is the port's);
2. QEMU alive, in the fabric namespace;
3. its tap on the network's bridge there;
4. a lease for its MAC in dnsmasq's leases file, with the port's address;
5. cloud-init's state as the serial console tells it: still booting, done
   from the OpenStack datasource, or done from ``DataSourceNone`` (it never
   read netmeta, and "done" hides that);
6. the metadata process's access counts for the VM's address: which
   listener — qdhcp or qrouter — answered it;
7. and, when SSH works, the same chain as for a namespace guest
   (:func:`netmeta.model.diagnosis.explain`) from inside the VM: its route
   to 169.254.169.254, where that route came from, the namespace and the
   listener behind it, the identity and a real fetch.

Without SSH (the VM is still booting, or never got an address) step 7 is
replaced by what DHCP offers: the next hop in the opts file and the path it
implies. The observations come in as plain values (:class:`VmFacts`); the
parsers for dnsmasq's and dhclient's lease files are here too, so a test
pins every situation without root.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmeta.model import names
from netmeta.model.dhcp import DhcpLease, parse_dnsmasq_leases
from netmeta.model.diagnosis import (
    NOTE,
    OK,
    PROBLEM,
    Explanation,
    Observations,
    explain,
    opts_metadata_route,
)
from netmeta.model.types import (
    DEVICE_OWNER_DHCP,
    METADATA_CIDR,
    ROUTER_INTERFACE_OWNERS,
    NetworkId,
    PortId,
    Snapshot,
)

# The access log's listener kinds (metadata.http): "network" is the qdhcp listener.
LISTENER_KIND = {"dhcp": "network", "router": "router"}


@dataclass(frozen=True)
class VmFacts:
    """What ``explain`` saw of a VM from the host (built by the CLI, or by hand in tests)."""

    name: str
    port_id: str
    network_id: str
    mac: str
    ip: str
    tap: str
    qemu_pid: int | None  # None: not running (or the pid file names another process)
    qemu_in_fabric: bool = True  # QEMU's network namespace is the fabric's
    tap_master: str | None = None  # None: the tap does not exist; "": on no bridge
    tap_up: bool = True
    lease: DhcpLease | None = None
    # Another MAC's lease on the VM's address (a client gone without releasing it).
    address_held_by: DhcpLease | None = None
    cloud_init: str | None = None  # the datasource of cloud-init's final message; None: not finished
    uptime: float | None = None  # the guest's uptime in that message
    access: tuple[tuple[str, str, int], ...] = ()  # (listener kind, id, connections) from the VM's address
    ssh: str = ""  # why the VM's own view is missing ("" when it was read)
    qemu_log: str = ""  # the last lines QEMU wrote, for a dead QEMU


def lease_for(text: str, mac: str) -> DhcpLease | None:
    """The lease dnsmasq holds for ``mac`` (the last, if it lists several)."""
    mine = [lease for lease in parse_dnsmasq_leases(text) if lease.mac == mac.lower()]
    return mine[-1] if mine else None


def dhclient_lease_routes(text: str) -> str:
    """Option 121 of the newest lease in an ISC dhclient lease file ("" if it has none).

    The file holds ``lease { … }`` blocks, oldest first, with lines such as
    ``option rfc3442-classless-static-routes 32,169,254,169,254,10,0,0,2;``.
    """
    value = ""
    for line in text.splitlines():
        words = line.strip().rstrip(";").split(None, 2)
        if len(words) == 3 and words[0] == "option" and words[1] == "rfc3442-classless-static-routes":
            value = words[2]
    return value


def offered_path(snapshot: Snapshot, network_id: str, opts_lines: tuple[str, ...]) -> tuple[str, str | None]:
    """("dhcp"|"router"|"none", next hop) that DHCP offers guests of the network for 169.254.169.254."""
    subnets = {s.id for s in snapshot.subnets_of(NetworkId(network_id))}
    hop, _line = opts_metadata_route(opts_lines, set(subnets))
    if hop is None:
        # No specific route: the default route's gateway carries it, if a router holds it.
        for port in snapshot.ports.values():
            if port.network_id == network_id and port.device_owner in ROUTER_INTERFACE_OWNERS:
                for subnet_id in subnets:
                    subnet = snapshot.subnets.get(subnet_id)
                    if subnet is not None and subnet.gateway_ip and port.ip_on(subnet.id) == subnet.gateway_ip:
                        return "router", subnet.gateway_ip
        return "none", None
    for port in snapshot.ports.values():
        if port.network_id == network_id and any(f.ip_address == hop for f in port.fixed_ips):
            if port.device_owner == DEVICE_OWNER_DHCP:
                return "dhcp", hop
            if port.device_owner in ROUTER_INTERFACE_OWNERS:
                return "router", hop
    return "none", hop


def explain_vm(snapshot: Snapshot, vm: VmFacts, inside: Observations | None, *, opts_lines: tuple[str, ...] = (),
               metadata_port: int = 9697, fabric: str = "the fabric namespace") -> Explanation:
    """The chain of findings for a VM, from its port to the answer cloud-init got."""
    out = Explanation(guest=vm.name)
    port = snapshot.ports.get(PortId(vm.port_id))
    if port is None:
        out.add(PROBLEM, "port-missing", f"port {vm.port_id} of {vm.name} is gone from the API: "
                                         "the VM's MAC belongs to nothing, DHCP and metadata ignore it")
        return out
    if port.mac_address.lower() != vm.mac.lower():
        out.add(PROBLEM, "port-mac", f"QEMU was given MAC {vm.mac}, but port {vm.port_id} has {port.mac_address}")
        return out
    out.add(OK, "port", f"port {vm.port_id} ({vm.mac}, {vm.ip}) on network {vm.network_id}")

    if vm.qemu_pid is None:
        tail = f": QEMU's log ends {vm.qemu_log.strip()[-300:]!r}" if vm.qemu_log.strip() else ""
        out.add(PROBLEM, "qemu-dead", f"QEMU is not running: {vm.name} is stopped (it exited or was killed){tail}; "
                                      f"`netmeta vm delete {vm.name}` and boot it again")
        return out
    where = fabric if vm.qemu_in_fabric else "another namespace than the fabric's"
    out.add(OK if vm.qemu_in_fabric else PROBLEM, "qemu", f"QEMU runs (pid {vm.qemu_pid}) in {where}")

    bridge = names.bridge_name(vm.network_id)
    if vm.tap_master is None:
        out.add(PROBLEM, "tap-missing", f"tap {vm.tap} does not exist in {fabric}: the VM is cut off from its network")
        return out
    if vm.tap_master != bridge or not vm.tap_up:
        state = "down" if not vm.tap_up else f"on {vm.tap_master or 'no bridge'}"
        out.add(PROBLEM, "tap-not-on-bridge", f"tap {vm.tap} is {state}, not up on bridge {bridge}: "
                                              "the VM's frames never reach dnsmasq or the router")
        return out
    out.add(OK, "tap", f"tap {vm.tap} is up on bridge {bridge}")

    booting = vm.cloud_init is None
    held = vm.address_held_by
    if vm.lease is None and held is not None:
        out.add(PROBLEM, "address-leased-elsewhere",
                f"dnsmasq still leases {vm.ip} to {held.mac} (hostname {held.hostname}), a client that went away "
                f"without releasing it: it will not give the address to {vm.mac} until that lease expires "
                "(`netmeta vm delete` releases a VM's lease; `dhcp_release` in the qdhcp namespace does it by hand)")
    elif vm.lease is None:
        if booting:
            out.add(NOTE, "no-lease-yet", f"dnsmasq has no lease for {vm.mac} yet: the VM is still booting "
                                          f"(`netmeta vm console {vm.name} --follow`)")
        else:
            out.add(PROBLEM, "no-lease", f"dnsmasq holds no lease for {vm.mac}, yet cloud-init finished: the VM "
                                         "never got an address from netmeta (another DHCP server? a static "
                                         "network config in the image?)")
    elif vm.lease.ip != vm.ip:
        out.add(PROBLEM, "lease-address", f"dnsmasq leased {vm.lease.ip} to {vm.mac}, but the port's address is "
                                          f"{vm.ip}: the hosts file is stale (is `netmeta agent` running?)")
    else:
        out.add(OK, "lease", f"dnsmasq leased {vm.lease.ip} to {vm.mac} (hostname {vm.lease.hostname})")

    path, hop = offered_path(snapshot, vm.network_id, opts_lines)
    _cloud_init(out, vm, path)
    _served(out, vm, path)

    if inside is not None:
        chain = explain(snapshot, inside, metadata_port=metadata_port)
        out.findings.extend(chain.findings)
        out.path, out.next_hop, out.namespace = chain.path, chain.next_hop, chain.namespace
        out.resolved_instance = chain.resolved_instance
        return out
    out.path, out.next_hop = path, hop
    if path != "none":
        out.namespace = (names.dhcp_namespace(vm.network_id) if path == "dhcp"
                         else _router_namespace(snapshot, vm.network_id, hop))
        out.add(NOTE, "offered-route", f"DHCP offers {METADATA_CIDR} via {hop} ({out.namespace}); "
                                       f"the VM's own route was not read: {vm.ssh or 'no SSH'}")
    else:
        out.add(NOTE, "offered-route", f"DHCP offers no route to {METADATA_CIDR} on this network (metadata is off "
                                       f"for it); the VM's own route was not read: {vm.ssh or 'no SSH'}")
    return out


def _router_namespace(snapshot: Snapshot, network_id: str, hop: str | None) -> str | None:
    for port in snapshot.ports.values():
        if port.network_id == network_id and any(f.ip_address == hop for f in port.fixed_ips):
            return names.router_namespace(port.device_id)
    return None


def _cloud_init(out: Explanation, vm: VmFacts, path: str) -> None:
    if vm.cloud_init is None:
        out.add(NOTE, "booting", "cloud-init has not finished yet (no final message on the console)")
        return
    up = f" after {vm.uptime:.0f} s" if vm.uptime is not None else ""
    if vm.cloud_init.startswith("DataSourceOpenStack"):
        out.add(OK, "datasource", f"cloud-init finished{up} from {vm.cloud_init}: it read netmeta")
        return
    if vm.lease is None:
        why = "it never got a DHCP lease" + (f" ({vm.ip} is still leased to {vm.address_held_by.mac})"
                                             if vm.address_held_by else "")
    elif path == "none":
        why = "DHCP offers it no route to 169.254.169.254 (metadata is off for this network)"
    elif not any(count for _kind, _id, count in vm.access):
        why = "no listener ever answered its address (see the route and listener findings)"
    else:
        why = ("a listener answered it, so cloud-init gave up on the answers (a 4xx/5xx, or the image's "
               "datasource_list leaves OpenStack out: it needs product=OpenStack Nova in SMBIOS)")
    out.add(PROBLEM, "datasource-none", f"cloud-init finished{up} from {vm.cloud_init}, not OpenStack: it did not "
                                        f"read netmeta — {why}")


def _served(out: Explanation, vm: VmFacts, path: str) -> None:
    counted = [(kind, ident, count) for kind, ident, count in vm.access if count > 0]
    if not counted:
        if vm.cloud_init is not None and vm.cloud_init.startswith("DataSourceOpenStack"):
            out.add(NOTE, "served", f"no listener counts a connection from {vm.ip} (the metadata process "
                                    "restarted since the boot?)")
        elif vm.cloud_init is None:
            out.add(NOTE, "served", f"no listener has answered {vm.ip} yet")
        else:
            out.add(PROBLEM, "not-served", f"no metadata listener ever answered {vm.ip}")
        return
    said = ", ".join(f"the {'qdhcp' if kind == 'network' else 'qrouter'} listener of {kind} {ident}: {count}"
                     for kind, ident, count in counted)
    expected = LISTENER_KIND.get(path)
    if expected is None or any(kind == expected for kind, _i, _c in counted):
        out.add(OK, "served", f"connections from {vm.ip} — {said}")
    else:
        out.add(NOTE, "served-elsewhere", f"connections from {vm.ip} — {said}; DHCP now offers the "
                                          f"{'qdhcp' if path == 'dhcp' else 'qrouter'} path (the network "
                                          "changed since the VM read its metadata)")
