"""/np from a member's Discord status (ENABLE_PRESENCE): no Spotify call for the unlinked (for
linked members too: tests/e2e/test_daily_quota.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fakes.discord_payloads import make_spotify_activity
from tests.harness import ALICE_ID, BOB_ID, CAROL_ID, GUILD_ID, Stack
from tests.helpers import eventually

PRESENCE = {"ENABLE_PRESENCE": "true"}


def shows_spotify(stack: Stack, user_id: int) -> bool:
    guild = stack.app.bot.get_guild(GUILD_ID)
    member = guild.get_member(user_id) if guild else None
    return member is not None and any(a.name == "Spotify" for a in member.activities)


async def test_unlinked_member_answered_from_status_without_spotify(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        started_ms = int(time.time() * 1000) - 61_000
        activity = make_spotify_activity(
            title="Status Song",
            artists=("Ann", "Ben"),
            album="Status Album",
            track_id="3n3Ppam7vgaVa1iaRUc9Lp",
            start_ms=started_ms,
            duration_ms=200_000,
        )
        await stack.discord.update_user_presence(BOB_ID, [activity])
        await eventually(lambda: shows_spotify(stack, BOB_ID))
        calls_before = sum(stack.spotify.calls.values())

        for asker, target in ((BOB_ID, None), (ALICE_ID, BOB_ID)):
            reply = await (await stack.np(asker, target)).wait_for_reply()
            embed = reply.embeds[0]
            assert embed["title"] == "Status Song"
            assert embed["url"] == "https://open.spotify.com/track/3n3Ppam7vgaVa1iaRUc9Lp"
            assert "Discord status" in embed["footer"]["text"]
            assert "1:01 / 3:20" in embed["description"] or "1:02 / 3:20" in embed["description"]
            fields = {field["name"]: field["value"] for field in embed["fields"]}
            assert "Ann" in fields["Artists"]
            assert "Status Album" in fields["Album"]
            assert embed["thumbnail"]["url"].startswith("https://i.scdn.co/image/")
        assert sum(stack.spotify.calls.values()) == calls_before


async def test_unlinked_member_without_spotify_status_is_told_about_link(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        reply = await (await stack.np(ALICE_ID, CAROL_ID)).wait_for_reply()
        assert reply.ephemeral
        assert "has not linked" in reply.content
        assert "/link" in reply.content


async def test_presence_disabled_asks_for_no_privileged_intent_and_ignores_status(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path, env={"ENABLE_PRESENCE": "false"}) as stack:
        intents = stack.discord.identifies[-1]["intents"]
        assert intents & (1 << 1) == 0  # GUILD_MEMBERS
        assert intents & (1 << 8) == 0  # GUILD_PRESENCES
        await stack.discord.update_user_presence(BOB_ID, [make_spotify_activity()])
        reply = await (await stack.np(ALICE_ID, BOB_ID)).wait_for_reply()
        assert "has not linked" in reply.content


async def test_presence_enabled_asks_for_presence_and_members_intents(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env=PRESENCE) as stack:
        intents = stack.discord.identifies[-1]["intents"]
        assert intents & (1 << 1)
        assert intents & (1 << 8)
