"""The listening log: every play the bot observes, recorded once, kept LISTENING_LOG_DAYS.

Sources: the auto-poster's checks, ``/np``, presence updates and, after a stretch nobody could
watch, Spotify's recently-played. Each calls :meth:`ListeningLog.observe` (or ``observe_soon``,
which never delays the caller).

* **Whose plays:** linked members, and members known only through their Discord status who
  opted in (``/autopost me enabled:true`` somewhere, or ``/privacy visibility:server`` chosen
  explicitly). Never a private member: their plays are deleted when they choose private and
  nothing is recorded while they are.
* **One play, one row:** a play is (member, track id, start time). Its start is
  ``received_at - progress`` (Spotify) or the status's start timestamp (presence); the two
  differ by a second or two. A new observation is the same play when the member already has a
  play of that track that started within ``MATCH_WINDOW`` seconds before it, or earlier but
  still inside that play's duration (a pause moves the computed start later; a repeat starts
  a full duration later and is a new play). The check and the insert share one transaction,
  so two sources, two processes or a restart leave one row.
* **Recently-played:** an entry's ``played_at`` is when Spotify counted the play, which is at
  its end (or when it was skipped after 30 s). It matches a logged play of that track that
  started between ``played_at - duration - MATCH_WINDOW`` and ``played_at + MATCH_WINDOW``;
  an unmatched entry is logged with ``started_at = played_at - duration``.
* **Gaps:** when the poller reports a stretch that could hide a play of 30 s or more (idle
  back-off, a 429 hold, errors) and after a restart (since the member's latest logged play),
  one recently-played call for that member fills it.
* **Where a play counts:** the log remembers in which servers it saw each member (a command
  they ran there, a presence update from there). /recap of a server counts only members seen
  there who are not private; /listening likewise (``bot.listening.server`` also checks that
  they are still in the server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.aio.tasks import cancel_and_wait
from bot.listening.guilds import GuildRoster
from bot.listening.now import NowEntry, NowListening, started_at
from bot.listening.recorder import (
    MATCH_WINDOW,
    GapFiller,
    PlayRecorder,
    RecentlyPlayedFetch,
    play_from,
)
from bot.members.events import MemberEvents
from bot.spotify.models import CurrentlyPlaying, Playback, Track
from bot.storage import HasLinks, HasListening, HasPrivacy, HasSettings, Play

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class PrivacyView(Protocol):
    def is_private_now(self, user_id: int) -> bool: ...


class ListeningStorage(HasListening, HasLinks, HasSettings, HasPrivacy, Protocol):
    """What the log uses of ``bot.storage.Storage``: its own store, and the members' choices
    that say whose plays are kept."""


class ListeningLog:
    """Records plays, answers what the commands need, fills gaps and prunes. See the module."""

    def __init__(
        self,
        storage: ListeningStorage,
        privacy: PrivacyView,
        *,
        keep_days: int,
        recently_played: RecentlyPlayedFetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.now_listening = NowListening()
        self.roster = GuildRoster(storage.listening, clock)
        self._storage = storage
        self._privacy = privacy
        self._keep_days = keep_days
        self._clock = clock
        # Members whose plays are kept (linked, opted in): one int each, none for members
        # known only through presence who never opted in.
        self._kept: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder = PlayRecorder(
            storage.listening, self.keeps_plays_of, privacy.is_private_now, self._spawn
        )
        self.gaps = GapFiller(
            storage.listening,
            self._recorder,
            self._keeps_if_enabled,
            recently_played,
            self._spawn,
            clock,
        )

    @property
    def enabled(self) -> bool:
        return self._keep_days > 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        storage = self._storage
        self._kept = (
            set(await storage.links.list_active_user_ids())
            | await storage.settings.list_autopost_opted_in_user_ids()
            | await storage.privacy.list_explicit_server_user_ids()
        )
        await self.roster.load()
        await self.prune()
        self._spawn(self._prune_forever(), "listening-log-prune")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            self.now_listening.listening(lambda _member_id: False, self._clock())  # drop ended
            try:
                await self.prune()
            except Exception:
                log.exception("listening log: pruning failed; trying again in an hour")

    async def prune(self) -> int:
        """Delete plays older than LISTENING_LOG_DAYS (every play when it is 0), and where
        members were seen when they were last seen there as long ago (at least a day:
        /listening needs to know who is in a server even when no play is kept)."""
        now = self._clock()
        cutoff = now - self._keep_days * 86400.0 if self.enabled else float("inf")
        removed = await self._storage.listening.prune_plays(before=cutoff)
        if removed:
            log.info("listening log: deleted %d plays older than the retention", removed)
        forgotten = await self.roster.prune(now - max(self._keep_days, 1) * 86400.0)
        if forgotten:
            log.info("listening log: forgot %d sightings of members in servers as old", forgotten)
        return removed

    # --- recording ------------------------------------------------------------------------

    def observe_soon(
        self,
        member_id: int,
        playback: CurrentlyPlaying,
        *,
        source: str,
        guild_id: int | None = None,
        catch_up: bool = False,
    ) -> None:
        """:meth:`observe` without making the caller (a command, a poll) wait. A plain new play
        joins the recorder's next batch (one transaction for every play of ``FLUSH_DELAY``);
        ``guild_id`` and ``catch_up`` (fill the gap since the member's latest logged play
        first: a restart) take a background task."""
        if guild_id is None and not catch_up:
            pending = self._new_play(member_id, playback, source)
            if pending is not None and self.enabled and self.keeps_plays_of(member_id):
                self._recorder.add(*pending)
            return
        self._spawn(
            self._observe_logged(member_id, playback, source, guild_id, catch_up),
            "listening-log-record",
        )

    async def _observe_logged(
        self,
        member_id: int,
        playback: CurrentlyPlaying,
        source: str,
        guild_id: int | None,
        catch_up: bool,
    ) -> None:
        try:
            if catch_up:
                await self.gaps.catch_up(member_id)
            await self.observe(member_id, playback, source=source, guild_id=guild_id)
        except Exception:
            log.exception("listening log: could not record a play of member %s", member_id)

    async def observe(
        self,
        member_id: int,
        playback: CurrentlyPlaying,
        *,
        source: str,
        guild_id: int | None = None,
    ) -> bool:
        """Take a fact about what a member plays. True when a new play was logged."""
        pending = self._new_play(member_id, playback, source)
        if guild_id is not None and not self._privacy.is_private_now(member_id):
            await self.note_member(guild_id, member_id)
        if pending is None or not self.enabled:
            return False
        return await self._recorder.record(*pending)

    def _new_play(
        self, member_id: int, playback: CurrentlyPlaying, source: str
    ) -> tuple[Play, float, float] | None:
        """Update who listens now; the play to log with its match window, unless it is not a
        track, not playing, private, or the play last logged for the member."""
        if self._privacy.is_private_now(member_id):
            self.now_listening.clear(member_id)
            return None
        self.now_listening.update(member_id, playback)
        if not (
            isinstance(playback, Playback)
            and playback.is_playing
            and isinstance(playback.item, Track)
        ):
            return None
        started = started_at(playback)
        play = play_from(member_id, playback.item, started, source)
        if play is None or self._recorder.seen(play):
            return None
        span = max(play.duration_ms / 1000.0 - MATCH_WINDOW, MATCH_WINDOW)
        return play, started - span, started + MATCH_WINDOW

    def _keeps_if_enabled(self, member_id: int) -> bool:
        return self.enabled and self.keeps_plays_of(member_id)

    def keeps_plays_of(self, member_id: int) -> bool:
        """Linked, or opted in while known only through presence; never private. From memory:
        loaded at start, kept by the link and privacy listeners and by :meth:`refresh_member`
        after a member changes a choice, so an observation costs no database read."""
        return member_id in self._kept and not self._privacy.is_private_now(member_id)

    async def refresh_member(self, member_id: int) -> None:
        """Read again whether the member's plays are kept (after /autopost me, /privacy)."""
        storage = self._storage
        link = await storage.links.get_link(member_id)
        keep = (
            (link is not None and link.status == "active")
            or await storage.settings.get_autopost_opt_in_anywhere(member_id) is True
            or await storage.privacy.get_visibility_choice(member_id) == "server"
        )
        if keep:
            self._kept.add(member_id)
        else:
            self._kept.discard(member_id)

    async def note_member(
        self, guild_id: int, member_id: int, *, only_if_logged: bool = True
    ) -> None:
        """The member was seen in the server: their plays count there. Never for a private
        member; with ``only_if_logged`` only for members whose plays are kept (a command such
        as /link, run before linking, passes False so the plays that follow count there)."""
        if self.roster.seen_lately(guild_id, member_id) or self._privacy.is_private_now(member_id):
            return
        if only_if_logged and not self.keeps_plays_of(member_id):
            return
        await self.roster.note(guild_id, member_id)

    # --- forgetting -----------------------------------------------------------------------

    async def member_went_private(self, member_id: int) -> None:
        """Private: nothing kept, nothing shown. (The decision is read on every observation.)"""
        self._forget_in_memory(member_id)
        removed = await self._storage.listening.delete_plays(member_id)
        log.info("listening log: deleted %d plays of a member who chose private", removed)

    def member_unlinked(self, member_id: int) -> None:
        """/unlink: the storage deleted the plays with the link; forget what memory holds."""
        self._forget_in_memory(member_id)

    async def member_linked(self, member_id: int) -> None:
        self._kept.add(member_id)

    async def member_went_public(self, member_id: int) -> None:
        """A private member chose ``server`` again: that is an explicit opt-in."""
        await self.refresh_member(member_id)

    def _forget_in_memory(self, member_id: int) -> None:
        self._kept.discard(member_id)
        self._recorder.forget(member_id)
        self.now_listening.clear(member_id)
        self.roster.forget_member(member_id)

    # --- what the commands read ----------------------------------------------------------

    def listening_in(
        self, guild_id: int, is_member: Callable[[int], bool] | None = None
    ) -> list[NowEntry]:
        """Who in the server plays something now: members seen there (or that ``is_member``
        confirms, e.g. from the gateway's member cache), never private ones."""
        known = self.roster.members_of(guild_id)
        private = self._privacy.is_private_now

        def include(member_id: int) -> bool:
            if private(member_id):
                return False
            return member_id in known or (is_member is not None and is_member(member_id))

        return self.now_listening.listening(include, self._clock())

    async def recent(
        self, member_id: int, limit: int = 10, *, seen_in: int | None = None
    ) -> list[Play]:
        """The member's latest plays; with ``seen_in``, only when the member was seen in that
        server (the log answers nowhere else, whoever asks there)."""
        if seen_in is not None and not self.roster.knows(seen_in, member_id):
            return []
        return await self._storage.listening.recent_plays(member_id, limit=limit)


class PlaySources(Protocol):
    """Where plays are observed (the auto-poster: polls and statuses)."""

    def add_play_listener(self, listener: Callable[[int, CurrentlyPlaying, str], None]) -> None: ...

    def add_gap_listener(self, listener: Callable[[int, float], None]) -> None: ...


class AnswerSource(Protocol):
    """Where /np's answers come from (``bot.nowplaying.service.PlaybackService``)."""

    def add_listener(self, listener: Callable[[int, CurrentlyPlaying], None]) -> None: ...


def feed_listening_log(
    history: ListeningLog, events: MemberEvents, plays: PlaySources, answers: AnswerSource
) -> None:
    """Everything the log hears: who links, unlinks or changes visibility (here or in another
    process), every play the auto-poster observes, the stretches it could not watch, and every
    /np answer."""
    events.on("linked", history.member_linked)
    events.on("unlinked", history.member_unlinked)
    events.on("private", history.member_went_private)
    events.on("public", history.member_went_public)
    feed = AutopostFeed(history)
    plays.add_play_listener(feed.on_play)
    plays.add_gap_listener(feed.on_gap)
    answers.add_listener(feed.on_np)


class AutopostFeed:
    """Hands the auto-poster's and /np's observations to the log. A member's first poll after
    start also fills the gap since their latest logged play (the bot was not running)."""

    def __init__(self, history: ListeningLog) -> None:
        self._history = history
        self._polled: set[int] = set()

    def on_play(self, member_id: int, playback: CurrentlyPlaying, source: str) -> None:
        first_poll = source == "spotify" and member_id not in self._polled
        if first_poll:
            self._polled.add(member_id)
        self._history.observe_soon(member_id, playback, source=source, catch_up=first_poll)

    def on_gap(self, member_id: int, since: float) -> None:
        self._history.gaps.soon(member_id, since)

    def on_np(self, member_id: int, current: CurrentlyPlaying) -> None:
        self._history.observe_soon(member_id, current, source="np")
