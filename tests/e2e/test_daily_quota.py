"""Spotify's daily quota against the fakes: statuses first (no call, no token refresh, for
linked members too), the QUOTA_EXCEEDED answer as Discord timestamps, a hold that survives a
restart, /link finished when the hold ends, and what /healthz says meanwhile."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.discord_payloads import make_spotify_activity
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import (
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    GUILD_ID,
    Stack,
    default_guild,
    fast_autopost,
    set_autopost_channel,
)
from tests.helpers import eventually
from tests.peek import is_covered

TIMESTAMPS = re.compile(r"<t:(\d+):t> \(<t:\1:R>\)")
STATUS_TRACK = "4uLU6hMCjMI75M1A2tKUQC"
# The bot is up and answers; what members get from Spotify is limited (no counts: public).
QUOTA_SPENT = {
    "status": "ok",
    "database": True,
    "gateway": True,
    "spotify": "quota_spent",
    "presence": True,
}


def shows_spotify(stack: Stack, user_id: int) -> bool:
    guild = stack.app.bot.get_guild(GUILD_ID)
    member = guild.get_member(user_id) if guild else None
    return member is not None and any(a.name == "Spotify" for a in member.activities)


async def show_status(stack: Stack, user_id: int, title: str = "From The Status") -> None:
    activity = make_spotify_activity(
        title=title,
        artists=("Status Artist",),
        album="Status Album",
        track_id=STATUS_TRACK,
        start_ms=int(time.time() * 1000) - 30_000,
        duration_ms=180_000,
    )
    await stack.discord.update_user_presence(user_id, [activity])
    await eventually(lambda: shows_spotify(stack, user_id))


def web_api_calls(spotify: FakeSpotify) -> int:
    return sum(n for (endpoint, _), n in spotify.calls.items() if endpoint not in ("authorize",))


async def health(stack: Stack) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.web_base}/healthz") as r:
        assert r.status == 200
        return await r.json()


async def np_reply(stack: Stack, user_id: int, member_id: int | None = None) -> FakeMessage:
    return await (await stack.np(user_id, member_id)).wait_for_reply()


def held_until(reply: FakeMessage) -> int:
    """The moment a daily-limit answer names; never a number of seconds."""
    found = TIMESTAMPS.search(reply.content)
    assert found is not None, reply.content
    assert reply.ephemeral
    assert not re.search(r"\d+ s\b", reply.content), reply.content
    return int(found.group(1))


async def test_a_linked_member_with_a_status_is_answered_from_it_at_no_cost(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path) as stack:  # presence is on by default
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing(
            "alice", track_payload("t-api", "From The API", 180_000, 30_000, is_playing=False)
        )
        await show_status(stack, ALICE_ID)
        stack.spotify.expire_access_tokens("alice")  # any Web API call would need a refresh
        before = web_api_calls(stack.spotify)
        for asker, target in ((ALICE_ID, None), (BOB_ID, ALICE_ID)):
            reply = await np_reply(stack, asker, target)
            embed = reply.embeds[0]
            assert embed["title"] == "From The Status"
            assert embed["url"] == f"https://open.spotify.com/track/{STATUS_TRACK}"
            assert "Discord status" in embed["footer"]["text"]
            assert "0:30 / 3:00" in embed["description"] or "0:31 / 3:00" in embed["description"]
        # No currently-playing call, no token refresh: the status said it all.
        assert web_api_calls(stack.spotify) == before
        # Without a status (paused, hidden) the Web API is asked as before.
        await stack.discord.update_user_presence(ALICE_ID, [])
        await eventually(lambda: not shows_spotify(stack, ALICE_ID))
        reply = await np_reply(stack, ALICE_ID)
        assert reply.embeds[0]["title"] == "From The API"
        assert "Paused" in reply.embeds[0]["description"]


async def test_the_quota_answer_names_when_it_is_back_and_statuses_still_answer(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path, spotify_options={"daily_quota": 2}) as stack:
        await stack.link(ALICE_ID, "alice")  # /v1/me: the first call of the day
        await stack.link(BOB_ID, "bob")  # the second: the quota is used up
        stack.spotify.set_playing("alice", track_payload("a1", "Song", 200_000, 1_000))
        refused = await np_reply(stack, ALICE_ID)
        quota = stack.spotify.quota
        assert quota is not None
        assert quota.refusals == 1
        back = held_until(refused)
        retry_after = quota.refused_until - stack.spotify.now()
        assert abs(back - (time.time() + retry_after)) <= 2
        assert refused.content == (
            f"The bot's daily Spotify limit is used up; it is back at <t:{back}:t> "
            f"(<t:{back}:R>). Meanwhile /np still works for anyone whose Discord status shows "
            "Spotify."
        )
        calls = dict(stack.spotify.calls)
        # Asked again: the same moment, and Spotify is not asked (nor is a token refreshed).
        assert held_until(await np_reply(stack, BOB_ID, ALICE_ID)) == back
        # A member whose status shows Spotify is answered from it; one who never linked and
        # shows nothing hears that, not about the limit.
        await show_status(stack, BOB_ID)
        for asker, target in ((BOB_ID, None), (ALICE_ID, BOB_ID)):
            assert (await np_reply(stack, asker, target)).embeds[0]["title"] == "From The Status"
        assert "has not linked" in (await np_reply(stack, ALICE_ID, CAROL_ID)).content
        recent = await (
            await stack.discord.send_slash_command("recent", {}, user_id=str(ALICE_ID))
        ).wait_for_reply()
        assert recent.content == (
            "You have no recent tracks I know of yet. The bot's daily Spotify limit is used up "
            f"until <t:{back}:t> (<t:{back}:R>), so this is what I logged myself."
        )
        top = await (
            await stack.discord.send_slash_command("top", {}, user_id=str(ALICE_ID))
        ).wait_for_reply()
        assert top.content == (
            f"The bot's daily Spotify limit is used up: try /top again at <t:{back}:t> "
            f"(<t:{back}:R>)."
        )
        assert stack.spotify.calls == calls
        assert quota.refusals == 1
        assert await health(stack) == QUOTA_SPENT


def members_calls(spotify: FakeSpotify) -> dict[tuple[str, str | None], int]:
    """Every request but the start-up check of the bot's client id (the accounts service, which
    the daily quota does not hold)."""
    return {key: n for key, n in spotify.calls.items() if key[0] != "token.client_credentials"}


async def test_a_restart_inside_the_hold_makes_no_call(tmp_path: Path) -> None:
    async with FakeSpotify.running(redirect_uris=[], daily_quota=1) as spotify:
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            await stack.link(ALICE_ID, "alice")  # the one call of the day
            back = held_until(await np_reply(stack, ALICE_ID))
        calls = members_calls(spotify)
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            # No token cached after the restart: not even a refresh is asked.
            assert held_until(await np_reply(stack, ALICE_ID)) == back
            assert await health(stack) == QUOTA_SPENT
        assert members_calls(spotify) == calls
        assert spotify.quota is not None
        assert spotify.quota.refusals == 1


async def test_link_completes_when_the_quota_hold_ends(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        stack.spotify.set_daily_quota(1, window=2.0)  # a "day" of two seconds
        await stack.link(ALICE_ID, "alice")
        url = await stack.start_link(BOB_ID)
        stack.spotify.approve_as("bob")
        status, _, body = await stack.follow(url)
        assert status == 202
        assert "Almost done" in body
        dm = await stack.discord.wait_for_dm(BOB_ID, predicate=lambda m: "Linked as" in m.content)
        assert dm.content.startswith("Linked as **Bob**")


async def test_a_linked_member_with_a_status_is_never_polled(tmp_path: Path) -> None:
    """Auto-posting: a status covers a linked member when they link while it shows, and from
    the start after a restart (statuses come with the guilds, before the linked members are
    read): no currently-playing call, no token refresh, for as long as it shows."""
    config = {"autopost_config": fast_autopost(skip_check=0.3, backoff=0.2)}

    def alice_calls(spotify: FakeSpotify) -> tuple[int, int]:
        return spotify.call_count("currently_playing", "alice"), spotify.call_count(
            "token", "alice"
        )

    async with (
        FakeSpotify.running(redirect_uris=[]) as spotify,
        FakeDiscord.running(guilds=[default_guild()]) as discord,
    ):
        common: dict[str, Any] = {
            "spotify": spotify,
            "fake_discord": discord,
            "app_options": config,
        }
        async with Stack.running(tmp_path, **common) as stack:
            await set_autopost_channel(stack)
            await show_status(stack, ALICE_ID)
            await stack.link(ALICE_ID, "alice")  # linked while the status shows Spotify
            await stack.app.services.autopost.settle()
            await asyncio.sleep(1.0)  # several poll intervals: time to (wrongly) poll alice
            assert alice_calls(spotify) == (0, 1)  # only the /link's code exchange
        async with Stack.running(tmp_path, **common) as stack:
            await stack.app.services.autopost.settle()
            await asyncio.sleep(1.0)
            assert alice_calls(spotify) == (0, 1)
            assert is_covered(stack.app.services.autopost.coverage, ALICE_ID)
