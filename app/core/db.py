"""SQLAlchemy 2 async engine, declarative base and exact column types for both dialects."""

import logging
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes are used
from sqlalchemy import DateTime, Dialect, MetaData, Numeric, String, TypeDecorator, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

logger = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Exact(TypeDecorator[Decimal]):
    """An exact decimal: NUMERIC on Postgres, text on SQLite (whose NUMERIC is a binary float)."""

    impl = Numeric(38, 18)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, 18))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return format(Decimal(value), "f")
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return _strip(Decimal(value))


def _strip(value: Decimal) -> Decimal:
    """Drop the trailing zeros NUMERIC(38, 18) pads with, keeping integers unscientific."""
    normalized = value.normalize()
    return normalized.quantize(Decimal(1)) if normalized == normalized.to_integral() else normalized


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every dialect (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(
    url: str,
    pool_size: int = 10,
    *,
    connect_timeout: float = 2.0,
    statement_timeout: float = 3.0,
    pool_timeout: float = 2.0,
    idle_in_transaction_timeout: float = 10.0,
) -> AsyncEngine:
    """An engine whose every wait is bounded, so an unreachable database fails fast instead of hanging.

    Postgres: `connect_timeout` bounds the whole connect (TCP, TLS, auth); the server cancels a
    statement after `statement_timeout`, and the client gives up `STATEMENT_GRACE` later (a server
    that no longer answers at all); `pool_timeout` bounds the wait for a pooled connection; a session
    left idle inside a transaction (its client vanished mid-batch, holding the account lock) is ended
    by the server after `idle_in_transaction_timeout`. SQLite waits at most `statement_timeout` for a lock.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_timeout=pool_timeout, connect_args={"timeout": statement_timeout})
    else:
        # No pre-ping (a round trip per checkout on the hot path): a dead connection fails its
        # request with 503 (see app.main), is discarded, and the retry gets a fresh one.
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            pool_timeout=pool_timeout,
            connect_args={
                "timeout": connect_timeout,
                "command_timeout": statement_timeout + STATEMENT_GRACE,
                "server_settings": {
                    "statement_timeout": str(round(statement_timeout * 1000)),
                    "idle_in_transaction_session_timeout": str(round(idle_in_transaction_timeout * 1000)),
                },
            },
        )
    guard = _OutageGuard()
    event.listen(engine.sync_engine, "do_connect", _connect)
    event.listen(engine.sync_engine, "handle_error", guard.on_error)
    event.listen(engine.sync_engine.pool, "connect", guard.on_connect)
    event.listen(engine.sync_engine.pool, "close", guard.on_close)
    return engine


STATEMENT_GRACE = 0.5
"""Seconds the client waits beyond the server's statement_timeout: a live server answers first."""


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Raise connect-time failures (refused, timed out, reset) as the driver's OperationalError,
    so SQLAlchemy wraps them like any other database error instead of leaking raw OSErrors."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:  # TimeoutError included
        dbapi = dialect.loaded_dbapi
        raise dbapi.OperationalError(f"connect failed: {type(exc).__name__}", exc) from exc


class _OutageGuard:
    """Discards broken connections at once, so an outage costs each request one timeout, not three.

    Every "database unavailable" failure surfaces as SQLAlchemy's OperationalError. A statement
    the client timed out on (or whose socket died) leaves its connection unusable, and so are the
    other pooled connections of that moment (a black hole takes them all): the failed one is
    marked a disconnect (SQLAlchemy then discards the whole pool), and both it and every
    connection older than the failure are aborted outright. SQLAlchemy would first try a polite
    close, which a server that does not answer holds for 2 s per connection.
    """

    def __init__(self) -> None:
        self.last_disconnect = float("-inf")
        self.abandoned: dict[int, float] = {}  # server pid -> wall time its connection was aborted

    def on_connect(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["created"] = time.monotonic()
        if self.abandoned:
            self._end_abandoned(dbapi_connection)

    def on_close(self, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if record.info.get("created", float("-inf")) <= self.last_disconnect:
            self._forget(dbapi_connection)

    def _forget(self, dbapi_connection: Any) -> None:
        """Abort a connection, remembering its server process: a statement cut mid-message (a black hole)
        leaves that backend waiting for the rest, in no state a server timeout ends, holding its locks."""
        pid = _server_pid(dbapi_connection)
        if pid is not None:
            self.abandoned[pid] = time.time()
        _abort(dbapi_connection)

    def _end_abandoned(self, dbapi_connection: Any) -> None:
        """The database answers again: end the backends of the connections we abandoned (only processes
        that started before we gave them up, so a reused pid is never hit). Best effort, logged."""
        pids = list(self.abandoned)
        oldest = max(self.abandoned.values())
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid = ANY($1::int[]) AND backend_start < to_timestamp($2)",
                (pids, oldest),
            )
            ended = cursor.fetchone()
            cursor.close()
        except Exception as exc:  # noqa: BLE001 - a best effort: the next connection tries again
            logger.warning("abandoned_backends_not_ended", extra={"pids": pids, "error": type(exc).__name__})
            return
        logger.warning("abandoned_backends_ended", extra={"pids": pids, "ended": ended[0] if ended else 0})
        self.abandoned.clear()

    def on_error(self, context: ExceptionContext) -> SQLAlchemyError | None:
        error = context.original_exception
        kind = database_failure(error)
        if kind in _DISCONNECTS:
            context.is_disconnect = True
        if context.is_disconnect:  # also a cancelled statement: SQLAlchemy discards its connection
            self.last_disconnect = time.monotonic()
            conn = context.connection
            if conn is not None and not conn.invalidated and not conn.closed:
                self._forget(conn.connection.dbapi_connection)
        if kind is None:
            return None
        if isinstance(context.sqlalchemy_exception, OperationalError):
            context.sqlalchemy_exception.connection_invalidated = context.is_disconnect
            return None
        return OperationalError(
            context.statement,
            None,
            error,
            hide_parameters=True,
            connection_invalidated=context.is_disconnect,
        )


def _server_pid(dbapi_connection: Any) -> int | None:
    get = getattr(getattr(dbapi_connection, "driver_connection", None), "get_server_pid", None)
    try:
        return int(get()) if get is not None else None
    except Exception:  # noqa: BLE001 - a connection already gone has no pid to report
        return None


def _abort(dbapi_connection: Any) -> None:
    """Close the socket now, without the goodbye a dead server would never acknowledge (asyncpg)."""
    terminate = getattr(getattr(dbapi_connection, "driver_connection", None), "terminate", None)
    if terminate is not None:
        terminate()


_DISCONNECTS = {"timeout", "connection_refused", "connection_reset", "connection_lost", "unreachable"}
_DB_MODULES = ("sqlalchemy.", "asyncpg.", "aiosqlite.", "sqlite3.", "app.core.db")
_SQLSTATE_KINDS = {
    "08": "connection_lost",
    "53": "overloaded",
    "57P": "unavailable",  # admin shutdown, crash shutdown, cannot connect now
    "57014": "statement_timeout",  # query_canceled: the server's statement_timeout
    "40001": "transient",  # serialization failure
    "40P01": "transient",  # deadlock detected
}


def database_failure(exc: BaseException) -> str | None:
    """A short class ("timeout", "connection_refused", ...) if `exc` means the database is unavailable
    (retrying later may work), or None if it is something else (a bug, a constraint): callers answer
    503 for the first and 500 for the second, and never show the driver's text."""
    if not isinstance(exc, SQLAlchemyError | asyncpg.PostgresError | asyncpg.InterfaceError) and not _raised_in_db(exc):
        return None
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    for link in _chain(exc):
        kind = _kind_of(link)
        if kind is not None:
            return kind
    if invalidated:
        return "connection_lost"
    if isinstance(exc, OperationalError | InterfaceError | InternalError):
        return "unavailable"
    return None


def _kind_of(exc: BaseException) -> str | None:
    if isinstance(exc, SATimeoutError):
        return "pool_timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "connection_reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError):
        return "connection_lost"
    if isinstance(exc, OSError):
        return "unreachable"
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return "locked"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        for prefix in (sqlstate, sqlstate[:3], sqlstate[:2]):
            if prefix in _SQLSTATE_KINDS:
                return _SQLSTATE_KINDS[prefix]
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error it wraps and what caused that, in order (cycles cut)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        link = todo.pop(0)
        if link is None or any(link is s for s in seen):
            continue
        seen.append(link)
        todo += [getattr(link, "orig", None), link.__cause__, link.__context__]
    return seen


def _raised_in_db(exc: BaseException) -> bool:
    """Whether a raw exception (OSError, TimeoutError) came out of the database driver."""
    if not isinstance(exc, OSError):  # TimeoutError included
        return False
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DB_MODULES):
            return True
        tb = tb.tb_next
    return False


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
