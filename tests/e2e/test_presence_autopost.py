"""Auto-posting from the Discord status (ENABLE_PRESENCE): posts with no Spotify call, one per
music channel however many guilds send the same update; polling yields to presence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.fakes.discord import ChannelArg, FakeMessage
from tests.fakes.spotify import track_payload
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    GUILD_ID,
    MUSIC_ID,
    Stack,
    default_guild,
    fast_autopost,
    guild_of,
    listening,
)

PRESENCE = {"ENABLE_PRESENCE": "true"}
SECOND_GUILD_ID = 700000000000000101
SECOND_MUSIC_ID = 700000000000000111
CONFIG = fast_autopost(skip_check=0.5, backoff=0.3)
WAIT = 8.0


def second_guild() -> dict[str, Any]:
    return guild_of(
        SECOND_GUILD_ID,
        "Second Home",
        [(SECOND_MUSIC_ID, "tunes")],
        [(BOB_ID, "bob"), (ADMIN_ID, "admin")],
    )


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Stack]:
    options.setdefault("env", PRESENCE)
    async with Stack.running(tmp_path, app_options={"autopost_config": CONFIG}, **options) as st:
        yield st


async def command(
    stack: Stack,
    subcommand: str,
    options: dict[str, Any],
    *,
    user_id: int,
    guild_id: int = GUILD_ID,
) -> FakeMessage:
    sent = await stack.discord.send_slash_command(
        "autopost", options, subcommand=subcommand, user_id=str(user_id), guild_id=str(guild_id)
    )
    return await sent.wait_for_reply(timeout=WAIT)


async def set_music_channel(stack: Stack, guild_id: int, channel_id: int) -> None:
    reply = await command(
        stack,
        "channel",
        {"channel": ChannelArg(str(channel_id))},
        user_id=ADMIN_ID,
        guild_id=guild_id,
    )
    assert f"<#{channel_id}>" in reply.content, reply.content


def posts_in(stack: Stack, channel_id: int) -> list[FakeMessage]:
    return [m for m in stack.discord.channel_posts if m.channel_id == str(channel_id)]


async def quiet_for(seconds: float) -> None:
    """Give the bot time to (wrongly) post; used only to assert that nothing happens."""
    await asyncio.sleep(seconds)


async def test_presence_only_member_posts_after_opting_in_without_spotify_calls(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as stack:
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        await stack.discord.update_user_presence(BOB_ID, [listening("trackAAAA", "Before")])
        await quiet_for(0.5)
        assert posts_in(stack, MUSIC_ID) == []  # presence-only members start opted out

        reply = await command(stack, "me", {"enabled": True}, user_id=BOB_ID)
        assert reply.ephemeral
        assert "Discord status shows Spotify" in reply.content
        start = len(stack.discord.channel_posts)
        sent_at = time.monotonic()
        await stack.discord.update_user_presence(BOB_ID, [listening("trackBBBB", "After")])
        post = await stack.discord.wait_for_message(MUSIC_ID, start=start, timeout=WAIT)
        assert post.embeds[0]["title"] == "After"
        assert "Discord status" in post.embeds[0]["footer"]["text"]
        assert post.created_at - sent_at < 2.0
        assert stack.member_spotify_calls() == 0


async def test_same_update_from_several_guilds_posts_once_per_music_channel(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, guilds=[default_guild(), second_guild()]) as stack:
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        await set_music_channel(stack, SECOND_GUILD_ID, SECOND_MUSIC_ID)
        # /autopost me applies in the server where it runs: Bob opts in in both.
        await command(stack, "me", {"enabled": True}, user_id=BOB_ID)
        await command(stack, "me", {"enabled": True}, user_id=BOB_ID, guild_id=SECOND_GUILD_ID)

        updates = await stack.discord.update_user_presence(BOB_ID, [listening("trk1", "Shared")])
        assert len(updates) == 2  # one PRESENCE_UPDATE per shared guild
        await stack.discord.wait_for_message(MUSIC_ID, timeout=WAIT)
        await stack.discord.wait_for_message(SECOND_MUSIC_ID, timeout=WAIT)
        # A status-only change re-sends the same track: nothing new.
        await stack.discord.update_user_presence(
            BOB_ID, [listening("trk1", "Shared")], status="idle"
        )
        await quiet_for(0.5)
        assert len(posts_in(stack, MUSIC_ID)) == 1
        assert len(posts_in(stack, SECOND_MUSIC_ID)) == 1


async def test_linked_member_switches_between_presence_and_polling(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("polled1", "Polled One", 200_000, 5_000))
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        first = await stack.discord.wait_for_message(MUSIC_ID, timeout=WAIT)
        assert first.embeds[0]["title"] == "Polled One"

        # The status shows Spotify: polling stops, the presence's new track is shown. Under
        # 30 s after the last post with nobody posting since, that is an edit (skip grouping).
        await stack.discord.update_user_presence(ALICE_ID, [listening("statusT1", "From Status")])
        await shown(stack, first, "From Status")
        assert "Discord status" in first.embeds[0]["footer"]["text"]
        await quiet_for(0.3)  # a poll already in flight may still land
        calls = stack.spotify.call_count("currently_playing")
        await quiet_for(1.5)  # three skip-check intervals
        assert stack.spotify.call_count("currently_playing") == calls

        # Spotify leaves the status: polling resumes and sees the next track.
        stack.spotify.set_playing("alice", track_payload("polled2", "Polled Two", 200_000, 1_000))
        await stack.discord.update_user_presence(ALICE_ID, [])
        await shown(stack, first, "Polled Two")
        assert "Discord status" not in first.embeds[0]["footer"]["text"]
        assert stack.spotify.call_count("currently_playing") > calls
        assert posts_in(stack, MUSIC_ID) == [first]


async def shown(stack: Stack, message: FakeMessage, title: str) -> None:
    await stack.discord.wait_for(
        lambda: message if message.embeds[0]["title"] == title else None,
        timeout=WAIT,
        what=f"the post to show {title!r}",
    )


async def test_opted_out_member_is_not_posted_from_presence(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        await command(stack, "me", {"enabled": False}, user_id=ALICE_ID)
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        await stack.discord.update_user_presence(ALICE_ID, [listening("nopeTrack", "Private")])
        await quiet_for(0.8)
        assert posts_in(stack, MUSIC_ID) == []


async def test_presence_disabled_posts_nothing_from_status(tmp_path: Path) -> None:
    async with running(tmp_path, env={"ENABLE_PRESENCE": "false"}) as stack:
        assert stack.app.bot.get_cog("PresenceCog") is None
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        await command(stack, "me", {"enabled": True}, user_id=BOB_ID)
        await stack.discord.update_user_presence(BOB_ID, [listening("ignored1", "Ignored")])
        await quiet_for(0.8)
        assert posts_in(stack, MUSIC_ID) == []


async def test_restart_does_not_repost_a_presence_track(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await set_music_channel(stack, GUILD_ID, MUSIC_ID)
        await command(stack, "me", {"enabled": True}, user_id=BOB_ID)
        await stack.discord.update_user_presence(BOB_ID, [listening("keepTrack", "Kept")])
        await stack.discord.wait_for_message(MUSIC_ID, timeout=WAIT)
    guild = default_guild()
    guild["presences"] = [
        {
            "user": {"id": str(BOB_ID)},
            "status": "online",
            "activities": [listening("keepTrack", "Kept")],
            "client_status": {"desktop": "online"},
        }
    ]
    async with running(tmp_path, guilds=[guild]) as stack:
        await stack.discord.update_user_presence(BOB_ID, [listening("keepTrack", "Kept")])
        await quiet_for(0.8)
        assert posts_in(stack, MUSIC_ID) == []
