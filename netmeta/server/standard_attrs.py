"""Neutron's "standard attributes", shared by every resource.

Every Neutron resource carries ``id``, ``project_id`` *and* ``tenant_id``
(older clients read the latter), ``created_at``/``updated_at`` in ISO 8601
with a ``Z``, a per-resource ``revision_number`` that grows by one on every
change, ``description`` and ``tags``. Keeping them in one place is what makes
"every change bumps ``revision_number``" true by construction: the only way
the resource modules save a modified object is :func:`save`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from netmeta.server.errors import not_found
from netmeta.server.port_dns import dns_assignment
from netmeta.store.database import Txn


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Caller:
    """Who is asking: the project from the header or the configured default."""

    project_id: str


def base(obj_id: str, project_id: str, now: str) -> dict[str, Any]:
    return {
        "id": obj_id,
        "name": "",
        "tenant_id": project_id,
        "project_id": project_id,
        "description": "",
        "tags": [],
        "created_at": now,
        "updated_at": now,
        "revision_number": 0,
    }


def _derived(txn: Txn, kind: str, obj: dict[str, Any]) -> None:
    """Attributes computed from others, refreshed on every write (a port's ``dns_assignment``)."""
    if kind == "ports":
        obj["dns_assignment"] = dns_assignment(obj, txn.dns_domain)


def create(txn: Txn, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    _derived(txn, kind, obj)
    txn.add(kind, obj)
    return obj


def save(txn: Txn, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Persist a modified object: one revision, one MODIFIED event."""
    obj["revision_number"] = int(obj.get("revision_number", 0)) + 1
    obj["updated_at"] = txn.now
    _derived(txn, kind, obj)
    txn.update(kind, obj)
    return obj


def get_or_404(txn: Txn, kind: str, obj_id: str) -> dict[str, Any]:
    obj = txn.get(kind, obj_id)
    if obj is None:
        raise not_found(kind, obj_id)
    return obj
