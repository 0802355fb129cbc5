"""``check``'s look at the database and the encryption keys: never created, migrated or
written (see ``bot.cli.check``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

import aiosqlite

from bot.cli.findings import OK, PROBLEM, SKIPPED, Finding
from bot.config import redact_database_url
from bot.crypto import TokenCipher
from bot.storage import Storage
from bot.storage import migrations as db
from bot.storage.engines.sqlite import BUSY_TIMEOUT_MS, SqliteDatabase, is_memory_path
from bot.storage.secrets import (
    count_secrets_by_key,
    keys_open_summary,
    unreadable_advice,
)

POSTGRES_CHECK_TIMEOUT: Final = 10.0
# Something else to read while the database is open: ``also(storage, schema_version)``.
AlsoRead = Callable[[Storage, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SecretCounts:
    current: int
    older: int
    undecryptable: int

    @property
    def total(self) -> int:
        return self.current + self.older + self.undecryptable


def _writable_folder(folder: Path) -> str | None:
    """None when a file can be created in ``folder``; else why not. Leaves nothing behind."""
    try:
        fd, name = tempfile.mkstemp(prefix=".nowplaying-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


async def check_database(
    path: Path, cipher: TokenCipher, also: AlsoRead | None = None
) -> tuple[Finding, SecretCounts | None]:
    located = _locate_database(path)
    if isinstance(located, Finding):
        return located, None
    item = "database"
    try:
        version, counts = await _read_database(located, cipher, also)
    except (sqlite3.Error, OSError) as exc:
        detail = f"{located} cannot be read as a SQLite database ({exc})"
        return Finding(PROBLEM, item, detail), None
    latest = db.LATEST_SCHEMA_VERSION
    if version > latest:
        return (
            Finding(
                PROBLEM,
                item,
                f"{located} is at schema version {version}, newer than this bot supports "
                f"({latest}): upgrade the bot or restore a matching backup",
            ),
            counts,
        )
    if version < latest:
        return (
            Finding(
                OK,
                item,
                f"{located} is writable, schema version {version}; the bot migrates it to "
                f"{latest} at start-up (back the file up first)",
            ),
            counts,
        )
    return Finding(OK, item, f"{located} is writable, schema version {version} (current)"), counts


async def check_postgresql(
    url: str, cipher: TokenCipher, also: AlsoRead | None = None
) -> tuple[Finding, SecretCounts | None]:
    """Connect once (no retry, no migration) and read the schema version and the secrets."""
    from bot.storage.connect import (
        CONNECT_ERRORS,
        TRANSIENT_ERRORS,
        describe_transient,
        refusal_line,
    )
    from bot.storage.engines.postgresql import PostgresDatabase

    item = "database"
    shown = redact_database_url(url)
    latest = db.LATEST_SCHEMA_VERSION
    try:
        async with asyncio.timeout(POSTGRES_CHECK_TIMEOUT):
            database = await PostgresDatabase.open(url, max_size=1)
    except CONNECT_ERRORS as exc:
        if isinstance(exc, TRANSIENT_ERRORS):
            return (
                Finding(
                    PROBLEM,
                    item,
                    f"PostgreSQL at {shown} cannot be reached ({describe_transient(exc)}); "
                    "the bot keeps trying at start-up",
                ),
                None,
            )
        return Finding(PROBLEM, item, refusal_line(exc, shown)), None
    storage = Storage.over(database)
    try:
        version = await storage.schema_version()
        counts = None
        if version >= 1:
            current, older, undecryptable = await count_secrets_by_key(
                storage.sealed, cipher, version
            )
            counts = SecretCounts(current, older, undecryptable)
        if also is not None and version <= latest:
            await also(storage, version)
    finally:
        await storage.close()
    if version > latest:
        detail = (
            f"PostgreSQL at {shown} is at schema version {version}, newer than this bot "
            f"supports ({latest}): upgrade the bot or restore a matching backup"
        )
        return Finding(PROBLEM, item, detail), counts
    if version < latest:
        detail = (
            f"PostgreSQL at {shown} accepts the connection, schema version {version}; the bot "
            f"migrates it to {latest} at start-up"
        )
        return Finding(OK, item, detail), counts
    detail = f"PostgreSQL at {shown} accepts the connection, schema version {version} (current)"
    return Finding(OK, item, detail), counts


def _locate_database(path: Path) -> Finding | Path:
    """The existing database file to read, or the finding when there is nothing to read."""
    item = "database"
    latest = db.LATEST_SCHEMA_VERSION
    if is_memory_path(path):
        return Finding(SKIPPED, item, "DATABASE_PATH is :memory:, links are lost on restart")
    shown = path.absolute()
    folder = shown.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Finding(PROBLEM, item, f"{existing} is a file, so {folder} cannot be a folder")
    reason = _writable_folder(existing)
    if reason is not None:
        return Finding(PROBLEM, item, f"folder {existing} is not writable ({reason})")
    if existing != folder:
        return Finding(
            OK,
            item,
            f"folder {folder} does not exist yet; the bot creates it and {path.name} at "
            f"start-up ({existing} is writable), with schema version {latest}",
        )
    if not shown.exists():
        return Finding(
            OK,
            item,
            f"folder {folder} is writable; {path.name} does not exist yet, the bot creates it "
            f"at start-up with schema version {latest}",
        )
    if not shown.is_file():
        return Finding(PROBLEM, item, f"{shown} exists but is not a file")
    if not os.access(shown, os.R_OK | os.W_OK):
        return Finding(PROBLEM, item, f"{shown} is not readable and writable by this user")
    return shown


async def _read_database(
    path: Path, cipher: TokenCipher, also: AlsoRead | None
) -> tuple[int, SecretCounts | None]:
    # mode=rw: never creates the file. Not mode=ro: a read-only connection to a WAL database
    # leaves -wal and -shm files behind, which the last read-write connection removes on close.
    uri = f"file:{quote(str(path))}?mode=rw"
    connection = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    storage = Storage.over(SqliteDatabase(connection))
    try:
        async with connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"):
            pass
        version = await storage.schema_version()
        if version < 1:  # no tables yet: nothing stored
            return version, None
        current, older, undecryptable = await count_secrets_by_key(storage.sealed, cipher, version)
        if also is not None and version <= db.LATEST_SCHEMA_VERSION:
            await also(storage, version)
        return version, SecretCounts(current, older, undecryptable)
    finally:
        await storage.close()


def check_keys(key_count: int, counts: SecretCounts | None, command: str) -> Finding:
    item = "encryption keys"
    keys = f"{key_count} key(s) valid"
    if counts is None or counts.total == 0:
        return Finding(OK, item, f"{keys}; no stored secrets yet")
    parts = [f"{counts.current} under the first key"]
    if counts.older:
        parts.append(f"{counts.older} under an older key")
    if counts.undecryptable:
        parts.append(f"{counts.undecryptable} that no configured key can read")
    summary = f"{keys}; {counts.total} stored secret(s): {', '.join(parts)}"
    if counts.undecryptable:
        opens = keys_open_summary(counts.total - counts.undecryptable, counts.total)
        return Finding(
            PROBLEM, item, f"{opens}: {', '.join(parts)}. To fix it, {unreadable_advice(command)}"
        )
    if counts.older:
        return Finding(
            OK,
            item,
            f"{summary}; run `{command} rotate-keys`, then remove the older key(s)",
        )
    if key_count > 1:
        return Finding(OK, item, f"{summary}; the other key(s) can be removed")
    return Finding(OK, item, summary)
