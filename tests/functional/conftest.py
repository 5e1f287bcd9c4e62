"""Fixtures that run a real netmeta server as a subprocess on 127.0.0.1.

Authentication is handled here, once: the server runs with the product's
default (``auth_strategy = keystone``, the embedded identity) and
:class:`Api` carries the bootstrap admin's token on every call, so a test
that does not care about authentication never sees it. ``server.openstack(...)``
runs the real CLI through the server's own ``clouds.yaml`` (the form to use
instead of ``--os-auth-type none``); ``server.add_user`` / ``server.login`` /
``api.as_token`` give a test other projects and roles. A test about noauth
starts its own server: ``server_factory("--auth-strategy", "noauth")``.

``headers={"X-Project-Id": P}`` keeps meaning what it means under noauth
(an admin acting in project ``P``): the fixture swaps it for the token of an
admin user scoped to a project whose id is exactly ``P``.

The server binds port 0 and prints ``netmeta server listening on
http://HOST:PORT``; the fixture waits for that line (a signal, not a sleep),
so no port is ever guessed. Each server gets its own temporary state
directory and is always stopped — SIGTERM, then SIGKILL — also when a test
fails. A subprocess, not a thread, because one test kills it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

READY_TIMEOUT = 30.0


class Api:
    """A tiny JSON client on urllib: (status, parsed body) for any request.

    ``token`` goes in ``X-Auth-Token`` unless the call gives its own headers
    with one (an empty one sends none).
    """

    def __init__(self, url: str, token: str | None = None,
                 project_token: Callable[[str], str] | None = None) -> None:
        self.url = url
        self.token = token
        self.project_token = project_token

    def as_token(self, token: str | None) -> "Api":
        return Api(self.url, token, self.project_token)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent = dict(headers or {})
        if self.project_token is not None and "X-Project-Id" in sent and "X-Auth-Token" not in sent:
            sent["X-Auth-Token"] = self.project_token(sent["X-Project-Id"])
        if self.token and "X-Auth-Token" not in sent:
            sent["X-Auth-Token"] = self.token
        if not sent.get("X-Auth-Token"):
            sent.pop("X-Auth-Token", None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            status = exc.code
        return status, (json.loads(payload) if payload else None)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, result = self.call(method, path, body, **kw)
        assert 200 <= status < 300, (method, path, status, result)
        return result

    def get(self, path: str) -> Any:
        return self.ok("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.ok("POST", path, body)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/netmeta/v1/state")
        return result

    # Neutron shortcuts, used throughout the tests.
    def network(self, name: str, **extra: Any) -> dict[str, Any]:
        return dict(self.post("/v2.0/networks", {"network": {"name": name, **extra}})["network"])

    def subnet(self, network_id: str, cidr: str, **extra: Any) -> dict[str, Any]:
        body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4, **extra}}
        return dict(self.post("/v2.0/subnets", body)["subnet"])

    def port(self, network_id: str, **extra: Any) -> dict[str, Any]:
        return dict(self.post("/v2.0/ports", {"port": {"network_id": network_id, **extra}})["port"])

    def router(self, name: str) -> dict[str, Any]:
        return dict(self.post("/v2.0/routers", {"router": {"name": name}})["router"])


class ServerProcess:
    def __init__(self, state_dir: Path, extra_args: list[str]) -> None:
        self.state_dir = state_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.api = Api("")
        self.log = state_dir / "server.log"
        self._project_tokens: dict[str, str] = {}

    def start(self) -> "ServerProcess":
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # as netmeta makes it
        argv = [sys.executable, "-m", "netmeta.server", "--bind", "127.0.0.1:0",
                "--server-metrics-bind", "127.0.0.1:0", "--state-dir", str(self.state_dir), *self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if b"listening on " in line:
                    break
                if not line:
                    break
            if self.proc.poll() is not None:
                break
        if b"listening on " not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")
        self.url = line.decode().split("listening on ", 1)[1].strip()
        self.api = Api(self.url)
        if self.clouds_yaml.exists():
            admin = self.cloud("netmeta")
            self.api = Api(self.url, self.login(admin["username"], admin["password"], admin["project_name"]),
                           self.project_admin_token)
        return self

    def project_admin_token(self, project_id: str) -> str:
        """An admin's token in project ``project_id`` (what noauth's X-Project-Id meant)."""
        if project_id not in self._project_tokens:
            from netmeta.server.identity import add_user

            user, project = f"hdr-admin-{project_id}", f"hdr-{project_id}"
            add_user(str(self.state_dir), user, "hdr-pw", project, ["admin"], project_id=project_id)
            self._project_tokens[project_id] = self.login(user, "hdr-pw", project)
        return self._project_tokens[project_id]

    # --- authentication (the embedded identity) -------------------------------
    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def cloud(self, name: str) -> dict[str, str]:
        auth: dict[str, str] = json.loads(self.clouds_yaml.read_text())["clouds"][name]["auth"]
        return auth

    def login(self, user: str, password: str, project: str) -> str:
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        request = urllib.request.Request(self.url + "/identity/v3/auth/tokens", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.headers["X-Subject-Token"])

    def add_user(self, user: str, password: str, project: str, roles: list[str]) -> dict[str, Any]:
        """A user with ``roles`` on ``project`` (made if new); the server reads the file again."""
        from netmeta.server.identity import add_user

        return add_user(str(self.state_dir), user, password, project, roles)

    def user_api(self, user: str, project: str, roles: list[str] = ["member"]) -> Api:  # noqa: B006
        self.add_user(user, f"{user}-pw", project, roles)
        return Api(self.url, self.login(user, f"{user}-pw", project))

    def openstack_env(self, cloud: str = "netmeta") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["PYTHONWARNINGS"] = "ignore"
        if self.clouds_yaml.exists():
            env.update(OS_CLIENT_CONFIG_FILE=str(self.clouds_yaml), OS_CLOUD=cloud)
        return env

    def openstack(self, *args: str, cloud: str = "netmeta", check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real ``openstack`` CLI, authenticated through clouds.yaml (or noauth)."""
        cli = Path(sys.executable).with_name("openstack")
        auth = [] if self.clouds_yaml.exists() else ["--os-auth-type", "none", "--os-endpoint", self.url]
        done = subprocess.run([str(cli), *auth, *args], capture_output=True, text=True,
                              env=self.openstack_env(cloud), timeout=120)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._close()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers with chosen arguments; every one is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(*extra_args: str, state_dir: Path | None = None) -> ServerProcess:
        server = ServerProcess(state_dir or tmp_path / f"server{len(started)}", list(extra_args))
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, for tests that only add their own objects."""
    proc = ServerProcess(tmp_path_factory.mktemp("netmeta-server"), [])
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return server.api
