"""What this agent created on the host, remembered across restarts.

An agent must remove what it no longer wants, also after a crash or a
restart, but it must never touch what it did not create: on a shared host
there may be a real Neutron, another netmeta or a parallel test run with
namespaces of the same shape. So the agent writes down every namespace and
fabric link *before* creating it, in a small JSON file in its state
directory, and only ever deletes what that file names.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

from netmeta.model.paths import StatePaths


@dataclass
class Ledger:
    path: str
    namespaces: set[str] = field(default_factory=set)
    fabric_links: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, state_dir: str) -> "Ledger":
        path = StatePaths(state_dir).ledger
        ledger = cls(path)
        try:
            with open(path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            return ledger
        except (OSError, ValueError):
            return ledger  # unreadable: start empty; convergence re-records everything wanted
        ledger.namespaces = set(raw.get("namespaces", ()))
        ledger.fabric_links = set(raw.get("fabric_links", ()))
        return ledger

    def remember(self, *, namespace: str | None = None, fabric_link: str | None = None) -> None:
        before = (len(self.namespaces), len(self.fabric_links))
        if namespace:
            self.namespaces.add(namespace)
        if fabric_link:
            self.fabric_links.add(fabric_link)
        if (len(self.namespaces), len(self.fabric_links)) != before:
            self.save()

    def forget(self, *, namespace: str | None = None, fabric_link: str | None = None) -> None:
        self.namespaces.discard(namespace or "")
        self.fabric_links.discard(fabric_link or "")
        self.save()

    def save(self) -> None:
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
