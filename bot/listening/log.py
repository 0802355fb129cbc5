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
  there who are not private; /listening likewise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.aio.tasks import cancel_and_wait
from bot.errors import SpotifyError
from bot.spotify.models import CurrentlyPlaying, Playback, PlayedTrack, Track
from bot.storage import Play, Recap, Storage

log = logging.getLogger(__name__)

MATCH_WINDOW = 10.0  # seconds two observations of one play's start may differ
ENDED_SLACK = 5.0  # a play whose track should have ended this long ago is no longer "now"
PRUNE_EVERY = 3600.0
FLUSH_DELAY = 0.25  # plays observed within this are written in one transaction
RECAP_PERIODS: dict[str, float] = {"week": 7 * 86400.0, "month": 30 * 86400.0}

# (member id, only plays after this Unix time in ms or None) -> recently-played, newest first
RecentlyPlayedFetch = Callable[[int, int | None], Awaitable[Sequence[PlayedTrack]]]


class PrivacyView(Protocol):
    def is_private_now(self, user_id: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class NowEntry:
    """What a member plays now, as last observed."""

    member_id: int
    track_name: str
    artists: tuple[str, ...]
    url: str | None
    started_at: float
    ends_at: float | None
    source: str


class NowListening:
    """Who plays what right now, from observations only (no Spotify call). Entries end when
    the member stops, pauses, or the track's time is up."""

    def __init__(self) -> None:
        self._entries: dict[int, NowEntry] = {}

    def update(self, member_id: int, playback: CurrentlyPlaying) -> None:
        if not isinstance(playback, Playback) or playback.item is None or not playback.is_playing:
            self._entries.pop(member_id, None)
            return
        item = playback.item
        started = _started_at(playback)
        if isinstance(item, Track):
            artists = tuple(a.name for a in item.artists)
        else:
            artists = (item.show_name,) if item.show_name else ()
        ends = started + item.duration_ms / 1000.0 if item.duration_ms > 0 else None
        self._entries[member_id] = NowEntry(
            member_id, item.name, artists, item.url, started, ends, playback.source
        )

    def clear(self, member_id: int) -> None:
        self._entries.pop(member_id, None)

    def listening(self, include: Callable[[int], bool], now: float) -> list[NowEntry]:
        """Current entries of the members ``include`` accepts, newest start first; entries
        whose track has ended are dropped on the way."""
        current: list[NowEntry] = []
        for member_id, entry in list(self._entries.items()):
            if entry.ends_at is not None and now > entry.ends_at + ENDED_SLACK:
                del self._entries[member_id]
            elif include(member_id):
                current.append(entry)
        current.sort(key=lambda e: (-e.started_at, e.member_id))
        return current

    def __len__(self) -> int:
        return len(self._entries)


class GuildRoster:
    """Which members the bot has seen in which server (kept in the database)."""

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock
        self._members: dict[int, set[int]] = {}

    async def load(self) -> None:
        self._members = {}
        for guild_id, member_id in await self._storage.list_listening_guilds():
            self._members.setdefault(guild_id, set()).add(member_id)

    async def note(self, guild_id: int, member_id: int) -> None:
        members = self._members.setdefault(guild_id, set())
        if member_id in members:
            return
        members.add(member_id)  # before the await: concurrent notes write once
        await self._storage.note_listening_guild(guild_id, member_id, now=self._clock())

    def knows(self, guild_id: int, member_id: int) -> bool:
        return member_id in self._members.get(guild_id, ())

    def members_of(self, guild_id: int) -> frozenset[int]:
        return frozenset(self._members.get(guild_id, ()))

    async def forget(self, guild_id: int, member_id: int) -> None:
        self._members.get(guild_id, set()).discard(member_id)
        await self._storage.forget_listening_guild(guild_id, member_id)

    def forget_member(self, member_id: int) -> None:
        """Memory only: the storage deletes the rows with the member's plays."""
        for members in self._members.values():
            members.discard(member_id)


def _started_at(playback: Playback) -> float:
    progress = (playback.progress_ms or 0) / 1000.0
    return playback.received_at - progress


def play_from(member_id: int, track: Track, started_at: float, source: str) -> Play | None:
    """A log row for a track (None for local files: they have no track id)."""
    if track.id is None or track.is_local:
        return None
    cover = track.images[0].url if track.images else None
    return Play(
        discord_user_id=member_id,
        track_id=track.id,
        started_at=started_at,
        track_name=track.name,
        artists=tuple(a.name for a in track.artists),
        duration_ms=track.duration_ms,
        source=source,
        album_id=track.album_id,
        album_name=track.album_name,
        image_url=cover,
    )


class PlayRecorder:
    """Writes plays once: the member's last logged play in memory (repeated observations of
    one play cost no database round trip) and the same-play check in the database. ``record``
    writes one play now; ``add`` batches plays into one transaction per ``FLUSH_DELAY``."""

    def __init__(
        self,
        storage: Storage,
        keeps: Callable[[int], bool],
        is_private: Callable[[int], bool],
        spawn: Callable[[Awaitable[None], str], None],
    ) -> None:
        self._storage = storage
        self._keeps = keeps
        self._is_private = is_private
        self._spawn = spawn
        self._last: dict[int, tuple[str, float, float]] = {}  # track, start, seconds
        self._pending: list[tuple[Play, float, float]] = []
        self._flushing = False

    def seen(self, play: Play) -> bool:
        """The same play as the last one logged for the member."""
        last = self._last.get(play.discord_user_id)
        if last is None or last[0] != play.track_id:
            return False
        _, started, seconds = last
        return (
            started - MATCH_WINDOW
            <= play.started_at
            < started + max(seconds - MATCH_WINDOW, MATCH_WINDOW)
        )

    def _remember(self, play: Play) -> None:
        previous = self._last.get(play.discord_user_id)
        if previous is None or play.started_at >= previous[1]:
            self._last[play.discord_user_id] = (
                play.track_id,
                play.started_at,
                play.duration_ms / 1000.0,
            )

    def forget(self, member_id: int) -> None:
        self._last.pop(member_id, None)
        self._pending = [p for p in self._pending if p[0].discord_user_id != member_id]

    async def record(self, play: Play, match_from: float, match_to: float) -> bool:
        member_id = play.discord_user_id
        if not self._keeps(member_id):
            return False
        inserted = await self._storage.record_play(play, match_from=match_from, match_to=match_to)
        self._remember(play)
        if inserted and self._is_private(member_id):
            await self._storage.delete_plays(member_id)  # went private while we wrote
            return False
        return inserted

    def add(self, play: Play, match_from: float, match_to: float) -> None:
        self._remember(play)
        self._pending.append((play, match_from, match_to))
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush_soon(), "listening-log-flush")

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(FLUSH_DELAY)
            while self._pending:
                batch, self._pending = self._pending, []
                kept = [item for item in batch if self._keeps(item[0].discord_user_id)]
                await self._storage.record_plays(kept)
                for member_id in {p.discord_user_id for p, _, _ in kept}:
                    if self._is_private(member_id):  # went private while we wrote
                        await self._storage.delete_plays(member_id)
        except Exception:
            log.exception("listening log: could not record a batch of plays")
        finally:
            self._flushing = False


class GapFiller:
    """Recently-played into the log: one call per stretch nobody watched (and per member after
    a restart), each entry matched to a logged play by its ``played_at`` (see the module)."""

    def __init__(
        self,
        storage: Storage,
        recorder: PlayRecorder,
        keeps: Callable[[int], bool],
        recently_played: RecentlyPlayedFetch | None,
        spawn: Callable[[Awaitable[None], str], None],
        clock: Callable[[], float],
    ) -> None:
        self._storage = storage
        self._recorder = recorder
        self._keeps = keeps
        self._recently_played = recently_played
        self._spawn = spawn
        self._clock = clock

    def soon(self, member_id: int, since: float) -> None:
        """The poller could not watch the member since ``since`` (Unix time): fill it."""
        self._spawn(self._logged(self.fill(member_id, since), member_id), "listening-log-gap")

    def absorb_soon(self, member_id: int, items: Sequence[PlayedTrack]) -> None:
        """:meth:`absorb` in the background (a command answers first)."""
        self._spawn(self._logged(self.absorb(member_id, items), member_id), "listening-log-gap")

    @staticmethod
    async def _logged(work: Awaitable[int], member_id: int) -> None:
        try:
            await work
        except Exception:
            log.exception("listening log: could not fill a gap for member %s", member_id)

    async def fill(self, member_id: int, since: float) -> int:
        """One recently-played call for plays after ``since``; returns how many were new."""
        if self._recently_played is None or not self._keeps(member_id):
            return 0
        try:
            items = await self._recently_played(member_id, int(since * 1000))
        except SpotifyError as exc:  # missing scope, 429, Spotify down: the gap stays
            log.debug("listening log: no recently-played for member %s (%s)", member_id, exc)
            return 0
        return await self.absorb(member_id, items)

    async def catch_up(self, member_id: int) -> int:
        """After a restart: fill from the member's latest logged play on (if any)."""
        latest = await self._storage.latest_play_at(member_id)
        if latest is None or self._clock() - latest < 30.0:
            return 0
        return await self.fill(member_id, latest)

    async def absorb(self, member_id: int, items: Iterable[PlayedTrack]) -> int:
        """Log recently-played entries that match no logged play."""
        added = 0
        for item in items:
            seconds = item.track.duration_ms / 1000.0
            play = play_from(member_id, item.track, item.played_at - seconds, "recently_played")
            if play is None:
                continue
            if await self._recorder.record(
                play, item.played_at - seconds - MATCH_WINDOW, item.played_at + MATCH_WINDOW
            ):
                added += 1
        return added


class ListeningLog:
    """Records plays, answers what the commands need, fills gaps and prunes. See the module."""

    def __init__(
        self,
        storage: Storage,
        privacy: PrivacyView,
        *,
        keep_days: int,
        recently_played: RecentlyPlayedFetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.now_listening = NowListening()
        self.roster = GuildRoster(storage, clock)
        self._storage = storage
        self._privacy = privacy
        self._keep_days = keep_days
        self._clock = clock
        # Members whose plays are kept (linked, opted in): one int each, none for members
        # known only through presence who never opted in.
        self._kept: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder = PlayRecorder(
            storage, self.keeps_plays_of, privacy.is_private_now, self._spawn
        )
        self.gaps = GapFiller(
            storage,
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
            set(await storage.list_active_user_ids())
            | await storage.list_autopost_opted_in_user_ids()
            | await storage.list_explicit_server_user_ids()
        )
        await self.roster.load()
        await self.prune()
        self._spawn(self._prune_forever(), "listening-log-prune")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Until every recording started by ``observe_soon`` has finished (tests, benches)."""
        pending = [t for t in self._tasks if t.get_name() != "listening-log-prune"]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

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
        """Delete plays older than LISTENING_LOG_DAYS (every play when it is 0)."""
        cutoff = self._clock() - self._keep_days * 86400.0 if self.enabled else float("inf")
        removed = await self._storage.prune_plays(before=cutoff)
        if removed:
            log.info("listening log: deleted %d plays older than the retention", removed)
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
        started = _started_at(playback)
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
        link = await storage.get_link(member_id)
        keep = (
            (link is not None and link.status == "active")
            or await storage.get_autopost_opt_in_anywhere(member_id) is True
            or await storage.get_visibility_choice(member_id) == "server"
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
        if self.roster.knows(guild_id, member_id) or self._privacy.is_private_now(member_id):
            return
        if only_if_logged and not self.keeps_plays_of(member_id):
            return
        await self.roster.note(guild_id, member_id)

    # --- forgetting -----------------------------------------------------------------------

    async def member_went_private(self, member_id: int) -> None:
        """Private: nothing kept, nothing shown. (The decision is read on every observation.)"""
        self._forget_in_memory(member_id)
        removed = await self._storage.delete_plays(member_id)
        log.info("listening log: deleted %d plays of a member who chose private", removed)

    def member_unlinked(self, member_id: int) -> None:
        """/unlink: the storage deleted the plays with the link; forget what memory holds."""
        self._forget_in_memory(member_id)

    async def member_linked(self, member_id: int, *_: object) -> None:
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

    async def recent(self, member_id: int, limit: int = 10) -> list[Play]:
        return await self._storage.recent_plays(member_id, limit=limit)

    async def recap(
        self,
        guild_id: int,
        period: str,
        *,
        still_member: Callable[[int], bool] | None = None,
    ) -> Recap:
        """The server's top tracks and artists from members seen there who are not private
        (and, when the member cache can tell, still in the server)."""
        members = [
            m
            for m in self.roster.members_of(guild_id)
            if not self._privacy.is_private_now(m) and (still_member is None or still_member(m))
        ]
        since = self._clock() - RECAP_PERIODS[period]
        return await self._storage.recap(members, since=since)


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
