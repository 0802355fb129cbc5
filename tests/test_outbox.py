"""The auto-post outbox (bot.autopost.outbox) on both engines, and Discord's nonce in the fake:
a post queued while no sender runs is sent later, once; senders of two processes never send a
row twice; the same nonce posted twice lands once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import discord
import pytest

from bot.autopost.outbox import OutboxDiscordSide, OutboxSender, decode_message, encode_message
from bot.autopost.ports import DiscordUnavailable, PostOwner
from bot.messages.message import BotMessage, LinkButton
from bot.storage import OutboxPost, Storage
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_side import FakeDiscordSide
from tests.harness import MUSIC_ID, default_guild
from tests.helpers import linked_account

CHANNEL = 555
GUILD = 444
MEMBER = 333
OWNER = PostOwner(GUILD, MEMBER)


@pytest.fixture
async def storage(database_target: str | Path) -> AsyncIterator[Storage]:
    """Every test that takes it runs once per backend (SQLite and PostgreSQL). The member is
    linked and CHANNEL is the server's music channel: their posts are wanted."""
    async with await Storage.open(database_target) as opened:
        await wanted(opened)
        yield opened


async def wanted(storage: Storage) -> None:
    await storage.links.save_link(linked_account(MEMBER))
    await storage.settings.set_music_channel(GUILD, CHANNEL)


def queued(nonce: str, title: str, at: float) -> OutboxPost:
    return OutboxPost(nonce, GUILD, CHANNEL, MEMBER, encode_message(message(title)), at)


def message(title: str) -> BotMessage:
    return BotMessage(
        embed=discord.Embed(title=title, description="by Someone"),
        buttons=(LinkButton("Open in Spotify", "https://open.spotify.com/track/x"),),
    )


def test_messages_survive_the_round_trip_through_json() -> None:
    original = message("Song")
    copy = decode_message(encode_message(original))
    assert copy.embed is not None
    assert original.embed is not None
    assert copy.embed.to_dict() == original.embed.to_dict()
    assert copy.buttons == original.buttons
    assert copy.content is None


async def test_a_post_queued_while_nobody_sends_is_sent_later_once(storage: Storage) -> None:
    """The leader queued a post and died before sending it: the next sender sends it."""
    await storage.outbox.outbox_put(queued("nonce-1", "Queued Song", 1000.0))
    side = FakeDiscordSide(first_message_id=1001)
    sender = OutboxSender(storage, OutboxDiscordSide(side, storage), wall_clock=lambda: 1005.0)
    assert await sender.send_due() == 1
    assert await sender.send_due() == 0
    assert [(c, m.embed.title if m.embed else None, n) for c, m, n in side.sent] == [
        (CHANNEL, "Queued Song", "nonce-1")
    ]
    row = await storage.outbox.outbox_get("nonce-1")
    assert row is not None
    assert row.message_id == 1001


async def test_a_claimed_row_waits_for_its_lease(storage: Storage) -> None:
    """A row a sender claimed (and may be sending) is not taken by another until its lease
    ends; then it is, with the same nonce (Discord makes it land once)."""
    await storage.outbox.outbox_put(queued("n", "S", 100.0))
    assert [p.nonce for p in await storage.outbox.outbox_claim(100.0, 30.0)] == ["n"]
    assert await storage.outbox.outbox_claim(110.0, 30.0) == []
    assert [p.nonce for p in await storage.outbox.outbox_claim(131.0, 30.0)] == ["n"]


async def test_sending_the_same_nonce_twice_posts_once(storage: Storage) -> None:
    side = FakeDiscordSide(first_message_id=1001)
    outbox = OutboxDiscordSide(side, storage)
    first = await outbox.send(CHANNEL, message("Once"), "same", owner=OWNER)
    second = await outbox.send(CHANNEL, message("Once"), "same", owner=OWNER)
    assert first == second
    assert len(side.sent) == 1


async def test_a_late_post_is_checked_again_and_dropped_when_no_longer_wanted(
    storage: Storage,
) -> None:
    """The sender reads the member's choices from the database and asks Discord whether they
    are still in the server, just before a late send: private, opted out, unlinked, gone from
    the server or the channel changed each drop the post."""
    side = FakeDiscordSide(first_message_id=1001)
    sender = OutboxSender(storage, OutboxDiscordSide(side, storage), wall_clock=lambda: 1005.0)

    rounds = iter(range(100))
    nonce = "late"

    async def sent_after(change: Callable[[], Awaitable[object]]) -> list[str | None]:
        nonlocal nonce
        nonce = f"late{next(rounds)}"  # Discord keeps one post per nonce
        before = len(side.sent)
        await wanted(storage)
        await storage.outbox.outbox_put(queued(nonce, "Late", 1000.0))
        await change()
        await sender.send_due()
        await storage.outbox.outbox_prune(2000.0)  # sent or dropped: the next round is new
        return [m.embed.title if m.embed else None for _, m, _ in side.sent[before:]]

    async def nothing() -> None:
        return None

    async def elsewhere() -> None:
        await storage.settings.set_music_channel(GUILD, CHANNEL + 1)

    async def left() -> None:
        side.members = {GUILD: set()}

    async def private() -> None:
        await storage.privacy.set_visibility(MEMBER, "private")  # its own delete aside:
        await storage.outbox.outbox_put(queued(nonce, "Late", 1000.0))  # queued after it

    async def opted_out() -> None:
        await storage.privacy.set_visibility(MEMBER, "server")
        await storage.settings.set_guild_autopost_opt_in(MEMBER, GUILD, False)
        await storage.outbox.outbox_put(queued(nonce, "Late", 1000.0))

    async def unlinked() -> None:
        await storage.settings.set_guild_autopost_opt_in(MEMBER, GUILD, True)
        await storage.links.delete_member(MEMBER)
        await storage.outbox.outbox_put(queued(nonce, "Late", 1000.0))

    assert await sent_after(nothing) == ["Late"]
    assert await sent_after(private) == []
    assert await sent_after(opted_out) == []
    assert await sent_after(unlinked) == []  # (the explicit opt-in went with the link)
    assert await sent_after(elsewhere) == []
    assert await sent_after(left) == []
    side.members = None
    assert await sent_after(nothing) == ["Late"]


async def test_choices_delete_the_members_unsent_posts(storage: Storage) -> None:
    """Private, unlink and opt-out drop the member's unsent rows in their own transaction;
    a post already sent stays (its nonce still answers a retry)."""
    outbox = storage.outbox

    async def unsent_after(change: Callable[[], Awaitable[object]]) -> set[str]:
        await outbox.outbox_prune(10_000.0)
        await wanted(storage)
        await outbox.outbox_put(queued("here", "Here", 1000.0))
        await outbox.outbox_put(queued("sent", "Sent", 1000.0))
        await outbox.outbox_sent("sent", 42)
        elsewhere = OutboxPost("there", GUILD + 1, CHANNEL, MEMBER, "{}", 1000.0)
        await outbox.outbox_put(elsewhere)
        await outbox.outbox_put(OutboxPost("other", GUILD, CHANNEL, MEMBER + 1, "{}", 1000.0))
        await change()
        return {n for n in ("here", "sent", "there", "other") if await outbox.outbox_get(n)}

    async def private() -> None:
        await storage.privacy.set_visibility(MEMBER, "private")

    async def public() -> None:
        await storage.privacy.set_visibility(MEMBER, "server")

    async def unlink() -> None:
        await storage.links.delete_member(MEMBER)

    async def opt_out_here() -> None:
        await storage.settings.set_guild_autopost_opt_in(MEMBER, GUILD, False)

    async def opt_out_everywhere_but_there() -> None:
        await storage.settings.set_guild_autopost_opt_in(MEMBER, GUILD + 1, True)
        await storage.settings.set_autopost_opt_in(MEMBER, False)

    assert await unsent_after(private) == {"sent", "other"}
    assert await unsent_after(public) == {"here", "sent", "there", "other"}
    assert await unsent_after(unlink) == {"sent", "other"}
    assert await unsent_after(opt_out_here) == {"sent", "there", "other"}
    assert await unsent_after(opt_out_everywhere_but_there) == {"sent", "there", "other"}


async def test_a_late_post_waits_while_discord_cannot_say_who_is_in_the_server(
    storage: Storage,
) -> None:
    side = FakeDiscordSide(first_message_id=1001)
    sender = OutboxSender(storage, OutboxDiscordSide(side, storage), wall_clock=lambda: 1005.0)
    await storage.outbox.outbox_put(queued("wait", "Wait", 1000.0))
    side.lookup_error = DiscordUnavailable("503")
    assert await sender.send_due() == 0
    side.lookup_error = None
    assert await sender.send_due() == 1  # released at once, sent on the next round


async def test_stale_posts_are_not_sent(storage: Storage) -> None:
    await storage.outbox.outbox_put(queued("old", "Old", 0.0))
    side = FakeDiscordSide(first_message_id=1001)
    sender = OutboxSender(storage, OutboxDiscordSide(side, storage), wall_clock=lambda: 400.0)
    assert await sender.send_due() == 0
    assert side.sent == []


@pytest.mark.postgresql
async def test_senders_of_two_processes_send_each_row_once(postgres_database: str) -> None:
    storages = [await Storage.open(postgres_database) for _ in range(2)]
    try:
        await wanted(storages[0])
        for index in range(40):
            await storages[0].outbox.outbox_put(queued(f"n{index}", f"S{index}", 10.0))
        sides = [FakeDiscordSide(first_message_id=1001), FakeDiscordSide(first_message_id=1001)]
        senders = [
            OutboxSender(s, OutboxDiscordSide(side, s), wall_clock=lambda: 11.0)
            for s, side in zip(storages, sides, strict=True)
        ]

        async def drain(sender: OutboxSender) -> None:
            while await sender.send_due():
                pass

        await asyncio.wait_for(asyncio.gather(*(drain(s) for s in senders)), 30)
        nonces = [n for side in sides for _, _, n in side.sent]
        assert sorted(nonces) == sorted(f"n{i}" for i in range(40))  # every row, once
    finally:
        for s in storages:
            await s.close()


async def test_the_fake_discord_honours_nonce_and_enforce_nonce() -> None:
    async with (
        FakeDiscord.running(guilds=[default_guild()]) as fake,
        aiohttp.ClientSession() as http,
    ):
        url = f"{fake.api_url}/channels/{MUSIC_ID}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}

        async def post(body: dict[str, object]) -> str:
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                return str((await response.json())["id"])

        first = await post({"content": "hi", "nonce": "abc", "enforce_nonce": True})
        again = await post({"content": "hi", "nonce": "abc", "enforce_nonce": True})
        assert again == first
        assert fake.nonce_repeats == 1
        # Without enforce_nonce, or another nonce, each create is a message of its own.
        other = await post({"content": "hi", "nonce": "abc"})
        third = await post({"content": "hi", "nonce": "xyz", "enforce_nonce": True})
        assert len({first, other, third}) == 3
        assert len([m for m in fake.channel_posts if m.channel_id == str(MUSIC_ID)]) == 3
