"""The one place the server touches its database.

Why it is shaped this way:

* **Writes are serialized** on a single-thread executor: SQLite allows one
  writer at a time anyway, and a single writer turns "two requests allocate
  the same address" into an impossibility rather than a retry loop. On
  PostgreSQL several servers may share the database, so every write
  transaction also takes the revision row ``FOR UPDATE``: the global
  revision is then a total order across processes.
* **Every change is recorded in the same transaction**: :meth:`Txn.add`,
  :meth:`Txn.update` and :meth:`Txn.remove` bump the global revision once
  and append a ``changes`` row holding the object, so the change feed can
  never disagree with the data. A transaction that raises is rolled back
  whole: no row, no revision, no event.
* **Reads are snapshots**: SQLite's driver normally starts transactions
  lazily and only for writes, so two SELECTs could see different commits.
  We switch the driver to autocommit and issue ``BEGIN`` (reads) or
  ``BEGIN IMMEDIATE`` (writes) ourselves; PostgreSQL reads run at
  REPEATABLE READ.
* **Durability**: SQLite runs in WAL mode with ``synchronous=NORMAL``. A
  commit is in the WAL file (the OS page cache) before ``COMMIT`` returns,
  so it survives ``kill -9`` of the server; only a power loss may drop the
  last few commits, which is the trade Neutron-scale control planes make.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from netmeta.store import schema
from netmeta.store.notify import notify_payload, notify_sql

T = TypeVar("T")

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


class StoreError(Exception):
    """Base of what the store raises; the server maps these to API errors."""


class AddressTaken(StoreError):
    """The unique (subnet_id, ip_address) constraint refused an allocation."""

    def __init__(self, subnet_id: str, ip_address: str) -> None:
        super().__init__(f"IP address {ip_address} already allocated in subnet {subnet_id}")
        self.subnet_id = subnet_id
        self.ip_address = ip_address


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator gave."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _prepared(key: tuple[str, ...], build: Callable[[], Executable]) -> Any:
    """Build each hot statement once: constructing SQLAlchemy expressions
    costs more than executing them on SQLite, and a port create runs ten."""
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


def _where(kind: str, columns: tuple[str, ...], what: str) -> Any:
    table = schema.RESOURCE_TABLES[kind]

    def build() -> Executable:
        target = table.c.id if what == "id" else table.c.body
        query = select(target)
        for column in columns:
            query = query.where(table.c[column] == bindparam(column))
        return query.order_by(table.c.created_rev) if what == "body" else query

    return _prepared(("where", kind, what, *columns), build)


class Txn:
    """One write transaction: resource rows, allocations and the change log."""

    # The server's dns_domain setting, for attributes derived on write (a
    # port's dns_assignment); the server sets it on each transaction.
    dns_domain: str = "openstacklocal"
    # The server's settings (a netmeta.config.Config), for decisions taken on
    # write: VNI ranges, how many DHCP agents a network gets. None in tests
    # that drive the store alone: every reader has a default.
    settings: Any = None

    def __init__(self, conn: Connection, revision: int, now: str) -> None:
        self.conn = conn
        self.base = revision  # the revision before this transaction
        self.revision = revision
        self.now = now
        self.changed = 0
        # Every change row written, in order: (revision, type, kind, object JSON).
        self.events: list[tuple[int, str, str, str]] = []
        # The caller's rendering of those events as watchers see them, if it made one:
        # they then travel in the NOTIFY payload, so other servers need not read them.
        self.rendered: list[str] | None = None

    # --- reads -------------------------------------------------------------

    def get(self, kind: str, obj_id: str) -> dict[str, Any] | None:
        body = self.conn.execute(_where(kind, ("id",), "one"), {"id": obj_id}).scalar()
        return json.loads(body) if body is not None else None

    def select(self, kind: str, **where: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(_where(kind, tuple(sorted(where)), "body"), where).scalars()
        return [json.loads(b) for b in rows]

    def find_ids(self, kind: str, **where: str) -> list[str]:
        """Ids of rows matching indexed columns, without parsing documents."""
        return list(self.conn.execute(_where(kind, tuple(sorted(where)), "id"), where).scalars())

    # --- resource writes, each one revision and one change row ---------------

    def _record(self, kind: str, change: str, obj: dict[str, Any]) -> int:
        self.revision += 1
        self.changed += 1
        text = dumps(obj)
        self.conn.execute(
            _prepared(("insert", "changes"), lambda: insert(schema.changes)),
            {"revision": self.revision, "kind": kind, "type": change, "object": text},
        )
        self.events.append((self.revision, change, kind, text))
        return self.revision

    @staticmethod
    def _columns(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        cols: dict[str, Any] = {}
        if kind in ("subnets", "ports"):
            cols["network_id"] = obj["network_id"]
        if kind == "ports":
            cols["device_id"] = obj.get("device_id") or ""
            cols["mac_address"] = obj.get("mac_address") or ""
        elif kind == "security_groups":
            cols["project_id"] = obj.get("project_id") or ""
        elif kind == "security_group_rules":
            cols["security_group_id"] = obj["security_group_id"]
        elif kind == "agents":
            cols["agent_type"] = obj["agent_type"]
            cols["host"] = obj["host"]
        elif kind == "bindings":
            cols["agent_id"] = obj["agent_id"]
            cols["network_id"] = obj.get("network_id") or ""
            cols["router_id"] = obj.get("router_id") or ""
        return cols

    def add(self, kind: str, obj: dict[str, Any], **extra: Any) -> None:
        rev = self._record(kind, ADDED, obj)
        table = schema.RESOURCE_TABLES[kind]
        self.conn.execute(
            _prepared(("insert", kind), lambda: insert(table)),
            {"id": obj["id"], "created_rev": rev, "body": dumps(obj), **self._columns(kind, obj), **extra},
        )

    def update(self, kind: str, obj: dict[str, Any]) -> None:
        self._record(kind, MODIFIED, obj)
        table = schema.RESOURCE_TABLES[kind]
        self.conn.execute(
            update(table).where(table.c.id == obj["id"]).values(body=dumps(obj), **self._columns(kind, obj))
        )

    def remove(self, kind: str, obj: dict[str, Any]) -> None:
        self._record(kind, DELETED, obj)
        table = schema.RESOURCE_TABLES[kind]
        self.conn.execute(delete(table).where(table.c.id == obj["id"]))
        if kind == "ports":
            self.release(obj["id"])

    def set_columns(self, kind: str, obj_id: str, **values: Any) -> None:
        """Change bookkeeping columns outside the document: no revision, no event (a heartbeat)."""
        table = schema.RESOURCE_TABLES[kind]
        self.conn.execute(update(table).where(table.c.id == obj_id).values(**values))

    def column_rows(self, kind: str, *columns: str) -> list[tuple[Any, ...]]:
        """Some columns of every row, without parsing documents."""
        table = schema.RESOURCE_TABLES[kind]
        return [tuple(r) for r in self.conn.execute(select(*(table.c[c] for c in columns)))]

    def column_values(self, kind: str, column: str) -> dict[str, Any]:
        """One bookkeeping column of every row, by id (agents' heartbeats)."""
        table = schema.RESOURCE_TABLES[kind]
        return {str(r[0]): r[1] for r in self.conn.execute(select(table.c.id, table.c[column]))}

    # --- VXLAN VNIs ------------------------------------------------------------

    def vni_owner(self, vni: int) -> str | None:
        table = schema.vxlan_allocations
        found = self.conn.execute(select(table.c.network_id).where(table.c.vxlan_vni == vni)).scalar()
        return str(found) if found is not None else None

    def lowest_free_vni(self, lo: int, hi: int) -> int | None:
        """The lowest VNI of ``[lo, hi]`` no network holds, or None.

        Without gaps (the common case: VNIs only handed out, never freed)
        two index reads answer — the highest taken and how many are taken
        below it — instead of reading every allocation of the range, which
        made creating 1,000 networks quadratic. With gaps, one query finds
        the first (each taken VNI whose successor is free, by primary key).
        """
        table = schema.vxlan_allocations
        vni = table.c.vxlan_vni
        in_range = (vni >= bindparam("lo"), vni <= bindparam("hi"))
        top = self.conn.execute(_prepared(("vni_max",), lambda: select(func.max(vni)).where(*in_range)),
                                {"lo": lo, "hi": hi}).scalar()
        if top is None:
            return lo
        count = self.conn.execute(_prepared(("vni_count",), lambda: select(func.count()).where(*in_range)),
                                  {"lo": lo, "hi": int(top)}).scalar()
        if int(count or 0) == int(top) - lo + 1:
            return int(top) + 1 if int(top) < hi else None
        if self.vni_owner(lo) is None:
            return lo
        after = table.alias("after")
        gap = self.conn.execute(
            select(func.min(vni + 1)).where(*in_range, vni < hi, ~select(after.c.vxlan_vni).where(
                after.c.vxlan_vni == vni + 1).exists()), {"lo": lo, "hi": hi}).scalar()
        return int(gap) if gap is not None else None

    def count_by(self, kind: str, column: str, *, nonempty: str) -> dict[str, int]:
        """How many rows have each value of ``column``, among those whose ``nonempty`` column is set."""
        table = schema.RESOURCE_TABLES[kind]
        rows = self.conn.execute(_prepared(("count_by", kind, column, nonempty), lambda: select(
            table.c[column], func.count()).where(table.c[nonempty] != "").group_by(table.c[column])))
        return {str(value): int(n) for value, n in rows}

    def claim_vni(self, vni: int, network_id: str) -> None:
        self.conn.execute(insert(schema.vxlan_allocations).values(vxlan_vni=vni, network_id=network_id))

    def release_vnis(self, network_id: str) -> None:
        table = schema.vxlan_allocations
        self.conn.execute(delete(table).where(table.c.network_id == network_id))

    # --- address allocations -------------------------------------------------

    def claim(self, subnet_id: str, network_id: str, port_id: str, ip: str, offset: int | None,
              known_free: bool = False) -> None:
        """Record an allocation; the unique constraint has the final word."""
        if offset is not None and offset >= 2**62:
            offset = None  # beyond a signed 64-bit column; the scan never needs it
        # Writers are serialized (one thread here, the revision row lock across
        # processes), so checking first is exact; the constraint stays as the
        # backstop and then aborts the whole transaction, which is also right.
        if not known_free and self.is_taken(subnet_id, ip):
            raise AddressTaken(subnet_id, ip)
        try:
            self.conn.execute(
                _prepared(("insert", "ip_allocations"), lambda: insert(schema.ip_allocations)),
                {"subnet_id": subnet_id, "ip_address": ip, "ip_offset": offset, "port_id": port_id,
                 "network_id": network_id},
            )
        except IntegrityError as exc:
            raise AddressTaken(subnet_id, ip) from exc

    def release(self, port_id: str, subnet_id: str | None = None, ip: str | None = None) -> None:
        table = schema.ip_allocations
        query = delete(table).where(table.c.port_id == port_id)
        if subnet_id is not None:
            query = query.where(table.c.subnet_id == subnet_id)
        if ip is not None:
            query = query.where(table.c.ip_address == ip)
        self.conn.execute(query)

    def release_subnet(self, subnet_id: str) -> None:
        self.conn.execute(delete(schema.ip_allocations).where(schema.ip_allocations.c.subnet_id == subnet_id))

    def is_taken(self, subnet_id: str, ip: str) -> bool:
        table = schema.ip_allocations
        stmt = _prepared(("taken",), lambda: select(table.c.port_id).where(
            table.c.subnet_id == bindparam("subnet_id"), table.c.ip_address == bindparam("ip")))
        return self.conn.execute(stmt, {"subnet_id": subnet_id, "ip": ip}).first() is not None

    def range_usage(self, subnet_id: str, lo: int, hi: int) -> tuple[int, int | None]:
        """How many allocations fall in ``[lo, hi]`` and the highest of them."""
        table = schema.ip_allocations
        stmt = _prepared(("usage",), lambda: select(func.count(), func.max(table.c.ip_offset)).where(
            table.c.subnet_id == bindparam("subnet_id"), table.c.ip_offset >= bindparam("lo"),
            table.c.ip_offset <= bindparam("hi")))
        row = self.conn.execute(stmt, {"subnet_id": subnet_id, "lo": lo, "hi": hi}).one()
        return int(row[0]), (int(row[1]) if row[1] is not None else None)

    def taken_offsets(self, subnet_id: str, lo: int, hi: int) -> Iterable[int]:
        table = schema.ip_allocations
        return self.conn.execute(
            select(table.c.ip_offset).where(
                table.c.subnet_id == subnet_id, table.c.ip_offset >= lo, table.c.ip_offset <= hi
            )
        ).scalars()


class Database:
    """Engine, migrations, the serialized writer and snapshot reads."""

    def __init__(self, url: str, *, retention: int = 10000) -> None:
        self.url = normalize_url(url)
        self.retention = max(1, retention)
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = self._make_engine()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netmeta-store-writer")
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="netmeta-store-reader")
        self._local = threading.local()
        with self.engine.begin() as conn:
            if self.is_sqlite:
                self._local.begin = "BEGIN IMMEDIATE"
            schema.migrate(conn)

    def _make_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        path = self.url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, see module doc
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(getattr(self._local, "begin", "BEGIN"))

        return engine

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()

    # --- writes ----------------------------------------------------------------

    def write_sync(self, fn: Callable[[Txn], T], now: str) -> tuple[T, int]:
        """Run ``fn`` in one transaction; returns its result and the new revision."""
        self._local.begin = "BEGIN IMMEDIATE"
        with self.engine.begin() as conn:
            query = select(schema.revision.c.revision, schema.revision.c.compacted).where(schema.revision.c.id == 1)
            if not self.is_sqlite:
                query = query.with_for_update()
            current, compacted = conn.execute(query).one()
            txn = Txn(conn, int(current), now)
            result = fn(txn)
            if txn.changed:
                values: dict[str, int] = {"revision": txn.revision}
                floor = txn.revision - self.retention
                # Compact in batches so the common write stays one small UPDATE.
                if floor - int(compacted) >= max(1, min(1000, self.retention // 10)):
                    conn.execute(delete(schema.changes).where(schema.changes.c.revision <= floor))
                    values["compacted"] = floor
                conn.execute(update(schema.revision).where(schema.revision.c.id == 1).values(**values))
                if not self.is_sqlite:
                    # Delivered at COMMIT to every server LISTENing (netmeta.store.notify).
                    conn.execute(text(notify_sql()), {"payload": notify_payload(txn.revision, txn.base, txn.rendered)})
            return result, txn.revision

    def documents(self) -> dict[str, str]:
        """The shared identity documents (:data:`schema.identity_documents`), by name."""
        return self.read_sync(_documents)

    def update_documents(self, fn: Callable[[dict[str, str]], dict[str, str]], *,
                         notice: str | None = None) -> dict[str, str]:
        """Read the documents, write those ``fn`` returns, in one transaction; all of them after.

        Under a lock on PostgreSQL (two servers starting together agree on
        one identity), ``BEGIN IMMEDIATE`` on SQLite. No revision: these are
        not resources and wake no watcher. ``notice``: a NOTIFY payload sent
        with the commit on PostgreSQL (a revocation, :mod:`netmeta.store.notify`).
        """
        self._local.begin = "BEGIN IMMEDIATE"
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7405922)"))
            docs = _documents(conn)
            changes = fn(dict(docs))
            table = schema.identity_documents
            for name, body in changes.items():
                conn.execute(delete(table).where(table.c.name == name))
                conn.execute(insert(table).values(name=name, body=body))
            if notice is not None and not self.is_sqlite:
                conn.execute(text(notify_sql()), {"payload": notice})
            docs.update(changes)
            return docs

    async def write(self, fn: Callable[[Txn], T], now: str) -> tuple[T, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self.write_sync, fn, now)

    # --- reads -----------------------------------------------------------------

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        self._local.begin = "BEGIN"
        conn_ctx = self.engine.connect()
        with conn_ctx as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return fn(conn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.read_sync, fn)


# --- read helpers used inside read_sync ---------------------------------------


def _documents(conn: Connection) -> dict[str, str]:
    table = schema.identity_documents
    return {str(name): str(body) for name, body in conn.execute(select(table.c.name, table.c.body))}


def current_revision(conn: Connection) -> tuple[int, int]:
    row = conn.execute(
        select(schema.revision.c.revision, schema.revision.c.compacted).where(schema.revision.c.id == 1)
    ).one()
    return int(row[0]), int(row[1])


def load_bodies(conn: Connection, kind: str, **where: str) -> list[str]:
    """Raw JSON documents, in creation order, without parsing them."""
    table = schema.RESOURCE_TABLES[kind]
    query = select(table.c.body).order_by(table.c.created_rev)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    return list(conn.execute(query).scalars())


def load_one(conn: Connection, kind: str, obj_id: str) -> dict[str, Any] | None:
    table = schema.RESOURCE_TABLES[kind]
    body = conn.execute(select(table.c.body).where(table.c.id == obj_id)).scalar()
    return json.loads(body) if body is not None else None


def changes_since(conn: Connection, since: int, limit: int = 5000) -> list[tuple[int, str, str, str]]:
    table = schema.changes
    rows = conn.execute(
        select(table.c.revision, table.c.type, table.c.kind, table.c.object)
        .where(table.c.revision > since)
        .order_by(table.c.revision)
        .limit(limit)
    )
    return [(int(r[0]), r[1], r[2], r[3]) for r in rows]
