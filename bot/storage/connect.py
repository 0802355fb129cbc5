"""Opening the database at start: wait for a PostgreSQL that is not up yet, stop on a refusal.

A database container often starts after the bot. Until PostgreSQL accepts the connection the
bot retries with a backoff capped at 20 s, one WARNING line per attempt and no traceback. Only
a definitive answer stops it, with one line: a wrong user or password, a database that does not
exist, or any other refusal by the server itself. An SQLite file that cannot be opened, or a
database newer than the code, stops it with one line too (:func:`open_storage`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg

from bot.aio.retry import backoff_delays
from bot.config import Settings
from bot.errors import StartupError
from bot.storage.migrations import SchemaVersionError
from bot.storage.storage import Storage

log = logging.getLogger(__name__)

T = TypeVar("T")

# The server is not there (yet), or not accepting connections for the moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, DNS not ready
    TimeoutError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)


CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,  # asyncpg's own refusal of the URL's options
    ValueError,
)


class DatabaseRefused(Exception):
    """PostgreSQL answered and said no; the message is one line for the self-hoster."""


def describe_transient(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the host"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return "the server is starting up"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return "too many connections"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def refusal_line(exc: BaseException, shown_url: str) -> str:
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return (
            f"DATABASE_URL: PostgreSQL at {shown_url} refused the user or password "
            f"({exc.sqlstate}); check the user name and password in the URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"DATABASE_URL: the database named in {shown_url} does not exist; create it "
            "(createdb) or fix the name"
        )
    if not isinstance(exc, asyncpg.PostgresError):  # the client refused the URL's options
        return f"DATABASE_URL: {shown_url} is not usable ({type(exc).__name__})"
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"DATABASE_URL: PostgreSQL at {shown_url} refused the connection ({first_line})"


async def connect_with_retry(
    open_database: Callable[[], Awaitable[T]],
    *,
    shown_url: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    delays: Iterator[float] | None = None,
) -> T:
    """Call ``open_database`` until it succeeds; raise DatabaseRefused on a definitive no."""
    waits = delays if delays is not None else backoff_delays()
    while True:
        try:
            return await open_database()
        except CONNECT_ERRORS as exc:
            if not isinstance(exc, TRANSIENT_ERRORS):
                raise DatabaseRefused(refusal_line(exc, shown_url)) from exc
            delay = next(waits)
            log.warning(
                "Could not connect to PostgreSQL at %s (%s); retrying in %.0f s",
                shown_url,
                describe_transient(exc),
                delay,
            )
            await sleep(delay)


class DatabaseSettingRejected(StartupError):
    """The database refused DATABASE_URL (user, password, database name): a bad setting."""

    exit_status = 2


async def open_storage(settings: Settings) -> Storage:
    """SQLite: open the file. PostgreSQL: keep trying while the server cannot be reached."""
    if settings.database_url is not None:
        shown = settings.database_shown
        try:
            return await connect_with_retry(
                lambda: Storage.open(settings.database_target), shown_url=shown
            )
        except DatabaseRefused as exc:
            raise DatabaseSettingRejected(str(exc)) from exc
        except SchemaVersionError as exc:
            raise StartupError(
                f"DATABASE_URL: {shown} was written by a newer version of the bot; upgrade the "
                "bot (or restore a backup)"
            ) from exc
    try:
        return await Storage.open(settings.database_path)
    except SchemaVersionError as exc:
        raise StartupError(
            f"DATABASE_PATH: {settings.database_path} was written by a newer version of the "
            "bot; upgrade the bot (or restore a backup)"
        ) from exc
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(f"DATABASE_PATH: cannot open {settings.database_path} ({exc})") from exc


__all__ = [
    "DatabaseRefused",
    "DatabaseSettingRejected",
    "connect_with_retry",
    "open_storage",
]
