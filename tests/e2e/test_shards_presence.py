"""Presence mode with two processes (shards 0 and 1 of 2) on one PostgreSQL: a presence is
posted by the process it arrives in, once per music channel; the process that polls (the
leader) polls nobody a presence covers in any process, and polls them again when the presence
goes away or the process that saw it is killed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import ALICE_ID, MUSIC_ID, Stack, default_guild, free_port, listening
from tests.helpers import eventually
from tests.peek import is_covered
from tests.shardrun import (
    FAST_AUTOPOST,
    IDENTIFY_INTERVAL,
    OTHER_MUSIC_ID,
    guild_of_shard,
    music_channel_of,
    other_guild,
    posted_in_both,
    posted_titles,
    set_both_music_channels,
    shard_env,
    shard_process,
    two_processes,
)

DATABASE_BACKENDS = ("postgresql",)  # several processes need the shared database

PRESENCE = {"ENABLE_PRESENCE": "true"}
# Longer than a few of the leader's polls (an idle member is polled every 0.4 s here).
SEVERAL_POLLS = 1.5


def polls_of_alice(spotify: FakeSpotify) -> int:
    return spotify.call_count("currently_playing", "alice")


async def alice_polled_and_posted(
    zero: Stack, one: Stack, fake_discord: FakeDiscord
) -> tuple[Stack, Stack]:
    """Alice linked, a music channel on each shard, her first track polled and posted in both;
    the leader and the other process."""
    await zero.link(ALICE_ID, "alice")
    await set_both_music_channels(zero, zero, one)
    zero.spotify.set_playing("alice", track_payload("t1", "Polled Song", 200_000, 5_000))
    await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Polled Song"))
    return leader_and_other(zero, one)


def leader_and_other(zero: Stack, one: Stack) -> tuple[Stack, Stack]:
    leaders = [s for s in (zero, one) if s.app.services.autopost.leadership.is_leader]
    assert len(leaders) == 1
    return leaders[0], one if leaders[0] is zero else zero


async def test_each_presence_track_is_posted_once_in_each_music_channel(tmp_path: Any) -> None:
    async with two_processes(tmp_path, PRESENCE) as (zero, one, fake_discord):
        spotify = zero.spotify
        leader, _ = await alice_polled_and_posted(zero, one, fake_discord)
        coverage = leader.app.services.autopost.coverage

        # Discord sends the status once per shared guild: each process hears it in its own.
        await fake_discord.update_user_presence(ALICE_ID, [listening("t2", "Presence One")])
        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Presence One"))
        await eventually(lambda: is_covered(coverage, ALICE_ID))
        polls = polls_of_alice(spotify)
        await fake_discord.update_user_presence(ALICE_ID, [listening("t3", "Presence Two")])
        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Presence Two"))
        await asyncio.sleep(SEVERAL_POLLS)
        assert polls_of_alice(spotify) == polls  # covered: the leader did not poll her

        # She pauses: the status loses Spotify, the leader polls her again and finds the same
        # track (paused): nothing new to post anywhere.
        spotify.set_playing(
            "alice", track_payload("t3", "Presence Two", 200_000, 9_000, is_playing=False)
        )
        await fake_discord.update_user_presence(ALICE_ID, [])
        await eventually(lambda: polls_of_alice(spotify) > polls, timeout=10)
        await asyncio.sleep(SEVERAL_POLLS)
        for stack in (zero, one):
            await stack.app.services.autopost.settle()
        expected = ["Polled Song", "Presence One", "Presence Two"]
        assert posted_titles(fake_discord, MUSIC_ID) == expected
        assert posted_titles(fake_discord, OTHER_MUSIC_ID) == expected


async def test_the_leader_polls_nobody_a_presence_in_another_process_covers(
    tmp_path: Any,
) -> None:
    async with two_processes(tmp_path, PRESENCE) as (zero, one, fake_discord):
        spotify = zero.spotify
        leader, other = await alice_polled_and_posted(zero, one, fake_discord)
        other_shard = (other.settings.shard_ids or (0,))[0]
        other_guild_id = guild_of_shard(other_shard)
        other_channel = music_channel_of(other_guild_id)
        leader_channel = music_channel_of(guild_of_shard(1 - other_shard))

        # Only the other process sees the status (its guild's PRESENCE_UPDATE).
        await fake_discord.update_presence(
            other_guild_id, ALICE_ID, [listening("t2", "Presence Song")]
        )
        await fake_discord.wait_for(
            lambda: True if "Presence Song" in posted_titles(fake_discord, other_channel) else None
        )
        await eventually(lambda: is_covered(leader.app.services.autopost.coverage, ALICE_ID))
        polls = polls_of_alice(spotify)
        await asyncio.sleep(SEVERAL_POLLS)
        assert polls_of_alice(spotify) == polls
        assert posted_titles(fake_discord, leader_channel) == ["Polled Song"]

        # The status loses Spotify: the leader polls again, and posts the track in the channel
        # the presence never reached, not again in the one it did.
        spotify.set_playing("alice", track_payload("t2", "Presence Song", 200_000, 9_000))
        await fake_discord.update_presence(other_guild_id, ALICE_ID, [])
        await eventually(lambda: polls_of_alice(spotify) > polls, timeout=10)
        await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Presence Song"))
        await leader.app.services.autopost.settle()
        assert posted_titles(fake_discord, other_channel) == ["Polled Song", "Presence Song"]
        assert posted_titles(fake_discord, leader_channel) == ["Polled Song", "Presence Song"]


async def test_a_killed_process_leaves_nobody_unpolled(tmp_path: Any) -> None:
    """The process that saw the status is killed (SIGKILL: it says nothing): its cover expires
    and the leader polls the member again within the cover's lifetime (15 s) and a tick."""
    port = free_port()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    async with (
        FakeSpotify.running(redirect_uris=[redirect_uri]) as spotify,
        FakeDiscord.running(guilds=[default_guild(), other_guild()]) as fake_discord,
        Stack.running(
            tmp_path / "shard1",  # the default guild's shard, where /link is answered
            env=shard_env(1, port, PRESENCE),
            spotify=spotify,
            fake_discord=fake_discord,
            redirect_uri=redirect_uri,
            app_options={"identify_interval": IDENTIFY_INTERVAL, "autopost_config": FAST_AUTOPOST},
        ) as leader,
    ):
        autopost = leader.app.services.autopost
        await eventually(lambda: autopost.leadership.is_leader, timeout=10)
        await leader.link(ALICE_ID, "alice")
        async with shard_process(tmp_path, 0, leader, PRESENCE) as process:
            await set_both_music_channels(leader, leader)
            spotify.set_playing("alice", track_payload("t1", "Polled Song", 200_000, 5_000))
            await fake_discord.wait_for(lambda: posted_in_both(fake_discord, "Polled Song"))
            await fake_discord.update_presence(
                guild_of_shard(0), ALICE_ID, [listening("t2", "Presence Song")]
            )
            await eventually(lambda: is_covered(autopost.coverage, ALICE_ID), timeout=10)
            polls = polls_of_alice(spotify)
            await asyncio.sleep(SEVERAL_POLLS)
            assert polls_of_alice(spotify) == polls

            process.process.kill()
            killed_at = time.monotonic()
            with contextlib.suppress(Exception):
                await process.wait()
            await eventually(lambda: polls_of_alice(spotify) > polls, timeout=30)
            assert time.monotonic() - killed_at < 21
            assert not is_covered(autopost.coverage, ALICE_ID)
