from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from bot.storage import (
    GuildSettings,
    LastPost,
    LinkedAccount,
    LinkStateResult,
    SpotifyAccountTaken,
    SpotifyQuota,
    Storage,
    hash_link_state,
)
from bot.storage import migrations as db
from bot.storage.engines.sqlite import BUSY_TIMEOUT_MS, SqliteDatabase
from bot.storage.migrate import migrate
from bot.storage.sealed import SEALED_COLUMNS
from tests.helpers import refresh_token_blobs
from tests.peek import (
    count_link_states,
    database_at_version,
    global_autopost_opt_in,
    spotify_account_owner,
)

NOW = 1_750_000_000.0


def account(user_id: int, spotify: str | None = None, **changes: object) -> LinkedAccount:
    spotify = spotify or f"acct-{user_id}"
    base = LinkedAccount(
        discord_user_id=user_id,
        spotify_account_id=spotify,
        spotify_user_id=f"user-{spotify}",
        display_name=f"Name {spotify}",
        refresh_token=f"secret-{user_id}".encode(),
        scopes="user-read-currently-playing user-read-playback-state",
        linked_at=NOW,
        status="active",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def file_modes(folder: Path) -> dict[str, int]:
    return {name: mode(folder / name) for name in os.listdir(folder)}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.db"


@pytest.fixture
async def storage(database_target: str | Path) -> AsyncIterator[Storage]:
    """Every test that takes it runs once per backend (SQLite and PostgreSQL)."""
    async with await Storage.open(database_target) as opened:
        yield opened


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    raw.close()
    return {row[0] for row in rows}


# --- opening, files, PRAGMAs, migrations ----------------------------------------------------


async def test_fresh_database_is_migrated_to_latest(db_path: Path) -> None:
    assert not db_path.parent.exists()
    async with await Storage.open(db_path) as storage:
        assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
        assert storage.applied_migrations == tuple(range(1, db.LATEST_SCHEMA_VERSION + 1))
        assert await storage.ping()
    assert db.LATEST_SCHEMA_VERSION >= 2
    assert {
        "linked_accounts",
        "link_states",
        "guild_settings",
        "member_settings",
        "last_posts",
    } <= table_names(db_path)


async def test_folder_created_0700_and_files_0600(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    async with await Storage.open(path) as storage:
        await storage.settings.set_autopost_opt_in(1, True)
        assert mode(tmp_path / "a") == 0o700
        assert mode(tmp_path / "a" / "b") == 0o700
        modes = file_modes(path.parent)
        assert modes["bot.db"] == 0o600
        assert set(modes) <= {"bot.db", "bot.db-wal", "bot.db-shm"}
        assert set(modes.values()) == {0o600}


async def test_existing_file_is_tightened_and_existing_folder_left_alone(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "bot.db"
    path.touch()
    path.chmod(0o644)
    async with await Storage.open(path):
        pass
    assert mode(path) == 0o600
    assert mode(tmp_path) == 0o755


async def test_connection_pragmas(db_path: Path) -> None:
    database = await SqliteDatabase.open(db_path)
    connection = database.connection
    try:
        await migrate(database)
        values = {}
        for pragma in (
            "journal_mode",
            "foreign_keys",
            "busy_timeout",
            "synchronous",
            "secure_delete",
        ):
            async with connection.execute(f"PRAGMA {pragma}") as cursor:
                row = await cursor.fetchone()
            assert row is not None
            values[pragma] = row[0]
    finally:
        await database.close()
    assert values == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": BUSY_TIMEOUT_MS,
        "synchronous": 1,  # NORMAL
        "secure_delete": 1,  # replaced secrets are zeroed, whatever the build's default
    }


async def test_reopen_keeps_data_and_does_not_rerun_migrations(db_path: Path) -> None:
    async with await Storage.open(db_path) as storage:
        await storage.links.save_link(account(1))
        await storage.settings.set_music_channel(10, 100)
    async with await Storage.open(db_path) as storage:
        assert storage.applied_migrations == ()
        assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
        assert await storage.links.get_link(1) == account(1)
        assert await storage.settings.list_music_channels() == {10: 100}
    database = await SqliteDatabase.open(db_path)
    try:
        assert await migrate(database) == []
    finally:
        await database.close()


# Rows that exist from each schema version on, written with plain SQL as an old bot would.
SEED_SQL: dict[int, list[tuple[str, tuple[object, ...]]]] = {
    1: [
        (
            "INSERT INTO linked_accounts (discord_user_id, spotify_account_id, spotify_user_id, "
            "display_name, refresh_token, scopes, linked_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (1, "acct-1", "user-acct-1", "Name acct-1", b"secret-1", "s", NOW, "active"),
        ),
        (
            "INSERT INTO link_states (state_hash, discord_user_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (hash_link_state("old-state"), 1, NOW, NOW + 600),
        ),
    ],
    2: [
        (
            "INSERT INTO guild_settings (guild_id, music_channel_id, autopost_notice, updated_at) "
            "VALUES (?, ?, ?, ?)",
            (10, 100, None, NOW),
        ),
        (
            "INSERT INTO member_settings (discord_user_id, autopost_opt_in, updated_at) "
            "VALUES (?, ?, ?)",
            (1, 0, NOW),
        ),
        (
            "INSERT INTO last_posts (discord_user_id, channel_id, item_key, message_id, "
            "posted_at) VALUES (?, ?, ?, ?, ?)",
            (1, 100, "track-1", 555, NOW),
        ),
    ],
    3: [
        (
            "INSERT INTO member_privacy (discord_user_id, visibility, updated_at) VALUES (?, ?, ?)",
            (1, "private", NOW),
        ),
        (
            "INSERT INTO member_guild_settings (discord_user_id, guild_id, autopost_opt_in, "
            "updated_at) VALUES (?, ?, ?, ?)",
            (1, 10, 1, NOW),
        ),
    ],
    4: [
        (
            "INSERT INTO link_states (state_hash, discord_user_id, created_at, expires_at, "
            "discord_name, sealed_state) VALUES (?, ?, ?, ?, ?, ?)",
            (hash_link_state("new-state"), 1, NOW, NOW + 600, "@one", b"sealed"),
        ),
        (
            "INSERT INTO pending_links (discord_user_id, state_hash, sealed_grant, discord_name, "
            "created_at) VALUES (?, ?, ?, ?, ?)",
            (1, hash_link_state("new-state"), b"grant", "@one", NOW),
        ),
    ],
    5: [
        (
            "INSERT INTO image_colours (image_key, colour, picked_at) VALUES (?, ?, ?)",
            ("ab67616d-cover", 0x336699, NOW),
        ),
    ],
    6: [
        (
            "INSERT INTO plays (discord_user_id, track_id, started_at, track_name, artist, "
            "artists, album_id, album_name, image_url, duration_ms, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (1, "track-1", NOW, "Song", "A", "A; B", None, None, None, 200_000, "spotify"),
        ),
        (
            "INSERT INTO listening_guilds (guild_id, discord_user_id, seen_at) VALUES (?, ?, ?)",
            (10, 1, NOW),
        ),
    ],
    7: [
        (
            "INSERT INTO autopost_outbox (nonce, channel_id, payload, created_at, message_id) "
            "VALUES (?, ?, ?, ?, ?)",
            ("seed-nonce", 100, "{}", NOW, 42),
        ),
    ],
    8: [
        (
            "INSERT INTO autopost_outbox (nonce, guild_id, channel_id, discord_user_id, payload, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("owned-nonce", 10, 100, 1, "{}", NOW),
        ),
    ],
    9: [
        (
            "INSERT INTO spotify_calls (client_id, minute, service, purpose, calls) "
            "VALUES (?, ?, ?, ?, ?)",
            ("client", int(NOW // 60), "api", "poll", 7),
        ),
        (
            "INSERT INTO spotify_quota (client_id, counting_since, hold_until, learned_budget, "
            "learned_at) VALUES (?, ?, ?, ?, ?)",
            ("client", NOW - 90_000, NOW + 3_600, 450, NOW),
        ),
    ],
}


# A step whose table a later migration made anew: seeded only at versions before that one
# (migration 8 remade the auto-post outbox with its owners).
REMADE_AT = {7: 8}


def test_seed_sql_covers_every_version() -> None:
    assert set(SEED_SQL) == set(range(1, db.LATEST_SCHEMA_VERSION + 1))


async def assert_seeded_data_intact(storage: Storage, version: int) -> None:
    if version >= 1:
        link = await storage.links.get_link(1)
        assert link is not None
        assert (link.spotify_account_id, link.refresh_token, link.status) == (
            "acct-1",
            b"secret-1",
            "active",
        )
        assert await storage.link_states.consume_link_state(
            "old-state", now=NOW + 1
        ) == LinkStateResult("ok", 1)
    if version >= 2:
        assert await storage.settings.get_guild_settings(10) == GuildSettings(10, 100, None)
        assert await global_autopost_opt_in(storage, 1) is False
        assert await storage.last_posts.get_last_post(1, 100) == LastPost(
            1, 100, "track-1", 555, NOW
        )
        # The choice made before auto-post was per server is every server's fallback.
        assert await storage.settings.get_guild_autopost_opt_in(1, 999) is False
    if version == 2:
        assert await storage.settings.get_guild_autopost_opt_in(1, 10) is False
        assert await storage.privacy.get_visibility(1) == "server"
    if version >= 3:
        assert await storage.settings.get_guild_autopost_opt_in(1, 10) is True
        assert await storage.privacy.get_visibility(1) == "private"
    if version >= 4:
        [pending] = await storage.link_states.list_pending_links()
        assert (pending.discord_user_id, pending.sealed_grant, pending.discord_name) == (
            1,
            b"grant",
            "@one",
        )
        assert await storage.link_states.consume_link_state(
            "new-state", now=NOW + 1
        ) == LinkStateResult("ok", 1, discord_name="@one")
    if version >= 5:
        assert await storage.colours.get_image_colour("ab67616d-cover") == 0x336699
    if version >= 6:
        [play] = await storage.listening.recent_plays(1)
        assert (play.track_id, play.artists, play.started_at) == ("track-1", ("A", "B"), NOW)
        assert await storage.listening.list_listening_guilds() == [(10, 1, NOW)]
    if version == 7:
        # The outbox is made anew with its owners: rows of minutes, and nobody to check.
        assert await storage.outbox.outbox_get("seed-nonce") is None
    if version >= 8:
        post = await storage.outbox.outbox_get("owned-nonce")
        assert post is not None
        assert (post.guild_id, post.channel_id, post.member_id) == (10, 100, 1)
    if version >= 9:
        minute = int(NOW // 60)
        assert await storage.spotify_budget.calls_since("client", minute) == [
            (minute, "api", "poll", 7)
        ]
        assert await storage.spotify_budget.quota("client") == SpotifyQuota(
            NOW - 90_000, NOW + 3_600, 450, NOW
        )


@pytest.mark.parametrize("version", range(db.LATEST_SCHEMA_VERSION))
async def test_upgrade_from_each_earlier_version(db_path: Path, version: int) -> None:
    await database_at_version(db_path, version)
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == version
        for step in range(1, version + 1):
            if version >= REMADE_AT.get(step, version + 1):
                continue  # that step's table no longer has the seed's shape
            for sql, params in SEED_SQL[step]:
                raw.execute(sql, params)
    raw.close()

    async with await Storage.open(db_path) as storage:
        assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
        assert storage.applied_migrations == tuple(range(version + 1, db.LATEST_SCHEMA_VERSION + 1))
        await assert_seeded_data_intact(storage, version)
        # Every feature works after the upgrade.
        await storage.links.save_link(account(2))
        await storage.last_posts.record_post(LastPost(2, 100, "t", 1, NOW))
        await storage.settings.set_autopost_opt_in(2, True)
        await storage.settings.set_guild_autopost_opt_in(2, 10, False)
        await storage.privacy.set_visibility(2, "private")
        assert await storage.links.get_link(2) == account(2)
        assert await storage.settings.get_guild_autopost_opt_in(2, 10) is False
        assert await storage.privacy.get_visibility(2) == "private"


async def test_database_newer_than_the_code_is_refused(db_path: Path) -> None:
    await database_at_version(db_path, db.LATEST_SCHEMA_VERSION)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {db.LATEST_SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(db.SchemaVersionError, match="newer"):
        await Storage.open(db_path)


async def test_failed_migration_rolls_back_alone(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = db.Migration(
        version=db.LATEST_SCHEMA_VERSION + 1,
        description="broken on purpose",
        sqlite=("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"),
    )
    monkeypatch.setattr(db, "MIGRATIONS", (*db.MIGRATIONS, broken))
    monkeypatch.setattr(db, "LATEST_SCHEMA_VERSION", broken.version)
    with pytest.raises(sqlite3.OperationalError):
        await Storage.open(db_path)
    monkeypatch.undo()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == db.LATEST_SCHEMA_VERSION
    raw.close()
    assert "half_done" not in table_names(db_path)


async def test_concurrent_opens_of_a_fresh_database_migrate_once(
    database_target: str | Path,
) -> None:
    opened = await asyncio.gather(*(Storage.open(database_target) for _ in range(4)))
    try:
        applied = [storage.applied_migrations for storage in opened]
        all_versions = sorted(v for versions in applied for v in versions)
        assert all_versions == list(range(1, db.LATEST_SCHEMA_VERSION + 1))
        for storage in opened:
            assert await storage.schema_version() == db.LATEST_SCHEMA_VERSION
    finally:
        for storage in opened:
            await storage.close()


async def test_in_memory_database(tmp_path: Path) -> None:
    async with await Storage.open(":memory:") as storage:
        await storage.links.save_link(account(1))
        assert await storage.links.count_links() == 1
    assert os.listdir(tmp_path) == []


# --- concurrency ----------------------------------------------------------------------------


async def test_concurrent_writers_lose_nothing(database_target: str | Path) -> None:
    first = await Storage.open(database_target)
    second = await Storage.open(database_target)
    try:
        members = range(1, 121)

        async def work(user_id: int) -> None:
            storage = first if user_id % 2 else second
            await storage.links.save_link(account(user_id))
            await storage.settings.set_autopost_opt_in(user_id, user_id % 3 == 0)
            await storage.last_posts.record_post(
                LastPost(user_id, 100, f"item-{user_id}", user_id, NOW)
            )
            await storage.links.update_refresh_token(user_id, f"rotated-{user_id}".encode())

        await asyncio.wait_for(asyncio.gather(*(work(u) for u in members)), timeout=60)

        for storage in (first, second):
            assert await storage.links.count_links() == len(members)
            assert await storage.links.list_active_user_ids() == list(members)
            assert len(await storage.last_posts.load_last_posts()) == len(members)
        secrets = dict(await refresh_token_blobs(first))
        assert secrets == {u: f"rotated-{u}".encode() for u in members}
        for user_id in members:
            assert await global_autopost_opt_in(second, user_id) is (user_id % 3 == 0)
    finally:
        await first.close()
        await second.close()


async def test_link_state_is_consumed_once_across_instances(database_target: str | Path) -> None:
    first = await Storage.open(database_target)
    second = await Storage.open(database_target)
    try:
        await first.link_states.create_link_state("race", 7, now=NOW)
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    (first if i % 2 else second).link_states.consume_link_state("race", now=NOW + 1)
                    for i in range(20)
                )
            ),
            timeout=30,
        )
        assert results.count(LinkStateResult("ok", 7)) == 1
        assert results.count(LinkStateResult("used", 7)) == 19
    finally:
        await first.close()
        await second.close()


async def test_failed_multi_statement_change_rolls_back(storage: Storage) -> None:
    await storage.links.save_link(account(1, "shared"))
    # The owner check runs, then the INSERT fails to bind its token.
    with pytest.raises((sqlite3.Error, asyncpg.DataError)):
        await storage.links.save_link(account(1, "other", refresh_token=object()))
    assert await storage.links.get_link(1) == account(1, "shared")
    # The connection is usable afterwards (no transaction left open).
    await storage.links.save_link(account(3))
    assert await storage.links.count_links() == 2


async def test_cancelled_writers_leave_no_open_transaction(database_target: str | Path) -> None:
    first = await Storage.open(database_target)
    second = await Storage.open(database_target)
    try:
        for round_ in range(20):
            tasks = [
                asyncio.create_task(first.links.save_link(account(user_id, f"a{round_}-{user_id}")))
                for user_id in range(10)
            ]
            for _ in range(round_ % 5):
                await asyncio.sleep(0)
            for task in tasks[::2]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Neither this instance nor another connection is left behind a dangling write lock.
            await asyncio.wait_for(first.settings.set_autopost_opt_in(round_, True), timeout=10)
            await asyncio.wait_for(second.settings.set_autopost_opt_in(round_, False), timeout=10)
        assert await global_autopost_opt_in(first, 19) is False
    finally:
        await first.close()
        await second.close()


# --- links ----------------------------------------------------------------------------------


async def test_link_round_trip_and_updates(storage: Storage) -> None:
    assert await storage.links.get_link(1) is None
    await storage.links.save_link(account(1))
    assert await storage.links.get_link(1) == account(1)

    relinked = account(1, display_name="New name", refresh_token=b"new", linked_at=NOW + 5)
    await storage.links.save_link(relinked)
    assert await storage.links.get_link(1) == relinked

    await storage.links.update_refresh_token(1, b"rotated")
    stored = await storage.links.get_link(1)
    assert stored is not None
    assert stored.refresh_token == b"rotated"

    await storage.links.update_refresh_token(999, b"nobody")  # not linked: nothing is created
    assert await storage.links.get_link(999) is None


async def test_refresh_token_hidden_from_repr() -> None:
    assert "secret-1" not in repr(account(1))


async def test_save_link_never_moves_a_spotify_account(storage: Storage) -> None:
    assert await storage.links.save_link(account(1, "shared")) == "linked"
    await storage.links.save_link(account(2, "other"))
    with pytest.raises(SpotifyAccountTaken):
        await storage.links.save_link(account(3, "shared"))
    assert await storage.links.get_link(1) == account(1, "shared")
    assert await storage.links.get_link(3) is None
    assert await spotify_account_owner(storage, "shared") == 1
    assert await storage.links.list_active_user_ids() == [1, 2]
    # The same member again is a renewal; switching to another Spotify account keeps one row.
    assert await storage.links.save_link(account(1, "shared")) == "renewed"
    assert await storage.links.save_link(account(1, "third")) == "linked"
    assert await storage.links.count_links() == 2
    assert (await storage.links.get_link(1)) == account(1, "third")


async def test_at_most_a_few_states_per_member(storage: Storage) -> None:
    for index in range(3_000):
        await storage.link_states.create_link_state(
            f"s{index}", 7, now=NOW + index, keep_per_member=3
        )
    await storage.link_states.create_link_state("other", 8, now=NOW, keep_per_member=3)
    assert await count_link_states(storage, 7) == 3
    assert await count_link_states(storage) == 4
    assert (await storage.link_states.peek_link_state("s2996", now=NOW + 3_000)).status == "unknown"
    assert (await storage.link_states.peek_link_state("s2997", now=NOW + 3_000)).status == "ok"


async def test_a_result_page_names_the_accounts_once(storage: Storage) -> None:
    await storage.link_states.create_link_state("st", 7, now=NOW, discord_name="Ann (@ann)")
    await storage.link_states.consume_link_state("st", now=NOW + 1)
    await storage.link_states.finish_link_state(
        hash_link_state("st"), "linked", result_token="tok", spotify_name="Ann S"
    )
    first = await storage.link_states.open_link_result("tok", now=NOW + 2, names_for=600)
    assert first is not None
    assert (first.first_view, first.spotify_name, first.discord_name) == (
        True,
        "Ann S",
        "Ann (@ann)",
    )
    again = await storage.link_states.open_link_result("tok", now=NOW + 3, names_for=600)
    assert again is not None
    assert (again.first_view, again.spotify_name, again.discord_name) == (False, None, None)
    assert await storage.link_states.open_link_result("nope", now=NOW, names_for=600) is None


async def test_mark_link_broken_and_counts(storage: Storage) -> None:
    for user_id in (1, 2, 3):
        await storage.links.save_link(account(user_id))
    await storage.links.mark_link_broken(2)
    broken = await storage.links.get_link(2)
    assert broken is not None
    assert broken.status == "broken"
    assert broken.refresh_token is None
    assert await storage.links.count_links() == 2
    assert await storage.links.count_links("broken") == 1
    assert await storage.links.list_active_user_ids() == [1, 3]
    assert [user for user, _ in await refresh_token_blobs(storage)] == [1, 3]

    # Linking again makes it active.
    await storage.links.save_link(account(2))
    assert await storage.links.count_links() == 3


async def test_replace_sealed_swaps_only_what_it_read(storage: Storage) -> None:
    for user_id in (1, 2, 3):
        await storage.links.save_link(account(user_id))
    assert await storage.sealed.replace_sealed([]) == 0
    first, second, third = await storage.sealed.list_sealed()
    assert await storage.sealed.replace_sealed([(first, b"a"), (second, b"b")]) == 2
    # Compare-and-swap: a value changes only while it still holds the blob read before.
    assert await storage.sealed.replace_sealed([(first, b"a2"), (third, b"c2")]) == 1
    assert await refresh_token_blobs(storage) == [(1, b"a"), (2, b"b"), (3, b"c2")]


async def test_every_encrypted_column_is_listed(storage: Storage) -> None:
    """Key rotation and check read ``SEALED_COLUMNS``: every binary column of the schema is in
    it, except the SHA-256 digests that stand in for link states and result tokens."""
    digests = {
        ("link_states", "state_hash"),
        ("link_states", "result_hash"),
        ("pending_links", "state_hash"),
    }
    database = storage.database
    binary: set[tuple[str, str]] = set()
    if storage.dialect == "sqlite":
        tables = await database.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables:
            for column in await database.fetchall(f"PRAGMA table_info({table})"):
                if str(column[2]).upper() == "BLOB":
                    binary.add((str(table), str(column[1])))
    else:
        rows = await database.fetchall(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type = 'bytea'"
        )
        binary = {(str(row[0]), str(row[1])) for row in rows}
    assert binary - digests == {(c.table, c.column) for c in SEALED_COLUMNS}


async def test_delete_member(storage: Storage) -> None:
    await storage.links.save_link(account(1))
    await storage.links.save_link(account(2))
    await storage.settings.set_autopost_opt_in(1, False)
    await storage.last_posts.record_post(LastPost(1, 100, "k", 5, NOW))
    await storage.last_posts.record_post(LastPost(2, 100, "k", 6, NOW))
    await storage.link_states.create_link_state("pending", 1, now=NOW)

    assert await storage.links.delete_member(1) is True
    assert await storage.links.get_link(1) is None
    assert await global_autopost_opt_in(storage, 1) is None
    assert await storage.last_posts.get_last_post(1, 100) is None
    assert await storage.link_states.consume_link_state("pending", now=NOW + 1) == LinkStateResult(
        "unknown", None
    )
    # Others are untouched.
    assert await storage.links.get_link(2) == account(2)
    assert await storage.last_posts.get_last_post(2, 100) is not None

    assert await storage.links.delete_member(1) is False
    await storage.settings.set_autopost_opt_in(
        5, True
    )  # settings alone count as "something existed"
    assert await storage.links.delete_member(5) is True


# --- link states ----------------------------------------------------------------------------


async def test_link_state_single_use(storage: Storage) -> None:
    await storage.link_states.create_link_state("abc", 42, now=NOW, ttl=600)
    assert await storage.link_states.consume_link_state("abc", now=NOW + 10) == LinkStateResult(
        "ok", 42
    )
    assert await storage.link_states.consume_link_state("abc", now=NOW + 11) == LinkStateResult(
        "used", 42
    )
    # Still "used" (not "expired") after the expiry, so a reload says "already linked".
    assert await storage.link_states.consume_link_state("abc", now=NOW + 10_000) == LinkStateResult(
        "used", 42
    )


async def test_link_state_expiry_and_unknown(storage: Storage) -> None:
    await storage.link_states.create_link_state("late", 42, now=NOW, ttl=600)
    assert await storage.link_states.consume_link_state("late", now=NOW + 600) == LinkStateResult(
        "expired", 42
    )
    assert await storage.link_states.consume_link_state("late", now=NOW + 599) == LinkStateResult(
        "ok", 42
    )
    assert await storage.link_states.consume_link_state("nope", now=NOW) == LinkStateResult(
        "unknown", None
    )


async def test_link_state_stored_only_as_hash(
    storage: Storage, database_target: str | Path
) -> None:
    state = "very-secret-state-value"
    await storage.link_states.create_link_state(state, 1, now=NOW)
    rows = await storage.database.fetchall("SELECT state_hash FROM link_states")
    assert [bytes(row[0]) for row in rows] == [hash_link_state(state)]
    if not isinstance(database_target, Path):
        return
    files = [database_target, Path(f"{database_target}-wal")]
    assert all(state.encode() not in f.read_bytes() for f in files if f.exists())


async def test_purge_link_states(storage: Storage) -> None:
    day = 86400
    await storage.link_states.create_link_state("fresh", 1, now=NOW, ttl=600)
    await storage.link_states.create_link_state("expired-recently", 2, now=NOW - 1000, ttl=600)
    await storage.link_states.create_link_state("expired-long-ago", 3, now=NOW - 2 * day, ttl=600)
    await storage.link_states.create_link_state("used-recently", 4, now=NOW - 100, ttl=600)
    await storage.link_states.create_link_state("used-long-ago", 5, now=NOW - 2 * day, ttl=600)
    await storage.link_states.consume_link_state("used-recently", now=NOW - 50)
    await storage.link_states.consume_link_state("used-long-ago", now=NOW - 2 * day + 10)

    assert await storage.link_states.purge_link_states(now=NOW) == 2
    assert (
        await storage.link_states.peek_link_state("expired-long-ago", now=NOW)
    ).discord_user_id is None
    assert (
        await storage.link_states.peek_link_state("used-long-ago", now=NOW)
    ).discord_user_id is None
    # Recently finished states still explain themselves.
    assert (
        await storage.link_states.consume_link_state("expired-recently", now=NOW)
    ).status == "expired"
    assert (await storage.link_states.consume_link_state("used-recently", now=NOW)).status == "used"
    assert (await storage.link_states.consume_link_state("fresh", now=NOW)).status == "ok"

    # With no grace, everything finished goes; a state still open stays.
    await storage.link_states.create_link_state("open", 6, now=NOW, ttl=600)
    assert await storage.link_states.purge_link_states(now=NOW + 1, keep_used_for=0) == 3
    assert (await storage.link_states.peek_link_state("open", now=NOW)).discord_user_id == 6


async def test_link_state_peek_does_not_consume(storage: Storage) -> None:
    assert await storage.link_states.peek_link_state("abc", now=NOW) == LinkStateResult(
        "unknown", None
    )
    await storage.link_states.create_link_state("abc", 42, now=NOW)
    assert await storage.link_states.peek_link_state("abc", now=NOW + 1) == LinkStateResult(
        "ok", 42
    )
    assert await storage.link_states.consume_link_state("abc", now=NOW + 1) == LinkStateResult(
        "ok", 42
    )
    assert await storage.link_states.peek_link_state("abc", now=NOW + 2) == LinkStateResult(
        "used", 42
    )
    await storage.link_states.finish_link_state(hash_link_state("abc"), "linked")
    assert await storage.link_states.peek_link_state("abc", now=NOW + 2) == LinkStateResult(
        "used", 42, "linked"
    )
    # Released (Spotify did nothing with it): it works again.
    await storage.link_states.release_link_state("abc")
    assert await storage.link_states.consume_link_state("abc", now=NOW + 3) == LinkStateResult(
        "ok", 42
    )


# --- guild and member settings --------------------------------------------------------------


async def test_guild_settings_and_notices(storage: Storage) -> None:
    assert await storage.settings.get_guild_settings(10) is None
    assert await storage.settings.list_music_channels() == {}

    await storage.settings.set_music_channel(10, 100)
    await storage.settings.set_music_channel(20, 200)
    assert await storage.settings.get_guild_settings(10) == GuildSettings(10, 100, None)
    assert await storage.settings.list_music_channels() == {10: 100, 20: 200}

    await storage.settings.disable_autopost(10, "I lost permission to post in #music.")
    assert await storage.settings.get_guild_settings(10) == GuildSettings(
        10, None, "I lost permission to post in #music."
    )
    assert await storage.settings.list_music_channels() == {20: 200}

    await storage.settings.clear_autopost_notice(10)
    assert await storage.settings.get_guild_settings(10) == GuildSettings(10, None, None)

    await storage.settings.disable_autopost(10, "again")
    await storage.settings.set_music_channel(10, 101)  # setting a channel clears the notice
    assert await storage.settings.get_guild_settings(10) == GuildSettings(10, 101, None)

    await storage.settings.set_music_channel(20, None)
    assert await storage.settings.list_music_channels() == {10: 101}

    await storage.settings.clear_autopost_notice(999)  # unknown guild: nothing happens
    assert await storage.settings.get_guild_settings(999) is None


async def test_changing_channel_forgets_its_last_posts(storage: Storage) -> None:
    await storage.settings.set_music_channel(10, 100)
    await storage.last_posts.record_post(LastPost(1, 100, "k", 1, NOW))
    await storage.last_posts.record_post(LastPost(1, 300, "k", 2, NOW))  # another guild's channel
    await storage.settings.set_music_channel(10, 100)  # same channel: kept
    assert await storage.last_posts.get_last_post(1, 100) is not None
    await storage.settings.set_music_channel(10, 200)
    assert await storage.last_posts.get_last_post(1, 100) is None
    assert await storage.last_posts.get_last_post(1, 300) is not None


async def test_autopost_opt_in(storage: Storage) -> None:
    assert await global_autopost_opt_in(storage, 1) is None
    await storage.settings.set_autopost_opt_in(1, False)
    assert await global_autopost_opt_in(storage, 1) is False
    await storage.settings.set_autopost_opt_in(1, True)
    assert await global_autopost_opt_in(storage, 1) is True


async def test_autopost_opt_in_per_server_falls_back_to_the_old_global_choice(
    storage: Storage,
) -> None:
    assert await storage.settings.get_guild_autopost_opt_in(1, 10) is None
    assert await storage.settings.get_autopost_opt_in_anywhere(1) is None
    await storage.settings.set_autopost_opt_in(1, False)  # as stored before it was per server
    assert await storage.settings.get_guild_autopost_opt_in(1, 10) is False
    assert await storage.settings.get_guild_autopost_opt_in(1, 20) is False
    assert await storage.settings.get_autopost_opt_in_anywhere(1) is False
    await storage.settings.set_guild_autopost_opt_in(1, 10, True)
    assert await storage.settings.get_guild_autopost_opt_in(1, 10) is True
    assert await storage.settings.get_guild_autopost_opt_in(1, 20) is False  # unchanged there
    assert await storage.settings.get_autopost_opt_in_anywhere(1) is True
    await storage.settings.set_guild_autopost_opt_in(2, 20, False)
    assert await storage.settings.get_guild_autopost_opt_in(2, 10) is None
    assert await storage.settings.get_autopost_opt_in_anywhere(2) is None  # in by default elsewhere
    await storage.settings.set_autopost_opt_in(3, True)
    assert await storage.settings.list_autopost_opted_in_user_ids() == {1, 3}
    await storage.settings.set_autopost_opt_in(4, False)
    await storage.settings.set_guild_autopost_opt_in(4, 10, False)
    # The summary of everyone in one query says what the per-member one says.
    summaries = await storage.settings.list_autopost_opt_in_summaries()
    assert summaries == {1: True, 3: True, 4: False}
    for member_id in (1, 2, 3, 4, 5):
        assert summaries.get(member_id) is await storage.settings.get_autopost_opt_in_anywhere(
            member_id
        )
    await storage.links.delete_member(1)
    assert await storage.settings.get_guild_autopost_opt_in(1, 10) is None


async def test_visibility_default_choice_and_unlink(storage: Storage) -> None:
    assert await storage.privacy.get_visibility(1) == "server"
    assert await storage.privacy.get_visibility_choice(1) is None
    await storage.last_posts.record_post(LastPost(1, 100, "track-1", 555, NOW))
    await storage.last_posts.record_post(LastPost(2, 100, "track-2", 556, NOW))
    await storage.privacy.set_visibility(1, "private")
    assert await storage.privacy.get_visibility(1) == "private"
    assert await storage.last_posts.get_last_post(1, 100) is None  # what they played is forgotten
    assert await storage.last_posts.get_last_post(2, 100) is not None
    assert await storage.privacy.list_private_user_ids() == {1}
    await storage.links.save_link(account(1))
    await storage.links.delete_member(1)  # /unlink keeps the member private
    assert await storage.privacy.get_visibility(1) == "private"
    await storage.privacy.set_visibility(1, "server")
    assert await storage.privacy.get_visibility_choice(1) == "server"
    assert await storage.privacy.list_private_user_ids() == set()
    with pytest.raises(ValueError, match="visibility"):
        await storage.privacy.set_visibility(1, "public")  # type: ignore[arg-type]


# --- last posts -----------------------------------------------------------------------------


async def test_last_posts_round_trip(storage: Storage, database_target: str | Path) -> None:
    assert await storage.last_posts.get_last_post(1, 100) is None
    first = LastPost(1, 100, "spotify:track:a", 900000000000000001, NOW)
    await storage.last_posts.record_post(first)
    await storage.last_posts.record_post(LastPost(2, 100, "b", 2, NOW))
    await storage.last_posts.record_post(LastPost(1, 200, "c", 3, NOW))
    assert await storage.last_posts.get_last_post(1, 100) == first

    newer = LastPost(1, 100, "spotify:track:z", 900000000000000009, NOW + 60)
    await storage.last_posts.record_post(newer)
    assert await storage.last_posts.get_last_post(1, 100) == newer

    expected = [newer, LastPost(2, 100, "b", 2, NOW), LastPost(1, 200, "c", 3, NOW)]
    assert await storage.last_posts.load_last_posts() == expected

    # Survives a restart.
    await storage.close()
    async with await Storage.open(database_target) as reopened:
        assert await reopened.last_posts.load_last_posts() == expected


# --- health ---------------------------------------------------------------------------------


async def test_ping_and_close(database_target: str | Path) -> None:
    storage = await Storage.open(database_target)
    assert await storage.ping()
    await storage.close()
    await storage.close()  # idempotent
    assert storage.closed
    assert not await storage.ping()
    with pytest.raises(RuntimeError, match="closed"):
        await storage.links.get_link(1)


async def test_files_stay_private_after_writes(db_path: Path) -> None:
    async with await Storage.open(db_path) as storage:
        for user_id in range(5):
            await storage.links.save_link(account(user_id))
    modes = file_modes(db_path.parent)
    assert "bot.db" in modes
    assert set(modes.values()) == {0o600}, modes


async def test_image_colours_round_trip_and_survive_a_restart(
    storage: Storage, database_target: str | Path
) -> None:
    assert await storage.colours.get_image_colour("ab67616d-abc") is None
    await storage.colours.save_image_colour("ab67616d-abc", 0x1DB954, now=NOW)
    await storage.colours.save_image_colour("ab67616d-abc", 0xC0FFEE, now=NOW + 1)  # a re-pick wins
    await storage.colours.save_image_colour("other", 0x000001, now=NOW)
    assert await storage.colours.get_image_colour("ab67616d-abc") == 0xC0FFEE
    await storage.close()
    async with await Storage.open(database_target) as reopened:
        assert await reopened.colours.get_image_colour("ab67616d-abc") == 0xC0FFEE
        assert await reopened.colours.get_image_colour("other") == 1
    with pytest.raises((sqlite3.IntegrityError, asyncpg.CheckViolationError)):
        async with await Storage.open(database_target) as reopened:
            await reopened.colours.save_image_colour("too-big", 0x1000000)
