"""End to end: /chart through the fake Discord and the fake Spotify (Web API and picture CDN).

The picture arrives as a multipart attachment the embed shows; the member rules (another
server, a DM, a private member) cost no Spotify call; an old link, a 429, a 5xx and an empty
period get plain private (or, for the empty period, public) words.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.pictures.charts import layout_for
from tests.fakes.discord import FakeMessage, SentInteraction, UserArg
from tests.fakes.spotify import track_object
from tests.harness import ADMIN_ID, ALICE_ID, BOB_ID, Stack, default_guild, guild_of

WAIT = 15.0
SECOND_GUILD_ID = 700000000000000333


def top_tracks(count: int, *, albums: int | None = None) -> list[dict[str, Any]]:
    """``count`` top tracks; with ``albums``, tracks share albums in turn."""
    return [
        track_object(
            f"t{n}",
            f"Track {n}",
            artists=(f"Artist {n}",),
            album=f"Album {n % (albums or count)}",
            album_id=f"alb{n % (albums or count)}",
        )
        for n in range(count)
    ]


async def chart(
    stack: Stack, options: dict[str, Any] | None = None, *, user_id: int, **kwargs: Any
) -> SentInteraction:
    sent = await stack.discord.send_slash_command(
        "chart", options or {}, user_id=str(user_id), **kwargs
    )
    callback = await sent.wait_for_callback(timeout=WAIT)
    assert callback.type in (4, 5)
    return sent


async def refusal(sent: SentInteraction) -> FakeMessage:
    """A refusal or error: private, either at once or after the "thinking" was removed."""
    callback = await sent.wait_for_callback(timeout=WAIT)
    if callback.type == 4:
        reply = await sent.wait_for_reply(timeout=WAIT)
    else:
        reply = await sent.wait_for_followup(timeout=WAIT)
        original = sent.original
        assert original is not None
        assert original.deleted
    assert reply.ephemeral
    assert not reply.attachments
    return reply


def posted_png(stack: Stack, reply: FakeMessage) -> bytes:
    [attachment] = reply.attachments
    assert attachment["filename"] == "chart.png"
    data = stack.discord.attachment_bytes(attachment)
    assert data.startswith(b"\x89PNG")
    return data


@pytest.mark.parametrize("size", [3, 4, 5])
async def test_chart_attaches_a_png_of_the_right_size(tmp_path: Path, size: int) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        # 30 top tracks over 20 albums: the chart asks for size² and shows one tile per album.
        stack.spotify.set_top("alice", "tracks", "short_term", top_tracks(30, albums=20))
        sent = await chart(stack, {"size": size}, user_id=ALICE_ID)
        callback = await sent.wait_for_callback(timeout=WAIT)
        assert callback.type == 5  # "thinking" at once
        assert not callback.ephemeral
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert not reply.ephemeral
        [embed] = reply.embeds
        # The bot sent the embed with attachment://chart.png; Discord shows the attachment.
        [attachment] = reply.attachments
        assert embed["image"]["url"] == attachment["url"]
        [sent_request] = [
            r for r in stack.discord.requests if any(f.filename == "chart.png" for f in r.files)
        ]
        assert sent_request.json["embeds"][0]["image"]["url"] == "attachment://chart.png"
        assert "Spotify" in embed["footer"]["text"]
        assert "Chart of Alice" in embed["title"]
        picture = Image.open(io.BytesIO(posted_png(stack, reply)))
        layout = layout_for(size, heading=True)
        assert picture.format == "PNG"
        assert picture.size == (layout.width, layout.height)

        [request] = [r for r in stack.spotify.requests if r.endpoint == "top_tracks"]
        assert request.query["limit"] == str(size * size)
        assert request.query["time_range"] == "short_term"
        distinct = min(20, size * size)
        lines = embed["description"].splitlines()
        assert len(lines) == distinct
        # Albums in order of first appearance: tracks 0..19 each bring a new album.
        assert lines[0].startswith("1. [Track 0]")
        assert lines[-1].startswith(f"{distinct}. [Track {distinct - 1}]")
        # One 300 px cover per album, fetched from the fake CDN.
        fetched = sorted(stack.spotify.cdn.requests)
        assert fetched == sorted(f"alb{n}-300" for n in range(distinct))


async def test_chart_period_and_fewer_items_than_tiles(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_top("alice", "tracks", "long_term", top_tracks(2))
        stack.spotify.cdn.missing.add("alb1-300")  # a 404 cover is a neutral tile
        sent = await chart(stack, {"period": "all-time", "size": 5}, user_id=ALICE_ID)
        reply = await sent.wait_for_reply(timeout=WAIT)
        [embed] = reply.embeds
        assert "all time" in embed["title"]
        assert "2 albums" in embed["footer"]["text"]
        picture = Image.open(io.BytesIO(posted_png(stack, reply)))
        layout = layout_for(5, heading=True)
        assert picture.size == (layout.width, layout.height)


async def test_chart_empty_period_is_a_plain_answer(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        sent = await chart(stack, {"period": "half-year"}, user_id=ALICE_ID)
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert "no top tracks of you for the last six months" in reply.content
        assert not reply.embeds
        assert not reply.attachments
        assert stack.spotify.cdn.total_requests == 0


async def test_chart_of_a_member_and_the_rules_that_cost_no_spotify_call(tmp_path: Path) -> None:
    second = guild_of(
        SECOND_GUILD_ID,
        "Elsewhere",
        [(700000000000000334, "general")],
        [(ALICE_ID, "alice"), (ADMIN_ID, "admin")],
    )
    async with Stack.running(tmp_path, guilds=[default_guild(), second]) as stack:
        await stack.link(BOB_ID, "bob")
        stack.spotify.set_top("bob", "tracks", "short_term", top_tracks(9))
        stack.spotify.reset_calls()

        # Another server Bob is not in: refused, no Spotify call.
        sent = await chart(
            stack,
            {"member": UserArg(str(BOB_ID))},
            user_id=ALICE_ID,
            guild_id=str(SECOND_GUILD_ID),
        )
        assert "not a member of this server" in (await refusal(sent)).content
        # A DM: only yourself.
        sent = await chart(stack, {"member": UserArg(str(BOB_ID))}, user_id=ALICE_ID, dm=True)
        assert "direct message" in (await refusal(sent)).content
        assert stack.spotify.call_count("top_tracks") == 0

        # In the shared server Bob's chart is public.
        sent = await chart(stack, {"member": UserArg(str(BOB_ID))}, user_id=ALICE_ID)
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert not reply.ephemeral
        assert "Chart of Bob" in reply.embeds[0]["title"]
        posted_png(stack, reply)
        assert stack.spotify.call_count("top_tracks") == 1

        # Private: others are refused without a call; Bob's own chart is only for him.
        await stack.app.services.privacy.set_visibility(BOB_ID, "private")
        stack.spotify.reset_calls()
        sent = await chart(stack, {"member": UserArg(str(BOB_ID))}, user_id=ALICE_ID)
        assert "private" in (await refusal(sent)).content
        assert stack.spotify.call_count("top_tracks") == 0
        sent = await chart(stack, user_id=BOB_ID)
        callback = await sent.wait_for_callback(timeout=WAIT)
        assert callback.ephemeral
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert reply.ephemeral
        posted_png(stack, reply)


async def test_chart_errors_are_plain_and_private(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        # Not linked yet.
        sent = await chart(stack, user_id=ALICE_ID)
        assert "/link" in (await refusal(sent)).content

        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_top("alice", "tracks", "short_term", top_tracks(9))

        # A 5xx that outlasts the retries: plain words, no traceback.
        stack.spotify.fail_next("top_tracks", 502, times=5)
        reply = await refusal(await chart(stack, user_id=ALICE_ID))
        assert "try again" in reply.content
        assert "Traceback" not in reply.content

        # A link made before user-top-read: one sentence, no Spotify call.
        storage = stack.app.services.storage
        link = await storage.links.get_link(ALICE_ID)
        assert link is not None
        await storage.links.save_link(
            replace(link, scopes="user-read-currently-playing user-read-playback-state")
        )
        stack.spotify.reset_calls()
        reply = await refusal(await chart(stack, user_id=ALICE_ID))
        assert "/link again" in reply.content
        assert stack.spotify.call_count("top_tracks") == 0

        # Spotify's own 403 "Insufficient client scope" means the same.
        await storage.links.save_link(link)
        stack.spotify.fail_next(
            "top_tracks",
            403,
            body={"error": {"status": 403, "message": "Insufficient client scope"}},
        )
        reply = await refusal(await chart(stack, user_id=ALICE_ID))
        assert "/link again" in reply.content

        # A 429 says when to try again (last: it holds every Web API call for 90 s).
        stack.spotify.fail_next("top_tracks", 429, retry_after=90)
        reply = await refusal(await chart(stack, user_id=ALICE_ID))
        assert "try /chart again in" in reply.content
