"""netmeta on several simulated hosts of this machine (tests, ``demo --hosts``, bench).

One API server runs on the real host's loopback, as ``netmeta up`` runs it;
every simulated host (:mod:`netmeta.drivers.simhosts`: its own mount and
network namespace, an underlay NIC with its ``local_ip``) runs its own agent
and metadata process, each with its own state directory and settings file,
started inside the host (``nsenter``). The hosts reach the API at the
underlay's own address through :mod:`netmeta.drivers.relay` — the way real
controllers reach theirs over the management network — and log in as the
service user with a ``clouds.yaml`` naming that address.

Layout under ``base``::

    server/            the server's state directory (store, identity, clouds.yaml)
    <host>/            one per host: netmeta.ini, clouds.yaml, agent/, dhcp/, log/ …

:func:`start` returns a :class:`MultiHost`; :meth:`MultiHost.close` stops
everything by pid, runs ``netmeta down --purge`` inside each host, removes
every namespace and reports what it could not remove.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from netmeta.config import Config, RateLimitConfig
from netmeta.drivers.simhosts import SimCloud, SimHost, create_cloud
from netmeta.drivers.supervise import Component

# Per-host processes kept small: three hosts share two cores.
HOST_DEFAULTS: dict[str, Any] = {"metadata_workers": 1}
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ini_text(settings: Mapping[str, Any]) -> str:
    """Settings as the INI file every component reads (``[metadata_rate_limiting]`` apart)."""

    def ini(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return " ".join(str(v) for v in value)
        return str(value)

    known = {f.name for f in fields(Config)}
    lines = ["[DEFAULT]"]
    lines += [f"{k} = {ini(v)}" for k, v in settings.items() if k in known and k != "rate_limiting"]
    rate = settings.get("rate_limiting")
    if isinstance(rate, RateLimitConfig):
        lines.append("[metadata_rate_limiting]")
        lines += [f"{k} = {ini(v)}" for k, v in vars(rate).items()]
    return "\n".join(lines) + "\n"


def _write(path: str, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


@dataclass
class HostStack:
    """One simulated host's netmeta: its settings, state directory and processes."""

    sim: SimHost
    config: Config
    ini: str
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.sim.name

    def netmeta_argv(self, *argv: str) -> list[str]:
        return self.sim.argv([sys.executable, "-m", "netmeta", *argv])

    def netmeta(self, *argv: str, timeout: float = 60.0) -> Any:
        """Run ``netmeta <argv> --config <this host's ini>`` inside the host (CompletedProcess)."""
        return self.sim.run([sys.executable, "-m", "netmeta", *argv, "--config", self.ini], timeout=timeout)

    def component(self, name: str) -> Component:
        log_dir = self.config.paths.log_dir
        os.makedirs(log_dir, exist_ok=True)
        return Component(name, [name, "--config", self.ini, "--no-log-console"],
                         os.path.join(log_dir, f"{name}.out"), wrapper=tuple(self.sim.argv([])))

    def start(self, name: str) -> Component:
        component = self.components.get(name) or self.component(name)
        self.components[name] = component
        component.start()
        _wait_ready(self.config, component)
        return component

    def stop(self, name: str) -> None:
        component = self.components.get(name)
        if component is not None:
            component.stop()

    def status(self, name: str = "agent") -> dict[str, Any]:
        from netmeta.cli.commands import component_status

        return component_status(self.config, name) or {}

    def boot(self, name: str, network_id: str, *, timeout: float = 60.0) -> dict[str, str]:
        """``netmeta vm boot`` inside this host: a guest here, with a lease; its name, ip, instance, namespace."""
        done = self.netmeta("vm", "boot", name, "--network", network_id, timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"vm boot {name} on {self.name}: {done.stderr.strip() or done.stdout.strip()}")
        words = done.stdout.split()
        fields_ = dict(zip(words[1::2], words[2::2]))
        return {"name": words[0], **fields_}

    def in_namespace(self, namespace: str, *argv: str, timeout: float = 30.0) -> Any:
        return self.sim.in_namespace(namespace, list(argv), timeout=timeout)


@dataclass
class MultiHost:
    base: str
    cloud: SimCloud
    config: Config  # the server's (on this machine's loopback)
    server: Component | None = None
    relay: Component | None = None
    hosts: list[HostStack] = field(default_factory=list)

    def host(self, name: str) -> HostStack:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def openstack_env(self, cloud: str = "netmeta") -> dict[str, str]:
        """Environment for the real ``openstack`` CLI on this machine: the server's clouds.yaml (admin)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(PYTHONWARNINGS="ignore", OS_CLOUD=cloud,
                   OS_CLIENT_CONFIG_FILE=os.path.join(self.config.state_dir, "clouds.yaml"))
        return env

    def close(self, *, keep_logs: str | None = None) -> list[str]:
        """Stop and remove everything; the problems (empty: all gone)."""
        problems: list[str] = []
        for host in self.hosts:
            for component in reversed(list(host.components.values())):
                try:
                    component.stop()
                except Exception as exc:  # keep cleaning up
                    problems.append(f"{host.name}: stopping {component.name}: {exc}")
        if keep_logs:
            for host in self.hosts:
                if os.path.isdir(host.config.paths.log_dir):
                    shutil.copytree(host.config.paths.log_dir, os.path.join(keep_logs, host.name), dirs_exist_ok=True)
        for host in self.hosts:
            if host.sim.holder_pid:
                try:
                    done = host.netmeta("down", "--purge", timeout=60.0)
                    if done.returncode != 0:
                        problems.append(f"{host.name}: netmeta down: {done.stderr.strip()}")
                except Exception as exc:
                    problems.append(f"{host.name}: netmeta down: {exc}")
        problems += self.cloud.destroy()
        for service in (self.relay, self.server):
            if service is not None:
                service.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        return problems


def start(
    base: str,
    prefix: str,
    host_names: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    *,
    host_settings: Mapping[str, Mapping[str, Any]] | None = None,
    components: Sequence[str] = ("agent", "metadata"),
) -> MultiHost:
    """The server, the underlay, and each host with its components; all removed on failure."""
    settings = dict(settings or {})
    port = free_port()
    metrics = {f"{c}_metrics_bind": "127.0.0.1:0" for c in ("server", "agent", "metadata")}
    server_dir = os.path.join(base, "server")
    os.makedirs(server_dir, mode=0o700, exist_ok=True)  # a state directory: 0700 (the server checks)
    server_settings = {**metrics, **settings, "state_dir": server_dir, "bind": f"127.0.0.1:{port}",
                       "fabric_namespace": f"{prefix}fabric"}
    config = Config(**{k: v for k, v in server_settings.items() if k in {f.name for f in fields(Config)}})
    cloud = create_cloud(prefix, host_names)
    multi = MultiHost(base, cloud, config)
    try:
        server_ini = os.path.join(server_dir, "netmeta.ini")
        _write(server_ini, ini_text(server_settings))
        multi.server = Component("server", ["server", "--config", server_ini, "--no-log-console"],
                                 os.path.join(server_dir, "server.out"))
        multi.server.start()
        _wait_ready(config, multi.server)
        api = f"{cloud.gateway_ip}:{port}"
        multi.relay = Component("relay", [cloud.underlay, api, f"127.0.0.1:{port}"],
                                os.path.join(server_dir, "relay.out"), module="netmeta.drivers.relay")
        multi.relay.start()
        _wait_printed(multi.relay, "ready")
        known = {f.name for f in fields(Config)}
        for sim in cloud.hosts:
            host_dir = os.path.join(base, sim.name)
            os.makedirs(host_dir, mode=0o700, exist_ok=True)
            per_host: dict[str, Any] = {**metrics, **HOST_DEFAULTS, **settings, "state_dir": host_dir, "bind": api,
                                        "fabric_namespace": f"{prefix}fabric"}
            # Neutron's names for "which host am I" and "my underlay address".
            for key, value in (("host", sim.name), ("local_ip", sim.underlay_ip)):
                if key in known:
                    per_host[key] = value
            per_host.update((host_settings or {}).get(sim.name, {}))
            ini = os.path.join(host_dir, "netmeta.ini")
            _write(ini, ini_text(per_host))
            _clouds_for(config, host_dir, f"http://{api}")
            host_config = Config(**{k: v for k, v in per_host.items() if k in known})
            multi.hosts.append(HostStack(sim, host_config, ini))
        for host in multi.hosts:
            for name in components:
                host.start(name)
    except BaseException:
        multi.close()
        raise
    return multi


def _clouds_for(server: Config, host_dir: str, api_url: str) -> None:
    """The server's clouds.yaml (JSON) with every cloud's auth_url at the address hosts reach."""
    with open(os.path.join(server.state_dir, "clouds.yaml"), encoding="utf-8") as handle:
        clouds = json.load(handle)
    for cloud in clouds.get("clouds", {}).values():
        cloud.get("auth", {})["auth_url"] = api_url + "/identity/v3"
    _write(os.path.join(host_dir, "clouds.yaml"), json.dumps(clouds, indent=2), 0o600)


def _wait_ready(config: Config, component: Component) -> None:
    from netmeta.cli.commands import _wait_ready as wait

    wait(config, component)


def _wait_printed(component: Component, word: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.alive():
            raise RuntimeError(f"{component.name} exited: {component.last_words()}")
        if component.log_path and os.path.exists(component.log_path):
            with open(component.log_path, encoding="utf-8", errors="replace") as handle:
                if word in handle.read():
                    return
        time.sleep(0.05)
    raise RuntimeError(f"{component.name} did not say {word!r} in {timeout:.0f}s")
