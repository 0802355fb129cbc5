"""The auto-poster: follows members, polls Spotify for them, and posts their new items.

:class:`AutopostService` is what the rest of the bot talks to: the sources (the poll loop here,
a Discord presence listener) feed :meth:`AutopostService.observe`, commands change the settings,
link events come in as listeners. It wires four parts that each own their state:

* ``settings.AutopostSettings``: music channels, linked members, opt-in choices;
* ``roster.Roster`` and ``roster.MembershipLookups``: who is followed (membership cache, the
  lookup workers); ``coverage.PresenceCoverage``: whom a presence covers, here or in another
  process (not polled meanwhile);
* ``posting.Poster``: the posting rules (observe, dedupe, post or edit, a dead channel);
* ``poll_loop.PollLoop``: the one polling loop.

Who is polled: linked, not private members who did not opt out everywhere
(``get_autopost_opt_in_anywhere`` None means in) and are in at least one guild with a music
channel where they did not opt out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from bot.aio.tasks import cancel_and_wait
from bot.autopost.config import AutopostConfig
from bot.autopost.coverage import PresenceCoverage
from bot.autopost.leadership import LeaderLock, Leadership
from bot.autopost.poll_loop import PollLoop
from bot.autopost.ports import (
    DailyAllowance,
    DiscordSide,
    Fetch,
    GapHook,
    GapListener,
    PlayListener,
    PollScheduling,
    PostHook,
    Renderer,
    Source,
    SpotifyHold,
)
from bot.autopost.posting import Poster
from bot.autopost.roster import Following, MembershipLookups, Roster
from bot.autopost.scheduler import PollScheduler
from bot.autopost.settings import AutopostSettings, SettingsStorage
from bot.members.events import MemberEvents
from bot.spotify.models import CurrentlyPlaying
from bot.storage import HasLastPosts, LastPost

log = logging.getLogger(__name__)


class AutopostStorage(SettingsStorage, HasLastPosts, LeaderLock, Protocol):
    """What the auto-poster uses of ``bot.storage.Storage``: the settings and links, the last
    posts, the leader's lock, and which engine (several processes share PostgreSQL)."""

    @property
    def dialect(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AutopostParts:
    """The parts the service wires, each owning its state (see the module doc)."""

    settings: AutopostSettings
    roster: Roster
    lookups: MembershipLookups
    coverage: PresenceCoverage
    poster: Poster
    loop: PollLoop


class AutopostService:
    """The auto-poster's face to the bot. See the module doc.

    Lifecycle: ``await start()`` (returns at once; the loop waits for Discord to be ready),
    ``await stop()`` (lets posts in flight finish, cancels the rest, leaves no task behind).
    """

    def __init__(
        self,
        storage: AutopostStorage,
        fetch: Fetch,
        discord: DiscordSide,
        *,
        renderer: Renderer,
        scheduler: PollScheduling | None = None,
        config: AutopostConfig | None = None,
        hold: SpotifyHold | None = None,
        on_post: PostHook | None = None,
        on_gap: GapHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        is_private: Callable[[int], bool] | None = None,
        leadership: Leadership | None = None,
        serves_guild: Callable[[int], bool] | None = None,
        daily_allowance: DailyAllowance | None = None,
        shows_spotify: Callable[[int], bool] | None = None,
    ) -> None:
        """``serves_guild``: whether this process runs the guild's shard (presence posts go
        only there; None: every guild, one process). ``daily_allowance``: what polling may
        spend of the daily Web API budget (``SPOTIFY_DAILY_BUDGET``); the scheduler plans the
        day within it (``pace.py``); None or no limit: it plans as without. ``shows_spotify``:
        whether a member's Discord status shows Spotify now (the gateway cache), so that a
        member is covered from the start: statuses arrive with the guilds, before the linked
        members are read."""
        self.config = config = config or AutopostConfig()
        self.scheduler: PollScheduling = (
            scheduler if scheduler is not None else PollScheduler(config.scheduler)
        )
        if daily_allowance is not None:
            self.scheduler.use_daily_allowance(daily_allowance, wall_offset=wall_clock() - clock())
        self._discord = discord
        wake = asyncio.Event()
        settings = AutopostSettings(storage, is_private=is_private, wall_clock=wall_clock)
        roster = Roster(self.scheduler, wake, membership_ttl=config.membership_ttl, clock=clock)
        lookups = MembershipLookups(roster, settings, discord, workers=config.membership_lookups)
        poster = Poster(
            storage.last_posts,
            discord,
            Following(settings, roster, lookups),
            edit_window=config.edit_window,
            renderer=renderer,
            on_post=on_post,
            wall_clock=wall_clock,
            serves_guild=serves_guild,
            shared=storage.dialect == "postgresql",
        )
        loop = PollLoop(
            fetch,
            roster,
            lookups,
            settings,
            poster,
            wake,
            max_concurrent_polls=config.max_concurrent_polls,
            sweep_every=min(60.0, config.membership_ttl / 4),
            hold=hold,
            clock=clock,
            wall_clock=wall_clock,
        )
        if on_gap is not None:
            loop.add_gap_listener(on_gap)
        coverage = PresenceCoverage(roster, clock=clock, shows_spotify=shows_spotify)
        self.parts = AutopostParts(settings, roster, lookups, coverage, poster, loop)
        self.leadership = leadership if leadership is not None else Leadership(storage)
        self._clock = clock
        self._main: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # The parts, by name (the record keeps this class to what it runs itself).

    @property
    def settings(self) -> AutopostSettings:
        return self.parts.settings

    @property
    def roster(self) -> Roster:
        return self.parts.roster

    @property
    def coverage(self) -> PresenceCoverage:
        return self.parts.coverage

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored state and start the loop (it waits for Discord to be ready)."""
        if self._main is not None:
            return
        await self.settings.load()
        await self.parts.poster.load()
        self._main = asyncio.create_task(self._run(), name="autopost-loop")

    async def stop(self) -> None:
        """Stop polling, give posts in flight ``shutdown_grace`` to finish (a post whose record
        is lost would be posted again after the restart), then cancel whatever is left."""
        first = [t for t in (self._main, *self.parts.lookups.stop()) if t is not None]
        self.parts.loop.stopping = True
        for task in first:
            task.cancel()  # at once: no new poll starts while the ones in flight finish
        await self.parts.loop.drain(self.config.shutdown_grace)
        await cancel_and_wait(first)
        self._main = None

    async def wait_until_ready(self) -> None:
        """Until the stored members are loaded and queued for their first lookups."""
        await self._ready.wait()

    async def settle(self) -> None:
        """Until every queued membership lookup is done (tests and benchmarks)."""
        await self._ready.wait()
        if self.leadership.is_leader:  # elsewhere nobody works the queue
            await self.parts.lookups.join()

    async def _run(self) -> None:
        await self._discord.wait_until_ready()
        # Every process: presences are judged (linked? may post?) where they arrive.
        while True:
            try:
                await self.settings.load_members()
                break
            except Exception as exc:  # the database is away: the leader needs it too
                log.warning("auto-post: cannot read the linked members (%s); trying again", exc)
                await asyncio.sleep(self.leadership.retry)
        while True:
            # While another process polls there is nothing of ours to wait for.
            async with self.leadership.leading(on_wait=self._ready.set) as lost:
                await self._lead(lost)
            log.warning("auto-post: this process may no longer be the one that polls; stopped")

    async def _lead(self, lost: asyncio.Event) -> None:
        """Poll for every guild until ``lost``: what the previous leader stored (settings,
        links, last posts) is read again first, so nothing it posted is posted twice."""
        self._ready.clear()
        await self.settings.load()
        await self.settings.load_members()
        self.coverage.cover_from_statuses(self.settings.linked)
        await self.parts.poster.load()
        self.parts.lookups.start()
        self.parts.lookups.everyone()
        self._ready.set()
        log.info(
            "auto-post started: %d linked members, %d music channels",
            len(self.settings.linked),
            len(self.settings.channels),
        )
        polling = asyncio.create_task(self.parts.loop.run(), name="autopost-poll-loop")
        watching = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({polling, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([watching, polling, *self.parts.lookups.stop()])
        # Lost: start no poll; the ones in flight may finish (a token refresh cut halfway
        # could lose a rotated refresh token; a post they make twice lands once: the nonce).
        await self.parts.loop.drain(self.config.shutdown_grace)
        self.parts.loop.stopping = False

    async def reload_settings(self) -> None:
        """Another process changed music channels or opt-ins: read them again."""
        await self.settings.load()
        await self.settings.load_members()  # opt-ins judge presences in every process
        if self.leadership.is_leader:
            self.parts.lookups.everyone()

    # --- what sources call -------------------------------------------------------------------

    async def observe(
        self, member_id: int, playback: CurrentlyPlaying, *, source: Source = "spotify"
    ) -> None:
        """A new fact about what a member plays, from any source: post it if it is new."""
        await self.parts.poster.observe(member_id, playback, source=source)

    def add_play_listener(self, listener: PlayListener) -> None:
        """``listener(member, playback, source)`` hears every observation, from any source,
        before the posting rules (must not block): the listening log."""
        self.parts.poster.add_play_listener(listener)

    def add_gap_listener(self, listener: GapListener) -> None:
        """``listener(member, since)`` hears of stretches (since: Unix time) a poll found
        nobody watched, long enough to hide a play."""
        self.parts.loop.add_gap_listener(listener)

    def add_settings_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` hears that a music channel or an opt-in changed in this process."""
        self.settings.add_change_listener(listener)

    def suspend_polling(self, member_id: int) -> None:
        """Stop polling a followed member while another source (presence) covers them.
        Only linked members are ever polled: for anyone else this keeps nothing."""
        if self.settings.is_linked(member_id):
            self.coverage.cover(member_id)

    def resume_polling(self, member_id: int) -> None:
        """Poll again when the other source went away (e.g. the presence lost Spotify).
        A no-op for a member who was not suspended; another process's cover of the member
        (``coverage``) keeps them unpolled until it ends too."""
        self.coverage.uncover(member_id)

    # --- what commands and other services call -----------------------------------------------

    def is_linked(self, member_id: int) -> bool:
        return self.settings.is_linked(member_id)

    def is_followed(self, member_id: int) -> bool:
        return self.roster.is_followed(member_id)

    def music_channel(self, guild_id: int) -> int | None:
        return self.settings.music_channel(guild_id)

    async def set_channel(self, guild_id: int, channel_id: int) -> None:
        previous = await self.settings.set_channel(guild_id, channel_id)
        if previous is not None:
            self.parts.poster.forget_channel(previous)
        self.parts.lookups.everyone()

    async def turn_off(self, guild_id: int) -> bool:
        """``/autopost off``. False when it was not on."""
        previous = await self.settings.turn_off(guild_id)
        if previous is None:
            return False
        self.parts.poster.forget_channel(previous)
        self.parts.lookups.everyone()
        return True

    async def take_notice(self, guild_id: int) -> str | None:
        """The notice left when auto-posting turned itself off, cleared once read."""
        return await self.settings.take_notice(guild_id)

    async def set_opt_in(self, member_id: int, enabled: bool, guild_id: int | None = None) -> None:
        """``/autopost me`` in one guild (None: the fallback of every guild without a choice of
        its own): stored, and applied at once. Posting checks the choice per guild; polling
        goes on while the member is in somewhere."""
        if guild_id is None and not enabled:
            self.roster.unfollow(member_id)  # before the write: posts in flight stop now
        await self.settings.set_opt_in(member_id, enabled, guild_id)
        if self.settings.eligible_for_polling(member_id):
            self.parts.lookups.queue(member_id)
        else:
            self.roster.unfollow(member_id)

    def follow_members(self, events: MemberEvents) -> None:
        """Hear who links, unlinks or changes visibility, here or in another process."""
        events.on("linked", self.member_linked)
        events.on("unlinked", self.member_unlinked)
        events.on("private", self.member_went_private)
        events.on("public", self.member_went_public)

    def member_went_private(self, member_id: int) -> None:
        """A member chose private: no more polls or posts, and what they last
        played is forgotten (the storage deleted its copy with the choice)."""
        self.coverage.forget(member_id)
        self.roster.stop_following(member_id)
        self.parts.poster.forget_member(member_id)

    def member_went_public(self, member_id: int) -> None:
        """A private member is visible again: follow them
        again where their opt-in allows it."""
        if self.settings.is_linked(member_id):
            self.parts.lookups.queue(member_id)

    async def channel_deleted(
        self, guild_id: int, channel_id: int, *, name: str | None = None
    ) -> None:
        """CHANNEL_DELETE from the gateway."""
        where = f"#{name}" if name else "the music channel"
        await self.parts.poster.channel_gone(guild_id, channel_id, f"{where} was deleted")

    async def member_linked(self, member_id: int) -> None:
        await self.settings.member_linked(member_id)
        self.coverage.cover_from_statuses((member_id,))
        self.parts.lookups.queue(member_id)

    def member_unlinked(self, member_id: int) -> None:
        """Unlinked: their settings and last posts are gone too."""
        self.settings.member_unlinked(member_id)
        self.coverage.forget(member_id)
        self.roster.forget(member_id, list(self.settings.channels))
        self.parts.poster.forget_member(member_id)

    # --- introspection (tests, benchmarks, metrics) ------------------------------------------

    @property
    def followed_count(self) -> int:
        return self.roster.followed_count

    def skip_check_stretch(self) -> float:
        """How much routine (skip) checks are stretched to fit the budget now (1.0: not)."""
        return self.scheduler.stretch(self._clock())

    def last_post(self, member_id: int, channel_id: int) -> LastPost | None:
        return self.parts.poster.last_post(member_id, channel_id)

    def per_member_state(self) -> dict[str, Collection[object]]:
        """Every structure that grows with members, by name (docs/self-hosting.md, "Memory
        per member")."""
        return {
            **self.settings.per_member_state(),
            **self.roster.per_member_state(),
            **self.parts.poster.per_member_state(),
            **self.coverage.per_member_state(),
            **self.scheduler.per_member_state(),
            "lookup queue": self.parts.lookups.queued,
        }
