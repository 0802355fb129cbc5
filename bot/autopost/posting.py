"""The posting rules: what a new fact about a member's playback turns into in each music channel.

Every source (the poll loop, presence updates) ends up in :meth:`Poster.observe`:

* An item (track or episode id; the URI for a local file) is posted when it differs from the
  member's last observed item. Pause, resume and seek keep the item, so they post nothing; a
  replay after another item is a new item. A new item first seen paused is posted at once
  (shown paused): it may never play again before the next one, and it was current.
* Never the same item twice in a row per member and channel: the last post per (member,
  channel) is kept in memory and in the database (``LastPostsStore.record_post``), so a
  restart does not repost what is playing.
* Rapid skips: when the member's previous post in that channel is under ``edit_window`` old
  and is still the channel's last message (``GET /channels/{id}``: the bot has no message
  intent, so discord.py's cached ``last_message_id`` never moves), it is edited instead.
* The duplicate check and its mark happen with no ``await`` in between, and a member's posts
  run one at a time (a per-member lock), so concurrent sources (a poll, the same presence
  update from several guilds) never post twice.
* Several processes (``shared``): a presence is posted where it arrived, in the music channels
  of the guilds this process runs the shards of (``serves_guild``): every other process hears
  the same presence in its own guilds and posts it there, so each channel gets it once. The
  last posts are read from the database before deciding and again just before posting (any
  process may have posted meanwhile); two processes that still post the same item at once
  send the same nonce, and Discord keeps one.
* Before each post the member is looked up in the guild again (``fetch_member``; the guilds
  intent alone never tells us someone left), and the member must still be linked or opted in
  *in that guild* (``SettingsStore.get_guild_autopost_opt_in``: the choice made there, else
  the one made before opt-in was per server) and not private: leaving, unlinking, opting out
  or going private stops posts at once.
* A deleted channel or a lost permission (seen in the cache, or as 404 10003 / 403
  50001/50013 on a post) turns auto-posting off for that guild, with a log line and a notice
  the admin sees on their next ``/autopost``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Collection

from bot.aio.keyed_locks import KeyedLocks, LockEntry
from bot.autopost.last_posts import LastPosts
from bot.autopost.ports import (
    ChannelCheck,
    ChannelState,
    ChannelUnusable,
    DiscordSide,
    DiscordUnavailable,
    PlayListener,
    PostAction,
    PostHook,
    PostOwner,
    Renderer,
    Source,
)
from bot.autopost.roster import Following
from bot.messages.message import BotMessage
from bot.spotify.models import CurrentlyPlaying, Playback
from bot.storage import LastPost, LastPostsStore

log = logging.getLogger(__name__)

# An auto-post waits at most this long for a new cover's colour (then posts in green).
AUTOPOST_COLOUR_WAIT = 1.0


class Poster:
    """Posts (or edits) members' new items in every music channel; remembers the last posts."""

    def __init__(
        self,
        storage: LastPostsStore,
        discord: DiscordSide,
        following: Following,
        *,
        renderer: Renderer,
        edit_window: float,
        on_post: PostHook | None = None,
        wall_clock: Callable[[], float] = time.time,
        serves_guild: Callable[[int], bool] | None = None,
        shared: bool = False,
    ) -> None:
        self._discord, self._following, self._edit_window = discord, following, edit_window
        self.on_post, self._renderer, self._wall_clock = on_post, renderer, wall_clock
        self._serves_guild = serves_guild
        self._last_posts = LastPosts(storage, shared=shared)
        self._member_locks: KeyedLocks[int, LockEntry] = KeyedLocks(LockEntry)
        self._play_listeners: list[PlayListener] = []

    async def load(self) -> None:
        await self._last_posts.load()

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"last posts": self._last_posts.by_key, "member locks": self._member_locks.keys()}

    def last_post(self, member_id: int, channel_id: int) -> LastPost | None:
        return self._last_posts.get(member_id, channel_id)

    def forget_channel(self, channel_id: int) -> None:
        self._last_posts.forget_channel(channel_id)

    def forget_member(self, member_id: int) -> None:
        self._last_posts.forget_member(member_id)

    def add_play_listener(self, listener: PlayListener) -> None:
        """``listener(member, playback, source)`` hears every observation (must not block)."""
        self._play_listeners.append(listener)

    async def observe(
        self, member_id: int, playback: CurrentlyPlaying, *, source: Source = "spotify"
    ) -> None:
        """A new fact about what a member plays, from any source: post it if it is new."""
        for listener in self._play_listeners:
            try:
                listener(member_id, playback, source)
            except Exception:  # a listener's bug must not stop auto-posting
                log.exception("auto-post: a play listener failed")
        if not isinstance(playback, Playback) or playback.item is None:
            return
        if not self._following.settings.may_post_now(member_id):
            return  # no database read: presence-only members who never opted in cost nothing
        key = playback.item.key
        roster = self._following.roster
        if not roster.claim_item(member_id, key):
            return
        async with self._member_locks.hold(member_id):
            if not roster.is_current_item(member_id, key):
                return  # a newer item came in while we waited: that one is posted instead
            posted_everywhere = await self._post_everywhere(member_id, playback, key, source)
        if not posted_everywhere:
            roster.release_item(member_id, key)  # the next observation tries again

    async def channel_gone(self, guild_id: int, channel_id: int, reason: str) -> None:
        """Turn auto-posting off in a guild whose channel stopped working."""
        if await self._following.settings.disable(guild_id, channel_id, reason):
            self.forget_channel(channel_id)
            self._following.lookups.everyone()

    # --- one post ----------------------------------------------------------------------------

    async def _post_everywhere(
        self, member_id: int, playback: Playback, key: str, source: Source
    ) -> bool:
        """Post in every music channel that has not shown ``key`` last. False: retry later."""
        channels = list(self._following.settings.channels.items())
        if source == "presence" and self._serves_guild is not None:
            channels = [(g, c) for g, c in channels if self._serves_guild(g)]
        if not await self._last_posts.refresh(member_id):
            return False
        targets = [
            (guild_id, channel_id)
            for guild_id, channel_id in channels
            if (last := self._last_posts.get(member_id, channel_id)) is None or last.item_key != key
        ]
        if not targets:
            return True
        # The cover's colour once; each post below reads it without waiting.
        await self._renderer.prepare(playback, wait=AUTOPOST_COLOUR_WAIT)
        results = await asyncio.gather(
            *(self._post_in(member_id, g, c, playback, key, source) for g, c in targets)
        )
        return all(results)

    async def _post_in(
        self,
        member_id: int,
        guild_id: int,
        channel_id: int,
        playback: Playback,
        key: str,
        source: Source,
    ) -> bool:
        check = self._discord.check_channel(guild_id, channel_id)
        if check.state is ChannelState.UNAVAILABLE:
            return True
        if check.state is not ChannelState.OK:
            await self.channel_gone(guild_id, channel_id, _reason_for(check))
            return True
        if self._following.roster.known_absent(guild_id, member_id):
            return True  # not in this guild when last looked
        try:
            member = await self._discord.fetch_member(guild_id, member_id)
        except DiscordUnavailable as exc:
            log.info(
                "auto-post: cannot look up member %s in guild %s: %s", member_id, guild_id, exc
            )
            return False
        self._following.roster.note_membership(guild_id, member_id, member is not None)
        if member is None:
            self._following.lookups.queue(member_id)  # left: maybe in no music guild any more
            return True
        if not await self._following.settings.may_post_in(guild_id, member_id):
            return True
        # Re-check everything the awaits may have changed: opt-out, unlink, channel change.
        if not self._still_wanted(member_id, guild_id, channel_id):
            return True
        if not await self._last_posts.refresh(member_id, channel_id):
            return False
        last = self._last_posts.get(member_id, channel_id)
        if last is not None and last.item_key == key:
            return True
        now_wall = self._wall_clock()
        message = self._renderer.render(
            playback,
            member_name=member.display_name,
            member_avatar_url=member.avatar_url,
            now=now_wall,
        )
        try:
            nonce = post_nonce(member_id, channel_id, key, last)
            action, message_id = await self._send_or_edit(
                channel_id, message, last, now_wall, nonce, PostOwner(guild_id, member_id)
            )
        except ChannelUnusable as exc:
            reason = (
                "the music channel was deleted"
                if exc.reason == "deleted"
                else "I lost access to the music channel (I need View Channel, Send Messages "
                "and Embed Links there)"
            )
            await self.channel_gone(guild_id, channel_id, reason)
            return True
        except DiscordUnavailable as exc:
            log.info("auto-post: posting in channel %s failed: %s", channel_id, exc)
            return False
        post = LastPost(member_id, channel_id, key, message_id, self._wall_clock())
        if not self._still_wanted(member_id, guild_id, channel_id):
            return True  # unlinked or turned off while we posted: keep nothing about it
        await self._last_posts.record(post)
        self._report(action, playback, source)
        return True

    def _still_wanted(self, member_id: int, guild_id: int, channel_id: int) -> bool:
        settings = self._following.settings
        return settings.may_post_now(member_id) and settings.music_channel(guild_id) == channel_id

    async def _send_or_edit(
        self,
        channel_id: int,
        message: BotMessage,
        last: LastPost | None,
        now: float,
        nonce: str,
        owner: PostOwner,
    ) -> tuple[PostAction, int]:
        if last is not None and now - last.posted_at < self._edit_window:
            try:
                latest = await self._discord.last_message_id(channel_id)
                if latest == last.message_id and await self._discord.edit(
                    channel_id, last.message_id, message
                ):
                    return "edited", last.message_id
            except DiscordUnavailable as exc:
                log.debug("auto-post: cannot edit in channel %s (%s); posting", channel_id, exc)
        return "posted", await self._discord.send(channel_id, message, nonce, owner=owner)

    def _report(self, action: PostAction, playback: Playback, source: Source) -> None:
        if self.on_post is None:
            return
        lag = math.nan
        if playback.progress_ms is not None and playback.received_at:
            started = playback.received_at - playback.progress_ms / 1000.0
            lag = max(0.0, self._wall_clock() - started)
        try:
            self.on_post(action, lag)
        except Exception:  # a metrics bug must not stop posting
            log.exception("auto-post: on_post hook failed (%s from %s)", action, source)


def post_nonce(member_id: int, channel_id: int, key: str, last: LastPost | None) -> str:
    """Discord's nonce for a post (at most 25 characters): the same for the same item after
    the same previous post, so a post retried by this or another process (a new leader that
    did not see it recorded) lands once."""
    previous = last.message_id if last is not None else 0
    seed = f"{member_id}:{channel_id}:{key}:{previous}".encode()
    return hashlib.sha256(seed).hexdigest()[:25]


def _reason_for(check: ChannelCheck) -> str:
    where = f"#{check.name}" if check.name else "the music channel"
    if check.state is ChannelState.DELETED:
        return f"{where} was deleted"
    missing = ", ".join(check.missing) or "some"
    return f"I lost the {missing} permission in {where}"
