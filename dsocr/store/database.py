"""The one database behind everything a client was promised (jobs, results, history, progress tasks): SQLite
embedded by default, PostgreSQL when several replicas share the work. Opened once per process; every call is
short and synchronous, made from worker threads, never on the event loop."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from dsocr.errors import Unavailable

log = logging.getLogger("deepseek_ocr.store")

# No request waits on a locked or unreachable database for longer than this: it gets a 503 instead.
BUSY_TIMEOUT_S = 5
DEFAULT_FILE = "dsocr.sqlite3"
# Where PostgreSQL carries "something changed" between processes (LISTEN/NOTIFY).
CHANNEL = "dsocr_changes"


class DatabaseUrlError(ValueError):
    """DEEPSEEK_OCR_DATABASE_URL cannot be used; the message names it."""


class StoreUnavailable(Unavailable):
    """The database is locked, unreachable or failing: the client may retry."""

    reason = "database_unavailable"


def database_url(url: str, data_dir: Path) -> str:
    """The SQLAlchemy URL for DEEPSEEK_OCR_DATABASE_URL: empty means a SQLite file in the data folder; a plain
    libpq `postgresql://` URL is driven by psycopg 3."""
    if not url:
        return f"sqlite:///{(data_dir / DEFAULT_FILE).resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"DEEPSEEK_OCR_DATABASE_URL={url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise DatabaseUrlError(f"DEEPSEEK_OCR_DATABASE_URL={url!r}: a SQLite database must be a file path")
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    raise DatabaseUrlError(
        f"DEEPSEEK_OCR_DATABASE_URL={url!r}: only sqlite:///PATH and postgresql://USER@HOST:PORT/DB are supported"
    )


class Database:
    """An SQLAlchemy engine with the two kinds of transaction the service needs: `read()` and `write()`."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = database_url(url, data_dir)
        self.is_postgres = self.url.startswith("postgresql")
        self.engine = self._engine()

    def _engine(self) -> Engine:
        if self.is_postgres:
            return create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=8,
                max_overflow=8,
                pool_timeout=BUSY_TIMEOUT_S,
                connect_args={
                    "connect_timeout": BUSY_TIMEOUT_S,
                    "options": f"-c lock_timeout={BUSY_TIMEOUT_S * 1000} -c statement_timeout=30000",
                },
            )
        path = Path(make_url(self.url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Pooled: closing SQLite's last connection checkpoints and deletes the write-ahead log, which the next
        # write makes again (most of a transaction's cost). A connection serves one thread at a time.
        engine = create_engine(self.url, pool_size=8, max_overflow=8, pool_timeout=BUSY_TIMEOUT_S,
                               connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # the transactions below are begun by hand
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            # A writer takes the write lock up front: two writers never deadlock upgrading a read lock.
            immediate = connection.get_execution_options().get("write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with _unavailable_on_failure(), self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that writes: committed when the block ends, rolled back if it raises."""
        with _unavailable_on_failure(), self.engine.connect() as raw:
            connection = raw.execution_options(write=True)
            with connection.begin():
                yield connection

    def notify(self, connection: Connection, payload: str) -> None:
        """Tells the other processes, when this transaction commits, that `payload` (a job id, "work") changed.
        SQLite has no such thing: its processes poll."""
        if self.is_postgres:
            connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})

    @property
    def libpq_url(self) -> str:
        """The URL psycopg itself takes (for the LISTEN connection)."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def describe(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """A locked, unreachable or failing database is the service's trouble, not the request's: 503 with a retry."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError) and not exc.connection_invalidated:
            raise
        log.warning("the database is unavailable: %s", str(exc.orig or exc).splitlines()[0])
        raise StoreUnavailable(
            "The database is unavailable (locked or unreachable); try again shortly", headers={"Retry-After": "5"}
        ) from None
