"""Test and demo guests: a namespace that behaves like a VM on a tenant network.

A guest is an instance created through the API, plus on this host: its own
network namespace, a veth whose inside end is ``eth0`` with the port's MAC
and whose outside end sits on the network's bridge in the fabric namespace,
and a real ``dhclient`` that asks for classless static routes (option 121)
and installs them — so a guest learns its route to 169.254.169.254 exactly
the way a cloud image does.

The DHCP client runs with netmeta's own configuration, script, lease and pid
files, all under ``<state_dir>/vms/<name>/``: it never writes the host's
``/etc/resolv.conf`` or the shared default lease file.

On a network with IPv6 subnets the guest behaves like a cloud image: it
accepts router advertisements (SLAAC address, default route via the router's
link-local, and the RA's route to ``fe80::a9fe:a9fe``), and runs
``dhclient -6`` when a subnet's ``ipv6_address_mode`` is ``dhcpv6-stateful``,
``dhclient -6 -S`` (options only) when it is ``dhcpv6-stateless``. A network
with only IPv6 gets no DHCPv4 client at all.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Generic, TypeVar

from netmeta.client import ApiError, ApiUnavailable, Client
from netmeta.config import Config
from netmeta.drivers import dhclient, links, netns
from netmeta.drivers.errors import DriverError
from netmeta.model import names

# How long guest commands wait out an API that does not answer (a restart).
API_RETRY = 30.0
VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class GuestError(Exception):
    """A guest operation failed; the message says what and why."""


@dataclass
class Guest:
    name: str
    instance_id: str
    port_id: str
    network_id: str
    mac: str
    ip: str
    namespace: str
    directory: str
    ip6: str = ""  # the port's first IPv6 address, "" without one

    @property
    def paths(self) -> dhclient.GuestPaths:
        return dhclient.GuestPaths(self.directory)


def wait_for_bridge(fabric: str | None, bridge: str, timeout: float) -> None:
    """Wait for the agent to make a network's bridge (it does when it sees the network)."""
    deadline = time.monotonic() + timeout
    last: DriverError | None = None
    while True:
        try:
            if (fabric is None or netns.namespace_exists(fabric)) and links.link_exists(fabric, bridge):
                return
        except DriverError as exc:
            # /run/netns/<fabric> exists a moment before it is bind-mounted
            # (the agent is creating it right now): opening it then fails
            # with EINVAL. Not ready yet, not an error.
            last = exc
        if time.monotonic() > deadline:
            why = f" (last error: {last})" if last else ""
            where = fabric or "the host namespace"
            raise GuestError(f"bridge {bridge} did not appear in {where}: is `netmeta agent` running?{why}")
        time.sleep(0.05)


def check_new_name(config: Config, name: str, noun: str, error: type[GuestError]) -> None:
    """A guest's or VM's name: a valid one, and not taken by either kind on this host."""
    if not VM_NAME.match(name):
        raise error(f"{noun} name {name!r}: use letters, digits, '.', '_' or '-'")
    if os.path.exists(config.paths.guest_record(name)) or os.path.exists(config.paths.machine_record(name)):
        raise error(f"a guest or VM named {name!r} already exists on this host")


def instance_fields(name: str, network_id: str, *, host: str, user_data: bytes | None, key_name: str | None,
                    public_key: str | None, meta: dict[str, str] | None) -> dict[str, Any]:
    """The body of the instance a guest or VM is (Nova's fields, as the instances API takes them).

    ``host`` is where it runs (``config.host``, ``vm boot --host H``): its port's binding:host_id.
    """
    fields: dict[str, Any] = {"name": name, "networks": [{"uuid": network_id}], "host": host}
    if user_data is not None:
        fields["user_data"] = base64.b64encode(user_data).decode()
    if key_name:
        fields["key_name"] = key_name
    if public_key:
        fields["public_key"] = public_key
    if meta:
        fields["meta"] = meta
    return fields


def first_port(client: Client, instance: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The instance's port and its first IPv4 address ("" if it has none)."""
    port: dict[str, Any] = client.get(f"/v2.0/ports/{instance['ports'][0]}")["port"]
    ipv4 = [f["ip_address"] for f in port["fixed_ips"] if ":" not in f["ip_address"]]
    return port, ipv4[0] if ipv4 else ""


def first_ipv6(port: dict[str, Any]) -> str:
    """The port's first IPv6 address ("" if it has none)."""
    ipv6 = [f["ip_address"] for f in port["fixed_ips"] if ":" in f["ip_address"]]
    return str(ipv6[0]) if ipv6 else ""


Record = TypeVar("Record")


class Records(Generic[Record]):
    """The guests or VMs of this host: one JSON record each, ``record_path(name)``, under ``root``."""

    def __init__(self, root: str, record_path: Callable[[str], str], kind: Callable[..., Record], missing: str,
                 error: type[GuestError] = GuestError) -> None:
        self.root, self.record_path, self.kind, self.missing, self.error = root, record_path, kind, missing, error

    def exists(self, name: str) -> bool:
        return os.path.exists(self.record_path(name))

    def get(self, name: str) -> Record:
        try:
            with open(self.record_path(name), encoding="utf-8") as handle:
                return self.kind(**json.load(handle))
        except FileNotFoundError:
            raise self.error(self.missing.format(name=name)) from None

    def names(self) -> list[str]:
        if not os.path.isdir(self.root):
            return []
        return [name for name in sorted(os.listdir(self.root)) if self.exists(name)]

    def list_all(self) -> list[Record]:
        return [self.get(name) for name in self.names()]

    def _teardown_local(self, name: str) -> None:
        raise NotImplementedError

    def teardown_all_local(self) -> list[str]:
        """Remove every one from this host, processes and files (``netmeta down``); their names."""
        removed = self.names()
        for name in removed:
            self._teardown_local(name)
        return removed

    def save(self, name: str, record: Any) -> None:
        path = self.record_path(name)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=1)


class Guests(Records[Guest]):
    def __init__(self, config: Config, client: Client | None = None) -> None:
        super().__init__(config.paths.vms_dir, config.paths.guest_record, Guest,
                         "no guest named {name!r} on this host (see `netmeta vm list`)")
        self.config = config
        # A server restart in the middle of a boot is waited out, within a bound.
        self.client = client or Client.for_config(config, retry_for=API_RETRY)

    # --- lifecycle ----------------------------------------------------------
    def boot(
        self,
        name: str,
        network: str,
        *,
        user_data: bytes | None = None,
        key_name: str | None = None,
        public_key: str | None = None,
        meta: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Guest:
        check_new_name(self.config, name, "guest", GuestError)
        net = self.client.find("networks", network)
        subnets = self._check_dhcp(net)
        fields = instance_fields(name, net["id"], host=self.config.host, user_data=user_data, key_name=key_name,
                                 public_key=public_key, meta=meta)
        # The guest belongs to its network's project (the service user acts for it).
        fields["project_id"] = net["project_id"]
        instance = self._create_instance(fields)
        try:
            port, ip = first_port(self.client, instance)
            guest = Guest(
                name=name,
                instance_id=instance["id"],
                port_id=port["id"],
                network_id=net["id"],
                mac=port["mac_address"],
                ip=ip,
                namespace=names.guest_namespace(name, instance["id"]),
                directory=os.path.join(self.root, name),
                ip6=first_ipv6(port),
            )
            self.save(name, guest)
            v6 = [s for s in subnets if s.get("ip_version") == 6]
            self._plug(guest, net.get("mtu") or 1500, timeout, ipv6=bool(v6))
            if any(s.get("enable_dhcp") and s.get("ip_version") == 4 for s in subnets):
                dhclient.start(guest.namespace, "eth0", guest.paths, timeout=timeout)
            if v6:
                self._ipv6_up(guest, v6, timeout)
        except BaseException as exc:
            # Never an orphan: whatever was made for this boot goes again.
            self._teardown_local(name)
            try:
                self.client.delete_instance(instance["id"])
            except ApiError as cleanup:
                raise GuestError(f"boot failed ({exc}) and its instance {instance['id']} could not be deleted: "
                                 f"{cleanup}; delete it with the API when it is back") from exc
            raise
        return guest

    def _check_dhcp(self, net: dict[str, Any]) -> list[dict[str, Any]]:
        """A guest on a network without DHCP would wait for a lease that never comes; the subnets."""
        subnets: list[dict[str, Any]] = self.client.get("/v2.0/subnets", network_id=net["id"])["subnets"]
        if not any(s.get("enable_dhcp") and s.get("ip_version") == 4 for s in subnets) and not any(
                s.get("ip_version") == 6 for s in subnets):
            why = "has no subnet" if not subnets else "has no IPv4 subnet with DHCP enabled"
            raise GuestError(f"network {net.get('name') or net['id']} {why}: a guest would get no lease "
                             "(`openstack subnet set --dhcp SUBNET`, or create a subnet)")
        if not net.get("admin_state_up", True):
            raise GuestError(f"network {net.get('name') or net['id']} is admin-down: nothing serves DHCP on it")
        return subnets

    def _create_instance(self, fields: dict[str, Any]) -> dict[str, Any]:
        """POST once; when the connection broke after sending, find out whether it happened."""
        deadline = time.monotonic() + API_RETRY
        started = time.time() - 5  # the server's clock: this host's (and a margin)
        while True:
            try:
                return self.client.create_instance(**fields)
            except ApiUnavailable as exc:
                if not exc.sent or time.monotonic() > deadline:
                    raise
                created = self._created_since(fields["name"], started)
                if created is not None:
                    return created
                time.sleep(0.2)

    def _created_since(self, name: str, since: float) -> dict[str, Any] | None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))
        taken = {g.instance_id for g in self.list_all()}
        found = [i for i in self.client.get("/netmeta/v1/instances", name=name)["instances"]
                 if i["id"] not in taken and str(i.get("created_at", "")) >= stamp]
        if len(found) == 1:
            adopted: dict[str, Any] = found[0]
            return adopted
        return None

    def _plug(self, guest: Guest, mtu: int, timeout: float, *, ipv6: bool = False) -> None:
        fabric = self.config.fabric_namespace or None
        bridge = names.bridge_name(guest.network_id)
        wait_for_bridge(fabric, bridge, timeout)
        netns.ensure_namespace(guest.namespace)
        if ipv6:
            # Before eth0 exists, so it is born with them: take RAs (a host,
            # not a router), and their route information up to /128, which is
            # how the route to fe80::a9fe:a9fe via the router arrives. Neutron's
            # L3 agent works the same way (radvd's route, the REDIRECT in the
            # qrouter, nothing at that address on the link) and expects guests
            # to take the route; Linux's default (0) ignores it.
            for key, value in (("accept_ra", "1"), ("accept_ra_rt_info_max_plen", "128")):
                netns.set_sysctl(guest.namespace, f"net.ipv6.conf.default.{key}", value)
        links.ensure_veth_into(
            guest.namespace, "eth0", fabric, names.guest_outer_name(guest.port_id), bridge, guest.mac, mtu
        )

    def _ipv6_up(self, guest: Guest, subnets: list[dict[str, Any]], timeout: float) -> None:
        """Link-local usable, then DHCPv6 as the subnets' address modes ask (stateful wins)."""
        links.wait_ipv6(guest.namespace, "eth0", "fe80::/64", timeout)
        modes = {s.get("ipv6_address_mode") for s in subnets if s.get("enable_dhcp")}
        if "dhcpv6-stateful" in modes:
            dhclient.start6(guest.namespace, "eth0", guest.paths, stateless=False, timeout=timeout)
        elif "dhcpv6-stateless" in modes:
            dhclient.start6(guest.namespace, "eth0", guest.paths, stateless=True, timeout=timeout)

    def renew(self, name: str, timeout: float = 30.0) -> Guest:
        guest = self.get(name)
        dhclient.renew(guest.namespace, "eth0", guest.paths, timeout=timeout)
        return guest

    def delete(self, name: str) -> None:
        guest = self.get(name)
        self._teardown_local(name)
        try:
            self.client.delete_instance(guest.instance_id)
        except Exception as exc:  # noqa: BLE001 - local teardown already done; say what remains
            raise GuestError(f"guest {name} removed from this host, but its instance remains: {exc}") from exc

    def _teardown_local(self, name: str) -> None:
        try:
            guest = self.get(name)
        except GuestError:
            return
        dhclient.stop(guest.namespace, guest.paths)
        links.delete_link(self.config.fabric_namespace or None, names.guest_outer_name(guest.port_id))
        netns.delete_namespace(guest.namespace)
        shutil.rmtree(guest.directory, ignore_errors=True)
