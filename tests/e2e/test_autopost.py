"""Auto-posting end to end: the real bot against the fake Discord and the fake Spotify.

Intervals are shortened (``CONFIG``) so each test runs in seconds; the logic is the default one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.autopost.config import AutopostConfig
from tests.fakes.discord import ChannelArg, FakeMessage
from tests.fakes.discord_http import RecordedRequest
from tests.fakes.discord_payloads import EMBED_LINKS, SEND_MESSAGES
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    GENERAL_ID,
    GUILD_ID,
    MUSIC_ID,
    Stack,
    fast_autopost,
)

SKIP_CHECK = 1.0
CONFIG = fast_autopost(skip_check=SKIP_CHECK)
WAIT = 8.0


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, config: AutopostConfig = CONFIG, **options: Any
) -> AsyncIterator[Stack]:
    async with Stack.running(tmp_path, app_options={"autopost_config": config}, **options) as st:
        yield st


async def autopost(
    stack: Stack, subcommand: str, options: dict[str, Any] | None = None, *, user_id: int
) -> FakeMessage:
    sent = await stack.discord.send_slash_command(
        "autopost", options or {}, subcommand=subcommand, user_id=str(user_id)
    )
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.ephemeral
    return reply


async def choose_music_channel(stack: Stack) -> None:
    reply = await autopost(
        stack, "channel", {"channel": ChannelArg(str(MUSIC_ID))}, user_id=ADMIN_ID
    )
    assert f"<#{MUSIC_ID}>" in reply.content, reply.content


def playing(track_id: str, *, duration_ms: int = 200_000, progress_ms: int = 10_000) -> Any:
    return track_payload(track_id, f"Song {track_id}", duration_ms, progress_ms)


def timeline(*tracks: tuple[str, float]) -> Callable[[], dict[str, Any]]:
    """Tracks played back to back from now, each (id, seconds); the last one goes on."""
    started = time.monotonic()

    def state() -> dict[str, Any]:
        elapsed = time.monotonic() - started
        for index, (track_id, seconds) in enumerate(tracks):
            if elapsed < seconds or index == len(tracks) - 1:
                return track_payload(
                    track_id, f"Song {track_id}", int(seconds * 1000), int(elapsed * 1000)
                )
            elapsed -= seconds
        raise AssertionError("unreachable")

    return state


def posts(stack: Stack, channel_id: int = MUSIC_ID) -> list[FakeMessage]:
    return [m for m in stack.discord.channel_posts if m.channel_id == str(channel_id)]


def title(message: FakeMessage) -> str | None:
    return message.embeds[0].get("title") if message.embeds else None


async def wait_for_post(stack: Stack, track_title: str, *, start: int = 0) -> FakeMessage:
    return await stack.discord.wait_for_message(
        MUSIC_ID, predicate=lambda m: title(m) == track_title, start=start, timeout=WAIT
    )


async def polls(stack: Stack, user: str, count: int, timeout: float = WAIT) -> None:
    """Until Spotify has seen ``count`` more currently-playing calls for ``user``."""
    target = stack.spotify.call_count("currently_playing", user) + count
    async with asyncio.timeout(timeout):
        while stack.spotify.call_count("currently_playing", user) < target:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def polling_goes_on(stack: Stack) -> None:
    """Evidence that time passed for the auto-poster (instead of a sleep): Bob, linked and
    idle, was polled three more times."""
    await followed(stack, BOB_ID)
    await polls(stack, "bob", 3)


async def followed(stack: Stack, user_id: int, expected: bool = True) -> None:
    service = stack.app.services.autopost
    assert service is not None
    async with asyncio.timeout(WAIT):
        while service.is_followed(user_id) is not expected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def music_channel_in_db(stack: Stack) -> int | None:
    settings = await stack.app.services.storage.settings.get_guild_settings(GUILD_ID)
    return settings.music_channel_id if settings is not None else None


async def linked_and_posting(stack: Stack, track_id: str = "t1") -> FakeMessage:
    await choose_music_channel(stack)
    stack.spotify.set_playing("alice", playing(track_id))
    await stack.link(ALICE_ID, "alice")
    return await wait_for_post(stack, f"Song {track_id}")


# --- posting -------------------------------------------------------------------------------


async def test_track_changes_are_posted(tmp_path: Path) -> None:
    # How fast is bench/autopost.py's figure (and the scheduler's tests plan the checks on a
    # hand-moved clock); here: every change arrives, in order, with /np's button.
    async with running(tmp_path, replace(CONFIG, edit_window=0.0)) as stack:
        first = await linked_and_posting(stack)
        assert first.embeds[0]["title"] == "Song t1"
        assert first.components, "the Open in Spotify button, as in /np"

        # A natural end: t2 runs out and t3 follows.
        stack.spotify.set_playing("alice", timeline(("t2", 2.0), ("t3", 200.0)))
        await wait_for_post(stack, "Song t3")

        # A skip.
        stack.spotify.set_playing("alice", playing("t4", progress_ms=0))
        await wait_for_post(stack, "Song t4")
        assert [title(m) for m in posts(stack)] == ["Song t1", "Song t2", "Song t3", "Song t4"]


async def test_no_duplicates_and_pause_resume_is_not_a_new_post(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await polls(stack, "alice", 2)
        stack.spotify.set_playing(
            "alice", track_payload("t1", "Song t1", 200_000, 12_000, is_playing=False)
        )
        await polls(stack, "alice", 2)
        stack.spotify.set_playing("alice", playing("t1", progress_ms=90_000))  # resumed, seeked
        await polls(stack, "alice", 2)
        assert [title(m) for m in posts(stack)] == ["Song t1"]
        assert posts(stack)[0].edits == []


async def test_rapid_skips_edit_the_last_post(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        message = await linked_and_posting(stack)
        stack.spotify.set_playing("alice", playing("t2"))
        await stack.discord.wait_for(
            lambda: True if title(message) == "Song t2" else None, timeout=WAIT
        )
        stack.spotify.set_playing("alice", playing("t3"))
        await stack.discord.wait_for(
            lambda: True if title(message) == "Song t3" else None, timeout=WAIT
        )
        assert len(posts(stack)) == 1
        assert len(message.edits) == 2

        # Someone talked after the post: the next track is a new post, not an edit.
        await stack.discord.post_as_member(MUSIC_ID, BOB_ID, "love this one")
        stack.spotify.set_playing("alice", playing("t4"))
        await wait_for_post(stack, "Song t4")
        assert [title(m) for m in posts(stack)] == ["Song t3", "Song t4"]


async def test_a_restart_does_not_repost(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify:
        async with running(tmp_path, spotify=spotify) as stack:
            await linked_and_posting(stack)
        async with running(tmp_path, spotify=spotify) as stack:
            await followed(stack, ALICE_ID)
            await polls(stack, "alice", 3)
            assert posts(stack) == []
            stack.spotify.set_playing("alice", playing("t2"))
            await wait_for_post(stack, "Song t2")
            assert [title(m) for m in posts(stack)] == ["Song t2"]


# --- who is posted -------------------------------------------------------------------------


async def test_opting_out_stops_posts_and_opting_in_brings_them_back(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await stack.link(BOB_ID, "bob")
        reply = await autopost(stack, "me", {"enabled": False}, user_id=ALICE_ID)
        assert "won't auto-post" in reply.content
        await followed(stack, ALICE_ID, False)
        calls = stack.spotify.call_count("currently_playing", "alice")
        stack.spotify.set_playing("alice", playing("t2"))
        await polling_goes_on(stack)
        assert stack.spotify.call_count("currently_playing", "alice") <= calls + 1
        assert [title(m) for m in posts(stack)] == ["Song t1"]

        reply = await autopost(stack, "me", {"enabled": True}, user_id=ALICE_ID)
        assert f"<#{MUSIC_ID}>" in reply.content
        await wait_for_post(stack, "Song t2")


async def test_unlinking_stops_posts(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await stack.link(BOB_ID, "bob")
        sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
        await sent.wait_for_reply(timeout=WAIT)
        await followed(stack, ALICE_ID, False)
        calls = stack.spotify.call_count("currently_playing", "alice")
        stack.spotify.set_playing("alice", playing("t2"))
        await polling_goes_on(stack)
        assert stack.spotify.call_count("currently_playing", "alice") <= calls + 1
        assert len(posts(stack)) == 1


async def test_a_member_who_left_the_guild_is_not_posted(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await stack.link(BOB_ID, "bob")
        await stack.discord.remove_member(GUILD_ID, ALICE_ID)  # no event: no members intent
        stack.spotify.set_playing("alice", playing("t2"))
        await followed(stack, ALICE_ID, False)  # looked up at post time: 404 Unknown Member
        await polling_goes_on(stack)
        assert [title(m) for m in posts(stack)] == ["Song t1"]


@pytest.mark.parametrize(
    "choice",
    [
        ("privacy", None, {"visibility": "private"}),
        ("unlink", None, {}),
        ("autopost", "me", {"enabled": False}),
    ],
    ids=["private", "unlink", "opt-out"],
)
async def test_a_failed_post_never_goes_out_after_the_member_says_no(
    tmp_path: Path, choice: tuple[str, str | None, dict[str, Any]]
) -> None:
    """A post Discord refused for now waits in the outbox. If the member then goes private,
    unlinks or opts out, it is never sent, by any process's sender."""
    async with running(tmp_path) as stack:
        outbox = stack.app.services.outbox
        await outbox.stop()  # this test runs the sender's rounds itself, below
        await choose_music_channel(stack)
        discord_down = [True]

        def music_post(request: RecordedRequest) -> bool:
            wanted = request.method == "POST" and request.path == f"/channels/{MUSIC_ID}/messages"
            return wanted and discord_down[0]

        stack.discord.fail_requests(music_post, status=503, times=10**6)
        stack.spotify.set_playing("alice", playing("t1"))
        await stack.link(ALICE_ID, "alice")
        await stack.discord.wait_for_request(music_post)  # refused once: the row waits

        name, subcommand, options = choice
        sent = await stack.discord.send_slash_command(
            name, options, subcommand=subcommand, user_id=str(ALICE_ID)
        )
        await sent.wait_for_reply(timeout=WAIT)
        discord_down[0] = False
        await outbox.send_due()  # what every process's sender does every 3 s
        await outbox.send_due()
        assert [title(m) for m in posts(stack)] == []


# --- the commands --------------------------------------------------------------------------


async def test_a_member_without_manage_server_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        sync = await stack.discord.wait_for_command_sync(str(GUILD_ID))
        command = next(c for c in sync.commands if c["name"] == "autopost")
        # No default permission on the group: /autopost me must stay visible to members.
        assert command.get("default_member_permissions") is None
        assert {o["name"] for o in command["options"]} == {"channel", "off", "me"}

        for subcommand, options in (
            ("channel", {"channel": ChannelArg(str(MUSIC_ID))}),
            ("off", {}),
        ):
            reply = await autopost(stack, subcommand, options, user_id=ALICE_ID)
            assert "Manage Server" in reply.content
        assert await music_channel_in_db(stack) is None

        reply = await autopost(stack, "me", {"enabled": False}, user_id=ALICE_ID)
        assert "won't auto-post" in reply.content


async def test_the_channel_must_let_the_bot_post_embeds(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await stack.discord.restrict_bot(MUSIC_ID, deny=EMBED_LINKS)
        reply = await autopost(
            stack, "channel", {"channel": ChannelArg(str(MUSIC_ID))}, user_id=ADMIN_ID
        )
        assert "Embed Links" in reply.content
        assert await music_channel_in_db(stack) is None
        reply = await autopost(
            stack, "channel", {"channel": ChannelArg(str(GENERAL_ID))}, user_id=ADMIN_ID
        )
        assert f"<#{GENERAL_ID}>" in reply.content
        assert await music_channel_in_db(stack) == GENERAL_ID


async def test_off_stops_posting(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        reply = await autopost(stack, "off", user_id=ADMIN_ID)
        assert "off" in reply.content
        assert await music_channel_in_db(stack) is None
        await followed(stack, ALICE_ID, False)
        reply = await autopost(stack, "off", user_id=ADMIN_ID)
        assert "was not on" in reply.content


# --- channels that stop working ------------------------------------------------------------


async def test_a_deleted_channel_turns_auto_post_off_and_the_admin_is_told(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await stack.discord.delete_channel(MUSIC_ID)
        async with asyncio.timeout(WAIT):
            while await music_channel_in_db(stack) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await followed(stack, ALICE_ID, False)

        reply = await autopost(stack, "off", user_id=ADMIN_ID)
        assert "#music was deleted" in reply.content
        assert "was not on" in reply.content
        reply = await autopost(stack, "off", user_id=ADMIN_ID)
        assert "deleted" not in reply.content


async def test_a_lost_permission_turns_auto_post_off_and_the_admin_is_told(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as stack:
        await linked_and_posting(stack)
        await stack.discord.restrict_bot(MUSIC_ID, deny=SEND_MESSAGES)
        stack.spotify.set_playing("alice", playing("t2"))
        async with asyncio.timeout(WAIT):
            while await music_channel_in_db(stack) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert len(posts(stack)) == 1

        # A member is not told; the admin is, once.
        reply = await autopost(stack, "me", {"enabled": True}, user_id=ALICE_ID)
        assert "turned off" not in reply.content
        reply = await autopost(
            stack, "channel", {"channel": ChannelArg(str(GENERAL_ID))}, user_id=ADMIN_ID
        )
        assert "Send Messages" in reply.content
        assert "#music" in reply.content
        assert f"<#{GENERAL_ID}>" in reply.content
        await wait_for_post_in(stack, GENERAL_ID, "Song t2")


async def wait_for_post_in(stack: Stack, channel_id: int, track_title: str) -> FakeMessage:
    return await stack.discord.wait_for_message(
        channel_id, predicate=lambda m: title(m) == track_title, timeout=WAIT
    )


async def test_under_the_default_daily_budget_natural_ends_are_still_posted(
    tmp_path: Path,
) -> None:
    """SPOTIFY_DAILY_BUDGET=600 (the default) puts the daily pace in charge of the checks: the
    check at a track's predicted end is never rationed, so a natural change is posted."""
    async with running(tmp_path, env={"SPOTIFY_DAILY_BUDGET": "600"}) as stack:
        assert stack.app.services.autopost.scheduler.pace is not None
        await choose_music_channel(stack)
        stack.spotify.set_playing("alice", timeline(("t1", 4.0), ("t2", 200.0)))
        await stack.link(ALICE_ID, "alice")
        await wait_for_post(stack, "Song t1")
        await wait_for_post(stack, "Song t2")  # t1 ran out: the end check saw it
        assert stack.app.services.budget.polling_left() < 600
