"""The database layer under Storage: the PostgreSQL adapter, the same migrations on both engines,
and reaching PostgreSQL at start (retry while unreachable, one line on a refusal)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.config import Settings, load_settings
from bot.errors import StartupError
from bot.storage import Storage
from bot.storage import migrations as db
from bot.storage.connect import DatabaseRefused, connect_with_retry, open_storage
from bot.storage.engines import postgresql
from bot.storage.engines.postgresql import PostgresDatabase, rows_changed, to_numbered_placeholders
from bot.storage.engines.sqlite import SqliteDatabase
from bot.storage.migrate import migrate
from tests.harness import free_port

PROJECT_ROOT = str(Path(__file__).resolve().parents[1])

# --- the adapter --------------------------------------------------------------------------------


def test_placeholders_are_numbered_outside_literals() -> None:
    assert to_numbered_placeholders("SELECT ? , ?") == "SELECT $1 , $2"
    assert (
        to_numbered_placeholders("UPDATE t SET a = '?' , b = ? WHERE c = \"q?\" AND d = ?")
        == "UPDATE t SET a = '?' , b = $1 WHERE c = \"q?\" AND d = $2"
    )
    assert to_numbered_placeholders("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', $1"
    assert to_numbered_placeholders("SELECT ? -- why?\n, ?") == "SELECT $1 -- why?\n, $2"
    assert to_numbered_placeholders("SELECT 1") == "SELECT 1"


def test_rows_changed_reads_the_command_tag() -> None:
    assert rows_changed("UPDATE 3") == 3
    assert rows_changed("INSERT 0 1") == 1
    assert rows_changed("DELETE 0") == 0
    assert rows_changed("CREATE TABLE") == 0


def test_every_migration_exists_for_both_engines() -> None:
    for migration in db.MIGRATIONS:
        assert migration.sqlite, migration.version
        assert migration.postgresql, migration.version


# --- the same schema on both engines ------------------------------------------------------------


def sqlite_schema(path: Path) -> dict[str, set[str]]:
    with contextlib.closing(sqlite3.connect(path)) as raw:
        tables = [
            row[0]
            for row in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        schema = {t: {row[1] for row in raw.execute(f"PRAGMA table_info({t})")} for t in tables}
        indexes = {
            row[0]
            for row in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    schema["<indexes>"] = indexes
    return schema


async def postgres_schema(url: str) -> dict[str, set[str]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> $1",
            postgresql.SCHEMA_TABLE,
        )
        index_rows = await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'"
        )
    finally:
        await connection.close()
    schema: dict[str, set[str]] = {}
    for row in rows:
        schema.setdefault(row["table_name"], set()).add(row["column_name"])
    schema["<indexes>"] = {row["indexname"] for row in index_rows}
    return schema


@pytest.mark.postgresql
async def test_both_engines_have_the_same_tables_columns_and_indexes(
    tmp_path: Path, postgres_database: str
) -> None:
    path = tmp_path / "bot.db"
    async with await Storage.open(path), await Storage.open(postgres_database):
        pass
    assert await postgres_schema(postgres_database) == sqlite_schema(path)


@pytest.mark.postgresql
@pytest.mark.parametrize("version", range(db.LATEST_SCHEMA_VERSION))
async def test_postgresql_upgrades_from_each_earlier_version(
    postgres_database: str, version: int
) -> None:
    database = await PostgresDatabase.open(postgres_database)
    assert tuple(await migrate(database, version)) == tuple(range(1, version + 1))
    await database.close()
    async with await Storage.open(postgres_database) as storage:
        assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
        expected = tuple(range(version + 1, db.LATEST_SCHEMA_VERSION + 1))
        assert storage.applied_migrations == expected
        assert storage.dialect == "postgresql"


@pytest.mark.postgresql
async def test_postgresql_newer_than_the_code_is_refused(postgres_database: str) -> None:
    async with await Storage.open(postgres_database):
        pass
    connection = await asyncpg.connect(postgres_database)
    await connection.execute(
        f"UPDATE {postgresql.SCHEMA_TABLE} SET version = $1", db.LATEST_SCHEMA_VERSION + 1
    )
    await connection.close()
    with pytest.raises(db.SchemaVersionError, match="newer"):
        await Storage.open(postgres_database)


@pytest.mark.postgresql
async def test_a_failed_postgresql_migration_leaves_nothing_behind(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = db.Migration(
        version=db.LATEST_SCHEMA_VERSION + 1,
        description="broken",
        sqlite=("CREATE TABLE half_done (x INTEGER)", "NOT SQL"),
        postgresql=("CREATE TABLE half_done (x INTEGER)", "NOT SQL"),
    )
    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, broken))
    monkeypatch.setattr(db, "LATEST_SCHEMA_VERSION", broken.version)
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await Storage.open(postgres_database)
    monkeypatch.undo()
    async with await Storage.open(postgres_database) as storage:
        assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
    assert "half_done" not in await postgres_schema(postgres_database)


@pytest.mark.postgresql
async def test_writes_serialise_across_pools(postgres_database: str) -> None:
    """Two pools (as two processes): a read-then-write transaction never interleaves."""
    first = await Storage.open(postgres_database)
    second = await Storage.open(postgres_database)
    try:

        async def bump(storage: Storage) -> None:
            async with storage.database.transaction() as tx:
                row = await tx.fetchone(
                    "SELECT updated_at FROM guild_settings WHERE guild_id = ?", (1,)
                )
                value = float(row[0]) if row is not None else 0.0
                await asyncio.sleep(0)
                await tx.execute(
                    "INSERT INTO guild_settings (guild_id, updated_at) VALUES (?, ?) "
                    "ON CONFLICT (guild_id) DO UPDATE SET updated_at = excluded.updated_at",
                    (1, value + 1),
                )

        await asyncio.wait_for(
            asyncio.gather(*(bump(first if i % 2 else second) for i in range(40))), timeout=30
        )
        rows = await first.database.fetchall(
            "SELECT updated_at FROM guild_settings WHERE guild_id = 1"
        )
        assert float(rows[0][0]) == 40.0
    finally:
        await first.close()
        await second.close()


# --- reaching PostgreSQL at start ---------------------------------------------------------------


async def test_unreachable_database_is_retried_with_a_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0
    waits: list[float] = []

    async def opener() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 8:
            raise ConnectionRefusedError(111, "Connection refused")
        return "opened"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with caplog.at_level(logging.WARNING):
        result = await connect_with_retry(opener, shown_url="postgresql://bot@db/bot", sleep=sleep)
    assert result == "opened"
    assert waits == [1, 2, 4, 8, 16, 20, 20]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.storage.connect"]
    assert len(lines) == 7
    assert lines[0] == (
        "Could not connect to PostgreSQL at postgresql://bot@db/bot (connection refused); "
        "retrying in 1 s"
    )
    assert all(r.exc_info is None for r in caplog.records)


def url_with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}:{'wrong-password'}@{parts.hostname}:{parts.port}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def settings_for(url: str) -> Settings:
    return load_settings(
        {
            "DISCORD_TOKEN": "t",
            "SPOTIFY_CLIENT_ID": "i",
            "SPOTIFY_CLIENT_SECRET": "s",
            "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
            "TOKEN_ENCRYPTION_KEY": "A" * 43,
            "DATABASE_URL": url,
        }
    )


@pytest.mark.postgresql
async def test_a_wrong_user_stops_with_one_line(postgres_database: str) -> None:
    settings = settings_for(url_with(postgres_database, user="nobody"))
    with pytest.raises(StartupError) as caught:
        await open_storage(settings)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: PostgreSQL at postgresql://nobody:***@")
    assert "refused the user or password" in message
    assert "wrong-password" not in message
    assert "\n" not in message


@pytest.mark.postgresql
async def test_a_missing_database_stops_with_one_line(postgres_database: str) -> None:
    settings = settings_for(url_with(postgres_database, database="no_such_db"))
    with pytest.raises(StartupError, match="does not exist; create it"):
        await open_storage(settings)


async def forward(listen_port: int, target_port: int) -> asyncio.Server:
    """A TCP forwarder: PostgreSQL 'comes up' on listen_port when this starts."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


@pytest.mark.postgresql
async def test_the_bot_comes_up_once_postgresql_answers(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    real_port = urlsplit(postgres_database).port
    assert real_port is not None
    parts = urlsplit(postgres_database)
    late_url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
    settings = settings_for(late_url)
    retried = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Could not connect to PostgreSQL" in record.getMessage():
                retried.set()

    watcher = Watch()
    logging.getLogger("bot.storage.connect").addHandler(watcher)
    server: asyncio.Server | None = None
    try:
        opening = asyncio.create_task(open_storage(settings))
        await asyncio.wait_for(retried.wait(), timeout=10)
        server = await forward(port, real_port)
        storage = await asyncio.wait_for(opening, timeout=15)
        async with storage:
            assert await storage.ping()
            assert storage.dialect == "postgresql"
    finally:
        logging.getLogger("bot.storage.connect").removeHandler(watcher)
        if server is not None:
            server.close()


async def test_refusal_is_not_retried() -> None:
    calls = 0

    async def opener() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.InvalidPasswordError('password authentication failed for user "bot"')

    with pytest.raises(DatabaseRefused, match="refused the user or password"):
        await connect_with_retry(opener, shown_url="postgresql://bot:***@db/bot")
    assert calls == 1


@pytest.mark.postgresql
async def test_the_bot_exits_2_with_one_line_when_postgresql_refuses(
    tmp_path: Path, postgres_database: str
) -> None:
    import os
    import subprocess
    import sys

    wrong = url_with(postgres_database, user="nobody")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": PROJECT_ROOT,
        "DISCORD_TOKEN": "token",
        "SPOTIFY_CLIENT_ID": "id",
        "SPOTIFY_CLIENT_SECRET": "secret",
        "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
        "TOKEN_ENCRYPTION_KEY": "A" * 43,
        "DATABASE_URL": wrong,
        "DISCORD_API_BASE": "http://127.0.0.1:9/api/v10",  # never reached: the database is first
        "WEB_PORT": str(free_port()),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "DATABASE_URL: PostgreSQL at postgresql://nobody:***@" in lines[0]
    assert "wrong-password" not in lines[0]
    assert "Traceback" not in done.stderr


async def test_executemany_counts_what_changed_on_both_backends(
    database_target: str | Path,
) -> None:
    async with await Storage.open(database_target) as storage:
        async with storage.database.transaction() as tx:
            inserted = await tx.executemany(
                "INSERT INTO guild_settings (guild_id, updated_at) SELECT ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM guild_settings WHERE guild_id = ?)",
                [(1, 1.0, 1), (2, 2.0, 2), (1, 3.0, 1)],
            )
        assert inserted == 2
        rows = await storage.database.fetchall(
            "SELECT guild_id FROM guild_settings ORDER BY guild_id"
        )
        assert [int(row[0]) for row in rows] == [1, 2]


@pytest.mark.postgresql
async def test_listening_goes_on_after_the_connection_is_lost(postgres_database: str) -> None:
    received: list[str] = []
    arrived = asyncio.Event()

    def callback(payload: str) -> None:
        received.append(payload)
        arrived.set()

    async with (
        await Storage.open(postgres_database) as listener,
        await Storage.open(postgres_database) as sender,
        listener.listen("nowplaying_test", callback),
    ):
        await sender.notify("nowplaying_test", "before")
        await asyncio.wait_for(arrived.wait(), 10)
        admin = await asyncpg.connect(postgres_database)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed == 1
        arrived.clear()

        async def notify_until_heard() -> None:
            while not arrived.is_set():
                await sender.notify("nowplaying_test", "after")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.2)

        await asyncio.wait_for(notify_until_heard(), 15)
    assert received[0] == "before"
    assert received[-1] == "after"


async def test_a_heavy_read_does_not_hold_up_writes_or_quick_reads(tmp_path: Path) -> None:
    database = await SqliteDatabase.open(tmp_path / "bot.db")
    try:
        async with database.transaction() as tx:
            await tx.execute("CREATE TABLE t (n INTEGER)")
        heavy = asyncio.create_task(
            database.read_heavy(
                "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                "WHERE n < 3000000) SELECT count(*) FROM c"
            )
        )
        await asyncio.sleep(0.05)  # the reader is counting
        started = time.perf_counter()
        async with database.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
        rows = await database.fetchall("SELECT count(*) FROM t")
        quick = time.perf_counter() - started
        assert rows[0][0] == 1
        assert not heavy.done(), "the heavy read ended too soon to tell"
        assert quick < 0.2
        assert (await heavy)[0][0] == 3_000_000
        # The reader is read-only: a write through it is refused.
        with pytest.raises(Exception, match=r"readonly|read-only|attempt to write"):
            await database.read_heavy("INSERT INTO t VALUES (2) RETURNING n")
    finally:
        await database.close()


@pytest.mark.postgresql
async def test_heavy_reads_take_at_most_a_quarter_of_the_pool(postgres_database: str) -> None:
    database = await PostgresDatabase.open(postgres_database, max_size=8)  # two heavy slots
    try:
        started = time.perf_counter()
        heavy = [asyncio.create_task(database.read_heavy("SELECT pg_sleep(0.4)")) for _ in range(4)]
        await asyncio.sleep(0.1)
        quick = time.perf_counter()
        assert (await database.fetchall("SELECT 1"))[0][0] == 1
        assert time.perf_counter() - quick < 0.2  # a connection was free for it
        await asyncio.gather(*heavy)
        assert time.perf_counter() - started >= 0.8  # two at a time, twice
    finally:
        await database.close()
