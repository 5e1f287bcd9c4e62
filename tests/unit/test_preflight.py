"""up's preflight: can dnsmasq's unprivileged user walk to its files?"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from netmeta.cli.preflight import dnsmasq_reach_problem


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nmtpre-"))  # /tmp itself is open to all
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_a_closed_directory_on_the_way_is_named(scratch: Path) -> None:
    closed = scratch / "closed"
    closed.mkdir()
    os.chmod(closed, 0o700)
    problem = dnsmasq_reach_problem(str(closed / "state" / "dhcp"))
    assert problem is not None
    assert f"{closed} is mode 0700" in problem and f"chmod o+x {closed}" in problem


def test_open_directories_and_missing_ones_pass(scratch: Path) -> None:
    (scratch / "open").mkdir()
    os.chmod(scratch / "open", 0o711)  # search is enough: dnsmasq names its files, it lists nothing
    assert dnsmasq_reach_problem(str(scratch / "open" / "not-yet" / "dhcp")) is None
