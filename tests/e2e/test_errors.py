"""Discord and Spotify misbehaving around /link and /np: the member always gets an answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.discord import RecordedRequest, UserArg
from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, BOB_ID, Stack, authorize_url_of, components_flat


def is_dm_post(stack: Stack, user_id: int) -> Callable[[RecordedRequest], bool]:
    def predicate(request: RecordedRequest) -> bool:
        channel = stack.discord.dm_channel(user_id)
        return request.method == "POST" and request.path == f"/channels/{channel['id']}/messages"

    return predicate


async def test_link_falls_back_to_buttons_when_discord_fails_the_dm(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        # discord.py retries a 500 after 1 s, 3 s, ...: the bot stops waiting after 2 s.
        stack.discord.fail_requests(is_dm_post(stack, ALICE_ID), status=500, times=2)
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply(timeout=4)
        assert sent.callback_latency < 3
        assert reply.ephemeral
        labels = {c.get("label") for c in components_flat(reply.components)}
        assert labels == {"Link Spotify", "Paste the link"}
        stack.spotify.approve_as("alice")
        status, _, body = await stack.follow(authorize_url_of(reply.components))
        assert status == 200
        assert "Linked as Alice" in body


async def test_the_callback_page_does_not_wait_for_a_failing_discord(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        url = authorize_url_of((await stack.discord.wait_for_dm(ALICE_ID)).components)
        await sent.wait_for_reply()
        # Discord now fails the "linked as" DM (discord.py would retry it for many seconds).
        stack.discord.fail_requests(is_dm_post(stack, ALICE_ID), status=500, times=10)
        stack.spotify.approve_as("alice")
        started = time.monotonic()
        status, _, body = await stack.follow(url)
        assert time.monotonic() - started < 3
        assert status == 200
        assert "Linked as Alice" in body


async def test_np_of_a_bot(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        sent = await stack.discord.send_slash_command(
            "np", {"member": UserArg(stack.discord.bot_user_id)}, user_id=str(ALICE_ID)
        )
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "is a bot" in reply.content
        assert stack.spotify.call_count("currently_playing") == 0


async def test_a_spotify_name_cannot_mention_anyone(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        stack.spotify.add_user("loud", display_name="@everyone <@&123456789012345678>")
        await stack.link(ALICE_ID, "loud")
        linked = await stack.discord.wait_for_dm(
            ALICE_ID, predicate=lambda m: m.content.startswith("Linked as")
        )
        assert "@everyone" not in linked.content
        assert "<@&123456789012345678>" not in linked.content
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert "You are linked as" in reply.content
        assert "@everyone" not in reply.content


async def test_np_with_a_cold_token_and_no_database_apologises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t1", "Song", 100_000, 0))
        # As after a restart: no access token in memory, so /np must read the stored link.
        stack.app.services.tokens.forget(ALICE_ID)
        await stack.app.services.storage.close()
        with caplog.at_level(logging.ERROR, logger="bot"):
            sent = await stack.np(ALICE_ID)
            reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert reply.content.startswith("Sorry, something went wrong on our side.")
        [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert record.exc_info is not None
        assert "np" in record.getMessage()


async def test_np_of_another_member_while_spotify_rate_limits(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.fail_next("currently_playing", 429, retry_after=7)
        sent = await stack.np(BOB_ID, ALICE_ID)
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert reply.content == "Spotify asks us to wait, try again in 7 s."


async def test_np_of_another_member_whose_token_spotify_keeps_refusing(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        # 401, refresh, 401 again: Alice's link is in trouble; Bob must not be told to relink.
        stack.spotify.reset_calls()
        stack.spotify.fail_next("currently_playing", 401, times=2)
        sent = await stack.np(BOB_ID, ALICE_ID)
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "your" not in reply.content.lower()
        assert reply.content.startswith("Alice has not linked a Spotify account")
        assert stack.spotify.call_count("token", "alice") == 1
