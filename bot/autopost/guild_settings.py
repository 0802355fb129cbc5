"""Where auto-posts go and who wants them: music channels per guild, links and opt-in choices.

The one record of these for every other part of the auto-poster (the roster asks who may be
polled, the poster who may be posted and where). Every write goes to storage first where a
restart must remember it; a channel change is serialised by one lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from bot.storage import Storage

log = logging.getLogger(__name__)


class GuildSettings:
    """Music channels, linked members and their stored opt-in choices."""

    def __init__(self, storage: Storage, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._wall_clock = wall_clock
        self._channels: dict[int, int] = {}  # guild id -> music channel id
        self._linked: set[int] = set()
        self._choices: dict[int, bool | None] = {}  # stored opt-in choice; None: never chose
        self._lock = asyncio.Lock()

    async def load_channels(self) -> None:
        self._channels = await self._storage.list_music_channels()

    async def load_members(self) -> None:
        """Linked members and their choices (once Discord is ready: the loop's start)."""
        self._linked = set(await self._storage.list_active_user_ids())
        for member_id in self._linked:
            self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)

    # --- reading -----------------------------------------------------------------------------

    @property
    def channels(self) -> Mapping[int, int]:
        """guild id -> music channel id, for the guilds where auto-posting is on."""
        return self._channels

    @property
    def linked(self) -> frozenset[int]:
        return frozenset(self._linked)

    def music_channel(self, guild_id: int) -> int | None:
        return self._channels.get(guild_id)

    def is_linked(self, member_id: int) -> bool:
        return member_id in self._linked

    def eligible_for_polling(self, member_id: int) -> bool:
        """Linked, not opted out, and some guild has a music channel."""
        return (
            bool(self._channels)
            and member_id in self._linked
            and self._choices.get(member_id) is not False
        )

    def may_post_now(self, member_id: int) -> bool:
        """Linked and not opted out, or opted in (members known only through presence)."""
        choice = self._choices.get(member_id)
        if member_id in self._linked:
            return choice is not False
        return choice is True

    async def may_post(self, member_id: int) -> bool:
        """:meth:`may_post_now`, reading the choice of a member not seen before."""
        if member_id not in self._linked and member_id not in self._choices:
            self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)
        return self.may_post_now(member_id)

    # --- members -----------------------------------------------------------------------------

    async def member_linked(self, member_id: int) -> None:
        self._linked.add(member_id)
        self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)

    def member_unlinked(self, member_id: int) -> None:
        """Their settings are gone with the link."""
        self._linked.discard(member_id)
        self._choices.pop(member_id, None)

    def link_gone(self, member_id: int) -> None:
        """Spotify refused the link for good (a poll found it broken or unlinked)."""
        self._linked.discard(member_id)

    def choose(self, member_id: int, enabled: bool) -> None:
        """Apply an opt-in choice at once (before it is stored: posts in flight see it)."""
        self._choices[member_id] = enabled

    async def store_choice(self, member_id: int, enabled: bool) -> None:
        await self._storage.set_autopost_opt_in(member_id, enabled)

    # --- channels ----------------------------------------------------------------------------

    async def set_channel(self, guild_id: int, channel_id: int) -> int | None:
        """Store and apply a music channel; return the previous one, if another."""
        async with self._lock:
            await self._storage.set_music_channel(guild_id, channel_id)
            previous = self._channels.get(guild_id)
            self._channels[guild_id] = channel_id
        log.info("auto-post channel of guild %s set to %s", guild_id, channel_id)
        return previous if previous != channel_id else None

    async def turn_off(self, guild_id: int) -> int | None:
        """``/autopost off``: the channel it was on, or None when it was off."""
        async with self._lock:
            previous = self._channels.pop(guild_id, None)
            if previous is None:
                return None
            await self._storage.set_music_channel(guild_id, None)
        log.info("auto-post turned off in guild %s by an admin", guild_id)
        return previous

    async def disable(self, guild_id: int, channel_id: int, reason: str) -> bool:
        """Turn auto-posting off because the channel stopped working; leave a notice for the
        admins. False when it was already off or moved to another channel meanwhile."""
        async with self._lock:
            if self._channels.get(guild_id) != channel_id:
                return False
            del self._channels[guild_id]
            notice = (
                f"Auto-posting was turned off <t:{int(self._wall_clock())}:f> because {reason}. "
                "Run /autopost channel to choose a channel again."
            )
            await self._storage.disable_autopost(guild_id, notice)
        log.warning("auto-post turned off in guild %s: %s", guild_id, reason)
        return True

    async def take_notice(self, guild_id: int) -> str | None:
        """The notice left when auto-posting turned itself off, cleared once read."""
        settings = await self._storage.get_guild_settings(guild_id)
        if settings is None or settings.autopost_notice is None:
            return None
        await self._storage.clear_autopost_notice(guild_id)
        return settings.autopost_notice
