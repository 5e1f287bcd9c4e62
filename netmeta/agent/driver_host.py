"""The default :class:`netmeta.agent.host.Host`: the drivers, the ledger, files."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from netmeta.agent.host import FdbView, LinkView, RouteView
from netmeta.agent.ledger import Ledger
from netmeta.drivers import dnsmasq, files, iptables, links, netns, nftables, processes, radvd, vxlan
from netmeta.drivers.errors import translate
from netmeta.model.names import ROUTER_PORT_PREFIX
from netmeta.model.paths import StatePaths

log = logging.getLogger(__name__)


class DriverHost:
    """:class:`Host` on the real kernel, through :mod:`netmeta.drivers`.

    ``fabric`` is the namespace that holds the bridges; None puts them in the
    host's own namespace (``fabric_namespace = ""``, for plugging real VM
    taps; the drivers refuse "" so it cannot happen by accident).
    """

    def __init__(self, paths: StatePaths, fabric: str | None) -> None:
        self.fabric = fabric
        self.ledger = Ledger.load(paths.state_dir)
        # Workers act on several objects at once; the ledger is one file.
        self._ledger_lock = threading.Lock()

    # --- the ledger --------------------------------------------------------
    def recorded(self) -> tuple[frozenset[str], frozenset[str]]:
        with self._ledger_lock:
            return frozenset(self.ledger.namespaces), frozenset(self.ledger.fabric_links)

    def remember(self, *, namespace: str = "", fabric_link: str = "") -> None:
        with self._ledger_lock:
            self.ledger.remember(namespace=namespace or None, fabric_link=fabric_link or None)

    def forget(self, *, namespace: str = "", fabric_link: str = "") -> None:
        with self._ledger_lock:
            self.ledger.forget(namespace=namespace or None, fabric_link=fabric_link or None)

    # --- observations --------------------------------------------------------
    def namespace_inode(self, namespace: str) -> int | None:
        return netns.namespace_inode(namespace)

    def observe_links(self, namespace: str | None) -> LinkView:
        return links.observe(self.fabric if namespace is None else namespace)

    def observe_namespace(self, namespace: str) -> tuple[LinkView, RouteView]:
        seen, routes, _ = links.observe_namespace(namespace, routes=True)
        return seen, routes or ()

    def observe_fabric(self) -> tuple[LinkView, FdbView]:
        seen, _, entries = links.observe_namespace(self.fabric, fdb=True)
        return seen, {device: frozenset(found) for device, found in (entries or {}).items()}

    def router_devices(self, namespace: str) -> tuple[str, ...]:
        return tuple(n for n in links.list_links(namespace) if n.startswith(ROUTER_PORT_PREFIX))

    def dnsmasq_pid(self, pid_file: str, network_id: str) -> int | None:
        return dnsmasq.running_pid(pid_file, network_id)

    def process_argv(self, pid: int) -> tuple[str, ...]:
        return tuple(dnsmasq.cmdline(pid))

    def process_namespace_inode(self, pid: int) -> int | None:
        return processes.network_namespace_inode(pid)

    def read_file(self, path: str) -> str | None:
        return files.read_text(path)

    def list_dirs(self, path: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(path) if e.is_dir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise translate(exc, f"list {path}") from exc

    def save_iptables(self, namespace: str) -> str:
        return iptables.save(namespace)

    def save_ip6tables(self, namespace: str) -> str:
        return iptables.save(namespace, family=6)

    def radvd_pid(self, pid_file: str, router_id: str) -> int | None:
        return radvd.running_pid(pid_file, pid_file)

    # --- actions -------------------------------------------------------------
    def ensure_fabric(self) -> None:
        if self.fabric:
            self.remember(namespace=self.fabric)
            if not netns.namespace_exists(self.fabric):
                netns.ensure_namespace(self.fabric)

    def ensure_namespace(self, namespace: str) -> None:
        netns.ensure_namespace(namespace)

    def delete_namespace(self, namespace: str) -> None:
        netns.delete_namespace(namespace)

    def ensure_bridge(self, name: str, mtu: int) -> None:
        links.ensure_bridge(self.fabric, name, mtu)

    def ensure_veth(
        self, namespace: str, device: str, outer: str, bridge: str, mac: str, mtu: int, addresses: tuple[str, ...]
    ) -> None:
        links.ensure_veth_into(namespace, device, self.fabric, outer, bridge, mac, mtu)
        links.ensure_addresses(namespace, device, set(addresses))

    def delete_link(self, namespace: str | None, device: str) -> None:
        links.delete_link(self.fabric if namespace is None else namespace, device)

    def set_sysctl(self, namespace: str, key: str, value: str) -> None:
        netns.set_sysctl(namespace, key, value)

    def write_files(self, directory: str, files_: tuple[tuple[str, str], ...]) -> None:
        # dnsmasq drops to "nobody" and re-reads its files on SIGHUP as that
        # user: the directory chain must be world-readable.
        files.ensure_dir(os.path.dirname(directory))
        files.ensure_dir(directory)
        for name, text in files_:
            files.write_file_atomic(os.path.join(directory, name), text)

    def write_file(self, path: str, text: str) -> None:
        files.write_file_atomic(path, text)

    def remove_files(self, directory: str) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def start_dnsmasq(self, namespace: str, argv: Sequence[str], pid_file: str) -> None:
        dnsmasq.start(namespace, argv, pid_file)

    def reload_dnsmasq(self, pid: int) -> None:
        dnsmasq.reload(pid)

    def release_lease(self, namespace: str, interface: str, ip: str, mac: str, client_id: str) -> None:
        dnsmasq.release(namespace, interface, ip, mac, client_id)  # False (no dhcp_release): the lease expires

    def stop_dnsmasq(self, pid_file: str, network_id: str, pid: int | None) -> None:
        if pid is None:
            pid = dnsmasq.running_pid(pid_file, network_id)
        if pid is not None:
            dnsmasq.stop(pid)

    def restore_iptables(self, namespace: str, payload: str) -> None:
        iptables.restore(namespace, payload)

    def restore_ip6tables(self, namespace: str, payload: str) -> None:
        iptables.restore(namespace, payload, family=6)

    def start_radvd(self, namespace: str, argv: Sequence[str], pid_file: str) -> None:
        os.makedirs(os.path.dirname(pid_file), mode=0o755, exist_ok=True)
        radvd.start(namespace, argv, pid_file)

    def reload_radvd(self, pid: int) -> None:
        radvd.reload(pid)

    def stop_radvd(self, pid_file: str, router_id: str, pid: int | None) -> None:
        if pid is None:
            pid = radvd.running_pid(pid_file, pid_file)
        if pid is not None:
            radvd.stop(pid)

    def ensure_routes(self, namespace: str, routes: Sequence[tuple[str, tuple[str, ...], str | None]]) -> None:
        failed = links.ensure_routes(namespace, list(routes))
        if failed:
            # Neutron's L3 agent skips a route the kernel refuses the same way.
            log.warning("%s: routes not installed (nexthop on no link): %s", namespace, ", ".join(failed))

    # VXLAN: the device is made from this process's own namespace, where the
    # underlay address (local_ip) is, and lives in the fabric (drivers.vxlan).
    def observe_vxlan(self, device: str) -> tuple[Mapping[str, Any] | None, frozenset[tuple[str, str]] | None]:
        seen, entries = vxlan.observe(self.fabric, device)
        return seen, frozenset(entries) if entries is not None else None

    def ensure_vxlan(self, device: str, vni: int, local_ip: str, bridge: str, mtu: int, port: int) -> None:
        vxlan.ensure_vxlan(None, self.fabric, device, vni, local_ip, bridge, mtu, port)

    def replace_fdb(self, device: str, entries: Sequence[tuple[str, str]]) -> None:
        vxlan.ensure_fdb(self.fabric, device, entries)

    # Port security lives in the fabric namespace only; with bridges in the
    # host's own namespace the reconciler plans none (the driver refuses it too).
    def observe_nftables(self) -> tuple[str | None, bool]:
        return nftables.observe(self.fabric or "")

    def replace_nftables(self, payload: str, tables_wanted: bool) -> None:
        nftables.replace(self.fabric or "", payload, tables_wanted)
