"""Several simulated hosts on one machine: the kernel side (tests, demo, bench).

A *simulated host* is what a separate machine looks like to netmeta's agent:

* its own **network namespace** — the host's "root" namespace, pinned in the
  real ``/run/netns`` as ``<prefix><host>`` (so cleanup and ``ip netns exec``
  find it), holding lo and ``eth0``, the host's underlay NIC, with the host's
  underlay address (Neutron's ``local_ip``);
* its own **mount namespace**, in which ``/run/netns`` is a private tmpfs
  and ``/sys`` shows the host's own links: the ``qdhcp-…``, ``qrouter-…`` and
  fabric namespaces the agent makes there are seen by that host only, under
  the same names Neutron uses, exactly as on three real controllers.

The mount namespace lives as long as one *holder* process does (``sleep``,
started here, tracked by pid); every process of the host — agent, metadata,
dnsmasq (through ``ip netns exec`` inside), guests' dhclient — is started
with :meth:`SimHost.argv`, i.e. ``nsenter --target <holder> --mount --net``.

The hosts are joined by an **underlay**: a namespace of its own
(``<prefix>underlay``) with one bridge and a veth to each host's ``eth0``,
like the switch of a rack; its own address on the bridge (``.1``) is where
the API is reachable from every host (see :mod:`netmeta.drivers.relay`).

Nothing here touches the real host's network: every link is created inside
a namespace created here, with the caller's unique prefix. :meth:`SimCloud.destroy`
stops every process living in any of a host's namespaces (found by namespace
inode: only processes started here can be there), the holders, and deletes
the namespaces; it works whatever state things are in and reports problems.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from netmeta.drivers import links, netns, processes
from netmeta.drivers.errors import TemporaryDriverError

# RFC 2544's benchmarking range: never routed, so it cannot mean anything real.
DEFAULT_UNDERLAY = "198.18.0.0/24"
UNDERLAY_BRIDGE = "br-underlay"
HOST_NIC = "eth0"
HOLDER_MARK = "netmeta-simhost"

# Run as the holder: a private /run/netns and a /sys of the host's own links,
# then sleep forever under a recognisable name (stop_pid checks it).
_HOLDER_SCRIPT = (
    "set -e; mount -t tmpfs -o mode=0755 {mark} /run/netns; mount -t sysfs sysfs /sys; "
    "exec -a {mark}-{ns} sleep infinity"
)


@dataclass
class SimHost:
    """One simulated host: its name, namespaces, underlay address and holder."""

    name: str  # the host's name (Neutron's ``host`` option): "host-1", "controller-1"
    namespace: str  # its network namespace in the real /run/netns
    underlay_ip: str  # its address on the underlay (``local_ip``)
    holder_pid: int = 0
    holder: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started: list[tuple[int, str]] = field(default_factory=list)  # pids started inside, by the caller

    @property
    def mark(self) -> str:
        return f"{HOLDER_MARK}-{self.namespace}"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside this host (mount and network namespace)."""
        if not self.holder_pid:
            raise TemporaryDriverError(f"simulated host {self.name} is not running")
        # --wd: entering a mount namespace moves to its root; stay where we are
        # (``python -m netmeta`` imports the tree it is started from).
        return ["nsenter", f"--target={self.holder_pid}", "--mount", "--net", f"--wd={os.getcwd()}", "--", *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
            input: str | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host and wait for it (output captured as text)."""
        done = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=dict(env) if env is not None else None, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def in_namespace(self, namespace: str, argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        """``ip netns exec <namespace> argv`` inside the host (its qdhcp-…, a guest …)."""
        return self.run(["ip", "netns", "exec", namespace, *argv], **kw)  # type: ignore[arg-type]

    def inner_namespaces(self) -> list[str]:
        """The namespaces this host's own ``/run/netns`` holds (seen through the holder)."""
        try:
            return sorted(os.listdir(f"/proc/{self.holder_pid}/root/run/netns"))
        except OSError:
            return []

    def namespace_inodes(self) -> set[int]:
        inodes = set()
        own = netns.namespace_inode(self.namespace)
        if own is not None:
            inodes.add(own)
        for name in self.inner_namespaces():
            try:
                inodes.add(os.stat(f"/proc/{self.holder_pid}/root/run/netns/{name}").st_ino)
            except OSError:
                continue
        return inodes

    def mount_namespace_inode(self) -> int | None:
        try:
            return os.stat(f"/proc/{self.holder_pid}/ns/mnt").st_ino
        except OSError:
            return None

    def pids_inside(self) -> list[int]:
        """Every live process in one of this host's namespaces (network or mount), but the holder."""
        net = self.namespace_inodes()
        mnt = self.mount_namespace_inode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (self.holder_pid, os.getpid()):
                continue
            try:
                inside = os.stat(f"/proc/{entry}/ns/net").st_ino in net or (
                    mnt is not None and os.stat(f"/proc/{entry}/ns/mnt").st_ino == mnt)
            except OSError:
                continue
            if inside and processes.pid_alive(int(entry)):
                found.append(int(entry))
        return sorted(found)


@dataclass
class SimCloud:
    """The underlay namespace and the simulated hosts on it."""

    prefix: str
    underlay: str  # the underlay namespace's name
    gateway_ip: str  # the underlay's own address: where hosts reach shared services (the API)
    prefixlen: int
    hosts: list[SimHost] = field(default_factory=list)

    def host(self, name: str) -> SimHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def destroy(self) -> list[str]:
        """Stop everything inside, remove every namespace; returns the problems (empty: clean)."""
        problems: list[str] = []
        for host in self.hosts:
            problems += _stop_host(host)
        for name in [h.namespace for h in self.hosts] + [self.underlay]:
            try:
                netns.delete_namespace(name)
            except Exception as exc:  # keep cleaning up
                problems.append(f"deleting namespace {name}: {exc}")
        left = [n for n in netns.list_namespaces() if n.startswith(self.prefix)]
        if left:
            problems.append(f"namespaces left behind: {left}")
        return problems


def _stop_host(host: SimHost) -> list[str]:
    problems: list[str] = []
    if not host.holder_pid:
        return problems
    for pid, substr in reversed(host.started):
        try:
            processes.stop_pid(pid, substr, timeout=5.0)
        except Exception as exc:
            problems.append(f"{host.name}: stopping pid {pid}: {exc}")
    for pid in host.pids_inside():
        try:
            processes.stop_pid(pid, None, timeout=3.0)
        except Exception as exc:
            problems.append(f"{host.name}: stopping pid {pid}: {exc}")
    try:
        processes.stop_pid(host.holder_pid, host.mark, timeout=3.0)
    except Exception as exc:
        problems.append(f"{host.name}: stopping its holder {host.holder_pid}: {exc}")
    # Leftovers that outlived the holder (none expected): by network namespace.
    for pid in host.pids_inside():
        problems.append(f"{host.name}: pid {pid} {processes.cmdline(pid)} was left inside")
        try:
            processes.stop_pid(pid, None, timeout=2.0)
        except Exception:
            pass
    if host.holder is not None:
        try:
            host.holder.wait(timeout=5.0)  # reap it (our child)
        except subprocess.TimeoutExpired:
            problems.append(f"{host.name}: its holder {host.holder_pid} did not exit")
    host.holder_pid = 0
    return problems


def create_cloud(prefix: str, host_names: Sequence[str], underlay: str = DEFAULT_UNDERLAY) -> SimCloud:
    """The underlay and one simulated host per name; on any failure everything made is removed."""
    net = ipaddress.ip_network(underlay)
    addresses = list(net.hosts())
    if len(host_names) + 10 > len(addresses):
        raise ValueError(f"underlay {underlay} is too small for {len(host_names)} hosts")
    cloud = SimCloud(prefix, f"{prefix}underlay", str(addresses[0]), net.prefixlen)
    try:
        netns.ensure_namespace(cloud.underlay)
        links.ensure_bridge(cloud.underlay, UNDERLAY_BRIDGE)
        links.ensure_addresses(cloud.underlay, UNDERLAY_BRIDGE, {f"{cloud.gateway_ip}/{net.prefixlen}"})
        for i, name in enumerate(host_names, start=1):
            host = SimHost(name, f"{prefix}{name}"[:64], str(addresses[9 + i]))
            cloud.hosts.append(host)
            _make_host(cloud, host, i)
    except BaseException:
        cloud.destroy()
        raise
    return cloud


def _make_host(cloud: SimCloud, host: SimHost, index: int) -> None:
    netns.ensure_namespace(host.namespace)
    # The host's NIC: a veth whose far end is a port of the underlay bridge.
    links.ensure_veth_into(host.namespace, HOST_NIC, cloud.underlay, f"u{index}-{cloud.prefix}"[:15],
                           UNDERLAY_BRIDGE, _mac(index))
    links.ensure_addresses(host.namespace, HOST_NIC, {f"{host.underlay_ip}/{cloud.prefixlen}"})
    script = _HOLDER_SCRIPT.format(mark=HOLDER_MARK, ns=host.namespace)
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns.namespace_path(host.namespace)}", "unshare", "--mount", "--propagation",
         "private", "bash", "-c", script],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    host.holder_pid, host.holder = proc.pid, proc
    deadline = time.monotonic() + 10.0
    while not _holder_ready(host):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise TemporaryDriverError(f"simulated host {host.name} did not start: {err}")
        if time.monotonic() > deadline:
            raise TemporaryDriverError(f"simulated host {host.name} did not start in 10 s")
        time.sleep(0.01)
    if proc.stderr:
        proc.stderr.close()


def _holder_ready(host: SimHost) -> bool:
    # Ready once it runs as the marked sleep (after both mounts) in a mount ns of its own.
    return processes.matches(host.holder_pid, host.mark) and host.mount_namespace_inode() != os.stat(
        "/proc/self/ns/mnt").st_ino


def _mac(index: int) -> str:
    # Locally administered, unique per host within one cloud.
    return f"02:5e:00:00:{index // 256:02x}:{index % 256:02x}"
