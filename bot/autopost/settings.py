"""Where auto-posts go and who wants them: music channels per guild, links and opt-in choices.

The one record of these for every other part of the auto-poster (the roster asks who may be
polled, the poster who may be posted and where). Every write goes to storage first where a
restart must remember it; a channel change is serialised by one lock.

``/autopost me`` is per server: the poster asks storage for the member's choice in the guild
it posts in (``SettingsStore.get_guild_autopost_opt_in``: the choice made there, else the one
made before opt-in was per server). Kept here is only the summary over all guilds
(``get_autopost_opt_in_anywhere``), for linked members and members who opted in somewhere:
members known only through presence who never opted in get no entry and cause no read. A
private member (``is_private``) is never polled nor posted.

Bounds (docs/self-hosting.md, "Memory per member"): linked members L, members who opted in
somewhere O: ``_linked`` <= L, ``_choices`` <= L + O; channels: one per music guild.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from bot.storage import HasLinks, HasSettings

log = logging.getLogger(__name__)


def wants_posts(linked: bool, choice: bool | None) -> bool:
    """The opt-in rule: a linked member is posted unless they opted out; a member known only
    through presence only when they opted in."""
    return choice is not False if linked else choice is True


class SettingsStorage(HasSettings, HasLinks, Protocol):
    """What the settings use of ``bot.storage.Storage``: the settings, and who is linked."""


class AutopostSettings:
    """Music channels, linked members and their stored opt-in choices."""

    def __init__(
        self,
        storage: SettingsStorage,
        *,
        is_private: Callable[[int], bool] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._is_private = is_private or (lambda _member_id: False)
        self._wall_clock = wall_clock
        self._channels: dict[int, int] = {}  # guild id -> music channel id
        self._linked: set[int] = set()
        # Opt-in summary over all guilds; None: never chose (linked members count as in).
        self._choices: dict[int, bool | None] = {}
        self._lock = asyncio.Lock()
        self._change_listeners: list[Callable[[], None]] = []

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` hears that a music channel or an opt-in changed here (the database
        has it already): other processes read theirs again."""
        self._change_listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._change_listeners:
            listener()

    async def load(self) -> None:
        """Music channels, and who opted in somewhere: before the gateway connects, so
        presences that arrive with the guilds are judged without a read."""
        async with self._lock:  # a channel set meanwhile is not overwritten by this read
            self._channels = await self._storage.settings.list_music_channels()
        for member_id in await self._storage.settings.list_autopost_opted_in_user_ids():
            self._choices.setdefault(member_id, True)

    async def load_members(self) -> None:
        """Linked members and their choices (once Discord is ready: the loop's start)."""
        self._linked = set(await self._storage.links.list_active_user_ids())
        summaries = (
            await self._storage.settings.list_autopost_opt_in_summaries()
        )  # one query for all
        for member_id in self._linked:
            self._choices[member_id] = summaries.get(member_id)

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"linked": self._linked, "opt-in choices": self._choices}

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
        """Linked, not private, not opted out everywhere, and some guild has a music channel."""
        return (
            bool(self._channels)
            and member_id in self._linked
            and self._choices.get(member_id) is not False
            and not self._is_private(member_id)
        )

    def may_post_now(self, member_id: int) -> bool:
        """Not private, and linked and not opted out everywhere, or opted in somewhere
        (members known only through presence). No database read, nothing cached."""
        if self._is_private(member_id):
            return False
        return wants_posts(member_id in self._linked, self._choices.get(member_id))

    async def may_post_in(self, guild_id: int, member_id: int) -> bool:
        """The member's own choice for this guild (asked of storage at post time)."""
        if not self.may_post_now(member_id):
            return False
        choice = await self._storage.settings.get_guild_autopost_opt_in(member_id, guild_id)
        return wants_posts(member_id in self._linked, choice)

    # --- members -----------------------------------------------------------------------------

    async def member_linked(self, member_id: int) -> None:
        self._linked.add(member_id)
        self._choices[member_id] = await self._storage.settings.get_autopost_opt_in_anywhere(
            member_id
        )

    def member_unlinked(self, member_id: int) -> None:
        """Their settings are gone with the link."""
        self._linked.discard(member_id)
        self._choices.pop(member_id, None)

    def link_gone(self, member_id: int) -> None:
        """Spotify refused the link for good (a poll found it broken or unlinked)."""
        self._linked.discard(member_id)

    async def set_opt_in(self, member_id: int, enabled: bool, guild_id: int | None) -> None:
        """``/autopost me`` in one guild (None: the fallback of every guild without a choice
        of its own), stored; the summary is read back. Opting out everywhere applies before
        the write, so posts in flight stop now."""
        if guild_id is None:
            if not enabled:
                self._choices[member_id] = False
            await self._storage.settings.set_autopost_opt_in(member_id, enabled)
        else:
            await self._storage.settings.set_guild_autopost_opt_in(member_id, guild_id, enabled)
        choice = await self._storage.settings.get_autopost_opt_in_anywhere(member_id)
        if member_id in self._linked or choice is True:
            self._choices[member_id] = choice
        else:
            self._choices.pop(member_id, None)
        self._changed()

    # --- channels ----------------------------------------------------------------------------

    async def set_channel(self, guild_id: int, channel_id: int) -> int | None:
        """Store and apply a music channel; return the previous one, if another."""
        async with self._lock:
            await self._storage.settings.set_music_channel(guild_id, channel_id)
            previous = self._channels.get(guild_id)
            self._channels[guild_id] = channel_id
        log.info("auto-post channel of guild %s set to %s", guild_id, channel_id)
        self._changed()
        return previous if previous != channel_id else None

    async def turn_off(self, guild_id: int) -> int | None:
        """``/autopost off``: the channel it was on, or None when it was off."""
        async with self._lock:
            previous = self._channels.pop(guild_id, None)
            if previous is None:
                return None
            await self._storage.settings.set_music_channel(guild_id, None)
        log.info("auto-post turned off in guild %s by an admin", guild_id)
        self._changed()
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
            await self._storage.settings.disable_autopost(guild_id, notice)
        log.warning("auto-post turned off in guild %s: %s", guild_id, reason)
        self._changed()
        return True

    async def take_notice(self, guild_id: int) -> str | None:
        """The notice left when auto-posting turned itself off, cleared once read."""
        settings = await self._storage.settings.get_guild_settings(guild_id)
        if settings is None or settings.autopost_notice is None:
            return None
        await self._storage.settings.clear_autopost_notice(guild_id)
        return settings.autopost_notice
