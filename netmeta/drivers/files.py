"""Files that other processes read: written atomically, readable by dnsmasq.

dnsmasq drops privileges to ``nobody`` after start-up and re-reads its hosts
and opts files on SIGHUP as that user, so every file it reads must be 0644
and every directory above it searchable by others (0755). A reader must
never see a half-written file either, hence write-to-temp then rename(2) in
the same directory.
"""

from __future__ import annotations

import os
import tempfile

from netmeta.drivers.errors import translate


def read_text(path: str) -> str | None:
    """A file's text, or None when it cannot be read (absent, a directory, no permission)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def ensure_dir(path: str, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents, each with ``mode`` (0755 for dnsmasq).

    Every directory made here gets ``mode`` whatever the umask (os.makedirs
    would make the parents with the umask's mode: under the agent's 077 that
    is 0700, which dnsmasq's user cannot cross); ``path`` itself is given
    ``mode`` if it already existed. Existing parents are left as they are
    (``netmeta up``'s preflight says when one of them shuts dnsmasq out).
    """
    try:
        missing: list[str] = []
        here = os.path.abspath(path)
        while not os.path.isdir(here):
            missing.append(here)
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory, mode)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise
            os.chmod(directory, mode)
        if os.stat(path).st_mode & 0o7777 != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise translate(exc, f"create directory {path}") from exc


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Write ``path`` atomically, with ``mode`` from its first byte.

    The one atomic write: a temporary file in the same directory, made 0600
    by mkstemp (``O_EXCL``, so no one else can open it first) and given
    ``mode`` before it holds anything, fsync'd, then rename(2) over ``path``.
    A reader sees the old file or the new one, never half of one, and a
    private file (0600) is never readable by others, not even for a moment.
    Raises ``OSError``; callers translate it for their own layer.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_file_atomic(path: str, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` atomically (:func:`replace_file`); True if the content changed.

    Unchanged content leaves the file (and its mtime) alone so the caller can
    skip the SIGHUP; the mode is still corrected.
    """
    data = text.encode()
    try:
        try:
            with open(path, "rb") as handle:
                if handle.read() == data:
                    if os.stat(path).st_mode & 0o7777 != mode:
                        os.chmod(path, mode)
                    return False
        except FileNotFoundError:
            pass
        replace_file(path, data, mode)
    except OSError as exc:
        raise translate(exc, f"write {path}") from exc
    return True
