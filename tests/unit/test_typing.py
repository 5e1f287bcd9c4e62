"""The package type-checks under mypy --strict and pyflakes finds nothing (docs/architecture.md, "The layering contract")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_package_is_strictly_typed() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.skip("mypy is not installed in this environment (scripts/setup.sh --test installs it)")
    done = subprocess.run(
        [mypy, "--strict", "--ignore-missing-imports", "--no-error-summary", "netmeta"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_unused_or_undefined_names() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (scripts/setup.sh --test installs it)")
    done = subprocess.run([ruff, "check", "--no-cache", "netmeta", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
