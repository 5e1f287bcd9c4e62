"""Status files: how a running component tells operators and tests what it did.

The agent and the metadata process each publish a small JSON document under
the state directory after their passes (``agent/status.json``,
``metadata/status.json``). Written atomically (rename), read without locks;
never on a request path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from netmeta.model.paths import StatePaths


def status_path(state_dir: str, component: str) -> str:
    return StatePaths(state_dir).status_file(component)


def write_status(state_dir: str, component: str, status: dict[str, Any]) -> None:
    path = status_path(state_dir, component)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    os.replace(tmp, path)


def read_status(state_dir: str, component: str) -> dict[str, Any] | None:
    try:
        with open(status_path(state_dir, component), encoding="utf-8") as handle:
            status: dict[str, Any] = json.load(handle)
            return status
    except (OSError, ValueError):
        return None
