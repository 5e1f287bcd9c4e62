"""Fixtures for tests that build real namespaces, links and processes.

Everything a privileged test creates must carry a unique prefix and be gone
afterwards, also when the test fails half-way. :func:`netns_scope` gives
each test a :class:`NamespaceScope`: a fresh ``nmt<8 hex>-`` prefix, a
world-readable scratch directory (dnsmasq reads its files as ``nobody``,
and pytest's ``tmp_path`` is 0700), and a register of pids the test
started. At teardown, in this order:

1. every registered pid is stopped (SIGTERM, then SIGKILL) by pid, after
   checking it still runs the command it was registered with;
2. any process still living *inside* one of the scope's namespaces is
   stopped too — only processes we started can be there;
3. every namespace whose name starts with the prefix is deleted;
4. the scratch directory is removed, and the fixture asserts that no
   namespace with the prefix is left.

:func:`host_files_untouched` asserts the host's ``/etc/resolv.conf`` and
``/var/lib/dhcp`` are byte-identical afterwards (guests run dhclient).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from netmeta.drivers import netns, processes


@dataclass
class NamespaceScope:
    """Names, scratch space and started pids of one test, cleaned up together."""

    prefix: str
    workdir: str
    pids: list[tuple[int, str]] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        """A namespace (or file) name inside this scope."""
        return f"{self.prefix}{suffix}"

    def namespace(self, suffix: str) -> str:
        """Create the namespace ``<prefix><suffix>`` (lo up) and return its name."""
        name = self.name(suffix)
        netns.ensure_namespace(name)
        return name

    def path(self, *parts: str) -> str:
        """A path in the scope's 0755 scratch directory (dirs are created 0755)."""
        path = os.path.join(self.workdir, *parts)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return path

    def track(self, pid: int, cmdline_substr: str) -> int:
        """Register a started pid; teardown stops it if it still runs that command."""
        self.pids.append((pid, cmdline_substr))
        return pid

    def namespaces(self) -> list[str]:
        return [n for n in netns.list_namespaces() if n.startswith(self.prefix)]

    def pids_inside(self) -> list[int]:
        """Pids whose network namespace is one of ours (by inode)."""
        inodes = {netns.namespace_inode(n) for n in self.namespaces()} - {None}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    found.append(int(entry))
            except OSError:
                continue
        return [p for p in found if processes.pid_alive(p)]

    def cleanup(self) -> list[str]:
        """Stop, delete, remove; returns a list of problems (empty = clean)."""
        problems: list[str] = []
        for pid, substr in reversed(self.pids):
            try:
                processes.stop_pid(pid, substr, timeout=5.0)
            except Exception as exc:  # keep cleaning up
                problems.append(f"stopping pid {pid}: {exc}")
        for pid in self.pids_inside():
            problems.append(f"pid {pid} {processes.cmdline(pid)} was left in a test namespace")
            try:
                processes.stop_pid(pid, None, timeout=2.0)
            except Exception as exc:
                problems.append(f"stopping pid {pid}: {exc}")
        for name in self.namespaces():
            try:
                netns.delete_namespace(name)
            except Exception as exc:
                problems.append(f"deleting namespace {name}: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        left = self.namespaces()
        if left:
            problems.append(f"namespaces left behind: {left}")
        return problems


@pytest.fixture
def netns_scope() -> Iterator[NamespaceScope]:
    """A unique prefix, scratch dir and pid register; everything removed after."""
    prefix = f"nmt{uuid.uuid4().hex[:8]}-"
    workdir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(workdir, 0o755)  # dnsmasq (as nobody) must traverse it
    scope = NamespaceScope(prefix=prefix, workdir=workdir)
    try:
        yield scope
    finally:
        problems = scope.cleanup()
    assert not problems, "cleanup problems:\n" + "\n".join(problems)


@pytest.fixture
def netns_prefix(netns_scope: NamespaceScope) -> str:
    """Just the unique ``nmt<8 hex>-`` prefix of :func:`netns_scope`."""
    return netns_scope.prefix


def _digest_tree(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return {path: hashlib.sha256(handle.read()).hexdigest()}
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                with open(full, "rb") as handle:
                    out[full] = hashlib.sha256(handle.read()).hexdigest()
            except OSError:
                out[full] = "unreadable"
    return out


HOST_FILES = ("/etc/resolv.conf", "/var/lib/dhcp")


@pytest.fixture
def host_files_untouched() -> Iterator[None]:
    """Fail if a guest's DHCP client changed the host's resolv.conf or leases."""
    before = {p: _digest_tree(p) for p in HOST_FILES if os.path.exists(p)}
    yield
    after = {p: _digest_tree(p) for p in HOST_FILES if os.path.exists(p)}
    assert after == before, "host DHCP/DNS files changed"
