"""Two processes of one bot (SHARD_COUNT=2, SHARD_IDS 0 and 1) against one fake Discord and one
PostgreSQL: each gets its own guilds, IDENTIFYs take turns, only shard 0 syncs the commands, and
a link started in one process completes through the other's web server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.members.tokens import TokenManager
from bot.storage import Storage
from tests.fakes.discord import FakeDiscord, shard_of
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import ALICE_ID, GUILD_ID, MUSIC_ID, Stack, default_guild
from tests.shardrun import (
    IDENTIFY_INTERVAL,
    OTHER_GUILD_ID,
    OTHER_MUSIC_ID,
    other_guild,
    posted_in_both,
    posted_titles,
    set_both_music_channels,
    two_processes,
)

DATABASE_BACKENDS = ("postgresql",)  # several processes need the shared database


async def test_two_processes_split_the_guilds_and_share_links(tmp_path: Path) -> None:
    assert shard_of(GUILD_ID, 2) != shard_of(OTHER_GUILD_ID, 2)
    shard_zero_guild, shard_one_guild = sorted(
        (GUILD_ID, OTHER_GUILD_ID), key=lambda g: shard_of(g, 2)
    )
    async with two_processes(tmp_path) as (zero, one, fake_discord):
        # IDENTIFY named each shard, and the two took turns (one bucket: max_concurrency 1).
        assert sorted(tuple(i["shard"]) for i in fake_discord.identifies) == [(0, 2), (1, 2)]
        first, second = sorted(fake_discord.identify_times)
        assert second - first >= IDENTIFY_INTERVAL * 0.9
        # Each process knows only the guilds of its shard.
        assert {g.id for g in zero.app.bot.guilds} == {shard_zero_guild}
        assert {g.id for g in one.app.bot.guilds} == {shard_one_guild}
        # Only shard 0 synced the commands.
        assert len(fake_discord.command_syncs) == 1
        assert zero.app.bot.syncs_commands
        assert not one.app.bot.syncs_commands
        assert zero.app.services.discord.gateway_connected()
        assert one.app.services.discord.gateway_connected()

        # /link in the shard-1 guild: answered by shard 1, completed through shard 0's web
        # server (the state lives in the shared database).
        sent = await fake_discord.send_slash_command(
            "link", {}, user_id=str(ALICE_ID), guild_id=str(shard_one_guild)
        )
        await sent.wait_for_reply()
        dm = await fake_discord.wait_for_dm(ALICE_ID)
        authorize = next(c["url"] for row in dm.components for c in row["components"] if "url" in c)
        zero.spotify.approve_as("alice")
        status, _, body = await zero.follow(authorize)
        assert status == 200, body
        assert "Linked as" in body

        # /np in each guild is answered by the process that owns it, from the shared link.
        zero.spotify.set_playing("alice", track_payload("t1", "Shared Song", 200_000, 5_000))
        for guild_id in (shard_zero_guild, shard_one_guild):
            np = await fake_discord.send_slash_command(
                "np", {}, user_id=str(ALICE_ID), guild_id=str(guild_id)
            )
            reply = await np.wait_for_reply()
            assert reply.embeds[0]["title"] == "Shared Song"

        # Auto-posts: each guild's channel is served by the process of its shard, once.
        await set_both_music_channels(zero, zero, one)

        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Shared Song"), timeout=10)
        zero.spotify.set_playing("alice", track_payload("t2", "Next Song", 200_000, 0))
        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Next Song"), timeout=10)
        for service in (zero.app.services.autopost, one.app.services.autopost):
            assert service is not None
            await service.settle()
        assert posted_titles(fake_discord, MUSIC_ID) == ["Shared Song", "Next Song"]
        assert posted_titles(fake_discord, OTHER_MUSIC_ID) == ["Shared Song", "Next Song"]


async def test_a_spotify_429_to_one_process_holds_every_process(tmp_path: Path) -> None:
    """Spotify answers /np in one process 429 Retry-After 3: /np in the other process answers
    "try again" at once without a request to Spotify, and works again once the hold is over."""
    from tests.helpers import eventually

    async with two_processes(tmp_path) as (zero, one, fake_discord):
        guild_zero, guild_one = sorted((GUILD_ID, OTHER_GUILD_ID), key=lambda g: shard_of(g, 2))
        await zero.link(ALICE_ID, "alice")
        spotify = zero.spotify
        spotify.set_playing("alice", track_payload("t1", "Held Song", 200_000, 5_000))
        spotify.fail_next("currently_playing", 429, retry_after=3)

        async def np_in(guild_id: int) -> str:
            sent = await fake_discord.send_slash_command(
                "np", {}, user_id=str(ALICE_ID), guild_id=str(guild_id)
            )
            reply = await sent.wait_for_reply()
            return reply.embeds[0]["title"] if reply.embeds else reply.content

        assert await np_in(guild_zero) == "Spotify asks us to wait, try again in 3 s."
        held_from = spotify.now()
        sender = one.app.services.spotify
        await eventually(lambda: sender.hold_remaining("api") > 0)
        answer = await np_in(guild_one)
        assert answer.startswith("Spotify asks us to wait, try again in "), answer
        assert sender.hold_remaining("accounts") == 0.0  # the Web API's hold only

        await eventually(lambda: sender.hold_remaining("api") == 0.0, timeout=5)
        assert await np_in(guild_one) == "Held Song"
        calls = [r for r in spotify.requests if r.endpoint == "currently_playing"]
        assert [r.status for r in calls] == [429, 200]
        assert calls[1].at - held_from >= 2.5  # nothing inside the hold


@pytest.mark.postgresql
async def test_rotated_refresh_tokens_survive_two_processes_refreshing_at_once(
    postgres_database: str,
) -> None:
    """Two token managers on two pools (as two processes) force refreshes of one member at
    once while Spotify rotates the refresh token each time: none is lost (no invalid_grant),
    and the stored one is the one Spotify honours now."""
    import aiohttp

    from bot.crypto import TokenCipher
    from bot.spotify.auth import SpotifyAuth
    from bot.spotify.http import SpotifySender
    from tests.helpers import linked_account

    key = b"k" * 32
    cipher = TokenCipher([key])
    redirect = "http://127.0.0.1:9/callback"
    async with (
        FakeSpotify.running(redirect_uris=[redirect], rotate_refresh_tokens=True) as spotify,
        aiohttp.ClientSession() as session,
    ):
        user = spotify.add_user("alice")
        _, refresh_token = spotify.grant_tokens(user.id)
        storages = [await Storage.open(postgres_database) for _ in range(2)]
        try:
            await storages[0].links.save_link(
                linked_account(ALICE_ID, cipher.encrypt(ALICE_ID, refresh_token))
            )
            managers = []
            for storage in storages:
                auth = SpotifyAuth(
                    SpotifySender(session),
                    client_id=spotify.client_id,
                    client_secret=spotify.client_secret,
                    redirect_uri=redirect,
                    accounts_base=spotify.accounts_base,
                )
                managers.append(TokenManager(storage, cipher, auth))

            async def refresh_many(manager: TokenManager) -> None:
                for _ in range(5):
                    await manager.access_token(ALICE_ID, force_refresh=True)

            await asyncio.wait_for(asyncio.gather(*(refresh_many(m) for m in managers)), 30)
            link = await storages[1].links.get_link(ALICE_ID)
            assert link is not None
            assert link.status == "active"
            assert link.refresh_token is not None
            stored = cipher.decrypt(ALICE_ID, link.refresh_token)
            assert spotify.refresh_tokens_of(user.id) == [stored]
            assert spotify.call_count("token") == 10
        finally:
            for storage in storages:
                await storage.close()


async def _leader_lock_pid(database_url: str) -> int:
    """The PostgreSQL session that holds the auto-post leader's advisory lock."""
    import asyncpg

    from bot.autopost.leadership import LEADER_LOCK

    connection = await asyncpg.connect(database_url)
    try:
        key = await connection.fetchval("SELECT hashtextextended($1, 0)", LEADER_LOCK)
        pid = await connection.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        assert pid is not None, "nobody holds the leader lock"
        return int(pid)
    finally:
        await connection.close()


async def _cut_session(database_url: str, pid: int) -> None:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()


async def test_one_process_polls_and_another_takes_over_when_it_dies(tmp_path: Path) -> None:
    """Exactly one of the two processes polls Spotify, for the guilds of both shards; when its
    session dies (as with kill -9: the server frees the lock with the connection) the other
    takes over within 15 s and posts what changed meanwhile, once."""
    from tests import harness

    database_url = harness.database_url
    assert database_url is not None
    async with two_processes(tmp_path) as (zero, one, fake_discord):
        await zero.link(ALICE_ID, "alice")
        await set_both_music_channels(zero, zero, one)

        zero.spotify.set_playing("alice", track_payload("t1", "First Song", 200_000, 5_000))
        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "First Song"), timeout=10)
        services = [s.app.services.autopost for s in (zero, one)]
        assert all(s is not None for s in services)
        leaders = [s for s in services if s is not None and s.leadership.is_leader]
        assert len(leaders) == 1  # exactly one polls
        old = leaders[0]
        new = next(s for s in services if s is not old)
        assert new is not None
        old.leadership._retry = 3600.0  # the dead process does not come back in this test

        await _cut_session(database_url, await _leader_lock_pid(database_url))
        cut_at = asyncio.get_running_loop().time()
        zero.spotify.set_playing("alice", track_payload("t2", "Meanwhile Song", 200_000, 0))

        await fake_discord.wait_for(lambda: True if new.leadership.is_leader else None, timeout=15)
        took_over = asyncio.get_running_loop().time() - cut_at
        assert took_over < 15
        assert not old.leadership.is_leader
        await fake_discord.wait_for(
            lambda: posted_in_both(fake_discord, "Meanwhile Song"), timeout=15
        )
        await new.settle()
        assert posted_titles(fake_discord, MUSIC_ID) == ["First Song", "Meanwhile Song"]
        assert posted_titles(fake_discord, OTHER_MUSIC_ID) == ["First Song", "Meanwhile Song"]


async def test_without_shard_count_one_process_runs_every_recommended_shard(
    tmp_path: Path,
) -> None:
    """SHARD_COUNT unset: Discord's recommended count (``GET /gateway/bot``), every shard in
    this one process, so it gets the guilds of all of them."""
    async with (
        FakeSpotify.running() as spotify,
        FakeDiscord.running(
            guilds=[default_guild(), other_guild()], recommended_shards=2
        ) as fake_discord,
        Stack.running(
            tmp_path,
            spotify=spotify,
            fake_discord=fake_discord,
            app_options={"identify_interval": IDENTIFY_INTERVAL},
        ) as stack,
    ):
        assert sorted(tuple(i["shard"]) for i in fake_discord.identifies) == [(0, 2), (1, 2)]
        assert {g.id for g in stack.app.bot.guilds} == {GUILD_ID, OTHER_GUILD_ID}
        assert stack.app.bot.syncs_commands
        assert stack.app.services.discord.gateway_connected()
