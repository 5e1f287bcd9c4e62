"""Who may use the API: tokens, Neutron's project isolation, the service role.

Two member projects (``alpha``, ``beta``), the admin, a reader and the
service user, all through the embedded identity: what each sees and the
status it gets for the rest is Neutron's (404 for what it cannot see, 403
for what it sees but may not change). The real ``openstack`` CLI and
openstacksdk log in with an ordinary clouds.yaml.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.functional.conftest import Api, ServerProcess


@pytest.fixture(scope="module")
def cloud(server: ServerProcess) -> dict[str, Any]:
    alpha = server.user_api("alice", "alpha")
    beta = server.user_api("bob", "beta")
    reader = server.user_api("rita", "alpha", ["reader"])
    service = server.cloud("netmeta-service")
    svc = Api(server.url, server.login(service["username"], service["password"], service["project_name"]))
    a_net = alpha.network("alpha-net")
    a_sub = alpha.subnet(a_net["id"], "10.71.0.0/24")
    a_port = alpha.port(a_net["id"])
    shared = server.api.network("shared-net", shared=True)
    s_sub = server.api.subnet(shared["id"], "10.72.0.0/24")
    a_router = alpha.router("alpha-router")
    a_vm = alpha.post("/netmeta/v1/instances", {"instance": {
        "name": "alpha-vm", "networks": [{"uuid": a_net["id"]}],
        "user_data": base64.b64encode(b"#cloud-config\nsecret: alpha\n").decode()}})["instance"]
    svc.post(f"/netmeta/v1/instances/{a_vm['id']}/password", {"password": "alpha-secret"})
    return {"alpha": alpha, "beta": beta, "reader": reader, "service": svc, "admin": server.api,
            "a_net": a_net, "a_sub": a_sub, "a_port": a_port, "shared": shared, "s_sub": s_sub,
            "a_router": a_router, "a_vm": a_vm}


def ids(api: Api, kind: str) -> set[str]:
    path = f"/v2.0/{kind}" if kind != "instances" else "/netmeta/v1/instances"
    return {o["id"] for o in api.get(path)[kind]}


def test_no_forged_or_expired_token_gets_in(server: ServerProcess, cloud: dict[str, Any]) -> None:
    anonymous = server.api.as_token(None)
    for path in ("/v2.0/networks", "/netmeta/v1/state", "/netmeta/v1/instances", "/v2.0/extensions"):
        status, body = anonymous.call("GET", path)
        assert status == 401 and body["error"]["code"] == 401, (path, body)
    status, _ = anonymous.call("POST", "/v2.0/networks", {"network": {"name": "anon"}})
    assert status == 401
    token = cloud["alpha"].token
    assert token
    head, payload, mac = token.split(".")
    # Forged: a payload that claims admin on the admin project, with the old MAC.
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims[4] = ["admin", "member", "reader"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (f"{head}.{forged}.{mac}", token[:-2] + "AA", "garbage", ""):
        status, _ = anonymous.as_token(bad).call("GET", "/v2.0/networks", headers={"X-Auth-Token": bad})
        assert status == 401, bad
    # Expired: the same signature key, an expiry in the past.
    from netmeta.server.identity import Identity, TokenInfo

    identity = Identity(str(server.state_dir)).load()
    expired = identity.issue(TokenInfo(claims[0], claims[1], claims[2], claims[3], tuple(claims[4]), 1000.0, 900.0,
                                       ("password",), "x"))
    assert anonymous.as_token(expired).call("GET", "/v2.0/networks")[0] == 401
    # A valid token, revoked by DELETE, stops working.
    alice2 = server.login("alice", "alice-pw", "alpha")
    assert anonymous.as_token(alice2).call("GET", "/v2.0/networks")[0] == 200
    status, _ = anonymous.call("DELETE", "/identity/v3/auth/tokens",
                               headers={"X-Auth-Token": alice2, "X-Subject-Token": alice2})
    assert status == 204
    assert anonymous.as_token(alice2).call("GET", "/v2.0/networks")[0] == 401
    # Wrong password, unknown project, a project the user has no role on: 401.
    for user, password, project in (("alice", "nope", "alpha"), ("alice", "alice-pw", "nosuch"),
                                    ("alice", "alice-pw", "beta")):
        with pytest.raises(Exception, match="401"):
            server.login(user, password, project)


def test_each_project_sees_its_own_and_shared(cloud: dict[str, Any]) -> None:
    alpha, beta, admin = cloud["alpha"], cloud["beta"], cloud["admin"]
    assert ids(alpha, "networks") == {cloud["a_net"]["id"], cloud["shared"]["id"]}
    assert ids(beta, "networks") == {cloud["shared"]["id"]}
    assert cloud["a_sub"]["id"] not in ids(beta, "subnets") and cloud["s_sub"]["id"] in ids(beta, "subnets")
    assert cloud["a_port"]["id"] not in ids(beta, "ports")
    assert ids(beta, "routers") == set() and ids(beta, "instances") == set()
    assert {cloud["a_net"]["id"], cloud["shared"]["id"]} <= ids(admin, "networks")
    assert cloud["a_vm"]["id"] in ids(admin, "instances")
    # Filters and fields on the policy-filtered list too.
    assert beta.get("/v2.0/networks?name=alpha-net")["networks"] == []
    assert alpha.get("/v2.0/networks?name=alpha-net&fields=id")["networks"] == [{"id": cloud["a_net"]["id"]}]


@pytest.mark.parametrize("method,path_of,body", [
    ("GET", lambda c: f"/v2.0/networks/{c['a_net']['id']}", None),
    ("PUT", lambda c: f"/v2.0/networks/{c['a_net']['id']}", {"network": {"name": "stolen"}}),
    ("DELETE", lambda c: f"/v2.0/networks/{c['a_net']['id']}", None),
    ("GET", lambda c: f"/v2.0/subnets/{c['a_sub']['id']}", None),
    ("GET", lambda c: f"/v2.0/ports/{c['a_port']['id']}", None),
    ("DELETE", lambda c: f"/v2.0/ports/{c['a_port']['id']}", None),
    ("PUT", lambda c: f"/v2.0/routers/{c['a_router']['id']}", {"router": {"name": "x"}}),
    ("PUT", lambda c: f"/v2.0/networks/{c['a_net']['id']}/tags/evil", None),
    ("POST", lambda c: "/v2.0/subnets", None),
    ("POST", lambda c: "/v2.0/ports", None),
    ("GET", lambda c: f"/netmeta/v1/instances/{c['a_vm']['id']}", None),
    ("GET", lambda c: f"/netmeta/v1/instances/{c['a_vm']['id']}/password", None),
    ("DELETE", lambda c: f"/netmeta/v1/instances/{c['a_vm']['id']}", None),
    ("POST", lambda c: "/netmeta/v1/instances", None),
])
def test_another_projects_resources_are_404(cloud: dict[str, Any], method: str, path_of: Any, body: Any) -> None:
    path = path_of(cloud)
    if path == "/v2.0/subnets":
        body = {"subnet": {"network_id": cloud["a_net"]["id"], "cidr": "10.99.0.0/24", "ip_version": 4}}
    elif path == "/v2.0/ports":
        body = {"port": {"network_id": cloud["a_net"]["id"]}}
    elif path == "/netmeta/v1/instances":
        body = {"instance": {"name": "thief", "networks": [{"port": cloud["a_port"]["id"]}]}}
    before = cloud["admin"].state()
    status, answer = cloud["beta"].call(method, path, body)
    assert status == 404, (status, answer)
    assert cloud["admin"].state() == before


def test_what_is_visible_but_not_yours_is_403(cloud: dict[str, Any]) -> None:
    beta, reader, shared = cloud["beta"], cloud["reader"], cloud["shared"]
    status, body = beta.call("PUT", f"/v2.0/networks/{shared['id']}", {"network": {"name": "mine"}})
    assert (status, body["NeutronError"]["type"]) == (403, "PolicyNotAuthorized")
    assert beta.call("DELETE", f"/v2.0/networks/{shared['id']}")[0] == 403
    sub = {"subnet": {"network_id": shared["id"], "cidr": "10.73.0.0/24", "ip_version": 4}}
    assert beta.call("POST", "/v2.0/subnets", sub)[0] == 403
    # A port on a shared network is fine; choosing its address or MAC is not.
    port = beta.port(shared["id"])
    assert port["project_id"] != shared["project_id"]
    assert beta.call("POST", "/v2.0/ports", {"port": {"network_id": shared["id"],
                                                       "fixed_ips": [{"ip_address": "10.72.0.50"}]}})[0] == 403
    assert beta.call("POST", "/v2.0/ports", {"port": {"network_id": shared["id"],
                                                       "mac_address": "fa:16:3e:00:00:99"}})[0] == 403
    # The shared network's owner sees ports on it; other members do not see each other's.
    assert port["id"] in ids(cloud["admin"], "ports")
    assert port["id"] not in ids(cloud["alpha"], "ports")
    # Admin-only attributes and acting for another project.
    assert beta.call("POST", "/v2.0/networks", {"network": {"name": "s", "shared": True}})[0] == 403
    assert beta.call("POST", "/v2.0/networks", {"network": {"name": "x", "router:external": True}})[0] == 403
    status, body = beta.call("POST", "/v2.0/networks", {"network": {"name": "x", "project_id": "someone"}})
    assert status == 400 and "requires admin privileges" in body["NeutronError"]["message"]
    # A reader reads its project and changes nothing.
    assert cloud["a_net"]["id"] in ids(reader, "networks")
    assert reader.call("POST", "/v2.0/networks", {"network": {"name": "r"}})[0] == 403
    assert reader.call("PUT", f"/v2.0/networks/{cloud['a_net']['id']}", {"network": {"name": "r"}})[0] == 403


def test_admin_acts_for_another_project(cloud: dict[str, Any], server: ServerProcess) -> None:
    beta_project = json.loads((server.state_dir / "identity.json").read_text())["projects"]
    beta_id = next(p["id"] for p in beta_project if p["name"] == "beta")
    made = cloud["admin"].network("made-for-beta", project_id=beta_id)
    assert made["project_id"] == beta_id and made["id"] in ids(cloud["beta"], "networks")
    cloud["admin"].ok("PUT", f"/v2.0/networks/{cloud['a_net']['id']}", {"network": {"description": "by admin"}})


def test_the_feed_and_secrets_are_for_admin_and_service(cloud: dict[str, Any]) -> None:
    for who in ("alpha", "beta", "reader"):
        for path in ("/netmeta/v1/state", "/netmeta/v1/watch?since=0&timeout=0"):
            status, body = cloud[who].call("GET", path)
            assert status == 403, (who, path, body)
    state = cloud["service"].state()
    vm = next(i for i in state["instances"] if i["id"] == cloud["a_vm"]["id"])
    assert vm["password"] == "alpha-secret" and vm["user_data"]
    # The owner reads its own password; nobody else's instance leaks anything.
    assert cloud["alpha"].get(f"/netmeta/v1/instances/{cloud['a_vm']['id']}/password") == {"password": "alpha-secret"}
    assert "password" not in cloud["alpha"].get(f"/netmeta/v1/instances/{cloud['a_vm']['id']}")["instance"]
    assert cloud["beta"].call("GET", f"/netmeta/v1/instances/{cloud['a_vm']['id']}/password")[0] == 404
    assert cloud["beta"].call("POST", f"/netmeta/v1/instances/{cloud['a_vm']['id']}/password",
                              {"password": "x"})[0] == 404


def test_application_credential_and_token_validation(server: ServerProcess, cloud: dict[str, Any]) -> None:
    from netmeta.server.identity import add_application_credential

    cred_id = add_application_credential(str(server.state_dir), "alice", "alpha", "ci", "s3cret")
    body = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred_id, "secret": "s3cret"}}}}
    status, answer = server.api.as_token(None).call("POST", "/identity/v3/auth/tokens", body)
    assert status == 201 and answer["token"]["project"]["name"] == "alpha"
    assert {e["type"] for e in answer["token"]["catalog"]} == {"network", "identity"}
    body["auth"]["identity"]["application_credential"]["secret"] = "wrong"
    assert server.api.as_token(None).call("POST", "/identity/v3/auth/tokens", body)[0] == 401
    # keystonemiddleware's check: the service validates a user's token.
    alice = cloud["alpha"].token
    status, answer = cloud["service"].call("GET", "/identity/v3/auth/tokens", headers={"X-Subject-Token": alice})
    assert status == 200 and answer["token"]["user"]["name"] == "alice"
    # A member may not validate another user's token.
    assert cloud["beta"].call("GET", "/identity/v3/auth/tokens", headers={"X-Subject-Token": alice})[0] == 404


@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstack_cli_and_sdk_with_clouds_yaml_as_two_projects(server: ServerProcess, cloud: dict[str, Any],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An ordinary clouds.yaml, written as a user would (YAML, not netmeta's own file)."""
    auth_url = server.cloud("netmeta")["auth_url"]
    lines = ["clouds:"]
    for name, user, project in (("alpha", "alice", "alpha"), ("beta", "bob", "beta")):
        lines += [f"  {name}:", "    auth:", f"      auth_url: {auth_url}", f"      username: {user}",
                  f"      password: {user}-pw", f"      project_name: {project}", "      user_domain_name: Default",
                  "      project_domain_name: Default", "    region_name: RegionOne"]
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("\n".join(lines) + "\n")
    cli = Path(sys.executable).with_name("openstack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(clouds), PYTHONWARNINGS="ignore")

    def osc(cloud_name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(cli), "--os-cloud", cloud_name, *args], capture_output=True, text=True,
                              env=env, timeout=120)

    made = osc("beta", "network", "create", "beta-cli-net", "-f", "json")
    assert made.returncode == 0, made.stderr
    beta_net = json.loads(made.stdout)["id"]
    listed = osc("alpha", "network", "list", "-f", "value", "-c", "Name")
    assert listed.returncode == 0 and "beta-cli-net" not in listed.stdout and "alpha-net" in listed.stdout
    shown = osc("alpha", "network", "show", beta_net)
    assert shown.returncode != 0
    assert osc("alpha", "network", "delete", beta_net).returncode != 0
    assert osc("beta", "network", "delete", beta_net).returncode == 0

    openstack = pytest.importorskip("openstack")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    conn = openstack.connect(cloud="alpha")
    try:
        names = {n.name for n in conn.network.networks()}
        assert "alpha-net" in names and "shared-net" in names and "made-for-beta" not in names
        port = conn.network.create_port(network_id=cloud["a_net"]["id"], name="sdk-alpha")
        assert port.project_id == cloud["a_net"]["project_id"]
        conn.network.delete_port(port)
    finally:
        conn.close()


def test_secret_files_are_private(server: ServerProcess) -> None:
    for name in ("netmeta.sqlite", "identity.json", "token.key", "clouds.yaml"):
        mode = stat.S_IMODE(os.stat(server.state_dir / name).st_mode)
        assert mode == 0o600, (name, oct(mode))


def test_a_wide_state_directory_stops_the_start(server_factory: Any, tmp_path: Path) -> None:
    first = server_factory(state_dir=tmp_path / "open")
    first.stop()
    assert stat.S_IMODE(os.stat(tmp_path / "open").st_mode) == 0o700
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(RuntimeError, match=r"state directory .*/open is mode 0755: other users could look inside; "
                                           r"run `chmod 700 .*/open`"):
        server_factory(state_dir=tmp_path / "open")


def test_logs_are_private(server: ServerProcess) -> None:
    logs = list((server.state_dir / "log").iterdir())
    assert logs
    for path in logs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_readable_secret_stops_the_start(server_factory: Any, tmp_path: Path) -> None:
    first = server_factory(state_dir=tmp_path / "wide")
    first.stop()
    os.chmod(tmp_path / "wide" / "token.key", 0o644)
    with pytest.raises(RuntimeError, match=r"token.key is mode 0644: other users could read it"):
        server_factory(state_dir=tmp_path / "wide")


def test_noauth_is_refused_off_loopback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "netmeta.server", "--auth-strategy", "noauth", "--bind",
                           "0.0.0.0:0", "--state-dir", str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "noauth makes every caller an admin" in done.stderr and "Traceback" not in done.stderr


def test_an_external_keystone_validates_the_tokens(server_factory: Any, tmp_path: Path) -> None:
    """[keystone_authtoken]: another identity service issues the tokens, this API checks them there.

    The "external Keystone" is a second netmeta's embedded identity (it speaks
    the same v3 API); see the note of issue 15 for why not keystone itself.
    """
    keystone = server_factory(state_dir=tmp_path / "keystone")
    service = keystone.cloud("netmeta-service")
    ini = tmp_path / "external.ini"
    ini.write_text("[keystone_authtoken]\n"
                   f"auth_url = {service['auth_url']}\n"
                   f"username = {service['username']}\npassword = {service['password']}\n"
                   f"project_name = {service['project_name']}\ntoken_cache_time = 300\n")
    api_server = server_factory("--config", str(ini), state_dir=tmp_path / "api")
    assert not (tmp_path / "api" / "clouds.yaml").exists()  # no embedded identity here
    alice = keystone.user_api("alice", "alpha")
    bob = keystone.user_api("bob", "beta")
    as_alice, as_bob = Api(api_server.url, alice.token), Api(api_server.url, bob.token)
    net = as_alice.network("ext-net")
    assert net["id"] in ids(as_alice, "networks") and net["id"] not in ids(as_bob, "networks")
    assert as_bob.call("GET", f"/v2.0/networks/{net['id']}")[0] == 404
    anonymous = Api(api_server.url)
    status, body = anonymous.call("GET", "/v2.0/networks")
    assert status == 401
    assert anonymous.call("GET", "/v2.0/networks", headers={"X-Auth-Token": "nm1.forged.x"})[0] == 401
    # Cached: with the external identity gone, a token seen before still works, a new one does not.
    carol = keystone.user_api("carol", "alpha")
    keystone.stop()
    assert as_alice.call("GET", "/v2.0/networks")[0] == 200
    assert Api(api_server.url, carol.token).call("GET", "/v2.0/networks")[0] == 401
