"""Writing plays into the listening log once each, and filling what nobody watched from
Spotify's recently-played (the rules are in ``bot.listening.log``'s module docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from bot.errors import SpotifyError
from bot.listening.fills import FillPlan, Listening
from bot.spotify.models import CurrentlyPlaying, NothingPlaying, Playback, PlayedTrack, Track
from bot.storage import ListeningStore, Play

log = logging.getLogger(__name__)

MATCH_WINDOW = 10.0  # seconds two observations of one play's start may differ
FLUSH_DELAY = 0.25  # plays observed within this are written in one transaction
FILL_TICK = 300.0  # seconds between two looks at whose recently-played is due

# (member id, only plays after this Unix time in ms or None) -> recently-played, newest first
RecentlyPlayedFetch = Callable[[int, int | None], Awaitable[Sequence[PlayedTrack]]]


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


def listening_state(playback: CurrentlyPlaying) -> Listening:
    """A poll's answer as the fill plan sees it: a track playing, nothing at all, or else
    (paused, an episode, an ad: no track play is piling up, and none has ended)."""
    if isinstance(playback, NothingPlaying):
        return "stopped"
    if isinstance(playback, Playback) and playback.is_playing and isinstance(playback.item, Track):
        return "playing"
    return "paused"


class PlayRecorder:
    """Writes plays once: the member's last logged play in memory (repeated observations of
    one play cost no database round trip) and the same-play check in the database. ``record``
    writes one play now; ``add`` batches plays into one transaction per ``FLUSH_DELAY``."""

    def __init__(
        self,
        storage: ListeningStore,
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
    """Recently-played into the log: once per stretch of a polled member's listening
    (``fills.FillPlan``), per member after a restart, and for /recent; each entry matched to a
    logged play by its ``played_at`` (see the module)."""

    def __init__(
        self,
        storage: ListeningStore,
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
        self.plan = FillPlan()

    def polled(self, member_id: int, playback: CurrentlyPlaying) -> None:
        """What a poll found: ask recently-played in the background when the plan says so."""
        if self._recently_played is None or not self._keeps(member_id):
            return
        at = self._clock()
        after = self.plan.observe(member_id, at, listening_state(playback))
        if after is not None:
            self._spawn(self._planned(member_id, after, at), "listening-log-fill")

    def tick(self) -> None:
        """Ask for the members whose listening may have piled up, however rarely the
        poller looks at them (every ``FILL_TICK`` seconds)."""
        if self._recently_played is None:
            return
        at = self._clock()
        for member_id, after in self.plan.due(at):
            if self._keeps(member_id):
                self._spawn(self._planned(member_id, after, at), "listening-log-fill")
            else:
                self.plan.forget(member_id)

    async def _planned(self, member_id: int, after: float, at: float) -> None:
        try:
            items = await self._fetch(member_id, after)
            if items is not None:
                await self.absorb(member_id, items)
        except Exception:
            log.exception("listening log: could not fill the log of member %s", member_id)
            items = None
        if items is None:
            self.plan.failed(member_id, at)
        else:
            self.plan.asked(member_id, at, [item.played_at for item in items])

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
        items = await self._fetch(member_id, since)
        return 0 if items is None else await self.absorb(member_id, items)

    async def _fetch(self, member_id: int, since: float) -> Sequence[PlayedTrack] | None:
        """One recently-played call for plays after ``since`` (None: Spotify did not
        answer, or the member's plays are not kept)."""
        if self._recently_played is None or not self._keeps(member_id):
            return None
        try:
            return await self._recently_played(member_id, int(since * 1000))
        except SpotifyError as exc:  # missing scope, 429, Spotify down: the gap stays
            log.debug("listening log: no recently-played for member %s (%s)", member_id, exc)
            return None

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
