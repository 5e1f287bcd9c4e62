"""The commands a person types: `up`, `vm …`, `down`, and the README's `demo`.

Each runs as a real subprocess of the installed ``netmeta`` command, with its
own state directory, fabric namespace and API port, and everything it creates
is checked gone at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from netmeta.cli.commands import component_status, teardown_host
from netmeta.client import ApiError, Client
from netmeta.config import Config
from tests.privileged.stack import free_port, wait_until

pytestmark = pytest.mark.privileged

NETMETA = str(Path(sys.executable).parent / "netmeta")


def _ns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


@pytest.fixture
def place() -> Iterator[tuple[Config, list[str]]]:
    tag = secrets.token_hex(4)
    state = tempfile.mkdtemp(prefix=f"nmt{tag}-cli-")  # 0700, as netmeta makes it
    config = Config(state_dir=state, bind=f"127.0.0.1:{free_port()}", fabric_namespace=f"nmt{tag}-fabric")
    ini = os.path.join(state, "netmeta.ini")
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write("[DEFAULT]\nenable_isolated_metadata = True\n")
    common = ["--config", ini, "--state-dir", state, "--bind", config.bind, "--fabric-namespace", config.fabric_namespace]
    with open(ini, "a", encoding="utf-8") as handle:  # metrics on free ports: never the fixed defaults here
        handle.write("".join(f"{c}_metrics_bind = 127.0.0.1:0\n" for c in ("server", "agent", "metadata")))
    try:
        yield config, common
    finally:
        teardown_host(config, purge=True)
        shutil.rmtree(state, ignore_errors=True)
        assert not _ns_exists(config.fabric_namespace)


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETMETA, *argv], capture_output=True, text=True, timeout=timeout)


def test_up_vm_and_down(place: tuple[Config, list[str]], tmp_path: Path) -> None:
    config, common = place
    with open(os.path.join(config.state_dir, "up.out"), "wb") as log:
        up = subprocess.Popen([NETMETA, "up", *common], stdout=log, stderr=subprocess.STDOUT)
    try:
        client = Client.for_config(config, admin=True)
        wait_until(lambda: _answers(client), "the API of `netmeta up`")
        net = client.request("POST", "/v2.0/networks", {"network": {"name": "cli-net"}})["network"]
        client.request("POST", "/v2.0/subnets", {"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": "10.95.0.0/24", "gateway_ip": None}})
        # auth_strategy = keystone by default: `up` made the identity files, private from the first byte.
        for name in ("netmeta.sqlite", "identity.json", "token.key", "clouds.yaml"):
            mode = stat.S_IMODE(os.stat(os.path.join(config.state_dir, name)).st_mode)
            assert mode == 0o600, (name, oct(mode))
        # The real CLI with the clouds.yaml `up` wrote, as the README says; without a token: 401.
        clouds = os.path.join(config.state_dir, "clouds.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=clouds, OS_CLOUD="netmeta", PYTHONWARNINGS="ignore")
        cli = subprocess.run([str(Path(sys.executable).with_name("openstack")), "network", "list", "-f", "value",
                              "-c", "Name"], capture_output=True, text=True, env=env, timeout=120)
        assert cli.returncode == 0 and "cli-net" in cli.stdout.split(), cli.stderr
        with pytest.raises(ApiError) as anonymous:
            Client(config.api_url).get("/v2.0/networks")
        assert anonymous.value.status == 401
        user_data = tmp_path / "ud.yaml"
        user_data.write_bytes(b"#cloud-config\nhostname: from-cli\n")
        key = tmp_path / "key.pub"
        key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJvZ3VzYnV0d2VsbGZvcm1lZGtleWZvcnRlc3Rz cli@test\n")

        boot = run("vm", "boot", "cli1", "--network", "cli-net", "--user-data", str(user_data),
                   "--key-name", "mykey", "--public-key", str(key), "--meta", "role=web", *common)
        assert boot.returncode == 0, boot.stderr
        ip = re.search(r"ip (10\.95\.0\.\d+)", boot.stdout)
        instance = re.search(r"instance ([0-9a-f-]{36})", boot.stdout)
        assert ip and instance, boot.stdout
        # File modes after `up` (issue 15): the state directory is its owner's alone, every log 0600;
        # dnsmasq's own files (and only those) are where its user "nobody" reaches them.
        assert stat.S_IMODE(os.stat(config.state_dir).st_mode) == 0o700
        logs = sorted(Path(config.paths.log_dir).iterdir())
        assert {p.name for p in logs} >= {"server.log", "agent.log", "metadata.log", "server.out"}, logs
        for path in logs:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        dhcp = config.paths.dhcp_dir(net["id"])
        assert os.path.realpath(config.paths.dhcp_link) == config.paths.dhcp_root
        for directory in (os.path.dirname(config.paths.dhcp_root), config.paths.dhcp_root, dhcp):
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755, directory
        for name in ("host", "opts", "addn_hosts"):
            assert stat.S_IMODE(os.stat(os.path.join(dhcp, name)).st_mode) == 0o644, name

        # The lease can come a moment before the listener opens (a tick of the metadata process).
        wait_until(lambda: any(l["id"] == net["id"] for l in (component_status(config, "metadata") or {})
                               .get("listeners", [])), "the metadata listener of cli-net")
        # Options may come after the guest's name; the command after --.
        fetch = run("vm", "exec", "cli1", *common, "--", "curl", "-s", "--max-time", "3",
                    "http://169.254.169.254/openstack/latest/meta_data.json")
        assert fetch.returncode == 0, fetch.stderr
        meta = json.loads(fetch.stdout)
        assert meta["uuid"] == instance.group(1)
        assert meta["meta"] == {"role": "web"}
        assert meta["public_keys"] == {"mykey": key.read_text().strip()}
        user = run("vm", "exec", "cli1", *common, "--", "curl", "-s", "http://169.254.169.254/openstack/latest/user_data")
        assert user.stdout.encode() == user_data.read_bytes()

        listing = run("vm", "list", *common)
        assert re.search(rf"cli1\s+{re.escape(ip.group(1))}\s+{instance.group(1)}", listing.stdout), listing.stdout
        assert run("vm", "renew", "cli1", *common).returncode == 0

        refused = run("down", *_for_down(common))
        assert refused.returncode == 1 and "stop `netmeta up` first" in refused.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    assert up.returncode == 0
    output = Path(config.state_dir, "up.out").read_text(encoding="utf-8")
    assert "netmeta is up" in output and "stopping" in output

    down = run("down", "--purge", *_for_down(common))
    assert down.returncode == 0, down.stderr
    assert "removed guest cli1" in down.stdout
    assert f"removed {config.fabric_namespace}" in down.stdout
    assert f"removed qdhcp-{net['id']}" in down.stdout
    assert not _ns_exists(f"qdhcp-{net['id']}")
    assert not os.path.exists(config.state_dir)


def _for_down(common: list[str]) -> list[str]:
    """`down` talks to no API: it takes no --bind (each command lists only what it reads)."""
    cut = common.index("--bind")
    return common[:cut] + common[cut + 2:]


def _answers(client: Client) -> bool:
    try:
        client.get("/")
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_vm_commands_explain_their_errors(place: tuple[Config, list[str]]) -> None:
    _, common = place
    missing = run("vm", "exec", "nosuch", *common, "--", "true")
    assert missing.returncode == 1 and "no guest named 'nosuch'" in missing.stderr
    no_cmd = run("vm", "exec", "nosuch", *common)
    assert no_cmd.returncode == 2 and "no command given" in no_cmd.stderr
    bad_meta = run("vm", "boot", "x", "--network", "n", "--meta", "novalue", *common)
    assert bad_meta.returncode == 2 and "expected KEY=VALUE" in bad_meta.stderr
    no_api = run("vm", "boot", "x", "--network", "n", *common)
    assert no_api.returncode == 1 and "no API at" in no_api.stderr
    bad_config = run("agent", "--config", "/nonexistent/netmeta.ini")
    assert bad_config.returncode == 2 and "cannot read config file" in bad_config.stderr


def test_demo_replays_the_seed_and_cleans_up() -> None:
    demo = run("demo", timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    # What the seed's author saw, for real: the isolated route via the DHCP
    # port, the gateway route after the router, Neutron's REDIRECT rule.
    assert re.search(r"option:classless-static-route,169\.254\.169\.254/32,192\.168\.111\.1$", out, re.M)
    assert re.search(r"classless-static-route,169\.254\.169\.254/32,172\.31\.0\.1,0\.0\.0\.0/0,172\.31\.0\.1$", out, re.M)
    assert "-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697" in out
    assert "169.254.169.254 via 172.31.0.1 dev eth0" in out
    assert "CHANGED" not in out and out.count("(same)") >= 4
    assert "cleaned up" in out
    for name in set(re.findall(r"\b((?:qdhcp|qrouter)-[0-9a-f-]{36}|vm-vm[12]-[0-9a-f]{8}|nmdemo-[0-9a-f]{6})\b", out)):
        assert not _ns_exists(name), f"the demo left {name} behind"
