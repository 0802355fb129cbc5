"""Who sees whom: /np member: scoped to the server, /privacy, and /autopost me per server.

The real bot against the fake Discord and the fake Spotify; every refusal is checked on the
wire (what the bot answered) and at Spotify (no call was made for the target).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.members.privacy import DM_ONLY_YOURSELF
from bot.storage import Storage
from tests import harness
from tests.fakes.discord import ChannelArg, FakeMessage, UserArg
from tests.fakes.discord_payloads import (
    make_spotify_activity,
)
from tests.fakes.spotify import track_payload
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    GUILD_ID,
    MUSIC_ID,
    Stack,
    default_guild,
    fast_autopost,
    guild_of,
)
from tests.helpers import eventually
from tests.peek import polls_in_flight

OTHER_GUILD_ID = 700000000000000101
OTHER_GENERAL_ID = 700000000000000110
OTHER_MUSIC_ID = 700000000000000111
DAVE_ID = 800000000000000004  # only in the other guild
WAIT = 8.0

FAST = fast_autopost()


def other_guild() -> dict[str, Any]:
    return guild_of(
        OTHER_GUILD_ID,
        "Other Club",
        [(OTHER_GENERAL_ID, "general"), (OTHER_MUSIC_ID, "music")],
        [(ALICE_ID, "alice"), (BOB_ID, "bob"), (DAVE_ID, "dave"), (ADMIN_ID, "admin")],
    )


@contextlib.asynccontextmanager
async def two_servers(tmp_path: Path, **options: Any) -> AsyncIterator[Stack]:
    async with Stack.running(
        tmp_path,
        guilds=[default_guild(), other_guild()],
        app_options={"autopost_config": FAST},
        **options,
    ) as stack:
        yield stack


def spotify_calls_for(stack: Stack, user: str) -> int:
    return sum(count for (_, who), count in stack.spotify.calls.items() if who == user)


async def np(stack: Stack, user_id: int, member_id: int | None = None, **where: Any) -> FakeMessage:
    options: dict[str, Any] = {}
    if member_id is not None:
        options["member"] = UserArg(str(member_id))
    sent = await stack.discord.send_slash_command("np", options, user_id=str(user_id), **where)
    return await sent.wait_for_reply(timeout=WAIT)


async def privacy(stack: Stack, user_id: int, visibility: str | None = None) -> FakeMessage:
    options = {"visibility": visibility} if visibility is not None else {}
    sent = await stack.discord.send_slash_command("privacy", options, user_id=str(user_id))
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.ephemeral
    return reply


async def autopost(
    stack: Stack, subcommand: str, options: dict[str, Any], *, user_id: int, guild_id: int
) -> FakeMessage:
    sent = await stack.discord.send_slash_command(
        "autopost", options, subcommand=subcommand, user_id=str(user_id), guild_id=str(guild_id)
    )
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.ephemeral
    return reply


async def autopost_in_both_servers(stack: Stack) -> None:
    for guild_id, channel_id in ((GUILD_ID, MUSIC_ID), (OTHER_GUILD_ID, OTHER_MUSIC_ID)):
        await autopost(
            stack,
            "channel",
            {"channel": ChannelArg(str(channel_id))},
            user_id=ADMIN_ID,
            guild_id=guild_id,
        )


def titles(stack: Stack, channel_id: int) -> list[str]:
    return [
        m.embeds[0].get("title", "")
        for m in stack.discord.channel_posts
        if m.channel_id == str(channel_id) and m.embeds
    ]


# --- /np member: is scoped to the server ---------------------------------------------------


async def test_np_member_only_for_members_of_this_server(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        await stack.link(CAROL_ID, "carol")
        stack.spotify.set_playing("alice", track_payload("a1", "Alice Song", 200_000, 1_000))
        stack.spotify.set_playing("carol", track_payload("c1", "Carol Song", 200_000, 1_000))
        stack.spotify.reset_calls()

        # Carol is in the first server only: from the other one, Bob learns nothing about her.
        reply = await np(stack, BOB_ID, CAROL_ID, guild_id=str(OTHER_GUILD_ID))
        assert reply.ephemeral
        assert reply.embeds == []
        assert "is not a member of this server" in reply.content
        # A bare id of someone who is in no shared server, from the first server.
        reply = await np(stack, ALICE_ID, DAVE_ID, guild_id=str(GUILD_ID))
        assert reply.ephemeral
        assert "Dave is not a member of this server" in reply.content
        # A DM: only yourself.
        reply = await np(stack, BOB_ID, CAROL_ID, dm=True)
        assert reply.ephemeral
        assert reply.content == DM_ONLY_YOURSELF
        assert spotify_calls_for(stack, "carol") == 0

        # Your own /np works in a DM, and Alice is a member of both servers.
        reply = await np(stack, ALICE_ID, dm=True)
        assert reply.embeds[0]["title"] == "Alice Song"
        reply = await np(stack, BOB_ID, ALICE_ID, guild_id=str(OTHER_GUILD_ID))
        assert reply.embeds[0]["title"] == "Alice Song"
        assert not reply.ephemeral
        reply = await np(stack, BOB_ID, CAROL_ID, guild_id=str(GUILD_ID))
        assert reply.embeds[0]["title"] == "Carol Song"
        assert spotify_calls_for(stack, "carol") == 1


async def test_a_member_option_without_resolved_member_data_is_refused(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as stack:
        await stack.link(CAROL_ID, "carol")
        stack.spotify.reset_calls()
        # A payload naming a user with no resolved member (as Discord sends for a non-member).
        sent = await stack.discord.send_slash_command(
            "np",
            [{"name": "member", "type": 6, "value": str(CAROL_ID)}],
            user_id=str(BOB_ID),
            resolved={"users": {str(CAROL_ID): stack.discord.user(CAROL_ID)}},
        )
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert reply.ephemeral
        assert "is not a member of this server" in reply.content
        assert spotify_calls_for(stack, "carol") == 0


# --- /privacy ------------------------------------------------------------------------------


async def test_private_hides_you_from_others_but_not_from_yourself(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("a1", "Alice Song", 200_000, 1_000))
        reply = await privacy(stack, ALICE_ID)
        assert "**your servers** (the default)" in reply.content

        reply = await privacy(stack, ALICE_ID, "private")
        assert reply.content.startswith("Done. You are **private**.")
        assert await stack.app.services.storage.privacy.get_visibility(ALICE_ID) == "private"
        stack.spotify.reset_calls()
        for guild_id in (GUILD_ID, OTHER_GUILD_ID):
            reply = await np(stack, BOB_ID, ALICE_ID, guild_id=str(guild_id))
            assert reply.ephemeral
            assert reply.content == "Alice keeps their listening private."
        assert spotify_calls_for(stack, "alice") == 0

        reply = await np(stack, ALICE_ID)  # only Alice sees her own
        assert reply.ephemeral
        assert reply.embeds[0]["title"] == "Alice Song"

        reply = await privacy(stack, ALICE_ID, "private")
        assert reply.content.startswith("No change: You are **private**.")
        reply = await privacy(stack, ALICE_ID, "server")
        assert reply.content.startswith("Done. You are visible to **your servers**")
        reply = await np(stack, BOB_ID, ALICE_ID)
        assert not reply.ephemeral
        assert reply.embeds[0]["title"] == "Alice Song"


async def test_private_stops_auto_posts_everywhere_and_forgets_them(tmp_path: Path) -> None:
    async with two_servers(tmp_path) as stack:
        await autopost_in_both_servers(stack)
        stack.spotify.set_playing("alice", track_payload("a1", "Song a1", 200_000, 1_000))
        await stack.link(ALICE_ID, "alice")
        await eventually(lambda: titles(stack, MUSIC_ID) and titles(stack, OTHER_MUSIC_ID), WAIT)
        storage = stack.app.services.storage
        async with asyncio.timeout(WAIT):  # recorded just after Discord has the post
            while await storage.last_posts.get_last_post(ALICE_ID, MUSIC_ID) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await privacy(stack, ALICE_ID, "private")
        service = stack.app.services.autopost
        assert service is not None
        assert not service.is_followed(ALICE_ID)
        assert await storage.last_posts.get_last_post(ALICE_ID, MUSIC_ID) is None
        assert await storage.last_posts.get_last_post(ALICE_ID, OTHER_MUSIC_ID) is None
        await eventually(
            lambda: polls_in_flight(service) == 0, WAIT
        )  # a poll already started lands
        polled = stack.spotify.call_count("currently_playing", "alice")
        stack.spotify.set_playing("alice", track_payload("a2", "Song a2", 200_000, 1_000))
        await asyncio.sleep(1.5)  # more than one skip-check interval: a poll would be due
        assert stack.spotify.call_count("currently_playing", "alice") == polled
        assert titles(stack, MUSIC_ID) == ["Song a1"]
        assert titles(stack, OTHER_MUSIC_ID) == ["Song a1"]

        # Back to server: followed and posted again, with no other command.
        await privacy(stack, ALICE_ID, "server")
        await eventually(lambda: titles(stack, MUSIC_ID) == ["Song a1", "Song a2"], WAIT)
        await eventually(lambda: titles(stack, OTHER_MUSIC_ID) == ["Song a1", "Song a2"], WAIT)


async def test_a_private_member_status_is_not_shown_either(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env={"ENABLE_PRESENCE": "true"}) as stack:
        await privacy(stack, CAROL_ID, "private")
        activity = make_spotify_activity(title="Status Song", track_id="3n3Ppam7vgaVa1iaRUc9Lp")
        await stack.discord.update_user_presence(CAROL_ID, [activity])

        def shows_spotify() -> bool:
            guild = stack.app.bot.get_guild(GUILD_ID)
            member = guild.get_member(CAROL_ID) if guild else None
            return member is not None and any(a.name == "Spotify" for a in member.activities)

        await eventually(shows_spotify, WAIT)
        reply = await np(stack, BOB_ID, CAROL_ID)
        assert reply.ephemeral
        assert reply.content == "Carol keeps their listening private."
        reply = await np(stack, CAROL_ID)  # her own status, for her eyes only
        assert reply.ephemeral
        assert reply.embeds[0]["title"] == "Status Song"
        assert stack.member_spotify_calls() == 0


# --- /autopost me is per server ------------------------------------------------------------


async def test_autopost_me_applies_in_the_server_where_it_runs(tmp_path: Path) -> None:
    # A choice stored before it was per server (opted out) applies everywhere until changed.
    async with await Storage.open(harness.database_target(tmp_path)) as storage:
        await storage.settings.set_autopost_opt_in(ALICE_ID, False)
    async with two_servers(tmp_path) as stack:
        await autopost_in_both_servers(stack)
        stack.spotify.set_playing("alice", track_payload("a1", "Song a1", 200_000, 1_000))
        await stack.link(ALICE_ID, "alice")
        service = stack.app.services.autopost
        assert service is not None
        await service.settle()
        assert not service.is_followed(ALICE_ID)

        reply = await autopost(
            stack, "me", {"enabled": True}, user_id=ALICE_ID, guild_id=OTHER_GUILD_ID
        )
        assert f"<#{OTHER_MUSIC_ID}>" in reply.content
        await eventually(lambda: titles(stack, OTHER_MUSIC_ID) == ["Song a1"], WAIT)
        assert titles(stack, MUSIC_ID) == []

        # Opting out in the other server stops posts there; the first one is opted in now.
        await autopost(stack, "me", {"enabled": True}, user_id=ALICE_ID, guild_id=GUILD_ID)
        reply = await autopost(
            stack, "me", {"enabled": False}, user_id=ALICE_ID, guild_id=OTHER_GUILD_ID
        )
        assert "in this server" in reply.content
        stack.spotify.set_playing("alice", track_payload("a2", "Song a2", 200_000, 1_000))
        await eventually(lambda: titles(stack, MUSIC_ID)[-1:] == ["Song a2"], WAIT)
        assert titles(stack, OTHER_MUSIC_ID) == ["Song a1"]
        assert await stack.app.services.storage.settings.get_guild_autopost_opt_in(
            ALICE_ID, GUILD_ID
        )
