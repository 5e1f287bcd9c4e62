"""Shared test hygiene.

Privileged tests (marked ``privileged``) need root and network namespaces;
they skip with the reason where either is missing. Around the whole session
the host's own network state is fingerprinted (``shared/tools/host-fingerprint``)
and compared afterwards: any difference fails the run, because tests may only
change namespaces they created themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FINGERPRINT_CANDIDATES = [
    HERE.parent.parent / "shared" / "tools" / "host-fingerprint",
    HERE.parent / "tools" / "host-fingerprint",
]


def _privilege_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, dnsmasq, iptables)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    probe = f"nmprobe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


PRIVILEGE_PROBLEM = _privilege_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PRIVILEGE_PROBLEM is None:
        return
    skip = pytest.mark.skip(reason=PRIVILEGE_PROBLEM)
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)


def _fingerprint() -> str | None:
    for tool in FINGERPRINT_CANDIDATES:
        if tool.exists():
            return subprocess.run(
                ["bash", str(tool)], capture_output=True, text=True, check=False
            ).stdout
    return None


@pytest.fixture(scope="session", autouse=True)
def host_untouched() -> object:
    """Fail the session if the host's links, routes, iptables or resolv.conf changed."""
    before = _fingerprint()
    yield
    after = _fingerprint()
    if before is not None and before != after:
        import difflib

        diff = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm=""))
        pytest.fail(f"the host's own network state changed during the tests:\n{diff}", pytrace=False)
