"""Versioned schema changes, applied at start under a lock (PostgreSQL's advisory lock; SQLite's write lock), so
that replicas starting together migrate once. Each migration is a function of a connection inside the
migration's transaction; `schema_version` says how many have run. Never edit a released migration: add one."""

from __future__ import annotations

import logging
import time
from typing import Callable

from sqlalchemy import Connection, func, insert, inspect, select, text, update

from dsocr.store import schema
from dsocr.store.database import Database, StoreUnavailable

log = logging.getLogger("deepseek_ocr.store")

# Any constant shared by every replica: the key of the advisory lock migrations hold.
MIGRATION_LOCK = 0x64736F6372  # "dsocr"
# A replica starting beside one that migrates waits this long for it (a request waits BUSY_TIMEOUT_S at most).
MIGRATION_WAIT_S = 60


def _v1_tables(connection: Connection) -> None:
    """Jobs, documents, pages, events, webhooks, history and progress tasks."""
    for table in schema.metadata.sorted_tables:
        if table is not schema.schema_version:
            table.create(connection, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_tables]


def current_version(connection: Connection) -> int:
    return connection.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0


def migrate(database: Database) -> int:
    """Brings the schema up to date; returns the version it is at. Safe to run from several processes at once: one
    migrates, the others wait for its lock, up to MIGRATION_WAIT_S."""
    deadline = time.monotonic() + MIGRATION_WAIT_S
    pause_s = 0.1
    while True:
        try:
            return _migrate(database)
        except StoreUnavailable:  # locked by a replica that migrates (or unreachable): once more, until the deadline
            if time.monotonic() + pause_s > deadline:
                raise
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 2.0)


def _migrate(database: Database) -> int:
    with database.write() as connection:
        if database.is_postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if not inspect(connection).has_table("schema_version"):
            schema.schema_version.create(connection)
        version = current_version(connection)
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this service knows "
                f"({len(MIGRATIONS)}): run the newer service, or point DEEPSEEK_OCR_DATABASE_URL elsewhere"
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("database: migration %d (%s)", number, (migration.__doc__ or migration.__name__).strip())
            migration(connection)
            if number == 1:
                connection.execute(insert(schema.schema_version).values(version=number))
            else:
                connection.execute(update(schema.schema_version).values(version=number))
        return len(MIGRATIONS)
