"""The router payload against a real kernel, inside a namespace of our own.

Applies :func:`netmeta.model.l3.iptables_payload` with ``iptables-restore``
(no ``--noflush``) in a fresh, uniquely named namespace, and checks that
``iptables-save`` there normalizes back to exactly the payload — so the agent
can decide "already applied" by comparing text — that re-applying changes
nothing, and that stale rules and chains are swept away. Never touches the
root namespace's iptables.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from netmeta.config import Config
from netmeta.model import l3

pytestmark = pytest.mark.privileged


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("iptables-restore") is None or shutil.which("iptables-save") is None:
        pytest.skip("needs iptables-restore and iptables-save")
    name = f"nmtest-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in(ns: str, *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv[0]} failed: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    "config",
    [Config(), Config(enable_metadata_proxy=False), Config(metadata_port=9800, metadata_access_mark="0x04")],
    ids=["default", "no-proxy", "custom-port-mark"],
)
def test_payload_applies_and_round_trips(netns: str, config: Config) -> None:
    payload = l3.iptables_payload([], config)
    _in(netns, "iptables-restore", stdin=payload)
    first = _in(netns, "iptables-save")
    assert l3.normalize_saved(first) == payload
    assert l3.normalize_saved(_in(netns, "iptables-save", "-c")) == payload

    _in(netns, "iptables-restore", stdin=payload)  # idempotent
    assert l3.normalize_saved(_in(netns, "iptables-save")) == payload


def test_reapply_sweeps_drift(netns: str) -> None:
    payload = l3.iptables_payload([], Config())
    _in(netns, "iptables-restore", stdin=payload)
    _in(netns, "iptables", "-N", "stale-chain")
    _in(netns, "iptables", "-A", "INPUT", "-j", "stale-chain")
    _in(netns, "iptables", "-t", "nat", "-F", "neutron-l3-agent-PREROUTING")
    drifted = l3.normalize_saved(_in(netns, "iptables-save"))
    assert drifted != payload

    _in(netns, "iptables-restore", stdin=payload)
    saved = _in(netns, "iptables-save")
    assert l3.normalize_saved(saved) == payload
    assert [line for line in saved.splitlines() if "REDIRECT" in line] == [
        "-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 "
        "-j REDIRECT --to-ports 9697"
    ]
