"""The poll budget: how many checks may start now, in the rolling window and in one second.

Pure bookkeeping on timestamps (the caller passes ``now``). Polls, the requests made outside
polling (``note``, interactive ``/np`` included) and the predicted-end checks among the polls
are kept in rolling logs; a 429 holds everything until its retry time.

Routine checks (skip checks, back-offs, first checks) stop short of the window's budget by a
fixed headroom that only predicted-end checks use: when routine checks fill the window, each
end check takes a slot of that headroom and the next request to leave the window goes back to
it rather than to a routine check, so end checks keep their latency until they alone would
fill the budget. Routine checks always keep ``min_routine_room`` of each window, and leave end
checks a share of each second's cap too. ``routine_room`` (what the stretch is sized by) is what
that leaves routine checks: the budget less the headroom, the requests from outside and the
end checks the last window made.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from bot.autopost.config import SchedulerConfig


class RequestLog(deque[float]):
    """Timestamps of the requests made in the last ``span`` seconds, oldest first.

    A request made at ``at`` is inside the span ending at ``now`` while ``at + span > now``.
    Every test uses that one expression, so the moment a request leaves (``at + span``) is
    exact: ``(at + 1.0) - 1.0`` need not equal ``at`` in floating point, and a loop woken at
    the computed moment must find the slot free.
    """

    __slots__ = ("span",)

    def __init__(self, span: float) -> None:
        super().__init__()
        self.span = span

    def add(self, now: float, count: int = 1) -> None:
        self.extend([now] * count)

    def prune(self, now: float) -> None:
        """Forget requests that have left the span ending at ``now``."""
        span = self.span
        while self and self[0] + span <= now:
            self.popleft()

    def leaves_at(self, index: int) -> float:
        """When the request at ``index`` (0: the oldest) leaves the span."""
        return self[index] + self.span


class PollBudget:
    """The rolling window, the per-second cap, the end checks' headroom and the 429 hold."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        # Derived figures, computed once: the loop asks for every wake-up.
        self._poll_budget = config.poll_budget
        self._per_second_cap = config.per_second_cap
        self._routine_per_second_cap = config.routine_per_second_cap
        self._polls = RequestLog(config.window)  # requests made by popping members
        self._recent_polls = RequestLog(1.0)  # the same, for the per-second cap
        self._others = RequestLog(config.window)  # requests reported through ``note``
        self._urgent_polls = RequestLog(config.window)  # predicted-end checks among the polls
        self._routine_polls = RequestLog(config.window)  # the other polls
        self._hold_until = -math.inf

    @property
    def held_until(self) -> float | None:
        """The end of the current app-wide hold, if one was ever set."""
        return None if self._hold_until == -math.inf else self._hold_until

    def hold_until(self, until: float) -> None:
        """Pause every poll until ``until`` (a 429's retry time). Holds only ever extend."""
        self._hold_until = max(self._hold_until, until)

    def note(self, now: float, count: int = 1) -> None:
        """Requests made outside polling: never refused, they only shrink what polls may use."""
        if count > 0:
            self._others.add(now, count)

    def spend(self, now: float, count: int, *, urgent: bool) -> None:
        """``count`` polls started at ``now``."""
        if count > 0:
            self._polls.add(now, count)
            self._recent_polls.add(now, count)
            (self._urgent_polls if urgent else self._routine_polls).add(now, count)

    def requests_in_window(self, now: float) -> int:
        """Requests (polls and noted ones) in the rolling window ending at ``now``."""
        self._prune(now)
        return len(self._polls) + len(self._others)

    def urgent_headroom(self, now: float) -> int:
        """Slots of the window routine checks leave to predicted-end checks."""
        return self.config.min_urgent_headroom

    def routine_room(self, now: float) -> float:
        """Slots per window routine checks can count on: the budget less the end checks'
        headroom, the requests noted from outside and the end checks of the last window."""
        self._prune(now)
        used = len(self._others) + len(self._urgent_polls)
        return max(self.config.min_routine_room, self._routine_limit - used)

    def routine_owed(self, now: float) -> int:
        """Slots of their floor routine checks have not used in the window ending at ``now``
        (requests noted from outside count as used; end checks do not)."""
        self._prune(now)
        used = len(self._routine_polls) + len(self._others)
        return max(0, self.config.min_routine_room - used)

    def allowance(self, now: float, *, urgent: bool = True) -> int:
        """How many polls may start at ``now`` without breaking the window or burst caps;
        ``urgent=False``: routine ones, which leave the end checks' headroom free."""
        if now < self._hold_until:
            return 0
        self._prune(now)
        total = len(self._polls) + len(self._others)
        in_window = self._poll_budget - total
        if not urgent:
            # However many end checks there are, routine checks keep their floor.
            floor = self.config.min_routine_room - len(self._routine_polls) - len(self._others)
            in_window = min(in_window, max(self._routine_limit - total, floor))
        in_second = self._second_cap(urgent) - len(self._recent_polls)
        return max(0, min(in_window, in_second))

    def frees_at(self, now: float, *, urgent: bool = True) -> float:
        """The earliest time from ``now`` on at which a poll may start (hold included).

        Without new requests the allowance only grows, so this is exact; it never prunes at a
        future time (that would forget requests still inside the window at ``now``).
        """
        self._prune(now)
        at = max(now, self._hold_until)
        window = self._frees_under(self._poll_budget, self._polls, self._others)
        if not urgent:
            below_limit = self._frees_under(self._routine_limit, self._polls, self._others)
            if below_limit > window:
                # Or: what is not an end check drops under the floor while the window has room.
                floor = self._frees_under(
                    self.config.min_routine_room, self._routine_polls, self._others
                )
                window = min(below_limit, max(window, floor))
            else:
                window = below_limit
        at = max(at, window)
        over = len(self._recent_polls) - self._second_cap(urgent) + 1
        if over > 0:
            at = max(at, self._recent_polls.leaves_at(over - 1))
        return at

    def _frees_under(self, limit: int, first: RequestLog, second: RequestLog) -> float:
        """When the requests of both logs in the window first number under ``limit``."""
        over = len(first) + len(second) - limit + 1
        if over <= 0:
            return -math.inf
        if not second or not first:  # one log (the usual case: nothing noted): index it
            return (first or second).leaves_at(over - 1)
        # Walk both logs oldest-first: the window frees once ``over`` requests leave it.
        for index, stamp in enumerate(heapq.merge(first, second), start=1):
            if index == over:
                return stamp + self.config.window
        return math.inf  # unreachable: limit is at least 1

    def _second_cap(self, urgent: bool) -> int:
        return self._per_second_cap if urgent else self._routine_per_second_cap

    @property
    def _routine_limit(self) -> int:
        """Polls plus noted requests in the window beyond which no routine check starts."""
        return max(
            self.config.min_routine_room, self._poll_budget - self.config.min_urgent_headroom
        )

    def _prune(self, now: float) -> None:
        self._polls.prune(now)
        self._recent_polls.prune(now)
        self._others.prune(now)
        self._urgent_polls.prune(now)
        self._routine_polls.prune(now)
