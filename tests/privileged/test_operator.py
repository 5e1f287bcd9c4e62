"""What an operator meets when the host is not as netmeta left it: each failure as a subprocess.

Every test asserts the exit status, a one-line message without a traceback,
and that nothing is left behind (namespaces, dnsmasq, dhclient).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from netmeta.cli.commands import teardown
from netmeta.config import Config
from netmeta.drivers import processes
from tests.privileged.stack import Stack, free_port, make_stack, wait_until

pytestmark = pytest.mark.privileged

NETMETA = str(Path(sys.executable).parent / "netmeta")


def run(*argv: str, timeout: float = 90, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    # Unprivileged: every capability dropped (setpriv), so the kernel refuses
    # namespaces exactly as for another user. (A real other uid cannot run
    # this venv's interpreter, which lives under /root.)
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"] if unprivileged else []
    return subprocess.run([*prefix, NETMETA, *argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The command's error: one line on stderr, no traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def leftovers(config: Config, namespaces: set[str]) -> list[str]:
    left = [ns for ns in namespaces if os.path.exists(f"/run/netns/{ns}")]
    for root in (config.state_dir + os.sep, config.dhcp_dir):
        left += [f"dnsmasq {p}" for p in processes.pids_mentioning("dnsmasq", root)]
        left += [f"dhclient {p}" for p in processes.pids_mentioning("dhclient", root)]
    return left


@pytest.fixture
def place() -> Iterator[tuple[Config, list[str]]]:
    """A state directory and flags for commands run as subprocesses; always torn down."""
    tag = secrets.token_hex(4)
    state = tempfile.mkdtemp(prefix=f"nmt{tag}-op-")
    config = Config(state_dir=state, bind=f"127.0.0.1:{free_port()}", fabric_namespace=f"nmt{tag}-fabric",
                    server_metrics_bind="127.0.0.1:0", agent_metrics_bind="127.0.0.1:0",
                    metadata_metrics_bind="127.0.0.1:0")
    ini = os.path.join(state, "netmeta.ini")
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write("[DEFAULT]\nenable_isolated_metadata = true\n"
                     "server_metrics_bind = 127.0.0.1:0\nagent_metrics_bind = 127.0.0.1:0\n"
                     "metadata_metrics_bind = 127.0.0.1:0\n")
    flags = ["--config", ini, "--state-dir", state, "--fabric-namespace", config.fabric_namespace]
    try:
        yield config, flags
    finally:
        teardown(config, purge=True)
        shutil.rmtree(state, ignore_errors=True)


def _stack_with_a_guest() -> Iterator[tuple[Stack, set[str]]]:
    for stack in make_stack(enable_isolated_metadata=True):
        net, _ = stack.network("op-net", "10.96.0.0/24", gateway=False)
        guest = stack.boot("op1", net["id"])
        stack.converged()
        yield stack, {guest.namespace, f"qdhcp-{net['id']}", stack.config.fabric_namespace}


def test_down_after_the_fabric_was_deleted_by_hand() -> None:
    gen = _stack_with_a_guest()
    stack, namespaces = next(gen)
    config = stack.config
    try:
        from netmeta.drivers.supervise import stop_all

        stop_all(stack.components)
        subprocess.run(["ip", "netns", "delete", config.fabric_namespace], check=True)
        flags = ["--state-dir", config.state_dir, "--fabric-namespace", config.fabric_namespace]
        down = run("down", *flags)
        assert down.returncode == 0, down.stderr
        assert "Traceback" not in down.stderr and not down.stderr.strip(), down.stderr
        assert "removed guest op1" in down.stdout
        assert not leftovers(config, namespaces), leftovers(config, namespaces)
        again = run("down", *flags)  # idempotent
        assert again.returncode == 0 and "nothing to remove" in again.stdout, again.stdout + again.stderr
    finally:
        gen.close()


def test_down_says_what_it_could_not_remove_and_why(tmp_path: Path) -> None:
    # A guest record that names a namespace `down` cannot delete: its record
    # directory is not removable (the parent is immutable to this user).
    gen = _stack_with_a_guest()
    stack, namespaces = next(gen)
    config = stack.config
    try:
        from netmeta.drivers.supervise import stop_all

        stop_all(stack.components)
        # Everything under vms/ read-only in a private mount namespace: the
        # namespaces and processes still go, the files cannot, and `down` says so.
        vms = os.path.join(config.state_dir, "vms")
        script = (f"mount --bind {vms} {vms} && mount -o remount,bind,ro {vms} && "
                  f"exec {NETMETA} down --state-dir {config.state_dir} --fabric-namespace {config.fabric_namespace}")
        down = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=90)
        assert down.returncode == 1, down.stdout + down.stderr
        assert "Traceback" not in down.stderr
        problems = [line for line in down.stderr.splitlines() if line.strip()]
        assert problems and all(line.startswith("netmeta down: could not remove") for line in problems), problems
        assert any("read-only file system" in line.lower() for line in problems), problems
        assert not [n for n in leftovers(config, namespaces) if not n.startswith("vm-")], leftovers(config, namespaces)
    finally:
        gen.close()


def test_up_with_a_read_only_state_directory(place: tuple[Config, list[str]]) -> None:
    config, flags = place
    state = config.state_dir
    script = (f"mount -t tmpfs -o ro,size=1m tmpfs {state} && "
              f"exec {NETMETA} up --bind {config.bind} --state-dir {state} --fabric-namespace {config.fabric_namespace}"
              " --server-metrics-bind 127.0.0.1:0 --agent-metrics-bind 127.0.0.1:0 --metadata-metrics-bind 127.0.0.1:0")
    up = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 1
    line = one_line_error(up)
    assert line.startswith("netmeta up:") and "not writable: read-only file system" in line, line
    assert not os.path.exists(f"/run/netns/{config.fabric_namespace}")


def test_up_with_the_api_port_in_use(place: tuple[Config, list[str]]) -> None:
    config, flags = place
    host, port = config.bind.split(":")
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        up = run("up", "--bind", config.bind, *flags, timeout=60)
    assert up.returncode == 1
    line = one_line_error(up)
    assert f"server: cannot listen on {config.bind} for its API: address already in use" in line, line
    assert "netmeta is up" not in up.stdout
    assert not os.path.exists(f"/run/netns/{config.fabric_namespace}")


def test_a_second_up_on_the_same_state_directory_is_refused(place: tuple[Config, list[str]]) -> None:
    config, flags = place
    first = subprocess.Popen([NETMETA, "up", "--bind", config.bind, *flags], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        banner = first.stdout.readline()
        assert "netmeta is up" in banner, banner + (first.stderr.read() if first.poll() is not None else "")
        where = first.stdout.readline()
        assert "metrics" in where and "server http://127.0.0.1:" in where, where
        second = run("up", "--bind", f"127.0.0.1:{free_port()}", *flags, timeout=60)
        assert second.returncode == 1
        line = one_line_error(second)
        assert f"another netmeta up (pid {first.pid}) already runs on {config.state_dir}" in line, line
        assert first.poll() is None  # the first one is untouched
        status = run("status", "--json", "--bind", config.bind, "--state-dir", config.state_dir)
        report = json.loads(status.stdout)
        assert {name: c["health"] for name, c in report["components"].items()} == \
            {"server": "ok", "agent": "ok", "metadata": "ok"}, report["components"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_up_without_privileges_says_it_needs_root(place: tuple[Config, list[str]]) -> None:
    config, flags = place
    started = time.monotonic()
    up = run("up", "--bind", config.bind, *flags, unprivileged=True, timeout=60)
    assert up.returncode == 1
    line = one_line_error(up)
    assert "agent: needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN)" in line, line
    assert time.monotonic() - started < 30  # refused at once, not retried forever
    assert not os.path.exists(f"/run/netns/{config.fabric_namespace}")
    assert not os.path.exists(os.path.join(config.state_dir, "server", "status.json"))  # nothing was started
    # and the agent alone says the same, once, instead of retrying forever
    agent = run("agent", "--bind", config.bind, *flags, unprivileged=True, timeout=60)
    assert agent.returncode == 1 and "agent: needs root" in one_line_error(agent)


def _vm_flags(stack: Stack) -> list[str]:
    return ["--state-dir", stack.config.state_dir, "--bind", stack.config.bind,
            "--fabric-namespace", stack.config.fabric_namespace]


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from make_stack(enable_isolated_metadata=True)


def test_vm_boot_on_a_network_without_dhcp(stack: Stack) -> None:
    net, _ = stack.network("no-dhcp", "10.96.5.0/24", enable_dhcp=False)
    boot = run("vm", "boot", "nodhcp1", "--network", "no-dhcp", "--timeout", "10", *_vm_flags(stack))
    assert boot.returncode == 1
    line = one_line_error(boot)
    assert "network no-dhcp has no IPv4 subnet with DHCP enabled: a guest would get no lease" in line, line
    assert stack.client.get("/netmeta/v1/instances")["instances"] == []
    assert not [p for p in stack.client.get("/v2.0/ports")["ports"] if p["device_owner"].startswith("compute")]
    assert not os.path.exists(os.path.join(stack.config.state_dir, "vms", "nodhcp1"))


def test_vm_boot_survives_a_server_kill(stack: Stack) -> None:
    """Boots run while the API server is killed and restarted: each ends up
    booted or failed with one line, and no instance, port or namespace is orphaned."""
    net, _ = stack.network("restarts", "10.96.6.0/24", gateway=False)
    stack.converged()
    flags = _vm_flags(stack)
    names = [f"rs{i}" for i in range(6)]
    boots = {name: subprocess.Popen([NETMETA, "vm", "boot", name, "--network", net["id"], *flags],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names}
    server = stack.components[0]
    try:
        time.sleep(0.5)
        assert server.process is not None
        server.process.kill()  # SIGKILL: requests in flight break mid-way
        server.process.wait(10)
        time.sleep(1.0)
        server.start()
        results = {name: proc.communicate(timeout=120) for name, proc in boots.items()}
    finally:
        for proc in boots.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    wait_until(lambda: _answers(stack), "the restarted API")
    booted = set()
    for name, (out, err) in results.items():
        code = boots[name].returncode
        assert "Traceback" not in err, err
        if code == 0:
            booted.add(name)
        else:
            assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert len(booted) >= 4, results  # the restart is waited out, not failed
    records = {g.name: g for g in stack.guests.list_all()}
    for guest in records.values():
        stack.namespaces_seen.add(guest.namespace)
    assert set(records) == booted
    instances = stack.client.get("/netmeta/v1/instances")["instances"]
    assert sorted(i["name"] for i in instances) == sorted(booted), "an instance without a guest is an orphan"
    compute = [p for p in stack.client.get("/v2.0/ports")["ports"] if p["device_owner"].startswith("compute")]
    assert sorted(p["device_id"] for p in compute) == sorted(i["id"] for i in instances)
    vm_namespaces = [ns for ns in os.listdir("/run/netns") if any(ns.startswith(f"vm-{n}-") for n in names)]
    assert sorted(vm_namespaces) == sorted(g.namespace for g in records.values())


def _answers(stack: Stack) -> bool:
    try:
        stack.client.get("/")
        return True
    except Exception:  # noqa: BLE001 - not yet
        return False
