"""netmeta behind a real, external Keystone (``[keystone_authtoken]``), as Neutron runs.

Keystone 30 from PyPI (``.cache/keystone-venv``, made by ``scripts/setup.sh
--test``) on SQLite in a scratch directory: ``keystone-manage db_sync``,
``fernet_setup``, ``credential_setup``, ``bootstrap``, then its WSGI
application on 127.0.0.1 (``keystone_server.py``), started and stopped by
pid. Projects, users, roles, the ``network`` service and its endpoint are
made through Keystone's own API; netmeta's server is pointed at it with the
option names Neutron uses, and the real ``openstack`` CLI talks to both.
Without the venv these tests fail with a pointer to the setup script.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from netmeta.config import Config, KeystoneAuthtoken
from netmeta.credentials import service_tokens
from netmeta.client import Client

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("NETMETA_KEYSTONE_VENV", ROOT / ".cache" / "keystone-venv"))
SERVER = Path(__file__).resolve().parent / "keystone_server.py"
OPENSTACK = str(Path(sys.executable).with_name("openstack"))
ADMIN_PW = "admin-secret"
START_TIMEOUT = 120.0  # keystone's import and first request take a while on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, token: str = "", **headers: str) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    for key, value in headers.items():
        req.add_header(key.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return exc.code, dict(exc.headers), parsed


def wait_line(proc: subprocess.Popen[bytes], marker: bytes, what: str) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before it was ready")
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if marker in line:
                return line
    raise AssertionError(f"{what} not ready after {START_TIMEOUT}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@dataclass
class Keystone:
    url: str  # .../v3
    root: str
    admin_token: str
    ids: dict[str, str]

    def validations(self) -> int:
        status, _, body = http("GET", f"{self.root}/_test/validations")
        assert status == 200, body
        return int(body["validations"])

    def login(self, user: str, password: str, project: str) -> tuple[str, dict[str, Any]]:
        status, headers, body = http("POST", f"{self.url}/auth/tokens", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
        assert status == 201, body
        return headers["X-Subject-Token"], body["token"]

    def make(self, kind: str, body: dict[str, Any]) -> str:
        status, _, answer = http("POST", f"{self.url}/{kind}s", {kind: body}, self.admin_token)
        assert status == 201, (kind, answer)
        return str(answer[kind]["id"])


USERS = {"alice": ("alice-pw", "alpha", "member"), "bob": ("bob-pw", "beta", "member"),
         "neutron": ("neutron-pw", "service", "service")}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nmtks-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def netmeta_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def keystone(workdir: Path, netmeta_port: int) -> Iterator[Keystone]:
    if not (VENV / "bin" / "keystone-manage").exists():
        pytest.fail(f"no Keystone in {VENV}: run `bash scripts/setup.sh --test` (it installs keystone from PyPI there)")
    conf_dir = workdir / "keystone"
    conf_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    # Every path Keystone writes is in the scratch directory (fernet_setup
    # would otherwise also make /etc/keystone/fernet-keys for receipts).
    (conf_dir / "keystone.conf").write_text(
        f"[DEFAULT]\nlog_file = {conf_dir}/keystone.log\n"
        f"[database]\nconnection = sqlite:///{conf_dir}/keystone.db\n"
        "[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {conf_dir}/fernet-keys\n"
        f"[fernet_receipts]\nkey_repository = {conf_dir}/fernet-receipts\n"
        f"[credential]\nkey_repository = {conf_dir}/credential-keys\n"
        # passlib's bcrypt probe breaks with bcrypt 4: a hash it needs no probe for.
        "[identity]\npassword_hash_algorithm = pbkdf2_sha512\n"
    )
    manage = [str(VENV / "bin" / "keystone-manage"), "--config-file", str(conf_dir / "keystone.conf")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OS_"))}
    env["PYTHONWARNINGS"] = "ignore"
    for step in (["db_sync"], ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["bootstrap", "--bootstrap-password", ADMIN_PW, "--bootstrap-admin-url", url,
                  "--bootstrap-public-url", url, "--bootstrap-internal-url", url, "--bootstrap-region-id", "RegionOne"]):
        done = subprocess.run([*manage, *step], capture_output=True, text=True, env=env, timeout=600, cwd=workdir)
        assert done.returncode == 0, (step, done.stderr[-2000:])
    with open(conf_dir / "server.err", "wb") as err:
        proc = subprocess.Popen([str(VENV / "bin" / "python"), str(SERVER), str(conf_dir), str(port)],
                                stdout=subprocess.PIPE, stderr=err, env=env, cwd=workdir)
    try:
        wait_line(proc, b"ready", "keystone")
        ks = Keystone(url, f"http://127.0.0.1:{port}", "", {})
        ks.admin_token, _ = ks.login("admin", ADMIN_PW, "admin")
        # bootstrap made admin, member, reader and service (Keystone 30).
        _, _, roles = http("GET", f"{url}/roles", token=ks.admin_token)
        role_ids = {r["name"]: r["id"] for r in roles["roles"]}
        if "service" not in role_ids:
            role_ids["service"] = ks.make("role", {"name": "service"})
        for user, (password, project, role) in USERS.items():
            project_id = ks.ids.get(project) or ks.make("project", {"name": project, "domain_id": "default"})
            ks.ids[project] = project_id
            ks.ids[user] = ks.make("user", {"name": user, "password": password, "domain_id": "default"})
            status, _, body = http("PUT", f"{url}/projects/{project_id}/users/{ks.ids[user]}/roles/{role_ids[role]}",
                                   token=ks.admin_token)
            assert status == 204, body
        service = ks.make("service", {"type": "network", "name": "neutron"})
        for interface in ("public", "internal", "admin"):
            ks.make("endpoint", {"service_id": service, "interface": interface, "region_id": "RegionOne",
                                 "url": f"http://127.0.0.1:{netmeta_port}"})
        yield ks
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def netmeta(keystone: Keystone, workdir: Path, netmeta_port: int) -> Iterator[Config]:
    state = workdir / "netmeta"
    state.mkdir(mode=0o700)
    ini = state / "netmeta.ini"
    ini.write_text(
        "[keystone_authtoken]\n"
        # As Neutron's configs usually have it: clients are told the versioned
        # public URI, netmeta itself talks to the unversioned root.
        f"www_authenticate_uri = {keystone.url}\nauth_url = {keystone.root}\nauth_type = password\n"
        "username = neutron\npassword = neutron-pw\nproject_name = service\n"
        "user_domain_name = Default\nproject_domain_name = Default\n"
    )
    config = Config(state_dir=str(state), bind=f"127.0.0.1:{netmeta_port}", keystone_authtoken=KeystoneAuthtoken(
        www_authenticate_uri=keystone.url, auth_url=keystone.root, username="neutron", password="neutron-pw"))
    with open(workdir / "netmeta.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "netmeta.server", "--config", str(ini), "--state-dir",
                                 str(state), "--bind", config.bind, "--server-metrics-bind", "127.0.0.1:0",
                                 "--no-log-console"], stdout=subprocess.PIPE, stderr=err)
    try:
        wait_line(proc, b"listening on", "netmeta server")
        yield config
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def clouds(keystone: Keystone, workdir: Path) -> Path:
    path = workdir / "clouds.yaml"
    path.write_text(json.dumps({"clouds": {user: {
        "auth": {"auth_url": keystone.url, "username": user, "password": password, "project_name": project,
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": "RegionOne", "identity_api_version": 3} for user, (password, project, _) in USERS.items()}}))
    return path


def openstack(clouds: Path, cloud: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(clouds), OS_CLOUD=cloud, PYTHONWARNINGS="ignore")
    return subprocess.run([OPENSTACK, *argv], capture_output=True, text=True, env=env, timeout=180)


def test_the_openstack_cli_through_a_real_keystone(keystone: Keystone, netmeta: Config, clouds: Path) -> None:
    before = keystone.validations()
    made = openstack(clouds, "alice", "network", "create", "alpha-net", "-f", "json")
    assert made.returncode == 0, made.stderr
    network = json.loads(made.stdout)
    assert network["project_id"] == keystone.ids["alpha"]
    # One CLI run is one token: netmeta asked Keystone about it once, whatever the calls it made.
    assert keystone.validations() == before + 1
    mine = openstack(clouds, "alice", "network", "list", "-f", "value", "-c", "Name")
    assert mine.returncode == 0 and mine.stdout.split() == ["alpha-net"], mine.stderr
    theirs = openstack(clouds, "bob", "network", "list", "-f", "value", "-c", "Name")
    assert theirs.returncode == 0 and theirs.stdout.split() == [], theirs.stdout + theirs.stderr
    hidden = openstack(clouds, "bob", "network", "show", network["id"])
    assert hidden.returncode != 0 and "No Network found" in hidden.stderr, hidden.stderr


def test_tokens_are_validated_once_then_cached(keystone: Keystone, netmeta: Config) -> None:
    token, _ = keystone.login("alice", "alice-pw", "alpha")
    before = keystone.validations()
    for _ in range(20):
        status, _, body = http("GET", f"{netmeta.api_url}/v2.0/networks", token=token)
        assert status == 200, body
    assert keystone.validations() == before + 1


def test_forged_and_expired_tokens_get_401(keystone: Keystone, netmeta: Config) -> None:
    good, body = keystone.login("alice", "alice-pw", "alpha")
    status, _, _ = http("GET", f"{netmeta.api_url}/v2.0/networks", token=good)
    assert status == 200
    # A token Keystone made with its own keys, expired an hour ago (Keystone would still show it with allow_expired).
    status, _, answer = http("POST", f"{keystone.root}/_test/expired-token",
                             {"user_id": body["user"]["id"], "project_id": body["project"]["id"]})
    expired = answer["token"]
    status, _, _ = http("GET", f"{keystone.url}/auth/tokens?allow_expired=1", token=keystone.admin_token,
                        X_Subject_Token=expired)
    assert status == 200, "the expired token is not one Keystone recognises"
    forged = good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8)
    for token in (expired, forged, "not-a-token", ""):
        status, headers, answer = http("GET", f"{netmeta.api_url}/v2.0/networks", token=token)
        assert status == 401, (token[:20], answer)
        assert headers.get("WWW-Authenticate") == f'Keystone uri="{keystone.url}"', headers
    # Nothing was made with them.
    status, _, _ = http("POST", f"{netmeta.api_url}/v2.0/networks", {"network": {"name": "x"}}, token=forged)
    assert status == 401


def test_the_agents_service_user_reads_the_feed(keystone: Keystone, netmeta: Config) -> None:
    """What the agent and the metadata process do: log in as [keystone_authtoken]'s user, read the state."""
    client = Client.for_config(netmeta)
    state = client.state()
    assert any(n["name"] == "alpha-net" for n in state["networks"])
    assert service_tokens(netmeta) is not None
    # A member may not read it (403), as with the embedded identity.
    token, _ = keystone.login("alice", "alice-pw", "alpha")
    status, _, _ = http("GET", f"{netmeta.api_url}/netmeta/v1/state", token=token)
    assert status == 403
