"""Persistence for the server: SQLAlchemy Core over SQLite or PostgreSQL.

:mod:`netmeta.store.schema` holds the tables and migrations,
:mod:`netmeta.store.database` the engine, the serialized writer and the
change log. Nothing here knows Neutron's rules; it stores documents, records
every change with a global revision, and enforces unique addresses.
"""
