"""End to end: the listening log, /listening, /recent, /top and /recap against the fakes.

Privacy (a private member appears nowhere), other servers (never counted), a restart (no
duplicated plays) and presence mode are covered here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bot.listening.log import ListeningLog
from bot.spotify.models import Artist, Playback, Track
from tests.fakes.discord import FakeMessage, UserArg
from tests.fakes.discord_payloads import (
    make_spotify_activity,
)
from tests.fakes.spotify import (
    FakeSpotify,
    artist_object,
    played_item,
    track_object,
    track_payload,
)
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    GUILD_ID,
    Stack,
    default_guild,
    fast_autopost,
    guild_of,
    set_autopost_channel,
)
from tests.peek import count_plays, log_idle

WAIT = 8.0
PRESENCE = {"ENABLE_PRESENCE": "true"}
OTHER_GUILD_ID = 700000000000000999


def history(stack: Stack) -> ListeningLog:
    log = stack.app.services.history
    assert log is not None
    return log


async def command(
    stack: Stack, name: str, options: dict[str, Any] | None = None, *, user_id: int
) -> FakeMessage:
    sent = await stack.discord.send_slash_command(name, options or {}, user_id=str(user_id))
    return await sent.wait_for_reply(timeout=WAIT)


def text_of(message: FakeMessage) -> str:
    parts = [message.content or ""]
    for embed in message.embeds:
        parts.append(embed.get("title", ""))
        parts.append(embed.get("description", ""))
        parts.extend(f"{f['name']}\n{f['value']}" for f in embed.get("fields", []))
        parts.append(embed.get("footer", {}).get("text", ""))
    return "\n".join(parts)


async def link_and_play(stack: Stack, members: Sequence[tuple[int, str]], track: str = "") -> None:
    """Link each (member, Spotify user) and log one /np of theirs in the default server: a
    track of their own ("Song alices"), or ``track`` for all."""
    for user_id, name in members:
        if name not in stack.spotify.users:
            stack.spotify.add_user(name)
        await stack.link(user_id, name)
        await np_playing(stack, user_id, name, track or f"{name}s")


async def np_playing(stack: Stack, user_id: int, spotify_user: str, track_id: str) -> None:
    stack.spotify.set_playing(
        spotify_user,
        track_payload(track_id, f"Song {track_id}", 200_000, 20_000, artists=(f"Band {track_id}",)),
    )
    await command(stack, "np", user_id=user_id)
    await log_idle(history(stack))


# --- the log ---------------------------------------------------------------------------------


async def test_np_logs_one_play_and_a_restart_duplicates_nothing(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify:
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            await stack.link(ALICE_ID, "alice")
            await np_playing(stack, ALICE_ID, "alice", "t1")
            await np_playing(stack, ALICE_ID, "alice", "t1")  # the same play seen again
            plays = await stack.app.services.storage.listening.recent_plays(ALICE_ID)
            assert [(p.track_id, p.artists, p.source) for p in plays] == [
                ("t1", ("Band t1",), "np")
            ]
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            spotify.reset_calls()
            await np_playing(stack, ALICE_ID, "alice", "t1")  # after the restart: same play
            assert spotify.call_count("currently_playing") == 1
            plays = await stack.app.services.storage.listening.recent_plays(ALICE_ID)
            assert [p.track_id for p in plays] == ["t1"]


async def test_unlink_and_private_delete_the_log(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        storage = stack.app.services.storage
        await stack.link(ALICE_ID, "alice")
        await stack.link(BOB_ID, "bob")
        await np_playing(stack, ALICE_ID, "alice", "a1")
        await np_playing(stack, BOB_ID, "bob", "b1")
        await command(stack, "unlink", user_id=ALICE_ID)
        assert await storage.listening.recent_plays(ALICE_ID) == []

        await stack.app.services.privacy.set_visibility(BOB_ID, "private")
        assert await storage.listening.recent_plays(BOB_ID) == []
        await np_playing(stack, BOB_ID, "bob", "b2")  # nothing logged while private
        assert await storage.listening.recent_plays(BOB_ID) == []


async def test_retention_zero_keeps_nothing(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env={"LISTENING_LOG_DAYS": "0"}) as stack:
        await stack.link(ALICE_ID, "alice")
        await np_playing(stack, ALICE_ID, "alice", "t1")
        assert await count_plays(stack.app.services.storage) == 0


async def test_gap_is_filled_from_recently_played(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        now = time.time()
        stack.spotify.set_recently_played(
            "alice",
            [
                played_item(track_object("g1", "Gap One"), now - 400),
                played_item(track_object("g2", "Gap Two"), now - 200),
                played_item(track_object("old", "Before"), now - 4000),
            ],
        )
        added = await history(stack).gaps.fill(ALICE_ID, now - 1000)
        assert added == 2
        # Matching played_at to logged plays: filling again adds nothing.
        assert await history(stack).gaps.fill(ALICE_ID, now - 1000) == 0
        plays = await stack.app.services.storage.listening.recent_plays(ALICE_ID)
        assert [p.track_id for p in plays] == ["g2", "g1"]
        assert all(p.source == "recently_played" for p in plays)


# --- /listening ----------------------------------------------------------------------------


async def test_listening_presence_mode_leaves_private_members_out(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        reply = await command(stack, "listening", user_id=ALICE_ID)
        assert "Nobody here is listening" in reply.content
        assert not reply.ephemeral

        await stack.app.services.privacy.set_visibility(CAROL_ID, "private")
        start = int(time.time() * 1000) - 5_000
        for user_id, title in ((BOB_ID, "Bob Song"), (CAROL_ID, "Carol Secret")):
            await stack.discord.update_presence(
                GUILD_ID,
                user_id,
                [make_spotify_activity(title=title, track_id=f"tr{user_id % 100}", start_ms=start)],
            )
        log = history(stack)

        async def bob_seen() -> None:
            while not log.listening_in(GUILD_ID, lambda member_id: True):  # noqa: ASYNC110 - no event to wait on; bounded by wait_for
                await asyncio.sleep(0.01)

        await asyncio.wait_for(bob_seen(), WAIT)
        reply = await command(stack, "listening", user_id=ALICE_ID)
        text = text_of(reply)
        assert "Bob Song" in text
        assert f"<@{BOB_ID}>" in text
        assert "Carol Secret" not in text
        assert str(CAROL_ID) not in text
        assert "1 member is listening" in text


async def test_listening_drops_ended_tracks(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        log = history(stack)
        await log.note_member(GUILD_ID, ALICE_ID)
        ended = Playback(
            kind="track",
            item=Track(name="Long Gone", uri="spotify:track:x", duration_ms=60_000, id="x"),
            is_playing=True,
            progress_ms=30_000,
            received_at=time.time() - 600,
        )
        log.now_listening.update(ALICE_ID, ended)
        reply = await command(stack, "listening", user_id=BOB_ID)
        assert "Nobody here is listening" in reply.content


# --- /recent -------------------------------------------------------------------------------


async def test_recent_from_spotify_then_from_the_log_when_spotify_is_busy(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        now = time.time()
        stack.spotify.set_recently_played(
            "alice",
            [played_item(track_object(f"r{n}", f"Recent {n}"), now - 300 * n) for n in range(12)],
        )
        stack.spotify.reset_calls()
        reply = await command(stack, "recent", user_id=ALICE_ID)
        assert not reply.ephemeral
        [embed] = reply.embeds
        lines = embed["description"].splitlines()
        assert len(lines) == 10
        assert lines[0].startswith("1. [Recent 0](https://open.spotify.com/")
        assert embed["footer"]["text"] == "Spotify"
        assert stack.spotify.call_count("recently_played") == 1
        await log_idle(history(stack))  # Spotify's answer is matched into the log

        stack.spotify.fail_next("recently_played", 429, retry_after=30)
        reply = await command(stack, "recent", user_id=ALICE_ID)
        [embed] = reply.embeds
        assert embed["footer"]["text"] == "From the bot's listening log"
        assert "Spotify is busy" in embed["description"]
        assert "Recent 0" in embed["description"]  # absorbed into the log by the first call


async def test_recent_for_an_old_link_uses_the_log_and_asks_to_link_again(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        storage = stack.app.services.storage
        link = await storage.links.get_link(ALICE_ID)
        assert link is not None
        from dataclasses import replace

        old = "user-read-currently-playing user-read-playback-state"
        await storage.links.save_link(replace(link, scopes=old))
        await np_playing(stack, ALICE_ID, "alice", "t9")
        stack.spotify.reset_calls()
        reply = await command(stack, "recent", user_id=ALICE_ID)
        text = text_of(reply)
        assert "Song t9" in text
        assert "/link again" in text
        assert stack.spotify.call_count("recently_played") == 0

        # Spotify's own 403 "Insufficient client scope" means the same.
        await storage.links.save_link(link)
        stack.spotify.fail_next(
            "recently_played",
            403,
            body={"error": {"status": 403, "message": "Insufficient client scope"}},
        )
        reply = await command(stack, "recent", user_id=ALICE_ID)
        assert "/link again" in text_of(reply)


async def test_recent_of_a_private_member_or_a_stranger_is_refused(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(BOB_ID, "bob")
        await stack.app.services.privacy.set_visibility(BOB_ID, "private")
        stack.spotify.reset_calls()
        reply = await command(stack, "recent", {"member": UserArg(str(BOB_ID))}, user_id=ALICE_ID)
        assert reply.ephemeral
        assert "private" in reply.content
        reply = await command(stack, "top", {"member": UserArg(str(BOB_ID))}, user_id=ALICE_ID)
        assert reply.ephemeral
        assert "private" in reply.content
        assert stack.spotify.call_count("recently_played") == 0
        assert stack.spotify.call_count("top_tracks") == 0


async def test_recent_with_nothing_yet(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        reply = await command(stack, "recent", user_id=ALICE_ID)
        assert "no recent tracks" in reply.content
        assert "/link" in reply.content


# --- /top ----------------------------------------------------------------------------------


async def test_top_tracks_and_artists(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_top(
            "alice",
            "tracks",
            "short_term",
            [track_object(f"top{n}", f"Top {n}") for n in range(10)],
        )
        stack.spotify.set_top("alice", "artists", "long_term", [artist_object("ar1", "Ever Band")])
        reply = await command(stack, "top", user_id=ALICE_ID)
        [embed] = reply.embeds
        assert "month" in embed["title"]
        assert embed["description"].splitlines()[9].startswith("10. [Top 9](https://open.spotify")
        reply = await command(
            stack, "top", {"kind": "artists", "period": "all-time"}, user_id=ALICE_ID
        )
        [embed] = reply.embeds
        assert "[Ever Band](https://open.spotify.com/artist/ar1)" in embed["description"]
        request = [r for r in stack.spotify.requests if r.endpoint == "top_artists"][-1]
        assert request.query["time_range"] == "long_term"

        reply = await command(stack, "top", {"period": "half-year"}, user_id=ALICE_ID)
        assert "no top tracks" in reply.content

        stack.spotify.fail_next("top_tracks", 429, retry_after=90)
        reply = await command(stack, "top", user_id=ALICE_ID)
        assert reply.ephemeral
        assert "try /top again in" in reply.content


async def test_top_unlinked_member(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        reply = await command(stack, "top", user_id=ALICE_ID)
        assert reply.ephemeral
        assert "/link" in reply.content


# --- /recap --------------------------------------------------------------------------------


async def test_recap_counts_visible_members_of_this_server_only(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await link_and_play(
            stack, ((ALICE_ID, "alice"), (BOB_ID, "bob"), (ADMIN_ID, "admin")), "shared"
        )
        await stack.link(CAROL_ID, "carol")
        log = history(stack)
        # A member seen only in another server never counts here.
        storage = stack.app.services.storage
        track = Track(
            name="Elsewhere",
            uri="spotify:track:else",
            duration_ms=100_000,
            artists=(Artist("Far Band"),),
            id="else",
        )
        playback = Playback("track", track, True, 1_000, received_at=time.time())
        log.roster.forget_member(CAROL_ID)
        await storage.listening.forget_listening_guild(GUILD_ID, CAROL_ID)
        await log.roster.note(OTHER_GUILD_ID, CAROL_ID)
        await log.observe(CAROL_ID, playback, source="np")

        reply = await command(stack, "recap", user_id=ALICE_ID)
        assert not reply.ephemeral
        text = text_of(reply)
        assert "Song shared" in text
        assert "3 plays from 3 members" in text
        assert "Band shared" in text
        assert "Elsewhere" not in text
        assert "Far Band" not in text
        assert str(ALICE_ID) not in text
        assert "Alice" not in text
        # The server's top albums as a picture (covers from the fake CDN), shown in the embed:
        # it follows the numbers in an edit of the answer.
        await stack.discord.wait_for(lambda: reply.attachments or None)
        [attachment] = reply.attachments
        assert attachment["filename"] == "recap.png"
        assert reply.embeds[0]["image"]["url"].endswith("recap.png")
        posted = [f for r in stack.discord.requests for f in r.files if f.filename == "recap.png"]
        assert posted
        assert posted[-1].data.startswith(b"\x89PNG")

        # Bob goes private: two listeners are no recap (it would be one person's history).
        await stack.app.services.privacy.set_visibility(BOB_ID, "private")
        reply = await command(stack, "recap", {"period": "month"}, user_id=ALICE_ID)
        assert "Fewer than 3 members of Listening Club" in reply.content
        assert "Song shared" not in text_of(reply)
        assert not reply.embeds


async def test_members_who_left_are_gone_from_listening_and_recap(tmp_path: Path) -> None:
    """Without the members intent Discord never says that someone left: /listening and
    /recap check who is still in the server before they show anyone."""
    everyone = ((ALICE_ID, "alice"), (BOB_ID, "bob"), (CAROL_ID, "carol"), (ADMIN_ID, "admin"))
    async with Stack.running(tmp_path) as stack:
        await link_and_play(stack, everyone)
        await stack.discord.remove_member(GUILD_ID, CAROL_ID)  # no event without the intent

        text = text_of(await command(stack, "listening", user_id=ALICE_ID))
        assert "Song alices" in text
        assert "Song carols" not in text
        assert f"<@{CAROL_ID}>" not in text
        assert "3 members are listening" in text

        text = text_of(await command(stack, "recap", user_id=ALICE_ID))
        assert "Song alices" in text
        assert "Song carols" not in text
        assert "3 plays from 3 members" in text
        # Asked once: she is dropped from the server's listeners until seen there again.
        assert not history(stack).roster.knows(GUILD_ID, CAROL_ID)


async def test_a_recap_of_two_listeners_is_no_recap(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await link_and_play(stack, ((ALICE_ID, "alice"), (BOB_ID, "bob")))
        reply = await command(stack, "recap", user_id=ALICE_ID)
        assert not reply.embeds
        assert "Fewer than 3 members" in reply.content
        assert "Song alices" not in reply.content


async def test_recap_empty(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        reply = await command(stack, "recap", user_id=ALICE_ID)
        assert "No plays logged" in reply.content


# --- the poller, a restart, presence mode, other servers, slow Spotify ------------------------

POLL_CONFIG = fast_autopost(skip_check=0.5, backoff=0.3)
SECOND_GUILD_ID = 700000000000000222


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    async def wait() -> None:
        while not await condition():  # noqa: ASYNC110 - the log has no event; bounded below
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def test_polled_plays_are_logged_and_a_restart_catches_up(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify:
        await polled_then_restarted(tmp_path, spotify)


async def polled_then_restarted(tmp_path: Path, spotify: FakeSpotify) -> None:
    options: dict[str, Any] = {"app_options": {"autopost_config": POLL_CONFIG}, "spotify": spotify}
    async with Stack.running(tmp_path, **options) as stack:
        await stack.link(ALICE_ID, "alice")
        # Started three minutes ago, so what follows while the bot is down fits after it.
        stack.spotify.set_playing("alice", track_payload("p1", "Polled", 200_000, 180_000))
        await set_autopost_channel(stack, timeout=WAIT)
        storage = stack.app.services.storage

        async def logged() -> bool:
            return [p.track_id for p in await storage.listening.recent_plays(ALICE_ID)] == ["p1"]

        await eventually(logged)
        assert (await storage.listening.recent_plays(ALICE_ID))[0].source == "spotify"
        # Linked members show in /listening from the poller's latest observation.
        reply = await command(stack, "listening", user_id=BOB_ID)
        assert "Polled" in text_of(reply)
    # While the bot was down, Alice played two more tracks (recently-played has them).
    now = time.time()
    spotify.set_recently_played(
        "alice",
        [
            played_item(track_object("p1", "Polled"), now - 2),  # the play logged above
            played_item(track_object("d1", "Down One", 60_000), now - 120),
            played_item(track_object("d2", "Down Two", 60_000), now - 60),
        ],
    )
    spotify.set_playing("alice", track_payload("p2", "After", 200_000, 5_000))
    async with Stack.running(tmp_path, **options) as stack:
        storage = stack.app.services.storage

        async def caught_up() -> bool:
            return {p.track_id for p in await storage.listening.recent_plays(ALICE_ID)} == {
                "p1",
                "d1",
                "d2",
                "p2",
            }

        await eventually(caught_up)
        assert await count_plays(storage) == 4  # no play twice


async def test_presence_mode_logs_opted_in_members_only(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        sent = await stack.discord.send_slash_command(
            "autopost", {"enabled": True}, subcommand="me", user_id=str(CAROL_ID)
        )
        await sent.wait_for_reply(timeout=WAIT)

        async def carol_kept() -> bool:  # read again once the command has finished
            return history(stack).keeps_plays_of(CAROL_ID)

        await eventually(carol_kept)
        start = int(time.time() * 1000) - 5_000
        for user_id in (BOB_ID, CAROL_ID):
            activity = make_spotify_activity(
                title=f"Status {user_id % 10}", track_id=f"st{user_id % 10}", start_ms=start
            )
            await stack.discord.update_presence(GUILD_ID, user_id, [activity])
        storage = stack.app.services.storage

        async def carol_logged() -> bool:
            return len(await storage.listening.recent_plays(CAROL_ID)) == 1

        await eventually(carol_logged)
        await log_idle(history(stack))
        assert await storage.listening.recent_plays(BOB_ID) == []  # never opted in: not logged
        [play] = await storage.listening.recent_plays(CAROL_ID)
        assert play.source == "presence"
        assert abs(play.started_at - start / 1000) < 0.01
        # Both appear in /listening: their status is visible to the server anyway.
        text = text_of(await command(stack, "listening", user_id=ALICE_ID))
        assert "Status 2" in text  # Bob
        assert "Status 3" in text  # Carol
        # /recent of a presence-only member comes from the log.
        reply = await command(stack, "recent", {"member": UserArg(str(CAROL_ID))}, user_id=BOB_ID)
        assert "Status 3" in text_of(reply)
        assert reply.embeds[0]["footer"]["text"] == "From the bot's listening log"


def two_guilds() -> list[dict[str, Any]]:
    second = guild_of(
        SECOND_GUILD_ID,
        "Elsewhere",
        [(700000000000000223, "general")],
        [(ALICE_ID, "alice"), (ADMIN_ID, "admin")],
    )
    return [default_guild(), second]


async def test_other_servers_never_see_a_member(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, guilds=two_guilds()) as stack:
        await link_and_play(stack, ((BOB_ID, "bob"), (CAROL_ID, "carol"), (ADMIN_ID, "admin")))
        stack.spotify.reset_calls()
        sent = await stack.discord.send_slash_command(
            "recent",
            {"member": UserArg(str(BOB_ID))},
            user_id=str(ALICE_ID),
            guild_id=str(SECOND_GUILD_ID),
        )
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert reply.ephemeral
        assert "not a member of this server" in reply.content
        for name in ("listening", "recap"):
            sent = await stack.discord.send_slash_command(
                name, {}, user_id=str(ALICE_ID), guild_id=str(SECOND_GUILD_ID)
            )
            reply = await sent.wait_for_reply(timeout=WAIT)
            assert "Song bobs" not in text_of(reply), name
        assert stack.spotify.call_count("recently_played") == 0
        # In Bob's own server the recap has his play.
        assert "Song bobs" in text_of(await command(stack, "recap", user_id=ALICE_ID))


async def test_the_log_answers_only_in_a_server_where_the_member_was_seen(tmp_path: Path) -> None:
    """Bob is in both servers but the bot saw him only in the first: when /recent falls back
    to the listening log, the second server gets nothing of his."""
    second = guild_of(
        SECOND_GUILD_ID,
        "Elsewhere",
        [(700000000000000223, "general")],
        [(ALICE_ID, "alice"), (BOB_ID, "bob"), (ADMIN_ID, "admin")],
    )
    async with Stack.running(tmp_path, guilds=[default_guild(), second]) as stack:
        await stack.link(BOB_ID, "bob")
        await np_playing(stack, BOB_ID, "bob", "bobs")  # seen in the first server only

        async def recent_of_bob(guild_id: int) -> FakeMessage:
            stack.spotify.fail_next("recently_played", 429, retry_after=30)  # the log answers
            sent = await stack.discord.send_slash_command(
                "recent",
                {"member": UserArg(str(BOB_ID))},
                user_id=str(ALICE_ID),
                guild_id=str(guild_id),
            )
            return await sent.wait_for_reply(timeout=WAIT)

        elsewhere = await recent_of_bob(SECOND_GUILD_ID)
        assert "Song bobs" not in text_of(elsewhere)
        assert "no recent tracks" in text_of(elsewhere)
        assert "Song bobs" in text_of(await recent_of_bob(GUILD_ID))


async def test_slow_spotify_defers_and_then_answers(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_top("alice", "tracks", "short_term", [track_object("s", "Slow Hit")])
        stack.spotify.delay_next("top_tracks", 2.0)
        sent = await stack.discord.send_slash_command("top", {}, user_id=str(ALICE_ID))
        callback = await sent.wait_for_callback(timeout=WAIT)
        assert callback.type == 5  # "thinking", well inside Discord's 3 s
        assert not callback.ephemeral
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert "Slow Hit" in text_of(reply)
        assert not reply.ephemeral


async def test_top_when_spotify_is_down(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.fail_next("top_tracks", 502, times=5)
        reply = await command(stack, "top", user_id=ALICE_ID)
        assert reply.ephemeral
        assert "try again" in reply.content


async def test_privacy_server_chosen_explicitly_opts_a_status_in_until_unlink(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        log = history(stack)
        assert not log.keeps_plays_of(BOB_ID)
        sent = await stack.discord.send_slash_command(
            "privacy", {"visibility": "server"}, user_id=str(BOB_ID)
        )
        await sent.wait_for_reply(timeout=WAIT)

        async def bob_kept() -> bool:
            return log.keeps_plays_of(BOB_ID)

        await eventually(bob_kept)
        activity = make_spotify_activity(title="Chosen", track_id="chosen1")
        await stack.discord.update_presence(GUILD_ID, BOB_ID, [activity])
        storage = stack.app.services.storage

        async def bob_logged() -> bool:
            return len(await storage.listening.recent_plays(BOB_ID)) == 1

        await eventually(bob_logged)
        await command(stack, "unlink", user_id=BOB_ID)
        assert await storage.listening.recent_plays(BOB_ID) == []
        assert not log.keeps_plays_of(BOB_ID)


async def test_a_private_members_own_answers_and_a_dm(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        now = time.time()
        stack.spotify.set_recently_played(
            "alice", [played_item(track_object("mine", "Mine Only"), now - 60)]
        )
        await stack.app.services.privacy.set_visibility(ALICE_ID, "private")
        reply = await command(stack, "recent", user_id=ALICE_ID)
        assert reply.ephemeral  # a private member's own answer is only for them
        assert "Mine Only" in text_of(reply)
        await log_idle(history(stack))
        assert await stack.app.services.storage.listening.recent_plays(ALICE_ID) == []  # not logged
        sent = await stack.discord.send_slash_command("recent", {}, user_id=str(BOB_ID), dm=True)
        reply = await sent.wait_for_reply(timeout=WAIT)
        assert "no recent tracks" in reply.content  # a DM works for yourself
