"""The auto-post outbox: posts any process may send, each landing once.

The leader (``bot.autopost.leadership``) does not post straight to Discord: it queues the post
in the database (``autopost_outbox``: server, channel, member, the message as JSON, a nonce)
and then claims and sends it itself at once. When that fails in a way that may pass, or the
leader dies in between, the row stays: the :class:`OutboxSender` of every process claims
unsent rows (on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so two never take the same row) when a
notification wakes it and every ``poll_every`` seconds anyway (a notification nobody heard is
not lost). Discord's ``nonce`` with ``enforce_nonce`` makes a post sent twice (a sender died
after sending, before marking it sent) land once. Edits of the last post stay with the leader:
an edit repeated is harmless.

A post sent late is a post the member may no longer want: going private, unlinking and opting
out delete the member's unsent rows in the same transaction as the choice (``bot.storage``),
and the sender reads the member's choices from the database and looks them up in the server
again just before it sends (``still_wanted``); a row no longer wanted is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol

import discord

from bot.aio.tasks import cancel_and_wait
from bot.autopost.ports import (
    ChannelCheck,
    ChannelUnusable,
    DiscordSide,
    DiscordUnavailable,
    MemberView,
    PostOwner,
)
from bot.autopost.settings import wants_posts
from bot.messages.message import BotMessage, LinkButton
from bot.storage import HasLinks, HasOutbox, HasPrivacy, HasSettings, Notifications, OutboxPost

log = logging.getLogger(__name__)

OUTBOX_CHANNEL: Final = "nowplaying_outbox"
CLAIM_LEASE: Final = 30.0  # a claimed row waits this long before another sender may take it
POLL_EVERY: Final = 3.0
KEEP_FOR: Final = 600.0  # rows (sent or not) are dropped after this; unsent ones are stale
SEND_AFTER_AT_MOST: Final = 300.0  # an unsent post older than this is not sent any more


class OutboxStorage(HasOutbox, HasLinks, HasPrivacy, HasSettings, Notifications, Protocol):
    """What the outbox uses of ``bot.storage.Storage``: its store, the members' choices read
    again before a late send, and the notification that wakes every process's sender."""


def encode_message(message: BotMessage) -> str:
    return json.dumps(
        {
            "content": message.content,
            "embed": message.embed.to_dict() if message.embed is not None else None,
            "buttons": [[b.label, b.url] for b in message.buttons],
        },
        separators=(",", ":"),
    )


def decode_message(payload: str) -> BotMessage:
    data: dict[str, Any] = json.loads(payload)
    embed = discord.Embed.from_dict(data["embed"]) if data.get("embed") else None
    buttons = tuple(LinkButton(label, url) for label, url in data.get("buttons") or ())
    return BotMessage(embed=embed, content=data.get("content"), buttons=buttons)


class OutboxDiscordSide:
    """A :class:`DiscordSide` whose posts go through the outbox; the rest is ``inner``'s."""

    def __init__(
        self,
        inner: DiscordSide,
        storage: OutboxStorage,
        *,
        wall_clock: Callable[[], float] = time.time,
        lease: float = CLAIM_LEASE,
        wait_step: float = 0.25,
    ) -> None:
        self._inner, self._storage, self._wall_clock = inner, storage, wall_clock
        self._lease, self._wait_step = lease, wait_step

    async def wait_until_ready(self) -> None:
        await self._inner.wait_until_ready()

    def check_channel(self, guild_id: int, channel_id: int) -> ChannelCheck:
        return self._inner.check_channel(guild_id, channel_id)

    async def fetch_member(self, guild_id: int, user_id: int) -> MemberView | None:
        return await self._inner.fetch_member(guild_id, user_id)

    async def edit(self, channel_id: int, message_id: int, message: BotMessage) -> bool:
        return await self._inner.edit(channel_id, message_id, message)

    async def last_message_id(self, channel_id: int) -> int | None:
        return await self._inner.last_message_id(channel_id)

    async def send(
        self, channel_id: int, message: BotMessage, nonce: str | None = None, *, owner: PostOwner
    ) -> int:
        """Queue the post, then send it (or wait for the sender that claimed it)."""
        nonce = nonce or secrets.token_hex(12)
        now = self._wall_clock()
        post = OutboxPost(
            nonce, owner.guild_id, channel_id, owner.member_id, encode_message(message), now
        )
        try:
            await self._storage.outbox.outbox_put(post)
            claimed = await self._storage.outbox.outbox_claim(now, self._lease, nonce=nonce)
        except Exception as exc:  # the database is away: try again with the next poll
            raise DiscordUnavailable(f"outbox: {exc!r}") from exc
        if claimed:
            return await self.deliver(claimed[0])
        return await self._outcome(nonce, now + self._lease)

    async def deliver(self, post: OutboxPost) -> int:
        """Send a claimed row and record the outcome."""
        try:
            message_id = await self._inner.send(
                post.channel_id,
                decode_message(post.payload),
                post.nonce,
                owner=PostOwner(post.guild_id, post.member_id),
            )
        except ChannelUnusable as exc:
            await self._storage.outbox.outbox_failed(post.nonce, exc.reason)
            raise
        except DiscordUnavailable:
            with contextlib.suppress(Exception):  # the lease runs out by itself otherwise
                await self._storage.outbox.outbox_release(post.nonce)
                await self._storage.notify(OUTBOX_CHANNEL, post.nonce)
            raise
        await self._storage.outbox.outbox_sent(post.nonce, message_id)
        return message_id

    async def _outcome(self, nonce: str, deadline: float) -> int:
        """Another sender holds the row (or sent it already): its message id, once known."""
        while True:
            try:
                row = await self._storage.outbox.outbox_get(nonce)
            except Exception as exc:
                raise DiscordUnavailable(f"outbox: {exc!r}") from exc
            if row is not None and row.message_id is not None:
                return row.message_id
            if row is not None and row.failure is not None:
                if row.failure == "deleted":
                    raise ChannelUnusable("deleted", "outbox")
                raise ChannelUnusable("forbidden", f"outbox: {row.failure}")
            if row is None or self._wall_clock() >= deadline:
                raise DiscordUnavailable("outbox: the post was not sent in time")
            await asyncio.sleep(self._wait_step)


class OutboxSender:
    """Sends what the outbox holds unsent, in every process (see the module doc)."""

    def __init__(
        self,
        storage: OutboxStorage,
        side: OutboxDiscordSide,
        *,
        poll_every: float = POLL_EVERY,
        lease: float = CLAIM_LEASE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage, self._side, self._poll_every = storage, side, poll_every
        self._lease, self._wall_clock = lease, wall_clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._working = False
        self.sent = 0

    def listening(self) -> AbstractAsyncContextManager[None]:
        return self._storage.listen(OUTBOX_CHANNEL, lambda _payload: self._wake.set())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="autopost-outbox-sender")

    async def stop(self, grace: float = 5.0) -> None:
        """Let a round in progress finish (a database connection being opened is not cut
        halfway), then stop; cancelled after ``grace`` seconds."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        if self._working:  # past waiting for Discord: let the round end
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), grace)
        await cancel_and_wait([task])

    async def _run(self) -> None:
        await self._side.wait_until_ready()
        self._working = True
        while not self._stopping:
            try:
                await self.send_due()
            except Exception:
                log.exception("auto-post outbox: sending failed; trying again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_every):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return

    async def send_due(self) -> int:
        """Claim and send what is unsent; drop old rows. Returns how many were sent."""
        now = self._wall_clock()
        await self._storage.outbox.outbox_prune(now - KEEP_FOR)
        sent = 0
        outbox = self._storage.outbox
        for post in await outbox.outbox_claim(now, self._lease):
            try:
                wanted = now - post.created_at <= SEND_AFTER_AT_MOST and await self.still_wanted(
                    post
                )
            except DiscordUnavailable as exc:  # cannot look the member up: not now, maybe later
                log.info("auto-post outbox: post to channel %s waits: %s", post.channel_id, exc)
                await outbox.outbox_release(post.nonce)
                continue
            if not wanted:
                await outbox.outbox_drop(post.nonce)
                continue
            try:
                await self._side.deliver(post)
            except (ChannelUnusable, DiscordUnavailable) as exc:
                log.info("auto-post outbox: post to channel %s failed: %s", post.channel_id, exc)
                continue
            sent += 1
        self.sent += sent
        return sent

    async def still_wanted(self, post: OutboxPost) -> bool:
        """Whether the post may still go out, from the database and Discord as they are now:
        the member not private, still wanting posts in that server, still in it, and the
        channel still its music channel. Raises DiscordUnavailable when Discord cannot say."""
        storage, member_id, guild_id = self._storage, post.member_id, post.guild_id
        if await storage.privacy.get_visibility(member_id) == "private":
            return False
        guild = await storage.settings.get_guild_settings(guild_id)
        if guild is None or guild.music_channel_id != post.channel_id:
            return False
        link = await storage.links.get_link(member_id)
        choice = await storage.settings.get_guild_autopost_opt_in(member_id, guild_id)
        if not wants_posts(link is not None and link.status == "active", choice):
            return False
        return await self._side.fetch_member(guild_id, member_id) is not None


__all__ = [
    "OUTBOX_CHANNEL",
    "OutboxDiscordSide",
    "OutboxSender",
    "decode_message",
    "encode_message",
]
