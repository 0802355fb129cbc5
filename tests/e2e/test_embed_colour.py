"""The embed colour from the album art, end to end: the real bot, the fake Discord, the fake
Spotify and its fake CDN on loopback (album art URLs stay https://i.scdn.co/image/<id>)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bot.messages.text import SPOTIFY_GREEN
from bot.pictures.colours import pick_colour
from tests.fakes.discord_payloads import make_spotify_activity
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import (
    ALICE_ID,
    BOB_ID,
    GUILD_ID,
    MUSIC_ID,
    Stack,
    fast_autopost,
    set_autopost_channel,
)
from tests.helpers import eventually

WAIT = 8.0


def expected_colour(stack: Stack, image_id: str) -> int:
    colour = pick_colour(stack.spotify.cdn.picture(image_id).data)
    assert colour is not None
    return colour


async def np_embed(stack: Stack, user_id: int, member_id: int | None = None) -> dict[str, Any]:
    reply = await (await stack.np(user_id, member_id)).wait_for_reply(timeout=WAIT)
    embed: dict[str, Any] = reply.embeds[0]
    return embed


async def test_np_takes_its_colour_from_the_smallest_album_image_once(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify:
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            await stack.link(ALICE_ID, "alice")
            spotify.set_playing("alice", track_payload("t1", "Song", 200_000, 1_000))
            colour = expected_colour(stack, "album-t1-64")
            assert colour != SPOTIFY_GREEN

            embed = await np_embed(stack, ALICE_ID)
            assert embed["color"] == colour
            assert embed["thumbnail"]["url"] == "https://i.scdn.co/image/album-t1-640"
            assert dict(spotify.cdn.requests) == {"album-t1-64": 1}

            embed = await np_embed(stack, BOB_ID, ALICE_ID)  # someone else asks: same colour
            assert embed["color"] == colour
            assert dict(spotify.cdn.requests) == {"album-t1-64": 1}

        # A restart on the same database: the colour is stored, nothing is fetched again.
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            assert (await np_embed(stack, ALICE_ID))["color"] == colour
            assert dict(spotify.cdn.requests) == {"album-t1-64": 1}


async def test_a_slow_cdn_never_holds_np_and_the_colour_arrives_later(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t2", "Slow", 200_000, 1_000))
        stack.spotify.cdn.delay = 1.0
        sent = await stack.np(ALICE_ID)
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert reply.embeds[0]["color"] == SPOTIFY_GREEN
        assert sent.callback is not None
        assert sent.callback.type == 4  # answered at once: no "thinking" for a picture
        assert sent.callback_latency < 0.9  # the colour wait is 0.3 s at most
        colours = stack.app.services.colours
        assert colours is not None
        await eventually(lambda: len(colours) == 1, WAIT)  # the fetch went on in the background
        assert (await np_embed(stack, ALICE_ID))["color"] == expected_colour(stack, "album-t2-64")
        assert stack.spotify.cdn.requests["album-t2-64"] == 1


async def test_a_missing_picture_is_green_without_an_error(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t3", "Gone", 200_000, 1_000))
        stack.spotify.cdn.missing.add("album-t3-64")
        for _ in range(3):
            embed = await np_embed(stack, ALICE_ID)
            assert embed["title"] == "Gone"
            assert embed["color"] == SPOTIFY_GREEN
        assert stack.spotify.cdn.requests["album-t3-64"] == 1  # the failure is remembered

        stack.spotify.set_playing("alice", track_payload("t4", "No art", 1, 0, images=False))
        assert (await np_embed(stack, ALICE_ID))["color"] == SPOTIFY_GREEN


async def test_presence_art_is_coloured_by_its_image_id(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env={"ENABLE_PRESENCE": "true"}) as stack:
        cover_id = "ab67616d0000b273e8b066f70c206551210d902b"
        activity = make_spotify_activity(
            title="Status Song",
            artists=("Ann",),
            album="Status Album",
            track_id="3n3Ppam7vgaVa1iaRUc9Lp",
            start_ms=int(time.time() * 1000) - 5_000,
            duration_ms=200_000,
            album_cover_id=cover_id,
        )
        await stack.discord.update_user_presence(BOB_ID, [activity])

        def shows_spotify() -> bool:
            guild = stack.app.bot.get_guild(GUILD_ID)
            member = guild.get_member(BOB_ID) if guild else None
            return member is not None and any(a.name == "Spotify" for a in member.activities)

        await eventually(shows_spotify, WAIT)
        embed = await np_embed(stack, BOB_ID)
        assert embed["title"] == "Status Song"
        small_id = "ab67616d00004851e8b066f70c206551210d902b"  # the 64 px sibling
        assert embed["color"] == expected_colour(stack, small_id)
        assert dict(stack.spotify.cdn.requests) == {small_id: 1}
        # Stored under the cover's own id, shared by every size of that cover.
        colours = stack.app.services.colours
        assert colours is not None
        await colours.settle()
        stored = await stack.app.services.storage.colours.get_image_colour(
            "ab67616d-e8b066f70c206551210d902b"
        )
        assert stored == embed["color"]


async def test_auto_posts_use_the_album_colour(tmp_path: Path) -> None:
    config = fast_autopost()
    async with Stack.running(tmp_path, app_options={"autopost_config": config}) as stack:
        await set_autopost_channel(stack, timeout=WAIT)
        stack.spotify.set_playing("alice", track_payload("t5", "Posted", 200_000, 1_000))
        await stack.link(ALICE_ID, "alice")
        post = await stack.discord.wait_for_message(
            MUSIC_ID,
            predicate=lambda m: bool(m.embeds) and m.embeds[0].get("title") == "Posted",
            timeout=WAIT,
        )
        assert post.embeds[0]["color"] == expected_colour(stack, "album-t5-64")
