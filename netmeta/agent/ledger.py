"""What this agent created on the host, remembered across restarts.

An agent must remove what it no longer wants, also after a crash or a
restart, but it must never touch what it did not create: on a shared host
there may be a real Neutron, another netmeta or a parallel test run with
namespaces of the same shape. So the agent writes down every namespace and
fabric link *before* creating it, in a small file in its state directory,
and only ever deletes what that file names.

Two files: ``ledger.json`` (everything, as of when it was written) and
``ledger.journal``, one line per change since (``+n name``, ``-l name``:
a namespace added, a fabric link removed). Recording a new object appends
one short line instead of rewriting the whole ledger — at 1,000 networks
a host records ~2,000 objects, and rewriting the JSON each time made
creation quadratic. When the journal grows past the ledger's size, the
JSON is written again (whole, then renamed) and the journal emptied.
Replaying a journal over a JSON that already holds its changes gives the
same sets, so a crash between the two steps loses nothing; a torn last
line (a crash mid-append) is ignored — its object was not created yet.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from netmeta.model.paths import StatePaths

# The journal is folded into ledger.json when it has more lines than this, or than the ledger has entries.
MIN_JOURNAL = 256
_KINDS = {"n": "namespaces", "l": "fabric_links"}


@dataclass
class Ledger:
    path: str
    namespaces: set[str] = field(default_factory=set)
    fabric_links: set[str] = field(default_factory=set)
    journal: str = ""
    journal_lines: int = 0

    @classmethod
    def load(cls, state_dir: str) -> "Ledger":
        paths = StatePaths(state_dir)
        ledger = cls(paths.ledger, journal=paths.ledger_journal)
        try:
            with open(ledger.path, encoding="utf-8") as handle:
                raw = json.load(handle)
            ledger.namespaces = set(raw.get("namespaces", ()))
            ledger.fabric_links = set(raw.get("fabric_links", ()))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError):
            pass  # unreadable: start from the journal; convergence re-records everything wanted
        try:
            with open(ledger.journal, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return ledger
        for line in text.split("\n")[:-1]:  # the part after the last newline is a torn append
            ledger.journal_lines += 1
            if len(line) > 3 and line[0] in "+-" and line[1] in _KINDS and line[2] == " ":
                names = getattr(ledger, _KINDS[line[1]])
                (names.add if line[0] == "+" else names.discard)(line[3:])
        return ledger

    def remember(self, *, namespace: str | None = None, fabric_link: str | None = None) -> None:
        lines = []
        if namespace and namespace not in self.namespaces:
            self.namespaces.add(namespace)
            lines.append(f"+n {namespace}\n")
        if fabric_link and fabric_link not in self.fabric_links:
            self.fabric_links.add(fabric_link)
            lines.append(f"+l {fabric_link}\n")
        self._append(lines)

    def forget(self, *, namespace: str | None = None, fabric_link: str | None = None) -> None:
        lines = []
        if namespace and namespace in self.namespaces:
            self.namespaces.discard(namespace)
            lines.append(f"-n {namespace}\n")
        if fabric_link and fabric_link in self.fabric_links:
            self.fabric_links.discard(fabric_link)
            lines.append(f"-l {fabric_link}\n")
        self._append(lines)

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        if not self.journal or self.journal_lines + len(lines) > max(
                MIN_JOURNAL, len(self.namespaces) + len(self.fabric_links)):
            self.save()
            return
        os.makedirs(os.path.dirname(self.journal), exist_ok=True)
        # O_APPEND: each line lands whole at the end, before the object it names is made.
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)
        self.journal_lines += len(lines)

    def save(self) -> None:
        """Write the whole ledger and empty the journal."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        body = json.dumps(
            {"namespaces": sorted(self.namespaces), "fabric_links": sorted(self.fabric_links)},
            indent=1,
        )
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ledger-")
        # Written whole and renamed: an agent killed at any moment leaves the
        # old ledger or the new one. No fsync: what it records (namespaces,
        # links) lives in the kernel and goes with a power loss anyway, while
        # an fsync per new object was a tenth of the agent's time creating a
        # few hundred networks.
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(tmp, self.path)
        if self.journal:
            try:
                os.truncate(self.journal, 0)
            except FileNotFoundError:
                pass
        self.journal_lines = 0
