"""Who is listening right now: the last observation of each member, from any source.

No Spotify call: /listening is built from what the bot already saw (presence, the auto-poster's
checks, /np). An entry ends when the member stops or pauses, or when its track's time is up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.spotify.models import CurrentlyPlaying, Playback, Track

ENDED_SLACK = 5.0  # a play whose track should have ended this long ago is no longer "now"


def started_at(playback: Playback) -> float:
    progress = (playback.progress_ms or 0) / 1000.0
    return playback.received_at - progress


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
        started = started_at(playback)
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
