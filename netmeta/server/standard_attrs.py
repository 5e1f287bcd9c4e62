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
    """Who is asking: a project and its roles (from a token, or noauth's admin).

    Roles follow Neutron's defaults: ``admin`` sees and changes everything and
    may act for another project; ``service`` (and the older ``advsvc``) is what
    the agents and the metadata process hold — read everything, including
    the change feed, and act for the projects they serve; ``member`` changes
    its own project; ``reader`` only reads it.
    """

    project_id: str
    roles: frozenset[str] = frozenset({"admin"})
    user_id: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return bool(self.roles & {"service", "advsvc"})

    @property
    def sees_all(self) -> bool:
        return self.is_admin or self.is_service

    @property
    def may_write(self) -> bool:
        return self.sees_all or bool(self.roles & {"member", "_member_"})


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
