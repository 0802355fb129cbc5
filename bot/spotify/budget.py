"""The daily budget of Spotify Web API calls (``SPOTIFY_DAILY_BUDGET``): counted, shared, held.

Spotify counts a development-mode app's Web API calls over a rolling 24 hours, per developer
account, publishes no number, and once the quota is gone answers 429 ``QUOTA_EXCEEDED`` with a
Retry-After of hours (``docs/spotify.md``). So the bot counts every Web API attempt itself
(:class:`~bot.spotify.rolling.RollingCounts`, written to the database by
``bot.shards.budget.BudgetSync``: a restart does not reset it and every process shares it) and
spends at most the *effective budget* in any 24 hours:

* the setting (0: no daily limit), or less once Spotify refused before it: when the count
  covered a full 24 hours, 90 % of the calls counted before the refusal (never below a quarter
  of the setting: another app of the same developer is the likely cause then, an ERROR says
  so), rising 10 % a day back to the setting after 7 days without a refusal;
* commands keep a reserve, 15 % of it and at least 50 calls, that polling (and the listening
  log's recently-played) never touches; a command may also use the rest;
* after ``QUOTA_EXCEEDED`` nothing is sent until the later of Retry-After and the moment the
  rolling count falls under the effective budget: the time every answer names.

Everything here answers from memory, so the sender asks before every attempt and the poll
scheduler on every turn. Token requests (the accounts service) are counted apart and reported,
never limited.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from bot.errors import SpotifyDailyLimit
from bot.spotify.http import Purpose, SpotifyService
from bot.spotify.rolling import WINDOW, CallRow, RollingCounts

log = logging.getLogger(__name__)

RESERVE_SHARE: Final = 0.15
RESERVE_MIN: Final = 50
LEARN_SHARE: Final = 0.9  # of the calls counted in the 24 h before a refusal
LEARN_FLOOR_SHARE: Final = 0.25  # of the setting: a learned budget never goes below it
RISE_AFTER_DAYS: Final = 7  # without a refusal, then the learned budget rises
RISE_PER_DAY: Final = 1.10
DAY: Final = 86_400.0
# May use the commands' reserve: a member is waiting for the answer.
COMMAND_PURPOSES: Final[frozenset[Purpose]] = frozenset({"command", "linking"})

BudgetState = Literal["ok", "budget_spent", "quota_spent"]
# Hears the quota state a QUOTA_EXCEEDED just made, to write it to the database at once.
RefusalListener = Callable[["QuotaState"], None]


@dataclass(frozen=True, slots=True)
class QuotaState:
    """What is kept beside the counts (Unix times), per Spotify client id."""

    counting_since: float | None = None  # the first call counted (what "a full 24 h" needs)
    hold_until: float = 0.0  # Retry-After of the last QUOTA_EXCEEDED
    learned: int | None = None  # the budget learned from that refusal
    learned_at: float | None = None


def reserve_for(budget: float) -> int:
    """Calls kept for commands out of an effective ``budget``."""
    return max(RESERVE_MIN, math.ceil(RESERVE_SHARE * budget))


class DailyBudget:
    """The count, the effective budget and the hold; the sender's ``CallBudget`` and the
    poller's ``DailyAllowance``."""

    def __init__(
        self,
        setting: int,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.setting = setting
        self._clock = clock
        self._monotonic = monotonic
        self.counts = RollingCounts()
        self._quota = QuotaState()
        self._refusal_listeners: list[RefusalListener] = []

    # --- the effective budget ----------------------------------------------------------------

    @property
    def quota(self) -> QuotaState:
        return self._quota

    def effective(self, now: float | None = None) -> float:
        """The most Web API calls in any 24 hours now: ``math.inf`` for no daily limit."""
        now = self._clock() if now is None else now
        setting = math.inf if self.setting == 0 else float(self.setting)
        learned, learned_at = self._quota.learned, self._quota.learned_at
        if learned is None or learned_at is None:
            return setting
        days = math.floor((now - learned_at) / DAY)
        risen = learned * RISE_PER_DAY ** max(0, days - RISE_AFTER_DAYS + 1)
        return min(setting, float(math.floor(risen)))

    def is_learned(self, now: float | None = None) -> bool:
        """Whether a refusal made the effective budget smaller than the setting."""
        now = self._clock() if now is None else now
        setting = math.inf if self.setting == 0 else self.setting
        return self._quota.learned is not None and self.effective(now) < setting

    def hold_end(self, now: float | None = None) -> float:
        """When the QUOTA_EXCEEDED hold ends (the later of Retry-After and the moment the
        count falls under the effective budget); 0.0 when there is none."""
        now = self._clock() if now is None else now
        if self._quota.hold_until <= now:
            return 0.0
        return max(self._quota.hold_until, self.counts.falls_below(self.effective(now), now))

    def state(self) -> BudgetState:
        now = self._clock()
        if self._quota.hold_until > now:
            return "quota_spent"
        if self.counts.api_calls(now) >= self.effective(now):
            return "budget_spent"
        return "ok"

    # --- what the sender asks (CallBudget) -----------------------------------------------------

    def admit(self, purpose: Purpose) -> None:
        """Raise SpotifyDailyLimit when a Web API call for ``purpose`` may not go out now."""
        now = self._clock()
        if self._quota.hold_until > now:
            raise self._refusal(self.hold_end(now), now, "quota")
        budget = self.effective(now)
        if math.isinf(budget):
            return
        limit = budget if purpose in COMMAND_PURPOSES else budget - reserve_for(budget)
        if self.counts.api_calls(now) >= limit:
            raise self._refusal(self.counts.falls_below(limit, now), now, "budget")

    def count(self, service: SpotifyService, purpose: Purpose) -> None:
        now = self._clock()
        self.counts.add(now, service, purpose)
        if self._quota.counting_since is None:
            self._quota = replace(self._quota, counting_since=now)

    def quota_exceeded(self, retry_after: float) -> float:
        """Spotify answered QUOTA_EXCEEDED: hold, learn, and return when the hold ends."""
        now = self._clock()
        quota = self._quota
        before = max(0, self.counts.api_calls(now) - 1)  # the refused attempt is counted too
        learned, learned_at = quota.learned, quota.learned_at
        since = quota.counting_since
        if since is not None and now - since >= WINDOW:
            learned, learned_at = self._learn(before), now
        else:
            log.warning(
                "Spotify refused the Web API (QUOTA_EXCEEDED) after %d calls counted since %s; "
                "the count does not cover 24 hours yet, so SPOTIFY_DAILY_BUDGET stays as set",
                before,
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(since or now)) + " UTC",
            )
        self._quota = replace(
            quota,
            hold_until=max(quota.hold_until, now + retry_after),
            learned=learned,
            learned_at=learned_at,
        )
        for listener in self._refusal_listeners:
            try:
                listener(self._quota)
            except Exception:  # the database write failing must not change this answer
                log.exception("a daily budget listener failed")
        return self.hold_end(now)

    def _learn(self, before: int) -> int:
        setting = self.setting
        value = math.floor(LEARN_SHARE * before)
        floor = math.ceil(LEARN_FLOOR_SHARE * setting) if setting else 1
        if value < floor:
            log.error(
                "Spotify refused the Web API (QUOTA_EXCEEDED) after only %d calls in 24 hours, "
                "far under SPOTIFY_DAILY_BUDGET=%d: another app of the same Spotify developer "
                "account probably spends the same quota. The bot keeps to %d a day meanwhile",
                before,
                setting,
                floor,
            )
            return floor
        if setting:
            value = min(value, setting)
        log.warning(
            "Spotify refused the Web API (QUOTA_EXCEEDED) after %d calls in 24 hours: the bot "
            "now spends at most %d a day (SPOTIFY_DAILY_BUDGET=%d), rising again after %d days "
            "without a refusal",
            before,
            value,
            setting,
            RISE_AFTER_DAYS,
        )
        return value

    def _refusal(self, until: float, now: float, reason: str) -> SpotifyDailyLimit:
        left = max(0.0, until - now)
        return SpotifyDailyLimit(left, self._monotonic() + left, until=until, reason=reason)

    # --- what the poller asks (DailyAllowance) -------------------------------------------------

    def polling_left(self) -> float:
        """Web API calls polling may still make now in the rolling 24 h: the effective
        budget, less the command reserve, less every call counted in the last 24 h (all
        purposes); 0 while a hold lasts; ``math.inf`` when there is no daily limit."""
        now = self._clock()
        if self._quota.hold_until > now:
            return 0.0
        budget = self.effective(now)
        if math.isinf(budget):
            return math.inf
        return float(max(0, budget - reserve_for(budget) - self.counts.api_calls(now)))

    def freed_within(self, seconds: float) -> int:
        """How many of the calls counted in the window leave it (their 24 h are up) within
        the next ``seconds``: the room that opens by itself."""
        return self.counts.freed_within(self._clock(), seconds)

    # --- reports -------------------------------------------------------------------------------

    def calls_by_purpose(self, service: SpotifyService = "api") -> Counter[Purpose]:
        return self.counts.by_purpose(self._clock(), service)

    def hold_seconds(self) -> float:
        end = self.hold_end()
        return max(0.0, end - self._clock()) if end else 0.0

    # --- the database (BudgetSync) -----------------------------------------------------------

    def add_refusal_listener(self, listener: RefusalListener) -> None:
        """``listener(state)`` hears each QUOTA_EXCEEDED at once (to write it); no blocking."""
        self._refusal_listeners.append(listener)

    def load(self, rows: list[CallRow], quota: QuotaState, *, since: int | None = None) -> None:
        """What the database holds now: every process's counts (of the minutes from ``since``
        on, when given) and the shared quota state. A hold or a count this process started
        and has not written yet is kept."""
        self.counts.load(rows, since)
        mine = self._quota
        starts = [t for t in (quota.counting_since, mine.counting_since) if t is not None]
        newer = mine.learned_at is not None and (
            quota.learned_at is None or mine.learned_at > quota.learned_at
        )
        self._quota = replace(
            mine if newer else quota,
            counting_since=min(starts) if starts else None,
            hold_until=max(quota.hold_until, mine.hold_until),
        )


__all__ = [
    "COMMAND_PURPOSES",
    "RESERVE_MIN",
    "BudgetState",
    "DailyBudget",
    "QuotaState",
    "reserve_for",
]
