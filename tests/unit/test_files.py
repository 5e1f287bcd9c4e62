"""The one atomic write (drivers.files.replace_file): the mode from the first byte, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from netmeta.drivers.files import ensure_dir, replace_file, write_file_atomic
from netmeta.server.identity import write_private


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        replace_file(str(tmp_path / "shared"), b"x", 0o644)
        write_private(str(tmp_path / "secret"), b"y")
        ensure_dir(str(tmp_path / "a" / "b" / "c"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    for part in ("a", "a/b", "a/b/c"):  # every directory made, not only the last
        assert stat.S_IMODE((tmp_path / part).stat().st_mode) == 0o755, part
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "secret", "shared"]  # no temporary left


def test_replace_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        replace_file(str(target), "not bytes", 0o600)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    assert write_file_atomic(str(target), "new") is True and target.read_text() == "new"
