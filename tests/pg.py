"""A throwaway PostgreSQL for tests: a cluster on a unix socket in a temp dir, always stopped.

Skips (pytest.skip) where the server binaries are missing or it cannot start;
as root it runs the cluster as ``nobody`` (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True) + ["/usr/local/bin", "/usr/bin"]:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yields the cluster's SQLAlchemy URL; see the module docstring."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    root = Path(tempfile.mkdtemp(prefix="netmeta-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, "nobody")
        shutil.chown(sock, "nobody")
        os.chmod(root, 0o755)
        run_as = ["runuser", "-u", "nobody", "--"]
    env = {**os.environ, "LANG": "C", "LC_ALL": "C"}
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "netmeta", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, env=env)
    started = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "pg.log"), "-o",
         f"-k {sock} -c listen_addresses='' -c fsync=off", "start"],
        capture_output=True, env=env,
    )
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {started.stderr.decode()[-500:]}")
    try:
        yield f"postgresql://netmeta@/postgres?host={sock}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env)
        shutil.rmtree(root, ignore_errors=True)
