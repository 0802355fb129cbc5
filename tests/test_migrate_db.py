"""migrate-db: an SQLite install copied into an empty PostgreSQL database, in one transaction,
verified, secrets still encrypted; a non-empty target refused and left untouched."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot.crypto import TokenCipher
from bot.storage import LastPost, LinkedAccount, Storage, transfer
from bot.storage import migrations as db
from bot.storage.transfer import TransferRefused, copy_sqlite_to_postgresql
from tests.harness import free_port
from tests.helpers import refresh_token_blobs

pytestmark = pytest.mark.postgresql

NOW = 1_750_000_000.0
KEY = b"k" * 32
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


async def seed(path: Path) -> dict[int, bytes]:
    """Something in every table; returns the stored ciphertext per member."""
    cipher = TokenCipher([KEY])
    secrets: dict[int, bytes] = {}
    async with await Storage.open(path) as storage:
        for user_id in range(1, 31):
            blob = cipher.encrypt(800000000000000000 + user_id, f"refresh-{user_id}")
            secrets[user_id] = blob
            await storage.links.save_link(
                LinkedAccount(
                    discord_user_id=800000000000000000 + user_id,
                    spotify_account_id=f"acct-{user_id}",
                    spotify_user_id=f"user-{user_id}",
                    display_name=f"Name {user_id}",
                    refresh_token=blob,
                    scopes="user-read-currently-playing",
                    linked_at=NOW + user_id,
                )
            )
            await storage.last_posts.record_post(
                LastPost(800000000000000000 + user_id, 700000000000000011, f"t{user_id}", 9, NOW)
            )
        await storage.links.mark_link_broken(800000000000000003)
        await storage.link_states.create_link_state("state-a", 800000000000000001, now=NOW)
        await storage.link_states.create_link_state("state-b", 800000000000000002, now=NOW)
        await storage.link_states.consume_link_state("state-b", now=NOW + 1)
        await storage.settings.set_music_channel(700000000000000001, 700000000000000011, now=NOW)
        await storage.settings.disable_autopost(700000000000000002, "Missing access", now=NOW)
        await storage.settings.set_autopost_opt_in(800000000000000004, False, now=NOW)
        await storage.settings.set_guild_autopost_opt_in(
            800000000000000005, 700000000000000001, True, now=NOW
        )
        await storage.privacy.set_visibility(800000000000000006, "private", now=NOW)
    return {800000000000000000 + k: v for k, v in secrets.items()}


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as raw:
        tables = [
            row[0]
            for row in raw.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: sorted(raw.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


async def postgres_rows(url: str, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    connection = await asyncpg.connect(url)
    try:
        result = {}
        for table in tables:
            rows = await connection.fetch(f"SELECT * FROM {table}")
            result[table] = sorted((tuple(row.values()) for row in rows), key=repr)
        return result
    finally:
        await connection.close()


async def our_tables(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    return {row[0] for row in rows}


async def test_everything_is_copied_as_stored(tmp_path: Path, postgres_database: str) -> None:
    source = tmp_path / "bot.db"
    secrets = await seed(source)
    report = await copy_sqlite_to_postgresql(source, postgres_database)

    expected = sqlite_rows(source)
    assert report.schema_version == db.LATEST_SCHEMA_VERSION
    assert report.rows_by_table == {table: len(rows) for table, rows in expected.items()}
    assert report.rows_by_table["linked_accounts"] == 30
    copied = await postgres_rows(postgres_database, list(expected))
    assert copied == expected  # every value of every row, ciphertext byte for byte

    async with await Storage.open(postgres_database) as storage:
        assert storage.applied_migrations == ()  # already at the latest schema
        assert dict(await refresh_token_blobs(storage)) == {
            user_id: blob for user_id, blob in secrets.items() if user_id != 800000000000000003
        }
        cipher = TokenCipher([KEY])
        link = await storage.links.get_link(800000000000000007)
        assert link is not None
        assert link.refresh_token is not None
        assert (
            cipher.decrypt(link.discord_user_id, link.refresh_token) == "refresh-7"
        )  # the same key still opens it
        assert (
            await storage.link_states.consume_link_state("state-b", now=NOW + 2)
        ).status == "used"
        assert (await storage.link_states.consume_link_state("state-a", now=NOW + 2)).status == "ok"
        assert await storage.privacy.get_visibility(800000000000000006) == "private"
        assert await storage.settings.list_music_channels() == {
            700000000000000001: 700000000000000011
        }


async def test_a_target_with_our_tables_is_refused_and_untouched(
    tmp_path: Path, postgres_database: str
) -> None:
    source = tmp_path / "bot.db"
    await seed(source)
    async with await Storage.open(postgres_database) as storage:
        await storage.settings.set_music_channel(1, 2, now=NOW)
    before = await postgres_rows(postgres_database, ["guild_settings", "linked_accounts"])
    with pytest.raises(TransferRefused, match="already has the bot's tables"):
        await copy_sqlite_to_postgresql(source, postgres_database)
    assert await postgres_rows(postgres_database, ["guild_settings", "linked_accounts"]) == before


async def test_a_failure_midway_leaves_the_target_empty(
    tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "bot.db"
    await seed(source)

    async def broken(connection: asyncpg.Connection) -> None:
        raise TransferRefused("simulated failure after every row was copied")

    monkeypatch.setattr(transfer, "_reset_identities", broken)
    with pytest.raises(TransferRefused, match="simulated"):
        await copy_sqlite_to_postgresql(source, postgres_database)
    assert await our_tables(postgres_database) == set()
    monkeypatch.undo()
    report = await copy_sqlite_to_postgresql(source, postgres_database)  # and it can be re-run
    assert report.rows_by_table["linked_accounts"] == 30


async def test_identity_sequences_continue_after_the_copied_ids(
    tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbered = db.Migration(
        version=db.LATEST_SCHEMA_VERSION + 1,
        description="a table with generated ids",
        sqlite=("CREATE TABLE numbered (id INTEGER PRIMARY KEY, note TEXT NOT NULL)",),
        postgresql=(
            "CREATE TABLE numbered (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "note TEXT NOT NULL)",
        ),
    )
    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, numbered))
    monkeypatch.setattr(db, "LATEST_SCHEMA_VERSION", numbered.version)
    source = tmp_path / "bot.db"
    async with await Storage.open(source) as storage, storage.database.transaction() as tx:
        for note in ("a", "b", "c"):
            await tx.execute("INSERT INTO numbered (note) VALUES (?)", (note,))
        await tx.execute("INSERT INTO numbered (id, note) VALUES (?, ?)", (41, "d"))
    await copy_sqlite_to_postgresql(source, postgres_database)
    async with await Storage.open(postgres_database) as storage:
        async with storage.database.transaction() as tx:
            row = await tx.fetchone("INSERT INTO numbered (note) VALUES (?) RETURNING id", ("e",))
        assert row is not None
        assert row[0] == 42


# --- the command ------------------------------------------------------------------------------


# Runs the command and reports the peak memory of its process (every other child of this one
# runs in its own wrapper).
PEAK_MEMORY = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print('peak KiB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(done.returncode)"
)


def run_cli(
    tmp_path: Path, *args: str, database_path: Path, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_PATH": str(database_path),
        "PYTHONPATH": PROJECT_ROOT,
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_copies_then_refuses_a_second_time(
    tmp_path: Path, postgres_database: str
) -> None:
    source = tmp_path / "data" / "bot.db"
    source.parent.mkdir()
    await seed(source)
    done = run_cli(tmp_path, "migrate-db", "--to", postgres_database, database_path=source)
    assert done.returncode == 0, done.stderr
    assert "linked_accounts: 30 row(s)" in done.stdout
    assert "every table's row count matches" in done.stdout
    assert "Next: set DATABASE_URL=" in done.stdout

    again = run_cli(tmp_path, "migrate-db", "--to", postgres_database, database_path=source)
    assert again.returncode == 1
    assert again.stderr.startswith("migrate-db: the target database already has the bot's")
    assert again.stderr.count("\n") == 1
    assert "Traceback" not in again.stderr


async def test_the_command_stops_with_one_line_on_a_wrong_user(
    tmp_path: Path, postgres_database: str
) -> None:
    source = tmp_path / "bot.db"
    await seed(source)
    wrong = postgres_database.replace("://nowplaying@", "://nobody:hunter2@", 1)
    assert wrong != postgres_database
    done = run_cli(tmp_path, "migrate-db", "--to", wrong, database_path=source)
    assert done.returncode == 2
    assert "refused the user or password" in done.stderr
    assert "hunter2" not in done.stderr
    assert done.stderr.count("\n") == 1
    missing = run_cli(tmp_path, "migrate-db", "--to", postgres_database, database_path=tmp_path)
    assert missing.returncode == 2
    assert "nothing to copy" in missing.stderr


def peak_kib(done: subprocess.CompletedProcess[str]) -> int:
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("peak KiB "), done.stdout
    return int(line.split()[-1])


async def test_a_password_in_the_url_is_never_printed(
    tmp_path: Path, postgres_database: str
) -> None:
    """Every form a password takes in a PostgreSQL URL is redacted, on success and failure."""
    source = tmp_path / "bot.db"
    await seed(source)
    with_query = f"{postgres_database}?password=hunter2"
    done = run_cli(tmp_path, "migrate-db", "--to", with_query, database_path=source)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "?password=***" in done.stdout
    closed = (
        f"postgresql://nowplaying:sesame@127.0.0.1:{free_port()}/x?sslmode=disable&password=hunter2"
    )
    refused = run_cli(tmp_path, "migrate-db", "--to", closed, database_path=source)
    assert refused.returncode == 2
    assert "hunter2" not in refused.stdout + refused.stderr
    assert "sesame" not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr


async def test_the_target_can_come_from_the_environment(
    tmp_path: Path, postgres_database: str
) -> None:
    """DATABASE_URL (environment or .env) and PGPASSWORD keep the password off the command
    line, where every user of the machine can read it."""
    source = tmp_path / "bot.db"
    await seed(source)
    done = run_cli(
        tmp_path,
        "migrate-db",
        database_path=source,
        DATABASE_URL=postgres_database,
        PGPASSWORD="hunter2",
    )
    assert done.returncode == 0, done.stderr
    assert "linked_accounts: 30 row(s)" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
    missing = run_cli(tmp_path, "migrate-db", database_path=source)
    assert missing.returncode == 2
    assert "DATABASE_URL" in missing.stderr
    assert "PGPASSWORD" in missing.stderr


async def test_a_large_listening_log_is_copied_in_batches(
    tmp_path: Path, postgres_database: str
) -> None:
    """200,000 plays copy in the memory of a few thousand: the whole table in memory took
    about 240 MiB."""
    source = tmp_path / "bot.db"
    async with await Storage.open(source):
        pass
    with contextlib.closing(sqlite3.connect(source)) as raw, raw:
        raw.executemany(
            "INSERT INTO plays (discord_user_id, track_id, started_at, track_name, artist, "
            "artists, album_id, album_name, image_url, duration_ms, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    800000000000000000 + n % 200,
                    f"track{n:018d}",
                    NOW + n,
                    f"Track name {n}",
                    "Artist",
                    "Artist; Guest",
                    f"album{n % 6000:018d}",
                    f"Album {n % 6000}",
                    f"https://i.scdn.co/image/ab67616d0000b273{n:024x}",
                    200_000,
                    "spotify",
                )
                for n in range(200_000)
            ),
        )
    done = run_cli(tmp_path, "migrate-db", "--to", postgres_database, database_path=source)
    assert done.returncode == 0, done.stderr
    assert "plays: 200000 row(s)" in done.stdout
    assert peak_kib(done) < 120 * 1024


async def test_the_target_defaults_to_database_url(tmp_path: Path, postgres_database: str) -> None:
    """Issue 21 item 2: in the container the URL, password included, is the service's own
    DATABASE_URL; the README's command has nothing for the host's shell to expand."""
    source = tmp_path / "bot.db"
    await seed(source)
    done = run_cli(tmp_path, "migrate-db", database_path=source, DATABASE_URL=postgres_database)
    assert done.returncode == 0, done.stderr
    assert "every table's row count matches" in done.stdout
    assert "Next: start the bot; it uses DATABASE_URL already." in done.stdout


def test_without_a_target_migrate_db_says_how_to_name_one(tmp_path: Path) -> None:
    source = tmp_path / "bot.db"
    done = run_cli(tmp_path, "migrate-db", database_path=source)
    assert done.returncode == 2
    assert done.stderr.startswith("migrate-db: needs the PostgreSQL database to copy into: --to")
    wrong = run_cli(
        tmp_path, "migrate-db", database_path=source, DATABASE_URL="mysql://u:hunter2@db/x"
    )
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("migrate-db: DATABASE_URL 'mysql://u:***@db/x' ")
    assert "hunter2" not in wrong.stderr


def test_the_readme_migrate_db_command_leaves_the_password_to_the_container() -> None:
    readme = (Path(PROJECT_ROOT) / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if "migrate-db" in line and "docker" in line]
    assert commands, "the README shows how to move a Docker install to PostgreSQL"
    for command in commands:
        assert "$" not in command  # no shell variable: the host's shell has no password
        assert "--to" not in command
