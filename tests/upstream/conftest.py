"""The bridge to OpenStack's own code (see bridge.py), one process per session.

The upstream interpreter is ``.cache/upstream-venv`` (``scripts/setup.sh
--test`` makes it, pinned to the releases in ``UPSTREAM`` there). Without it
these tests fail with a pointer to that script rather than skip: a skipped
comparison would silently stop checking anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = Path(os.environ.get("NETMETA_UPSTREAM_PYTHON", ROOT / ".cache" / "upstream-venv" / "bin" / "python"))
BRIDGE = Path(__file__).resolve().parent / "bridge.py"


# Nova and Neutron both register options on oslo.config's global CONF, with
# clashing names: each gets its own bridge process.
NOVA_OPS = {"hostname", "metadata"}


class Bridge:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(
            [str(PYTHON), "-W", "ignore", str(BRIDGE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env, cwd="/",
        )

    def __call__(self, op: str, **req: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **req}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the upstream bridge exited (code {self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"upstream {op} failed: {answer['error']}\n{answer['trace']}")
        return answer["ok"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Upstream:
    """Ask OpenStack: ``upstream("dnsmasq", network=…)`` → the bridge's JSON answer."""

    def __init__(self) -> None:
        self.bridges: dict[str, Bridge] = {}

    def __call__(self, op: str, **req: Any) -> Any:
        family = "nova" if op in NOVA_OPS else "neutron"
        if family not in self.bridges:
            self.bridges[family] = Bridge()
        return self.bridges[family](op, **req)

    def close(self) -> None:
        for bridge in self.bridges.values():
            bridge.close()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: run `bash scripts/setup.sh --test` (it installs neutron and nova there)")
    bridge = Upstream()
    try:
        yield bridge
    finally:
        bridge.close()
