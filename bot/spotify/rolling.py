"""Spotify calls per minute over the last 24 hours, by service and purpose.

What the daily budget counts: the rows the database holds (every process's calls, as last
read) plus the calls this process sent since, not written yet. Spotify's window rolls, so a
minute's calls leave it 24 hours after the minute ends (counted a little longer than Spotify
might, never shorter). The Web API total is kept up to date as calls arrive and minutes leave,
so asking for it costs no more than dropping the minutes that just left.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable

from bot.spotify.http import Purpose, SpotifyService

WINDOW = 86_400.0  # Spotify's rolling window: 24 hours
MINUTE = 60

# (minute, service, purpose): calls in that minute (minute = Unix time // 60)
CallKey = tuple[int, SpotifyService, Purpose]
CallRow = tuple[int, SpotifyService, Purpose, int]


def minute_of(now: float) -> int:
    return math.floor(now / MINUTE)


def leaves_at(minute: int) -> float:
    """When a minute's calls have all left the rolling window."""
    return (minute + 1) * MINUTE + WINDOW


def oldest_minute(now: float) -> int:
    """The oldest minute that still has calls in the window at ``now``."""
    return minute_of(now - WINDOW)


class RollingCounts:
    """The calls of the last 24 hours: stored (read back from the database) and pending."""

    def __init__(self) -> None:
        self._stored: dict[CallKey, int] = {}
        self._pending: Counter[CallKey] = Counter()
        self._api: dict[int, int] = {}  # minute -> Web API calls, stored and pending
        self._minutes: list[int] = []  # the keys of _api, oldest first
        self._api_total = 0

    # --- counting ----------------------------------------------------------------------------

    def add(self, now: float, service: SpotifyService, purpose: Purpose) -> None:
        minute = minute_of(now)
        self._pending[minute, service, purpose] += 1
        if service == "api":
            self._add_api(minute, 1)

    def _add_api(self, minute: int, calls: int) -> None:
        if minute not in self._api:
            if not self._minutes or minute > self._minutes[-1]:
                self._minutes.append(minute)
            else:  # a clock set back, or a row read late: rare
                bisect.insort(self._minutes, minute)
            self._api[minute] = 0
        self._api[minute] += calls
        self._api_total += calls

    def _prune(self, now: float) -> None:
        oldest = oldest_minute(now)
        minutes = self._minutes
        while minutes and minutes[0] < oldest:
            self._api_total -= self._api.pop(minutes.pop(0))

    # --- the database ------------------------------------------------------------------------

    def take_pending(self) -> list[CallRow]:
        """What this process counted since the last write, to write now."""
        rows = [
            (minute, service, purpose, n) for (minute, service, purpose), n in self._pending.items()
        ]
        self._pending = Counter()
        for minute, service, purpose, calls in rows:
            key = (minute, service, purpose)
            self._stored[key] = self._stored.get(key, 0) + calls
        return rows

    def put_back(self, rows: Iterable[CallRow]) -> None:
        """A write failed: count these again with the next one."""
        for minute, service, purpose, calls in rows:
            key = (minute, service, purpose)
            self._stored[key] = self._stored.get(key, 0) - calls
            self._pending[key] += calls

    def load(self, rows: Iterable[CallRow]) -> None:
        """What the database holds now (every process's calls); the pending ones stay."""
        self._stored = {(minute, service, purpose): n for minute, service, purpose, n in rows}
        self._api = {}
        self._minutes = []
        self._api_total = 0
        for (minute, service, _), calls in [*self._stored.items(), *self._pending.items()]:
            if service == "api":
                self._add_api(minute, calls)

    # --- reading -----------------------------------------------------------------------------

    def api_calls(self, now: float) -> int:
        """Web API calls in the 24 hours before ``now``."""
        self._prune(now)
        return self._api_total

    def freed_within(self, now: float, seconds: float) -> int:
        """Web API calls that leave the window within ``seconds`` from ``now``."""
        self._prune(now)
        freed = 0
        for minute in self._minutes:
            if leaves_at(minute) > now + seconds:
                break
            freed += self._api[minute]
        return freed

    def falls_below(self, limit: float, now: float) -> float:
        """When the Web API count falls below ``limit`` by calls leaving (``now`` if it is
        below already; ``now`` plus a day when nothing could ever be below it)."""
        total = self.api_calls(now)
        if total < limit:
            return now
        if limit <= 0:
            return now + WINDOW
        to_leave = total - limit + 1
        for minute in self._minutes:
            to_leave -= self._api[minute]
            if to_leave <= 0:
                return leaves_at(minute)
        return now + WINDOW  # not reached: the minutes hold the whole total

    def by_purpose(self, now: float, service: SpotifyService = "api") -> Counter[Purpose]:
        """Calls to ``service`` in the last 24 hours, by purpose (reports: not per call)."""
        oldest = oldest_minute(now)
        counts: Counter[Purpose] = Counter()
        for (minute, row_service, purpose), calls in [
            *self._stored.items(),
            *self._pending.items(),
        ]:
            if row_service == service and minute >= oldest:
                counts[purpose] += calls
        return counts


__all__ = [
    "MINUTE",
    "WINDOW",
    "CallKey",
    "CallRow",
    "RollingCounts",
    "leaves_at",
    "minute_of",
    "oldest_minute",
]
