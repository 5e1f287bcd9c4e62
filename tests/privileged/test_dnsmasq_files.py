"""dnsmasq's files live where its unprivileged user can always read them.

dnsmasq drops to ``nobody`` and re-reads its hosts and opts files on SIGHUP
as that user. With the files under the state directory, a state directory
below one closed to others (root's home, any mkdtemp directory) silently
stopped DHCP for every port created after dnsmasq started. They now live
under ``/run/netmeta/<id>/dhcp`` (``Config.dhcp_dir``), ``<state_dir>/dhcp``
is a link there, and an older agent's layout is moved at start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netmeta.cli.preflight import DNSMASQ_USER
from netmeta.drivers import dnsmasq, processes
from tests.privileged.conftest import NamespaceScope
from tests.privileged.stack import make_stack

pytestmark = pytest.mark.privileged

NETMETA = str(Path(sys.executable).parent / "netmeta")


def as_dnsmasq_user(*argv: str) -> subprocess.CompletedProcess[str]:
    account = pwd.getpwnam(DNSMASQ_USER)
    return subprocess.run(["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=10)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError(f"no Uid line for {pid}")


def test_dhcp_keeps_answering_new_ports_below_a_closed_directory() -> None:
    closed = tempfile.mkdtemp(prefix="nmtclosed-")  # 0700: the failure
    try:
        assert stat.S_IMODE(os.stat(closed).st_mode) == 0o700
        for stack in make_stack(state_dir=os.path.join(closed, "state"), enable_isolated_metadata=True):
            paths = stack.config.paths
            net, _ = stack.network("closed", "10.83.0.0/24")
            first = stack.boot("first", net["id"])
            pid = stack.dnsmasq_pid(net["id"])
            assert pid is not None and uid_of(pid) == pwd.getpwnam(DNSMASQ_USER).pw_uid, "dnsmasq is not unprivileged"
            # The old place is out of dnsmasq's user's reach; the new one is not.
            assert as_dnsmasq_user("ls", stack.config.state_dir).returncode != 0
            host_file = paths.dhcp_file(net["id"], "host")
            assert as_dnsmasq_user("cat", host_file).returncode == 0
            assert os.path.realpath(paths.dhcp_link) == paths.dhcp_root

            # A port made after dnsmasq started: dnsmasq re-reads its files (SIGHUP, same pid) as nobody.
            second = stack.boot("second", net["id"])
            assert second.ip and second.ip != first.ip
            assert stack.dnsmasq_pid(net["id"]) == pid
            assert second.mac in Path(paths.dhcp_file(net["id"], "leases")).read_text()
            # And it renews: dnsmasq finds the host again after yet another re-read.
            third = stack.boot("third", net["id"])
            renewed = stack.guests.renew(second.name)
            assert renewed.ip == second.ip and third.ip not in (first.ip, second.ip)
            assert stack.dnsmasq_pid(net["id"]) == pid

            # Modes: dnsmasq's user reads only its own files.
            for directory in (os.path.dirname(paths.dhcp_root), paths.dhcp_root, paths.dhcp_dir(net["id"])):
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755, directory
            for name in ("host", "opts", "addn_hosts"):
                assert stat.S_IMODE(os.stat(paths.dhcp_file(net["id"], name)).st_mode) == 0o644, name
            assert os.listdir(os.path.dirname(paths.dhcp_root)) == ["dhcp"]
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def test_an_older_agents_dnsmasq_is_moved(netns_scope: NamespaceScope) -> None:
    """``<state_dir>/dhcp/<net>`` with a running dnsmasq: stopped, leases carried over, link made."""
    ns = netns_scope.namespace("old")
    link = netns_scope.path("state", "dhcp")
    old = os.path.join(link, "net-old")
    os.makedirs(old)
    leases = "1700000000 fa:16:3e:00:00:05 10.0.0.5 host-10-0-0-5 *\n"
    Path(old, "leases").write_text(leases)
    pid_file = os.path.join(old, "pid")
    argv = ["dnsmasq", "--no-hosts", "--no-resolv", "--port=0", "--conf-file=/dev/null",
            f"--pid-file={pid_file}", f"--dhcp-leasefile={old}/leases"]
    pid = netns_scope.track(dnsmasq.start(ns, argv, pid_file), pid_file)
    root = netns_scope.path("run", "abc", "dhcp")

    assert dnsmasq.adopt_layout(link, root) == ["net-old"]
    assert not processes.pid_alive(pid)
    assert os.path.islink(link) and os.readlink(link) == root  # the old directory is gone
    assert Path(root, "net-old", "leases").read_text() == leases
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    # A second start finds nothing to move and keeps the link.
    assert dnsmasq.adopt_layout(link, root) == []
    assert os.readlink(link) == root


def test_agent_refuses_when_dnsmasq_could_not_reach_its_files() -> None:
    """A closed directory on the way to /run/netmeta: the agent says so before starting anything."""
    state = tempfile.mkdtemp(prefix="nmtreach-")
    try:
        # A private mount namespace: /run closed to others there only.
        script = (f"mount -t tmpfs -o mode=0700,size=1m tmpfs /run && exec {NETMETA} agent --state-dir {state} "
                  "--fabric-namespace nmtreach-fabric --agent-metrics-bind 127.0.0.1:0")
        agent = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert agent.returncode == 1, agent.stderr
        lines = [line for line in agent.stderr.splitlines() if line.strip()]
        assert "Traceback" not in agent.stderr and len(lines) == 1, agent.stderr
        assert f"dnsmasq runs as {DNSMASQ_USER} and could not reach its files" in lines[0], lines[0]
        assert "/run is mode 0700" in lines[0], lines[0]
        assert not os.path.exists("/run/netns/nmtreach-fabric")
    finally:
        shutil.rmtree(state, ignore_errors=True)
