"""One small SQL interface over SQLite (embedded, one process) and PostgreSQL (shared by replicas).

Stores write their SQL once, with ``?`` placeholders, and run it in :meth:`Database.tx`:
a transaction that, on PostgreSQL, first takes the named advisory locks (held until
commit), so replicas serialise what must not interleave (the last reference to a blob
and its deletion; quota eviction). On SQLite one process owns the file and a thread
lock does the same. A database that cannot be reached is a 503 naming it
(:class:`StoreUnavailable`), and the next request tries again: nothing needs a restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from openai_frontend.errors import OpenAIError

logger = logging.getLogger(__name__)


class StoreUnavailable(OpenAIError):
    """A store (the database, the S3 bucket) cannot be reached now: 503, naming it."""

    def __init__(self, store: str, why: object) -> None:
        super().__init__(503, f"{store} is unavailable: {str(why).strip()[:300]}; try again later",
                         code="store_unavailable")


class Tx:
    """The statements of one transaction."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cur = cursor
        self._ph = placeholder

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(self._sql(sql), tuple(args))
        return list(self._cur.fetchall()) if self._cur.description is not None else []

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a write; the number of rows it touched."""
        self._cur.execute(self._sql(sql), tuple(args))
        return int(self._cur.rowcount)

    def _sql(self, sql: str) -> str:
        return sql if self._ph == "?" else sql.replace("?", self._ph)


class Database(Protocol):
    """SQLite or PostgreSQL, as the stores see them."""

    #: True when other processes use the same database (replicas): nothing is "left over" at start.
    shared: bool
    #: For messages: "the PostgreSQL database db@host:port".
    name: str
    #: "sqlite" or "postgresql", for the few statements that differ (the schema).
    dialect: str

    def tx(self, *locks: str) -> Any:
        """A context manager: one transaction (a :class:`Tx`), holding ``locks`` until it ends."""

    def close(self) -> None: ...


class SqliteDatabase:
    """One SQLite file (WAL mode) owned by this process."""

    shared = False
    dialect = "sqlite"

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.name = f"the SQLite database {path}"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def tx(self, *locks: str) -> Iterator[Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._db.cursor(), "?")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def script(self, sql: str) -> None:
        with self._lock:
            self._db.executescript(sql)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresDatabase:
    """A pool of psycopg connections to one PostgreSQL database, shared with other replicas."""

    shared = True
    dialect = "postgresql"

    def __init__(self, url: str, *, max_connections: int = 8, timeout_s: float = 5.0) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._errors: tuple[type[BaseException], ...] = (psycopg.OperationalError, PoolTimeout)
        self.url = url
        self.name = f"the PostgreSQL database {describe_url(url)}"
        self._pool = ConnectionPool(url, min_size=1, max_size=max_connections, timeout=timeout_s, open=False,
                                    check=ConnectionPool.check_connection, name="vlt",
                                    kwargs={"autocommit": True})
        try:
            self._pool.open(wait=True, timeout=timeout_s * 2)
        except PoolTimeout as exc:
            self._pool.close()
            raise ValueError(f"setting database_url: cannot connect to {self.name}: {exc}") from None

    @contextmanager
    def tx(self, *locks: str) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for key in sorted(set(locks)):  # one order everywhere: no lock cycle between replicas
                    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
                yield Tx(cur, "%s")
        except self._errors as exc:
            raise StoreUnavailable(self.name, exc) from None

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled autocommit connection (LISTEN needs its own: see :func:`listen`)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._errors as exc:
            raise StoreUnavailable(self.name, exc) from None

    def listener(self) -> Any:
        """A new autocommit connection outside the pool, for LISTEN (it blocks in ``notifies()``)."""
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.name, exc) from None

    def script(self, sql: str) -> None:
        with self.tx("schema") as tx:  # replicas starting together create the tables once
            for statement in (s.strip() for s in sql.split(";")):
                if statement:
                    tx.run(statement)

    def close(self) -> None:
        self._pool.close()


def describe_url(url: str) -> str:
    """``db@host:port`` of a database URL: what a message may show (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.path.lstrip('/') or '(default)'}@{host}{port}"


def open_database(url: str, sqlite_path: Path) -> SqliteDatabase | PostgresDatabase:
    """PostgreSQL when ``url`` is set (``postgresql://...``), else the embedded SQLite file."""
    if url:
        return PostgresDatabase(url)
    return SqliteDatabase(sqlite_path)
