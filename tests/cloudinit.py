"""cloud-init's own code for tests: Debian's package, unpacked, never installed.

Installing the package would add boot services to this host; its Python tree
is all the tests need. ``scripts/setup.sh --test`` unpacks it into
``.cache/cloud-init``; without that, it is downloaded with ``apt-get download``
and unpacked into a temporary directory. Where neither works the tests skip
with the reason — except under CI, where setup.sh has run and a missing
cloud-init is a broken install, so it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHED = os.path.join(REPO, ".cache", "cloud-init", "usr", "lib", "python3", "dist-packages")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs scripts/setup.sh --test, which should have unpacked it)")
    pytest.skip(reason)


DEBIAN_HTTP = ("python3-requests", "python3-urllib3", "python3-idna", "python3-certifi",
               "python3-charset-normalizer", "python3-chardet")
CACHED_HTTP = os.path.join(REPO, ".cache", "debian-http", "usr", "lib", "python3", "dist-packages")


@contextmanager
def debian_http_dist_packages() -> Iterator[str]:
    """Debian 12's requests 2.28 + urllib3 1.26 (what its cloud-init runs with), unpacked like cloud-init.

    The .venv's requests/urllib3 2.x cannot reach a link-local URL with a zone
    id (``http://[fe80::a9fe:a9fe%25eth0]``, psf/requests#6735); a Debian 12
    guest's cloud-init can, so the IPv6 test reads with this stack.
    """
    if os.path.isdir(os.path.join(CACHED_HTTP, "urllib3")):
        yield CACHED_HTTP
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        _unavailable("the IPv6 cloud-init test needs apt-get and dpkg-deb (run scripts/setup.sh --test)")
    where = tempfile.mkdtemp(prefix="nm-debian-http-")
    try:
        got = subprocess.run(["apt-get", "download", *DEBIAN_HTTP], cwd=where, capture_output=True, text=True,
                             timeout=120)
        debs = glob.glob(os.path.join(where, "*.deb"))
        if got.returncode != 0 or len(debs) != len(DEBIAN_HTTP):
            _unavailable(f"cannot download {' '.join(DEBIAN_HTTP)}: {got.stderr.strip()[-200:]}")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(where, "root")], check=True)
        yield os.path.join(where, "root", "usr", "lib", "python3", "dist-packages")
    finally:
        shutil.rmtree(where, ignore_errors=True)


@contextmanager
def cloudinit_dist_packages() -> Iterator[str]:
    """The ``dist-packages`` directory holding ``cloudinit``; removed afterwards if made here."""
    if os.path.isdir(os.path.join(CACHED, "cloudinit")):
        yield CACHED
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        _unavailable("cloud-init tests need apt-get and dpkg-deb (run scripts/setup.sh --test)")
    where = tempfile.mkdtemp(prefix="nm-cloudinit-")
    try:
        got = subprocess.run(["apt-get", "download", "cloud-init"], cwd=where, capture_output=True, text=True, timeout=120)
        debs = glob.glob(os.path.join(where, "cloud-init_*.deb"))
        if got.returncode != 0 or not debs:
            _unavailable(f"cannot download cloud-init with apt-get: {got.stderr.strip()[-200:]}")
        subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(where, "root")], check=True)
        yield os.path.join(where, "root", "usr", "lib", "python3", "dist-packages")
    finally:
        shutil.rmtree(where, ignore_errors=True)
