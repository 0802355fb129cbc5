"""Fair use per member against the fakes: one member's /np, /top and /recent in a loop cost
Spotify at most five calls a minute, counted against whoever asked; the others are answered;
a status answer and a command that never reached Spotify cost nothing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from tests import harness
from tests.e2e.test_chart import WAIT, top_tracks
from tests.e2e.test_daily_quota import np_reply, show_status
from tests.e2e.test_listening import command, link_and_play, text_of
from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, BOB_ID, CAROL_ID, GUILD_ID, Stack
from tests.helpers import eventually

DAVE_ID = 800000000000000004

RELATIVE = re.compile(r"<t:\d+:R>")


def refused_for_a_minute(content: str) -> bool:
    return (
        "5 commands that ask Spotify in the last minute" in content
        and RELATIVE.search(content) is not None
    )


async def test_np_in_a_loop_costs_five_calls_a_minute_and_no_one_else_waits(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        await stack.link(BOB_ID, "bob")
        for user in ("alice", "bob"):
            stack.spotify.set_playing(user, track_payload(f"{user}1", "Song", 200_000, 5_000))
        before = stack.spotify.call_count("currently_playing")
        replies = [await np_reply(stack, ALICE_ID) for _ in range(8)]
        assert [bool(r.embeds) for r in replies] == [True] * 5 + [False] * 3
        for refused in replies[5:]:
            assert refused.ephemeral
            assert refused_for_a_minute(refused.content), refused.content
            assert not re.search(r"\d+ s\b", refused.content)
        assert stack.spotify.call_count("currently_playing") == before + 5
        # Asking about someone else counts for the one who asks, not for them.
        about_bob = await np_reply(stack, ALICE_ID, BOB_ID)
        assert refused_for_a_minute(about_bob.content)
        assert stack.spotify.call_count("currently_playing") == before + 5
        # Bob is answered as ever; his own five are untouched.
        for _ in range(5):
            assert (await np_reply(stack, BOB_ID)).embeds
        # /top and /recent of Alice are Spotify-calling commands too: /top says so privately,
        # /recent answers from the log with the same words.
        top = await (
            await stack.discord.send_slash_command("top", {}, user_id=str(ALICE_ID))
        ).wait_for_reply()
        assert top.ephemeral
        assert refused_for_a_minute(top.content)
        recent = await (
            await stack.discord.send_slash_command("recent", {}, user_id=str(ALICE_ID))
        ).wait_for_reply()
        assert "what I logged myself" in str(recent.embeds or recent.content)
        assert stack.spotify.call_count("top_tracks") == 0
        assert stack.spotify.call_count("recently_played") == 0
        # A status answers at no cost, limit or not.
        await show_status(stack, ALICE_ID)
        for _ in range(3):
            assert (await np_reply(stack, ALICE_ID)).embeds[0]["title"] == "From The Status"
        assert stack.spotify.call_count("currently_playing") == before + 10


async def test_commands_that_never_reach_spotify_are_not_counted(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        for _ in range(7):
            reply = await np_reply(stack, CAROL_ID)  # never linked
            assert "have not linked" in reply.content, reply.content
        assert stack.spotify.call_count("currently_playing") == 0


async def test_a_members_charts_at_once_are_drawn_one_at_a_time(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        await stack.link(BOB_ID, "bob")
        for user in ("alice", "bob"):
            stack.spotify.set_top(user, "tracks", "short_term", top_tracks(25))
        sent = await asyncio.gather(
            *(
                stack.discord.send_slash_command("chart", {"size": 5}, user_id=str(ALICE_ID))
                for _ in range(4)
            )
        )
        callbacks = [await s.wait_for_callback(timeout=WAIT) for s in sent]
        # One is drawn; the other three are told at once, privately, before Spotify is asked.
        assert sorted(c.type for c in callbacks) == [4, 4, 4, 5]
        for s, callback in zip(sent, callbacks, strict=True):
            if callback.type == 4:
                reply = await s.wait_for_reply(timeout=WAIT)
                assert reply.ephemeral
                assert "still being drawn" in reply.content
            else:
                drawn = await s.wait_for_followup(timeout=WAIT)
                assert drawn.attachments
        assert stack.spotify.call_count("top_tracks") == 1
        # Another member's chart is not held up.
        other = await stack.discord.send_slash_command("chart", {"size": 5}, user_id=str(BOB_ID))
        assert (await other.wait_for_followup(timeout=WAIT)).attachments


async def test_a_kept_recap_drops_whoever_goes_private_unlinks_or_leaves(tmp_path: Path) -> None:
    """/recap is read once a minute per server and period, but nothing of a member it
    counted is shown once they go private, unlink or leave the server."""
    everyone = [(ALICE_ID, "alice"), (BOB_ID, "bob"), (CAROL_ID, "carol")]
    everyone.append((harness.ADMIN_ID, "admin"))
    everyone.append((DAVE_ID, "dave"))
    guild = harness.guild_of(
        GUILD_ID, "Listening Club", [(harness.GENERAL_ID, "general")], everyone
    )
    async with Stack.running(tmp_path, guilds=[guild]) as stack:
        await link_and_play(stack, everyone)
        store = stack.app.services.storage.listening
        reads = 0
        read = store.listeners_since

        async def counted(*args: Any, **kwargs: Any) -> set[int]:
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)

        store.listeners_since = counted  # type: ignore[method-assign]
        first = text_of(await command(stack, "recap", user_id=ALICE_ID))
        assert "5 plays from 5 members" in first
        assert text_of(await command(stack, "recap", user_id=CAROL_ID)) == first
        assert reads == 1  # kept: the second asker shares the first read
        # Private, unlinked, gone: each drops it at once, and the next read leaves them out.
        await stack.app.services.privacy.set_visibility(BOB_ID, "private")
        text = text_of(await command(stack, "recap", user_id=ALICE_ID))
        assert "Song bobs" not in text
        assert "4 plays from 4 members" in text
        unlinked = await stack.discord.send_slash_command("unlink", {}, user_id=str(CAROL_ID))
        await unlinked.wait_for_reply(timeout=WAIT)
        text = text_of(await command(stack, "recap", user_id=ALICE_ID))
        assert "Song carols" not in text
        assert "3 plays from 3 members" in text
        await stack.discord.remove_member(GUILD_ID, DAVE_ID)
        guild_cache = stack.app.bot.get_guild(GUILD_ID)
        assert guild_cache is not None
        await eventually(lambda: guild_cache.get_member(DAVE_ID) is None)
        text = text_of(await command(stack, "recap", user_id=ALICE_ID))
        assert "Song daves" not in text
        assert "Fewer than 3 members" in text
        assert reads == 4
