"""Each followed member's listening by hour of day, learned from the poller's own answers.

The daily pace (``pace.py``) plans a day of checks ahead, so it needs to know when each member
usually listens and when their sessions usually begin. Between two answers about a member the
profile adds the time that passed to that member's hours of the day (UTC) as watched, and as
listening when the member played (until the track's end at most, when the later answer shows
nothing); an answer showing a track after one showing nothing is a session start, put in the
hour the track began. Everything fades with a half-life of days, so habits that change are
followed within a week or two. Until a member's own hours say otherwise, a prior spread evenly
over the day (a few hours of listening, two sessions) fills in, weighted like one day of data.

Pure bookkeeping: times are passed in (Unix seconds), nothing reads a clock.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Collection
from dataclasses import dataclass, field

from bot.autopost.config import PaceConfig

HOUR = 3600.0
DAY = 86_400.0
_LONGEST_STRETCH = 7 * DAY  # a longer silence adds nothing: it says nothing about habits


def hour_of_day(at: float) -> int:
    """The hour of the day (UTC) of the Unix time ``at``."""
    return int(at // HOUR) % 24


@dataclass(slots=True, eq=False)
class _Hours:
    """One member: seconds watched, seconds listening and session starts per hour of day,
    and the last answer (when, playing or not, seconds of the track left)."""

    watched: array[float] = field(default_factory=lambda: array("d", bytes(8 * 24)))
    listening: array[float] = field(default_factory=lambda: array("d", bytes(8 * 24)))
    starts: array[float] = field(default_factory=lambda: array("d", bytes(8 * 24)))
    day: int = 0  # the day the figures were last faded to
    last_at: float | None = None
    last_playing: bool = False
    last_left: float = 0.0


class ListeningProfile:
    """When each member listens and starts listening, by hour of day. See the module."""

    def __init__(self, config: PaceConfig) -> None:
        self._config = config
        self._members: dict[int, _Hours] = {}
        self._fade_per_day = 0.5 ** (1.0 / config.half_life_days)
        prior_share = config.prior_listening_hours / 24.0
        self._prior_weight = config.prior_days * HOUR  # seconds of each hour the prior is worth
        self._prior_share = prior_share
        # Session starts per idle second: the prior's sessions over its idle hours.
        self._prior_hazard = config.prior_sessions / (DAY * (1.0 - prior_share))

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"listening profile": self._members}

    def note(
        self, member_id: int, at: float, *, playing: bool, left: float = 0.0, began: float = 0.0
    ) -> float:
        """An answer about the member at ``at``: ``playing`` (a track, not paused) with
        ``left`` seconds to go, having begun at ``began``. Returns the seconds of listening
        it added since the previous answer."""
        hours = self._members.get(member_id)
        if hours is None:
            hours = self._members[member_id] = _Hours(day=int(at // DAY))
        self._fade(hours, at)
        listened = 0.0
        last_at = hours.last_at
        if last_at is not None and last_at < at and at - last_at <= _LONGEST_STRETCH:
            _spread(hours.watched, last_at, at)
            if hours.last_playing:
                listened = at - last_at if playing else min(at - last_at, hours.last_left)
                _spread(hours.listening, last_at, last_at + listened)
            elif playing:  # nothing before, a track now: a session began
                hours.starts[hour_of_day(max(last_at, began))] += 1.0
        hours.last_at, hours.last_playing, hours.last_left = at, playing, max(0.0, left)
        return listened

    def pause(self, member_id: int) -> None:
        """Nobody watches the member for a while (a status covers them): the next answer
        starts a new stretch rather than counting the time in between."""
        hours = self._members.get(member_id)
        if hours is not None:
            hours.last_at = None

    def forget(self, member_id: int) -> None:
        self._members.pop(member_id, None)

    def listening_now(self, member_id: int) -> bool:
        """Whether the last answer about the member showed a track playing."""
        hours = self._members.get(member_id)
        return hours is not None and hours.last_at is not None and hours.last_playing

    def listening_share(self, member_id: int, hour: int) -> float:
        """The share of that hour of the day the member usually listens."""
        weight, share = self._prior_weight, self._prior_share
        hours = self._members.get(member_id)
        if hours is None:
            return share
        return (hours.listening[hour] + share * weight) / (hours.watched[hour] + weight)

    def start_hazard(self, member_id: int, hour: int) -> float:
        """Session starts per second of not listening, in that hour of the day."""
        hours = self._members.get(member_id)
        if hours is None:
            return self._prior_hazard
        idle_weight = self._prior_weight * (1.0 - self._prior_share)
        idle = max(0.0, hours.watched[hour] - hours.listening[hour])
        return (hours.starts[hour] + self._prior_hazard * idle_weight) / (idle + idle_weight)

    def _fade(self, hours: _Hours, at: float) -> None:
        day = int(at // DAY)
        if day <= hours.day:
            return
        factor = self._fade_per_day ** (day - hours.day)
        for figures in (hours.watched, hours.listening, hours.starts):
            for index in range(24):
                figures[index] *= factor
        hours.day = day


def _spread(figures: array[float], start: float, end: float) -> None:
    """Add the seconds from ``start`` to ``end`` to the hours of the day they fall in."""
    at = start
    while at < end:
        boundary = min(end, (math.floor(at / HOUR) + 1) * HOUR)
        figures[hour_of_day(at)] += boundary - at
        at = boundary


__all__ = ["DAY", "HOUR", "ListeningProfile", "hour_of_day"]
