"""A whole netmeta on this host, for one test: server, agent, metadata, guests.

Every stack has its own state directory, its own fabric namespace (unique
prefix), and its API on a free loopback port. Teardown stops the three
components, runs the same cleanup as ``netmeta down --purge`` and then checks
that nothing the stack created is left: no namespace, no dnsmasq, no dhclient.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from netmeta.agent.service import read_status
from netmeta.cli.commands import start_stack, teardown_host
from netmeta.client import Client
from netmeta.config import Config
from netmeta.drivers.supervise import Component, stop_all
from netmeta.vm.guests import Guest, Guests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def in_ns(ns: str, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


@dataclass
class Stack:
    config: Config
    components: list[Component]
    client: Client
    guests: Guests
    namespaces_seen: set[str] = field(default_factory=set)

    @property
    def agent(self) -> Component:
        return self.components[1]

    @property
    def metadata(self) -> Component:
        return self.components[2]

    # --- API helpers ------------------------------------------------------
    # ``client`` is the bootstrap admin (auth_strategy = keystone, the default);
    # the agent and metadata process log in as the service user themselves.
    def openstack_env(self, cloud: str = "netmeta") -> dict[str, str]:
        """Environment for the real ``openstack`` CLI: the stack's own clouds.yaml."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(PYTHONWARNINGS="ignore", OS_CLOUD=cloud,
                   OS_CLIENT_CONFIG_FILE=os.path.join(self.config.state_dir, "clouds.yaml"))
        return env

    def network(self, name: str, cidr: str, *, gateway: bool = True, **subnet: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        net = self.client.request("POST", "/v2.0/networks", {"network": {"name": name}})["network"]
        body: dict[str, Any] = {"name": name, "network_id": net["id"], "ip_version": 4, "cidr": cidr, **subnet}
        if not gateway:
            body["gateway_ip"] = None
        sub = self.client.request("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
        return net, sub

    def router(self, name: str, *subnets: dict[str, Any]) -> dict[str, Any]:
        router = self.client.request("POST", "/v2.0/routers", {"router": {"name": name}})["router"]
        for sub in subnets:
            self.client.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
        return router

    def dhcp_port(self, net_id: str) -> dict[str, Any]:
        ports = self.client.get("/v2.0/ports", network_id=net_id, device_owner="network:dhcp")["ports"]
        assert len(ports) == 1, ports
        return ports[0]  # type: ignore[no-any-return]

    def boot(self, name: str, net_id: str, **kw: Any) -> Guest:
        guest = self.guests.boot(name, net_id, **kw)
        self.namespaces_seen.add(guest.namespace)
        return guest

    # --- host observations ------------------------------------------------
    def files_dir(self, net_id: str) -> str:
        return self.config.paths.dhcp_dir(net_id)

    def opts(self, net_id: str) -> list[str]:
        try:
            with open(self.config.paths.dhcp_file(net_id, "opts"), encoding="utf-8") as handle:
                return handle.read().splitlines()
        except FileNotFoundError:
            return []

    def dnsmasq_pid(self, net_id: str) -> int | None:
        from netmeta.drivers import processes

        return processes.running_pid(self.config.paths.dhcp_file(net_id, "pid"), net_id)

    def converged(self, revision: int | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the agent has applied the server's current revision."""
        target = self.client.state()["revision"] if revision is None else revision
        return wait_until(
            lambda: (s := read_status(self.config.state_dir)) and int(s["revision"]) >= target and s,  # type: ignore[arg-type]
            f"the agent to converge on revision {target}",
            timeout=timeout,
        )

    def agent_pass(self, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the first pass of the agent now running (after a start or restart)."""
        pid = self.agent.pid
        return wait_until(  # type: ignore[no-any-return]
            lambda: (s := read_status(self.config.state_dir)) and s.get("pid") == pid and s,
            f"the first pass of agent {pid}",
            timeout=timeout,
        )

    def routes(self, guest: Guest) -> list[dict[str, Any]]:
        out = in_ns(guest.namespace, "ip", "-j", "-4", "route")
        return json.loads(out.stdout or "[]")  # type: ignore[no-any-return]

    def curl(self, guest: Guest, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return in_ns(guest.namespace, "curl", "-s", "--max-time", "3", *extra, f"http://169.254.169.254{path}")

    def fetch(self, guest: Guest, path: str) -> str:
        def answered() -> str | None:
            out = self.curl(guest, path, "-f")
            return out.stdout if out.returncode == 0 else None

        return str(wait_until(answered, f"{path} from {guest.name}"))


def _config_file(state_dir: str, overrides: dict[str, Any]) -> str | None:
    """Write ``overrides`` as the INI file every child component reads.

    Only a few settings have command-line flags; without the file, overrides
    such as ``rate_limiting`` or ``metadata_proxy_shared_secret`` would reach
    this test's :class:`Config` but silently not the metadata process.
    """
    if not overrides:
        return None

    def ini(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return " ".join(str(v) for v in value)
        return str(value)

    lines = ["[DEFAULT]"]
    lines += [f"{key} = {ini(value)}" for key, value in overrides.items() if key != "rate_limiting"]
    if "rate_limiting" in overrides:
        lines.append("[metadata_rate_limiting]")
        lines += [f"{key} = {ini(value)}" for key, value in vars(overrides["rate_limiting"]).items()]
    path = os.path.join(state_dir, "netmeta.ini")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def make_stack(state_dir: str = "", **overrides: Any) -> Iterator[Stack]:
    """A stack on ``state_dir`` (default: a fresh mkdtemp directory); ``overrides`` go to its Config."""
    tag = secrets.token_hex(4)
    if state_dir:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
    else:
        state_dir = tempfile.mkdtemp(prefix=f"nmt{tag}-")  # 0700, as netmeta makes it
    # Metrics on any free port (published in each status file): the fixed
    # defaults would collide with any other netmeta on this host.
    metrics_binds = {f"{c}_metrics_bind": "127.0.0.1:0" for c in ("server", "agent", "metadata")}
    config = Config(
        state_dir=state_dir,
        bind=overrides.pop("bind", None) or f"127.0.0.1:{free_port()}",
        fabric_namespace=f"nmt{tag}-fabric",
        **{**metrics_binds, **overrides},
    )
    args = argparse.Namespace(
        config=_config_file(state_dir, overrides), state_dir=config.state_dir, bind=config.bind, db=None,
        dhcp_lease_duration=None, metadata_port=None, fabric_namespace=config.fabric_namespace,
        imds_tokens=config.imds_tokens if "imds_tokens" in overrides else None,
        enable_isolated_metadata=config.enable_isolated_metadata,
        force_metadata=config.force_metadata,
        server_metrics_bind=config.server_metrics_bind, agent_metrics_bind=config.agent_metrics_bind,
        metadata_metrics_bind=config.metadata_metrics_bind,
    )
    components: list[Component] = []
    stack: Stack | None = None
    try:
        components = start_stack(args, config)
        stack = Stack(config, components, Client.for_config(config, admin=True), Guests(config))
        yield stack
    finally:
        stop_all(components)
        from netmeta.agent.ledger import Ledger

        owned = Ledger.load(state_dir).namespaces if os.path.isdir(state_dir) else set()
        logs = os.path.join(state_dir, "log")
        if os.environ.get("NETMETA_KEEP_LOGS") and os.path.isdir(logs):
            shutil.copytree(logs, os.path.join(os.environ["NETMETA_KEEP_LOGS"], os.path.basename(state_dir)))
        teardown_host(config, purge=True)
        left = [ns for ns in owned | (stack.namespaces_seen if stack else set()) if os.path.exists(f"/run/netns/{ns}")]
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"namespaces left behind: {left}"
        assert not os.path.exists(os.path.dirname(config.paths.dhcp_root)), "dnsmasq's runtime directory left behind"
        assert not os.path.exists(f"/run/netns/{config.fabric_namespace}")
