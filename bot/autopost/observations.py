"""What one currently-playing check found, in the few shapes the scheduler plans by.

The poll loop maps Spotify's answer (or the exception) to an :data:`Observation` and hands it
to ``PollScheduler.record``, which answers with a :class:`RecordResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import (
    InvalidGrant,
    LinkBroken,
    NotLinked,
    SpotifyNotRegistered,
    SpotifyRateLimited,
)
from bot.spotify.models import CurrentlyPlaying, Playback


@dataclass(frozen=True, slots=True)
class Playing:
    """Spotify shows an item. ``is_playing`` False means paused. ``duration_ms`` 0: unknown."""

    item_key: str
    progress_ms: int
    duration_ms: int
    is_playing: bool = True


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing playing (204), an ad, or an item we cannot show."""


@dataclass(frozen=True, slots=True)
class TransientError:
    """The check failed in a way worth retrying: 5xx, timeout, a 401 that survived a refresh."""


@dataclass(frozen=True, slots=True)
class RateLimited:
    """Spotify answered 429: hold every poll until ``retry_at`` (monotonic seconds)."""

    retry_at: float
    quota_exceeded: bool = False


@dataclass(frozen=True, slots=True)
class Gone:
    """Stop following the member: link broken, not on the allow-list, unlinked, opted out."""


Observation = Playing | Idle | TransientError | RateLimited | Gone


def observation_from_playback(current: CurrentlyPlaying) -> Observation:
    """Map a parsed currently-playing answer to what the scheduler needs."""
    if not isinstance(current, Playback) or current.item is None:
        return Idle()
    progress = current.progress_ms
    duration = current.item.duration_ms if progress is not None else 0
    return Playing(
        item_key=current.item.key,
        progress_ms=max(0, progress or 0),
        duration_ms=max(0, duration),
        is_playing=current.is_playing,
    )


def observation_from_error(error: BaseException) -> Observation:
    """Map an exception from a currently-playing check: permanent ones stop the polling."""
    if isinstance(error, SpotifyRateLimited):
        return RateLimited(retry_at=error.retry_at, quota_exceeded=error.quota_exceeded)
    if isinstance(error, InvalidGrant | LinkBroken | NotLinked | SpotifyNotRegistered):
        return Gone()
    return TransientError()


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What ``record`` decided.

    ``next_check_at`` is None when the member is no longer scheduled (``Gone``, or removed while
    its check was in flight). ``unseen_since`` is set when the answer shows a change and the
    time nobody looked before it began is at least ``min_counted_play``: a whole play may have
    gone unseen, so the poster should fetch recently-played after that (monotonic) time.
    """

    next_check_at: float | None
    unseen_since: float | None = None
