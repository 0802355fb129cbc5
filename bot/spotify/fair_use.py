"""Fair use per member: no member's commands take Spotify from everyone else.

Commands never wait for the bot-wide budgets (a member is waiting for the answer), so one
member sending /np in a loop used to spend a call each time: 400 in 20 s, and the auto-poster
of everyone else starved behind them. Before a command's Web API call (and its token refresh)
the *asking* member is checked here:

* at most ``PER_MINUTE`` commands that call Spotify in any 60 seconds;
* at most ``DAILY_SHARE`` of the effective daily budget (``bot.spotify.budget``) in any 24
  hours, so that the day's calls cannot go to one member (none with no daily limit).

Beyond either, :class:`~bot.errors.MemberSpotifyLimit` carries the words (when to try again, as
Discord timestamps) and no call is made. An answer from a Discord status costs no call and is
never counted; nor are the auto-poster's polls or /link. The counts live in this process's
memory: a restart forgets them, and with several processes each counts the commands it
answers (a member's commands in one server always reach the same process).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from bot.errors import (
    DecryptionError,
    LinkBroken,
    MemberSpotifyLimit,
    NotLinked,
    SpotifyDailyLimit,
)

PER_MINUTE: Final = 5
MINUTE: Final = 60.0
DAILY_SHARE: Final = 0.10
DAY: Final = 86_400.0
SWEEP_EVERY: Final = 1_000  # commands between sweeps of members not heard from in a day
# Raised before any request left: the command did not call Spotify after all, and is not counted.
NOT_SENT: Final = (NotLinked, LinkBroken, DecryptionError, SpotifyDailyLimit)


@dataclass(frozen=True, slots=True)
class FairUseLimits:
    per_minute: int = PER_MINUTE  # commands that call Spotify in any 60 s
    daily_share: float = DAILY_SHARE  # of the effective daily budget, in any 24 h


class FairUse:
    """Counts each member's Spotify-calling commands (:meth:`command` around each)."""

    def __init__(
        self,
        daily_budget: Callable[[], float],
        limits: FairUseLimits = FairUseLimits(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._daily_budget = daily_budget  # the effective budget now: math.inf for no limit
        self._per_minute = limits.per_minute
        self._daily_share = limits.daily_share
        self._clock = clock
        self._asked: dict[int, deque[float]] = {}  # member -> their commands' times, 24 h
        self._since_sweep = 0

    def daily_share(self) -> int | None:
        """The most commands a member may send to Spotify in 24 h now (None: no limit)."""
        budget = self._daily_budget()
        if math.isinf(budget):
            return None
        return max(1, math.floor(self._daily_share * budget))

    def before_command(self, member_id: int) -> None:
        """Count a command of ``member_id`` about to call Spotify, or raise MemberSpotifyLimit
        (nothing counted) when they have used their minute or their day."""
        now = self._clock()
        share = self.daily_share()
        horizon = MINUTE if share is None else DAY
        times = self._asked.get(member_id)
        if times is None:
            times = self._asked[member_id] = deque()
        while times and times[0] <= now - horizon:
            times.popleft()
        last_minute = 0
        for at in reversed(times):
            if at <= now - MINUTE:
                break
            last_minute += 1
        if last_minute >= self._per_minute:
            oldest = times[len(times) - self._per_minute]
            raise MemberSpotifyLimit(oldest + MINUTE, reason="minute", limit=self._per_minute)
        if share is not None and len(times) >= share:
            oldest = times[len(times) - share]
            raise MemberSpotifyLimit(oldest + DAY, reason="day", limit=share)
        times.append(now)
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._sweep(now)

    @contextmanager
    def command(self, member_id: int) -> Iterator[None]:
        """Around a command's Web API call for ``member_id`` (the asking member): checked and
        counted on entry; not counted after all when it ended before any request left (not
        linked, a broken link, the bot-wide daily budget spent)."""
        self.before_command(member_id)
        try:
            yield
        except NOT_SENT:
            self._not_sent(member_id)
            raise

    def _not_sent(self, member_id: int) -> None:
        times = self._asked.get(member_id)
        if times:
            times.pop()

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        quiet = [m for m, times in self._asked.items() if not times or times[-1] <= now - DAY]
        for member_id in quiet:
            del self._asked[member_id]


__all__ = ["DAILY_SHARE", "PER_MINUTE", "FairUse", "FairUseLimits"]
