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

Kind = tuple[SpotifyService, Purpose]
# (minute, service, purpose, calls): the calls of one kind in one minute (Unix time // 60)
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
        self._stored: dict[int, dict[Kind, int]] = {}  # minute -> (service, purpose) -> calls
        self._pending: dict[int, dict[Kind, int]] = {}  # counted here, not written yet
        self._api: dict[int, int] = {}  # minute -> Web API calls, stored and pending
        self._minutes: list[int] = []  # the keys of _api, oldest first
        self._api_total = 0

    # --- counting ----------------------------------------------------------------------------

    def add(self, now: float, service: SpotifyService, purpose: Purpose) -> None:
        minute = minute_of(now)
        _add(self._pending, minute, (service, purpose), 1)
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
        pending, self._pending = self._pending, {}
        rows: list[CallRow] = []
        for minute, kinds in pending.items():
            for (service, purpose), calls in kinds.items():
                _add(self._stored, minute, (service, purpose), calls)
                rows.append((minute, service, purpose, calls))
        return rows

    def put_back(self, rows: Iterable[CallRow]) -> None:
        """A write failed: count these again with the next one."""
        for minute, service, purpose, calls in rows:
            _add(self._stored, minute, (service, purpose), -calls)
            _add(self._pending, minute, (service, purpose), calls)

    def load(self, rows: Iterable[CallRow], since: int | None = None) -> None:
        """What the database holds now (every process's calls): of every minute, or of the
        minutes from ``since`` on (the older ones stay as last read). Pending calls stay."""
        if since is None:
            self._stored = {}
            self._api, self._minutes, self._api_total = {}, [], 0
        else:
            for minute in [m for m in self._stored if m >= since]:
                del self._stored[minute]
            while self._minutes and self._minutes[-1] >= since:
                self._api_total -= self._api.pop(self._minutes.pop())
        stored = self._stored
        for minute, service, purpose, calls in rows:
            _add(stored, minute, (service, purpose), calls)
        for source in (self._stored, self._pending):
            for minute, kinds in source.items():
                if since is not None and minute < since:
                    continue
                calls = sum(n for (kind, _), n in kinds.items() if kind == "api")
                if calls:
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
        for source in (self._stored, self._pending):
            for minute, kinds in source.items():
                if minute >= oldest:
                    for (kind, purpose), calls in kinds.items():
                        if kind == service:
                            counts[purpose] += calls
        return +counts  # without the purposes at zero


def _add(counts: dict[int, dict[Kind, int]], minute: int, kind: Kind, calls: int) -> None:
    kinds = counts.get(minute)
    if kinds is None:
        counts[minute] = kinds = {}
    kinds[kind] = kinds.get(kind, 0) + calls


__all__ = [
    "MINUTE",
    "WINDOW",
    "CallRow",
    "Kind",
    "RollingCounts",
    "leaves_at",
    "minute_of",
    "oldest_minute",
]
