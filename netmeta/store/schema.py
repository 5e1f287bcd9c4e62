"""The database schema and the numbered migrations that create it.

Each resource is a row holding its complete Neutron-shaped JSON document
(``body``) plus the few columns the server looks rows up by (network,
device, creation order). Keeping the document whole makes a list one
``SELECT body`` and a change-log row a copy of it, with no joins and no ORM:
SQLAlchemy Core alone, which is what makes 10,000-port lists cheap.

``ip_allocations`` is the one table whose constraint does real work: the
unique ``(subnet_id, ip_address)`` pair is the last line of defence against
two ports sharing an address, whatever the code above it gets wrong. The
``ip_offset`` column (address minus network address) lets the allocator ask
"highest and count in this pool" through an index instead of reading every
allocation.

``revision`` is one row: the global revision every change bumps, and the
highest revision already compacted out of ``changes`` (a watcher asking for
anything older must list again).

Migrations are plain functions numbered from 1; ``schema_version`` records
the highest applied. A new one appends to :data:`MIGRATIONS` and never edits
an old one.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Index,
    insert,
    select,
    text,
)

metadata = MetaData()

ID = 64  # uuids, but device ids such as "dhcp<uuid>-<uuid>" are longer

networks = Table(
    "networks",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

subnets = Table(
    "subnets",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("network_id", String(ID), nullable=False, index=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

ports = Table(
    "ports",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("network_id", String(ID), nullable=False, index=True),
    Column("device_id", String(255), nullable=False, index=True),
    Column("mac_address", String(32), nullable=False),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
    Index("ix_ports_network_mac", "network_id", "mac_address"),
)

ip_allocations = Table(
    "ip_allocations",
    metadata,
    Column("subnet_id", String(ID), nullable=False),
    Column("ip_address", String(64), nullable=False),
    Column("ip_offset", BigInteger, nullable=True),
    Column("port_id", String(ID), nullable=False, index=True),
    Column("network_id", String(ID), nullable=False),
    UniqueConstraint("subnet_id", "ip_address", name="uq_ip_allocations_subnet_ip"),
    Index("ix_ip_allocations_subnet_offset", "subnet_id", "ip_offset"),
)

routers = Table(
    "routers",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

security_groups = Table(
    "security_groups",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("project_id", String(255), nullable=False, index=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

security_group_rules = Table(
    "security_group_rules",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("security_group_id", String(ID), nullable=False, index=True),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

# Issue 13 (migration 3): agents, which agent hosts what, VXLAN VNIs.
# heartbeat_at is outside the body on purpose: a heartbeat rewrites only this
# column and records no change, so agents' reports do not wake every watcher.
agents = Table(
    "agents",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("agent_type", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("heartbeat_at", String(32), nullable=False),
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
    UniqueConstraint("agent_type", "host", name="uq_agents_type_host"),  # Neutron's uniq_agents0agent_type0host
)

bindings = Table(
    "bindings",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("agent_id", String(ID), nullable=False, index=True),
    Column("network_id", String(ID), nullable=False, index=True),  # "" for a router's
    Column("router_id", String(ID), nullable=False, index=True),  # "" for a network's
    Column("created_rev", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),
)

# ml2_vxlan_allocations, keeping only allocated VNIs: the primary key is what
# makes one VNI one network, across every server on the database.
vxlan_allocations = Table(
    "vxlan_allocations",
    metadata,
    Column("vxlan_vni", BigInteger, primary_key=True, autoincrement=False),
    Column("network_id", String(ID), nullable=False, index=True),
)

# Issue 13 (migration 4): the embedded identity every server on one store
# shares (netmeta.server.shared_identity): the token key, the identity
# document, the clouds the first server wrote. Not resources: no revision,
# no change-log rows.
identity_documents = Table(
    "identity_documents",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("body", Text, nullable=False),
)

changes = Table(
    "changes",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),  # 16 until migration 2 ("security_group_rules" is 20)
    Column("type", String(16), nullable=False),
    Column("object", Text, nullable=False),
)

revision = Table(
    "revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
    Column("compacted", BigInteger, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

RESOURCE_TABLES: dict[str, Table] = {
    "networks": networks,
    "subnets": subnets,
    "ports": ports,
    "routers": routers,
    "instances": instances,
    "security_groups": security_groups,
    "security_group_rules": security_group_rules,
    "agents": agents,
    "bindings": bindings,
}
# Tables each later migration creates; the first made everything that existed then.
_SECOND = (security_groups, security_group_rules)
_THIRD = (agents, bindings, vxlan_allocations)
_FOURTH = (identity_documents,)
_LATER = (*_SECOND, *_THIRD, *_FOURTH)


def _migration_1(conn: Connection) -> None:
    """Create every table and the single revision row."""
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables
                                      if t is not schema_version and t not in _LATER])
    conn.execute(insert(revision).values(id=1, revision=0, compacted=0))


def _migration_2(conn: Connection) -> None:
    """Security groups and their rules (issue 8).

    Ports made before this keep ``security_groups: []``; with port security
    on that means "no ingress but DHCP and metadata", as in Neutron for a
    port without groups. Give them the default group with
    ``openstack port set --security-group default``.
    """
    metadata.create_all(conn, tables=list(_SECOND))
    if conn.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        conn.execute(text("ALTER TABLE changes ALTER COLUMN kind TYPE VARCHAR(32)"))


def _migration_3(conn: Connection) -> None:
    """Agents, their bindings to networks and routers, VXLAN VNIs (issue 13).

    Networks made before this keep ``provider:network_type`` "local" and no
    VNI; their DHCP port is adopted by the first DHCP agent that reports.
    """
    metadata.create_all(conn, tables=list(_THIRD))


def _migration_4(conn: Connection) -> None:
    """The identity shared by every server on one store (issue 13: a token from one server valid at all)."""
    metadata.create_all(conn, tables=list(_FOURTH))


MIGRATIONS: list[Callable[[Connection], None]] = [_migration_1, _migration_2, _migration_3, _migration_4]


def migrate(conn: Connection) -> int:
    """Apply every migration not yet recorded; returns the resulting version.

    Runs inside the caller's transaction so a failed migration leaves the
    database as it was. On PostgreSQL an advisory lock keeps two servers
    starting together from migrating twice.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7405921)"))
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())).scalar()
    version = int(current or 0)
    for number, step in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        step(conn)
        conn.execute(insert(schema_version).values(version=number))
        version = number
    return version
