"""A daily Web API budget in memory, for the poller's tests and the quota benchmark.

It keeps the ``DailyAllowance`` contract of ``bot/autopost/ports.py`` exactly: calls are counted
per minute of its clock (Unix seconds) and a minute's calls leave the rolling 24 hours one day
after the minute ends; polling may spend the effective budget less the commands' reserve (15 %,
at least 50) less every call counted; nothing while a QUOTA_EXCEEDED hold lasts. A refusal
teaches a smaller budget when the count covered a full day: 90 % of the calls counted before
it, never under a quarter of the setting; the hold lasts until the later of Retry-After and the
moment the count falls under the effective budget.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable

DAY = 86_400.0
MINUTE = 60.0
POLLING = frozenset({"poll", "recently_played"})  # purposes that never touch the reserve


def reserve_for(budget: float) -> int:
    return max(50, math.ceil(0.15 * budget))


class RollingAllowance:
    """``polling_left`` and ``freed_within`` over calls counted per minute, and the refusal
    rules of the daily budget. ``setting`` 0: no daily limit."""

    def __init__(
        self, setting: int, clock: Callable[[], float], *, counting_since: float | None = None
    ) -> None:
        self.setting = setting
        self._clock = clock
        self._minutes: deque[list[int]] = deque()  # [minute, calls], oldest first
        self._total = 0  # the calls of those minutes
        self.by_purpose: Counter[str] = Counter()  # every call ever counted, for reports
        self.counting_since = counting_since
        self.learned: int | None = None
        self.hold_until = 0.0

    # -- counting -----------------------------------------------------------------------------

    def count(self, purpose: str = "poll", calls: int = 1) -> None:
        now = self._clock()
        minute = math.floor(now / MINUTE)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += calls
        else:
            self._minutes.append([minute, calls])
        self._total += calls
        self.by_purpose[purpose] += calls
        if self.counting_since is None:
            self.counting_since = now

    def calls(self) -> int:
        """Calls in the rolling 24 hours now."""
        self._prune(self._clock())
        return self._total

    def effective(self) -> float:
        setting = math.inf if self.setting == 0 else float(self.setting)
        return setting if self.learned is None else min(setting, float(self.learned))

    # -- the contract -------------------------------------------------------------------------

    def polling_left(self) -> float:
        now = self._clock()
        if self.hold_until > now:
            return 0.0
        budget = self.effective()
        if math.isinf(budget):
            return math.inf
        return float(max(0, budget - reserve_for(budget) - self.calls()))

    def freed_within(self, seconds: float) -> int:
        now = self._clock()
        self._prune(now)
        freed = 0
        for minute, calls in self._minutes:
            if _leaves_at(minute) > now + seconds:
                break
            freed += calls
        return freed

    # -- what the sender does with it ---------------------------------------------------------

    def refused_until(self, purpose: str) -> float | None:
        """When a call for ``purpose`` could go out, if it may not now (the sender refuses)."""
        now = self._clock()
        if self.hold_until > now:
            return self.hold_end()
        budget = self.effective()
        if math.isinf(budget):
            return None
        limit = budget - reserve_for(budget) if purpose in POLLING else budget
        if self.calls() < limit:
            return None
        return self._falls_below(limit)

    def quota_exceeded(self, retry_after: float) -> float:
        """Spotify answered QUOTA_EXCEEDED (the refused call was counted): hold and learn."""
        now = self._clock()
        before = max(0, self.calls() - 1)
        if self.counting_since is not None and now - self.counting_since >= DAY:
            floor = math.ceil(0.25 * self.setting) if self.setting else 1
            learned = max(floor, math.floor(0.9 * before))
            self.learned = min(learned, self.setting) if self.setting else learned
        self.hold_until = max(self.hold_until, now + retry_after)
        return self.hold_end()

    def hold_end(self) -> float:
        now = self._clock()
        if self.hold_until <= now:
            return 0.0
        return max(self.hold_until, self._falls_below(self.effective()))

    def _falls_below(self, limit: float) -> float:
        now = self._clock()
        self._prune(now)
        to_leave = self._total - limit + 1
        if to_leave <= 0:
            return now
        for minute, calls in self._minutes:
            to_leave -= calls
            if to_leave <= 0:
                return _leaves_at(minute)
        return now + DAY

    def _prune(self, now: float) -> None:
        while self._minutes and _leaves_at(self._minutes[0][0]) <= now:
            self._total -= self._minutes.popleft()[1]


def _leaves_at(minute: int) -> float:
    return (minute + 1) * MINUTE + DAY
