"""The embedded identity shared by every server on one store (PostgreSQL).

Each server keeps its identity in files under its own state directory
(:mod:`netmeta.server.identity`): the token key, ``identity.json`` and
``clouds.yaml``. Servers that share a PostgreSQL serve one cloud, so a token
one of them issued must be valid at the others, and the service user must
be able to log in at any of them (a component failing over between
``api_urls`` logs in again at the next server). So when the store is shared
the three live in the store as well (table ``identity_documents``):

* **at start** the server adopts what the store holds — its token key, its
  users, projects and application credentials, and the clouds the first
  server wrote (the shared users' passwords, each cloud pointing at this
  server's own address) — and rewrites its own files from it; the first
  server on an empty store publishes its own instead, under a lock, so two
  servers starting together agree on one identity;
* **before each login, and every** :data:`SYNC_INTERVAL` **seconds**, it
  exchanges changes with the store (a token check stays a MAC and a clock:
  no I/O). An edit of this server's ``identity.json`` (``add_user``, an
  operator) is merged into the store's document — a three-way merge by id
  of projects, users and application credentials against the copy last
  exchanged, so what another server added meanwhile is kept — and what
  changed elsewhere is written to this server's file.

The store then holds what the files hold: password hashes, and in the
clouds document the generated passwords of the bootstrap admin and service
user. Whoever can read the store's tables can act as admin, as whoever can
read a server's state directory can.

A revocation (``DELETE /identity/v3/auth/tokens``) at one server holds at
every other: it is recorded in the store (document ``revocations``: audit id
→ the token's expiry, pruned once expired) before the DELETE is answered,
and a NOTIFY with the commit tells the other servers at once; each also
reads the document at start and on every exchange, so a notice lost while a
LISTEN connection was down is made up within :data:`SYNC_INTERVAL`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any

from netmeta.model.paths import StatePaths
from netmeta.server.identity import Identity, TokenInfo, _load_json, write_private
from netmeta.store.database import Database
from netmeta.store.notify import revoked_payload

log = logging.getLogger(__name__)

KEY, DATA, CLOUDS, REVOKED = "token_key", "identity", "clouds", "revocations"
LISTS = ("projects", "users", "application_credentials")
SYNC_INTERVAL = 2.0


def merge(base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any]) -> dict[str, Any]:
    """``remote`` with what changed from ``base`` to ``local`` applied (list entries by id)."""
    out = dict(remote)
    for key in (set(local) | set(base)) - set(LISTS):
        if local.get(key) != base.get(key):
            if key in local:
                out[key] = local[key]
            else:
                out.pop(key, None)
    for key in LISTS:
        before = {e["id"]: e for e in base.get(key, [])}
        mine = {e["id"]: e for e in local.get(key, [])}
        entries = {e["id"]: e for e in remote.get(key, [])}
        for ident, entry in mine.items():
            if before.get(ident) != entry:
                entries[ident] = entry  # added or changed here
        for ident in before:
            if ident not in mine:
                entries.pop(ident, None)  # removed here
        out[key] = list(entries.values())
    return out


class SharedIdentity:
    """Keeps one server's identity files in step with the store's documents."""

    def __init__(self, db: Database, state_dir: str) -> None:
        self.db = db
        self.paths = StatePaths(state_dir)
        self.base: dict[str, Any] = {}  # the document as last exchanged with the store
        self._lock = threading.Lock()

    def join(self, identity: Identity) -> bool:
        """Adopt the store's identity, or publish this server's; True if adopted."""
        with open(self.paths.token_key, "rb") as handle:
            key = base64.b64encode(handle.read()).decode()
        mine_clouds = _read_clouds(self.paths.clouds_file)
        mine = {KEY: key, DATA: json.dumps(_load_json(self.paths.identity_file)), CLOUDS: json.dumps(mine_clouds)}
        docs = self.db.update_documents(lambda docs: {} if KEY in docs and DATA in docs else mine)
        adopted = docs[KEY] != key
        if adopted:
            write_private(self.paths.token_key, base64.b64decode(docs[KEY]))
            _write_clouds(self.paths.clouds_file, json.loads(docs.get(CLOUDS) or "{}"), mine_clouds)
            log.info("identity: adopted the one this store's servers share (token key, users, projects)")
        self._write_local(identity, json.loads(docs[DATA]))
        identity.load()
        identity.revoked.update(revocations(docs))
        identity.sync = self.sync
        identity.publish_revocation = self.publish_revocation
        return adopted

    def publish_revocation(self, info: TokenInfo) -> None:
        """Record a revoked token in the store and tell the other servers (in a worker thread)."""

        def add(docs: dict[str, str]) -> dict[str, str]:
            current = {k: v for k, v in _revocation_doc(docs).items() if v > time.time()}
            current[info.audit_id] = info.expires
            return {REVOKED: json.dumps(current, separators=(",", ":"))}

        self.db.update_documents(add, notice=revoked_payload(info.audit_id))

    def sync(self, identity: Identity) -> None:
        """Exchange changes with the store (before each login and periodically; in a worker thread)."""
        with self._lock:
            local = _load_json(self.paths.identity_file)
            if local != self.base:
                base = self.base

                def exchange(docs: dict[str, str]) -> dict[str, str]:
                    remote = json.loads(docs.get(DATA) or "{}")
                    merged = merge(base, local, remote)
                    return {DATA: json.dumps(merged)} if merged != remote else {}

                docs = self.db.update_documents(exchange)
            else:
                docs = self.db.documents()
            identity.revoked.update(revocations(docs))
            current = json.loads(docs[DATA])
            if current != local:
                self._write_local(identity, current)
            else:
                self.base = current
                identity.data = current

    def _write_local(self, identity: Identity, data: dict[str, Any]) -> None:
        write_private(self.paths.identity_file, (json.dumps(data, indent=2) + "\n").encode())
        self.base = data
        identity.data = data


def _revocation_doc(docs: dict[str, str]) -> dict[str, float]:
    try:
        raw = json.loads(docs.get(REVOKED) or "{}")
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float))}


def revocations(docs: dict[str, str], now: float | None = None) -> set[str]:
    """The audit ids of the tokens revoked at any server that have not expired yet."""
    at = time.time() if now is None else now
    return {audit_id for audit_id, expires in _revocation_doc(docs).items() if expires > at}


def _read_clouds(path: str) -> dict[str, Any]:
    try:
        return _load_json(path)
    except (OSError, ValueError):
        return {"clouds": {}}


def _write_clouds(path: str, shared: dict[str, Any], mine: dict[str, Any]) -> None:
    """The store's clouds (the shared users' passwords), each pointing at this server's own auth_url."""
    urls = [c.get("auth", {}).get("auth_url") for c in mine.get("clouds", {}).values()]
    url = next((u for u in urls if u), None)
    for cloud in shared.get("clouds", {}).values():
        if url:
            cloud.setdefault("auth", {})["auth_url"] = url
    write_private(path, (json.dumps(shared, indent=2) + "\n").encode())
