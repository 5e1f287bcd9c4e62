"""A :class:`netmeta.agent.host.Host` in memory, keeping a transcript.

It models just enough of a Linux host for the agent's decisions: namespaces
with inodes (a namespace made again gets a new one), processes with argv and
the inode of the namespace they run in, files, links, iptables payloads and
the ledger. Every call that changes something is appended to ``transcript``
as a tuple (``("reload_dnsmasq", pid)``), so tests read as a playbook.
Faults: ``fail[(method, first_arg)]`` is an exception raised on each such
call (a list: raised in turn, then success); ``block[(method, first_arg)]``
is a ``threading.Event`` the call waits for (a slow dnsmasq start).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Sequence
from typing import Any

from netmeta.agent.host import LinkView
from netmeta.drivers.errors import ProcessGone, TemporaryDriverError

MUTATING = (
    "remember", "forget", "ensure_fabric", "ensure_namespace", "delete_namespace", "ensure_bridge",
    "ensure_veth", "delete_link", "set_sysctl", "write_files", "write_file", "remove_files",
    "start_dnsmasq", "reload_dnsmasq", "stop_dnsmasq", "restore_iptables", "replace_nftables",
    "ensure_vxlan", "replace_fdb",
    "restore_ip6tables", "start_radvd", "reload_radvd", "stop_radvd",
)


class FakeHost:
    def __init__(self, fabric: str = "fabric") -> None:
        self.fabric = fabric
        self.transcript: list[tuple[Any, ...]] = []
        self.namespaces: dict[str, int] = {}
        self.processes: dict[int, tuple[tuple[str, ...], int]] = {}  # pid → (argv, namespace inode)
        self.files: dict[str, str] = {}
        self.links: dict[str, dict[str, dict[str, Any]]] = {}
        self.iptables: dict[str, str] = {}
        self.ip6tables: dict[str, str] = {}
        self.routes: dict[str, tuple[tuple[str, tuple[str, ...], str | None], ...]] = {}
        self.nftables: tuple[str | None, bool] = (None, False)
        self.fdb: dict[str, set[tuple[str, str]]] = {}  # VXLAN device → (MAC, VTEP)  # (digest, any netmeta table)
        self.ledger_namespaces: set[str] = set()
        self.ledger_links: set[str] = set()
        self.fail: dict[tuple[str, Any], BaseException | list[BaseException]] = {}
        self.block: dict[tuple[str, Any], threading.Event] = {}
        self._inodes = itertools.count(1000)
        self._pids = itertools.count(100)
        self._index = itertools.count(2)
        self._lock = threading.RLock()

    # --- test helpers ----------------------------------------------------------
    def calls(self, *methods: str) -> list[tuple[Any, ...]]:
        """The transcript restricted to ``methods`` (all mutating calls if none)."""
        wanted = methods or MUTATING
        return [c for c in self.transcript if c[0] in wanted]

    def clear(self) -> None:
        self.transcript.clear()

    def remake_namespace(self, name: str) -> None:
        """Delete and create ``name`` by hand: same name, new inode, nothing inside."""
        self.namespaces[name] = next(self._inodes)
        self.links[name] = {"lo": {"kind": None, "up": True}}

    def _call(self, method: str, *args: Any) -> None:
        key = (method, args[0] if args else None)
        with self._lock:
            self.transcript.append((method, *args))
            fault = self.fail.get(key)
            if isinstance(fault, list):
                fault = fault.pop(0) if fault else None
        event = self.block.get(key)
        if event is not None:
            event.wait(10)
        if fault is not None:
            raise fault

    # --- the ledger ------------------------------------------------------------
    def recorded(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self.ledger_namespaces), frozenset(self.ledger_links)

    def remember(self, *, namespace: str = "", fabric_link: str = "") -> None:
        if (namespace and namespace not in self.ledger_namespaces) or (fabric_link and fabric_link not in self.ledger_links):
            self._call("remember", namespace, fabric_link)
        self.ledger_namespaces.discard("")
        if namespace:
            self.ledger_namespaces.add(namespace)
        if fabric_link:
            self.ledger_links.add(fabric_link)

    def forget(self, *, namespace: str = "", fabric_link: str = "") -> None:
        self._call("forget", namespace, fabric_link)
        self.ledger_namespaces.discard(namespace)
        self.ledger_links.discard(fabric_link)

    # --- observations ------------------------------------------------------------
    def namespace_inode(self, namespace: str) -> int | None:
        return self.namespaces.get(namespace)

    def observe_links(self, namespace: str | None) -> LinkView:
        ns = namespace or self.fabric
        if ns not in self.namespaces:
            raise TemporaryDriverError(f"namespace {ns} does not exist")
        return {name: dict(link) for name, link in self.links.get(ns, {}).items()}

    def observe_namespace(self, namespace: str) -> tuple[LinkView, tuple[tuple[str, tuple[str, ...], str | None], ...]]:
        self.transcript.append(("observe_namespace", namespace))
        links = self.observe_links(namespace)
        return links, tuple(sorted(self.routes.get(namespace, ())))

    def observe_fabric(self) -> tuple[LinkView, dict[str, frozenset[tuple[str, str]]]]:
        self.transcript.append(("observe_fabric",))
        links = self.observe_links(None)
        return links, {name: frozenset(self.fdb.get(name, ())) for name, link in links.items()
                       if link.get("kind") == "vxlan"}

    def router_devices(self, namespace: str) -> tuple[str, ...]:
        return tuple(n for n in self.links.get(namespace, {}) if n.startswith("qr-"))

    def dnsmasq_pid(self, pid_file: str, network_id: str) -> int | None:
        text = self.files.get(pid_file, "")
        if not text.isdigit():
            return None
        pid = int(text)
        argv = self.processes.get(pid, ((), 0))[0]
        return pid if any(network_id in a for a in argv) else None

    def process_argv(self, pid: int) -> tuple[str, ...]:
        return self.processes.get(pid, ((), 0))[0]

    def process_namespace_inode(self, pid: int) -> int | None:
        return self.processes[pid][1] if pid in self.processes else None

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def list_dirs(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.files if p.startswith(prefix) and "/" in p[len(prefix):]})

    def save_iptables(self, namespace: str) -> str:
        return self.iptables.get(namespace, "")

    def save_ip6tables(self, namespace: str) -> str:
        return self.ip6tables.get(namespace, "")

    def radvd_pid(self, pid_file: str, router_id: str) -> int | None:
        text = self.files.get(pid_file, "")
        if not text.isdigit():
            return None
        pid = int(text)
        argv = self.processes.get(pid, ((), 0))[0]
        return pid if any(pid_file in a for a in argv) else None

    # --- actions -------------------------------------------------------------------
    def ensure_fabric(self) -> None:
        if self.fabric not in self.namespaces:
            self._call("ensure_fabric")
            self.remember(namespace=self.fabric)
            self.remake_namespace(self.fabric)

    def ensure_namespace(self, namespace: str) -> None:
        self._call("ensure_namespace", namespace)
        if namespace not in self.namespaces:
            self.remake_namespace(namespace)

    def delete_namespace(self, namespace: str) -> None:
        self._call("delete_namespace", namespace)
        self.namespaces.pop(namespace, None)
        self.links.pop(namespace, None)
        self.iptables.pop(namespace, None)

    def ensure_bridge(self, name: str, mtu: int) -> None:
        self._call("ensure_bridge", name, mtu)
        self.links.setdefault(self.fabric, {})[name] = {
            "kind": "bridge", "up": True, "mtu": mtu, "index": next(self._index),
        }

    def ensure_veth(
        self, namespace: str, device: str, outer: str, bridge: str, mac: str, mtu: int, addresses: tuple[str, ...]
    ) -> None:
        self._call("ensure_veth", namespace, device, outer, bridge, mac, mtu, addresses)
        if namespace not in self.namespaces:
            raise TemporaryDriverError(f"namespace {namespace} does not exist")
        if bridge not in self.links.get(self.fabric, {}):
            raise TemporaryDriverError(f"bridge {bridge} missing")
        inner_index, outer_index = next(self._index), next(self._index)
        self.links[namespace][device] = {
            "kind": "veth", "up": True, "mtu": mtu, "mac": mac.lower(), "index": inner_index,
            "peer_index": outer_index, "master": None, "addresses": set(addresses),
        }
        self.links[self.fabric][outer] = {
            "kind": "veth", "up": True, "mtu": mtu, "mac": "", "index": outer_index,
            "peer_index": inner_index, "master": bridge, "addresses": set(),
        }

    def delete_link(self, namespace: str | None, device: str) -> None:
        self._call("delete_link", namespace, device)
        self.links.get(namespace or self.fabric, {}).pop(device, None)
        if namespace is None:
            self.fdb.pop(device, None)

    def set_sysctl(self, namespace: str, key: str, value: str) -> None:
        self._call("set_sysctl", namespace, key, value)

    def write_files(self, directory: str, files: tuple[tuple[str, str], ...]) -> None:
        changed = tuple(name for name, text in files if self.files.get(f"{directory}/{name}") != text)
        self._call("write_files", directory, changed)
        for name, text in files:
            self.files[f"{directory}/{name}"] = text

    def write_file(self, path: str, text: str) -> None:
        self._call("write_file", os.path.basename(path))
        self.files[path] = text

    def remove_files(self, directory: str) -> None:
        self._call("remove_files", directory)
        for path in [p for p in self.files if p.startswith(directory.rstrip("/") + "/")]:
            del self.files[path]

    def start_dnsmasq(self, namespace: str, argv: Sequence[str], pid_file: str) -> None:
        self._call("start_dnsmasq", namespace)
        if namespace not in self.namespaces:
            raise TemporaryDriverError(f"namespace {namespace} does not exist")
        pid = next(self._pids)
        self.processes[pid] = (tuple(argv), self.namespaces[namespace])
        self.files[pid_file] = str(pid)

    def reload_dnsmasq(self, pid: int) -> None:
        self._call("reload_dnsmasq", pid)
        if pid not in self.processes:
            raise ProcessGone(f"pid {pid} has exited")

    def release_lease(self, namespace: str, interface: str, ip: str, mac: str, client_id: str) -> None:
        self._call("release_lease", namespace, interface, ip, mac)

    def stop_dnsmasq(self, pid_file: str, network_id: str, pid: int | None) -> None:
        if pid is None:
            pid = self.dnsmasq_pid(pid_file, network_id)
        if pid is not None:
            self._call("stop_dnsmasq", pid)
            self.processes.pop(pid, None)

    def restore_iptables(self, namespace: str, payload: str) -> None:
        self._call("restore_iptables", namespace)
        self.iptables[namespace] = payload

    def restore_ip6tables(self, namespace: str, payload: str) -> None:
        self._call("restore_ip6tables", namespace)
        self.ip6tables[namespace] = payload

    def start_radvd(self, namespace: str, argv: Sequence[str], pid_file: str) -> None:
        self._call("start_radvd", namespace)
        if namespace not in self.namespaces:
            raise TemporaryDriverError(f"namespace {namespace} does not exist")
        pid = next(self._pids)
        self.processes[pid] = (tuple(argv), self.namespaces[namespace])
        self.files[pid_file] = str(pid)

    def reload_radvd(self, pid: int) -> None:
        self._call("reload_radvd", pid)
        if pid not in self.processes:
            raise ProcessGone(f"pid {pid} has exited")

    def stop_radvd(self, pid_file: str, router_id: str, pid: int | None) -> None:
        if pid is None:
            pid = self.radvd_pid(pid_file, router_id)
        if pid is not None:
            self._call("stop_radvd", pid)
            self.processes.pop(pid, None)

    def ensure_routes(self, namespace: str, routes: Sequence[tuple[str, tuple[str, ...], str | None]]) -> None:
        self._call("ensure_routes", namespace, tuple(routes))
        self.routes[namespace] = tuple(routes)

    def observe_vxlan(self, device: str) -> tuple[dict[str, Any] | None, frozenset[tuple[str, str]] | None]:
        self.transcript.append(("observe_vxlan", device))
        link = self.links.get(self.fabric, {}).get(device)
        if not link or link.get("kind") != "vxlan":
            return None, None
        return dict(link), frozenset(self.fdb.get(device, ()))

    def ensure_vxlan(self, device: str, vni: int, local_ip: str, bridge: str, mtu: int, port: int) -> None:
        self._call("ensure_vxlan", device, vni, local_ip, bridge, mtu, port)
        if bridge not in self.links.get(self.fabric, {}):
            raise TemporaryDriverError(f"bridge {bridge} missing")
        self.links.setdefault(self.fabric, {})[device] = {
            "kind": "vxlan", "vni": vni, "local": local_ip, "port": port or 8472, "learning": False,
            "mtu": mtu, "up": True, "master": bridge, "index": next(self._index)}

    def replace_fdb(self, device: str, entries: Sequence[tuple[str, str]]) -> None:
        self._call("replace_fdb", device, tuple(entries))
        if device not in self.links.get(self.fabric, {}):
            raise TemporaryDriverError(f"{device} missing")
        self.fdb[device] = set(entries)

    def observe_nftables(self) -> tuple[str | None, bool]:
        return self.nftables

    def replace_nftables(self, payload: str, tables_wanted: bool) -> None:
        self._call("replace_nftables", tables_wanted)
        found = re.search(r'comment "(netmeta-sha256:[0-9a-f]+)"', payload)
        self.nftables = (found.group(1) if found else None, tables_wanted)
