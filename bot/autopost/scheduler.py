"""When to ask Spotify about each followed member: pure scheduling logic for the auto-poster.

Nothing here sleeps, awaits, reads a clock or touches the network. Every method takes ``now``
(float seconds on a monotonic clock, ``time.monotonic()`` in production, a plain float in tests)
and randomness comes from the ``random.Random`` handed to the constructor, so a test drives the
scheduler with a fake clock and a seeded generator and gets the same answers every time.

How the I/O loop uses it (one background task for every followed member)::

    while True:
        wake = scheduler.next_wakeup(time.monotonic())       # None: nobody followed
        await wait_for(changed.wait(), timeout=...)           # sleep until ``wake`` or a change
        now = time.monotonic()
        for member_id in scheduler.pop_due(now, limit=free_request_slots):
            start a task: fetch currently-playing, then
            scheduler.record(member_id, observation, time.monotonic())   # always, even on error

``pop_due`` counts every member it returns as one Spotify request against the rolling budget.
Every *other* Web API request (an interactive ``/np``, the retry after a 401 refresh, a
recently-played backfill) must be reported with ``note_request`` so polling leaves room for it.
Interactive requests are never gated here: the scheduler only throttles its own polling, and it
keeps ``interactive_reserve`` of each window free so a member's ``/np`` never waits on polls.

The policy, with the defaults of ``SchedulerConfig`` and why they are what they are:

* A playing track is checked again at its predicted end (remaining time plus ``end_margin``),
  but never more than ``skip_check_interval`` after the previous check, so a skip is noticed.
  When the end is further away than one interval, the checks are spread evenly over the time
  left (``ceil(left / S)`` equal gaps) instead of ``S, S, ..., short rest``: same number of
  requests, shorter gaps, so skips are noticed sooner for the same cost.
* A check at the predicted end that still shows the old track (progress reported late,
  buffering) is repeated soon: ``recheck_after_stale``, doubling while it stays stale.
* Paused, idle (nothing playing, an ad, an unknown item) and failing members back off along a
  ladder of delays whose last step repeats (``paused_backoff``, ``idle_backoff``,
  ``error_backoff``). Any change of state starts the matching ladder from its first step,
  except that a member idle at its very first check starts at the idle ceiling.
* A track paused close to its end (but not within ``min_resume_check`` of it: a finished
  playlist) is checked by the time it could end after a resume, for the first
  ``resume_watch`` seconds of the pause, so the track after it is not seen a whole ladder
  step late.
* A 429 holds *all* polling until its ``retry_at`` (Spotify's quota 429s ask for hours).
* Polls never exceed ``budget_per_window - interactive_reserve`` requests in any rolling
  ``window`` (interactive requests included in the count), nor ``burst_factor`` times the
  average rate within one second.
* Predicted-end checks (and their stale rechecks) keep their latency until they alone would
  fill that budget: routine checks (skip checks, back-offs, first checks) stop short of it by
  a headroom (``urgent_headroom_fraction`` of the budget) that only end checks use, and leave
  them a share of each second's cap (``urgent_burst_fraction``); routine checks always keep
  ``min_routine_fraction``. So when the budget is short, skip checks stretch first: the
  scheduler keeps a running estimate of the routine request rate its members need (unstretched)
  and, when it exceeds ``target_utilisation`` of what routine checks may use (the budget less
  the headroom, the requests noted from outside and the end checks of the last window), it
  multiplies every routine delay by the ratio (``stretch``, also a metric). Predicted-end
  checks are never stretched and go first, so natural track changes stay fast under load;
  skips get slower.
  A skip check the budget still holds back at the item's predicted end comes out then, as the
  end check (each such member has a second heap entry for it).
* Members added together (the bot starting with thousands of followed members) get their first
  checks spread at the rate the budget allows, and every back-off delay is shortened by a
  small random fraction (``jitter_fraction``), so checks never bunch up in the same second.
  Checks of playing members need no jitter: each follows its own track's timing.

Under a daily budget of Web API calls (``SPOTIFY_DAILY_BUDGET``: a ``DailyAllowance`` handed to
``use_daily_allowance``) the scheduler plans a day ahead with ``pace.DailyPace``: no poll starts
that the allowance would refuse (``next_wakeup`` says when it frees), priced checks (skips, idle
and long-paused members) leave the next hour's end checks their room, idle members wait as the
pace's price and their usual hours say, and a playing track gets its end check and, before it,
a skip check only where one pays (``skips.py``). Without a limit, nothing of this applies and
the policy above is unchanged.

``record`` also says when an answer ends a stretch nobody observed that was long enough to hide
a whole counted play (``RecordResult.unseen_since``): after a long idle or paused back-off, an
error run, a hold or a stretched budget. Fetching recently-played after that moment is the one
way to keep "no track that played 30 s goes unseen" when polling cannot.

Bookkeeping (``check_queue.CheckQueue``) is a pair of binary heaps with lazy deletion (one for
predicted-end checks, one for the rest) and one ``__slots__`` object per member: O(log n) per
check, a few hundred bytes per member.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable

from bot.autopost.budget import PollBudget
from bot.autopost.check_queue import (
    URGENT_KINDS,
    CheckKind,
    CheckOutcome,
    CheckQueue,
    MemberState,
)
from bot.autopost.config import SchedulerConfig
from bot.autopost.observations import (
    Gone,
    Idle,
    Observation,
    Playing,
    RateLimited,
    RecordResult,
    TransientError,
)
from bot.autopost.pace import DailyPace
from bot.autopost.ports import DailyAllowance

__all__ = ["PollScheduler"]


# --- the scheduler -------------------------------------------------------------------------


class PollScheduler:
    """Plans the currently-playing checks of every followed member. See the module docstring."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        rng: random.Random | None = None,
        allowance: DailyAllowance | None = None,
        wall_offset: float = 0.0,
    ) -> None:
        self.config = config or SchedulerConfig()
        self._rng = rng or random.Random()
        self._queue = CheckQueue()
        self._budget = PollBudget(self.config)
        self._demand = 0.0  # sum of MemberState.rate
        self._updates_since_resum = 0
        self._ramp_at = -math.inf  # next free slot for a first check
        self.pace: DailyPace | None = None
        if allowance is not None:
            self.use_daily_allowance(allowance, wall_offset=wall_offset)

    def use_daily_allowance(self, allowance: DailyAllowance, *, wall_offset: float) -> None:
        """Plan the day within ``allowance`` (``pace.py``) whenever it has a limit; without
        one (``polling_left()`` infinite) the scheduler plans exactly as it would without.
        ``wall_offset``: Unix time minus this scheduler's clock (the hours of the day)."""
        cfg = self.config
        pace = self.pace = DailyPace(
            allowance, cfg.pace, idle_floor=cfg.idle_backoff[-1], wall_offset=wall_offset
        )
        for member_id in self._queue:
            pace.add(member_id)

    def _paced(self) -> DailyPace | None:
        """The pace, while the allowance has a limit."""
        pace = self.pace
        return pace if pace is not None and pace.limited else None

    # -- membership ---------------------------------------------------------------------

    def add(self, member_id: int, now: float) -> float:
        """Start following a member; return when its first check is planned.

        First checks are spread: at most the budget's rate of them per second (so a startup
        with thousands of members ramps up instead of stampeding) and randomly over
        ``initial_spread`` seconds. Adding a member already followed changes nothing.
        """
        state = self._queue.get(member_id)
        if state is not None:
            return state.due
        cfg = self.config
        spacing = 1.0 / (cfg.poll_rate * cfg.target_utilisation)
        if self._ramp_at <= now:  # no crowd to queue behind: just a little jitter
            slot, jitter = now, cfg.initial_spread
        else:  # part of a crowd: take the next slot, jittered within it so none coincide
            slot, jitter = self._ramp_at, spacing
        self._ramp_at = slot + spacing
        due = slot + self._rng.uniform(0.0, jitter)
        # Until the first answer, "last seen" is when following began: a first answer showing
        # an item that started well after that may hide a play since then.
        state = MemberState(token=0, due=due, kind=CheckKind.FIRST, rate=0.0, last_seen_at=now)
        self._queue.add(member_id, state)
        if self.pace is not None:
            self.pace.add(member_id)
        self._set_rate(state, 1.0 / cfg.skip_check_interval)
        self._plan(member_id, state, due, CheckKind.FIRST)
        return due

    def remove(self, member_id: int) -> bool:
        """Stop following a member (its queued check is dropped lazily). True if it was known."""
        state = self._queue.remove(member_id)
        if state is None:
            return False
        self._demand -= state.rate
        if self.pace is not None:
            self.pace.remove(member_id)
        return True

    def forget(self, member_id: int) -> bool:
        """``remove``, and the pace keeps nothing of the member (unlinked, private)."""
        removed = self.remove(member_id)
        if self.pace is not None:
            self.pace.forget(member_id)
        return removed

    def per_member_state(self) -> dict[str, Collection[object]]:
        """What the scheduler keeps per member beyond its queue (the pace's hours)."""
        return {} if self.pace is None else self.pace.per_member_state()

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._queue

    def __len__(self) -> int:
        return len(self._queue)

    def members(self) -> Iterable[int]:
        return iter(self._queue)

    # -- introspection, mostly for tests and metrics --------------------------------------

    def next_check_at(self, member_id: int) -> float | None:
        state = self._queue.get(member_id)
        return None if state is None or state.in_flight else state.due

    def last_item_key(self, member_id: int) -> str | None:
        """The item the member's last answer showed (kept across pauses, idle and errors)."""
        state = self._queue.get(member_id)
        return None if state is None else state.last_item_key

    @property
    def held_until(self) -> float | None:
        """The end of the current app-wide hold, if one was ever set."""
        return self._budget.held_until

    def stretch(self, now: float) -> float:
        """The factor routine delays (skip checks first) are multiplied by now (1.0: none)."""
        cfg = self.config
        room = self._budget.routine_room(now) / cfg.window * cfg.target_utilisation
        return min(cfg.max_stretch, max(1.0, self._demand / room))

    def demand(self) -> float:
        """Estimated routine polls per second the members need now, unstretched."""
        return max(0.0, self._demand)

    def urgent_headroom(self, now: float) -> int:
        """Slots of the window routine checks leave to predicted-end checks right now."""
        return self._budget.urgent_headroom(now)

    def requests_in_window(self, now: float) -> int:
        """Requests (polls and noted ones) in the rolling window ending at ``now``."""
        return self._budget.requests_in_window(now)

    # -- the budget -------------------------------------------------------------------------

    def note_request(self, now: float, count: int = 1) -> None:
        """Count Web API requests made outside ``pop_due`` (interactive ones included).

        Never refuses: interactive requests are not the scheduler's to delay. They only shrink
        what polling may use in the current window.
        """
        self._budget.note(now, count)

    def hold_all_until(self, until: float) -> None:
        """Pause every poll until ``until`` (a 429's retry time). Holds only ever extend."""
        self._budget.hold_until(until)

    def poll_allowance(self, now: float, *, urgent: bool = True) -> int:
        """How many polls may start at ``now`` without breaking the window or burst caps;
        ``urgent=False``: routine ones, which leave the end checks' headroom free."""
        return self._budget.allowance(now, urgent=urgent)

    # -- the loop's side --------------------------------------------------------------------

    def pop_due(self, now: float, limit: int | None = None) -> list[int]:
        """Members whose check is due at ``now``, at most ``limit``, earliest and urgent first.

        Each returned member counts as one request now, and is "in flight": the loop must
        answer it with ``record`` (a ``TransientError`` if the request failed). Should the
        answer never come, the member is returned again ``in_flight_timeout`` later. Members
        left out by the hold or the budget stay due and come out of later calls.
        """
        left = math.inf if limit is None else limit
        pace = self._paced()
        # The daily allowance: no poll the sender would refuse, and the next hour's end
        # checks keep their room when priced checks (skips, idle) would eat it.
        urgent_room, routine_room = math.inf, math.inf
        if pace is not None:
            urgent_room, routine_room = pace.poll_room(now)
        popped: list[int] = []
        timeout = self.config.in_flight_timeout
        # Routine checks owed their floor go before end checks, which could fill it otherwise.
        owed = self._budget.routine_owed(now)
        for urgent, most in ((False, owed), (True, math.inf), (False, math.inf)):
            if not most:
                continue
            daily = urgent_room if urgent else routine_room
            allowance = min(left, most, daily, self.poll_allowance(now, urgent=urgent))
            batch = self._queue.pop_due(now, allowance, urgent=urgent, in_flight_timeout=timeout)
            self._budget.spend(now, len(batch), urgent=urgent)
            popped.extend(batch)
            left -= len(batch)
            urgent_room -= len(batch)
            routine_room -= len(batch)
        if pace is not None:
            pace.spent(now, sum(self._is_unpriced(member_id) for member_id in popped))
        return popped

    def _is_unpriced(self, member_id: int) -> bool:
        """A check the pace plans first (end checks and their kin, first checks)."""
        state = self._queue.get(member_id)
        return state is not None and (
            state.purpose in URGENT_KINDS or state.purpose is CheckKind.FIRST
        )

    def next_wakeup(self, now: float) -> float | None:
        """When ``pop_due`` may next return someone (<= ``now``: call it now). None: no one.

        Accounts for the hold and the budget, so the loop never spins on an empty pop. After
        ``add`` or a ``record`` from outside the loop, ask again.
        """
        earliest: float | None = None
        pace = self._paced()
        for urgent in (True, False):
            top = self._queue.peek(urgent=urgent)
            if top is not None:
                due = max(top[0], self._budget.frees_at(now, urgent=urgent))
                if pace is not None and due <= now + self.config.pace.repace_every:
                    due = max(due, pace.frees_at(now, urgent=urgent))
                earliest = due if earliest is None else min(earliest, due)
        return earliest

    def record(self, member_id: int, observation: Observation, now: float) -> RecordResult:
        """Take what a check found and plan the member's next check.

        Usually called for a member ``pop_due`` returned; also welcome with an answer fetched
        for another reason (an interactive ``/np`` of a followed member), which then replaces
        the planned check. Unknown members are ignored.
        """
        state = self._queue.get(member_id)
        if state is None:
            return RecordResult(None)
        if isinstance(observation, Gone):
            self.remove(member_id)
            return RecordResult(None)
        purpose = state.purpose if state.in_flight else state.kind
        state.in_flight = False
        cfg = self.config
        if isinstance(observation, RateLimited):
            self.hold_all_until(observation.retry_at)
            # Spread this member's retry a little past the hold; the others keep their places
            # and the budget's burst cap paces the crowd that is due when the hold ends.
            due = max(now, observation.retry_at) + self._rng.uniform(0.0, cfg.initial_spread)
            self._plan(member_id, state, due, CheckKind.HOLD)
            return RecordResult(due)
        if isinstance(observation, TransientError):
            delay = self._ladder(state, CheckOutcome.ERROR, cfg.error_backoff)
            return RecordResult(self._plan_routine(member_id, state, now, delay, CheckKind.ERROR))

        unseen_since = state.unseen_since(observation, now, self.config.min_counted_play)
        state.last_seen_at = now
        pace = self._paced()
        if pace is not None:
            pace.observe(member_id, observation, now)
        if isinstance(observation, Idle):
            state.paused = False
            delay = self._ladder(state, CheckOutcome.IDLE, cfg.idle_backoff)
            if pace is not None and state.streak >= len(cfg.idle_backoff):
                delay = self._idle_paced(pace, member_id, state, now, delay)
            due = self._plan_routine(member_id, state, now, delay, CheckKind.IDLE)
            return RecordResult(due, unseen_since)
        if not observation.is_playing:
            if not state.paused or state.last_item_key != observation.item_key:
                state.paused_since = now
            state.paused = True
            state.last_item_key = observation.item_key
            delay = self._ladder(state, CheckOutcome.PAUSED, cfg.paused_backoff)
            if delay < cfg.min_counted_play:
                # Early in a pause: not stretched, and urgent. After the resume only a check
                # can tell when the track ends; a late one makes that natural change late.
                self._set_rate(state, 0.0)
                delay *= 1.0 - self._rng.uniform(0.0, cfg.jitter_fraction)
                delay = self._before_a_resumed_end(state, observation, now, delay)
                due = self._plan(member_id, state, now + delay, CheckKind.RESUME)
            else:
                if pace is not None:  # paused this long: like idle, as for the ladder
                    delay = self._idle_paced(pace, member_id, state, now, delay)
                due = self._plan_routine(member_id, state, now, delay, CheckKind.PAUSED)
            return RecordResult(due, unseen_since)
        due = self._plan_playing(member_id, state, observation, now, purpose)
        state.paused = False
        state.last_item_key = observation.item_key
        return RecordResult(due, unseen_since)

    # -- planning -------------------------------------------------------------------------

    def _plan_playing(
        self, member_id: int, state: MemberState, obs: Playing, now: float, purpose: CheckKind
    ) -> float:
        cfg = self.config
        interval = cfg.skip_check_interval
        cap = interval * self.stretch(now)
        duration = obs.duration_ms / 1000.0
        progress = obs.progress_ms / 1000.0
        pace = self._paced()
        if duration <= 0:  # unknown length: just keep the skip-check cadence
            self._set_rate(state, 1.0 / interval)
            state.outcome, state.streak = CheckOutcome.PLAYING, 0
            if pace is not None:  # (whose price the pace sets like an idle member's)
                cap = self._idle_paced(pace, member_id, state, now, cap)
            return self._plan_routine(member_id, state, now, cap, CheckKind.SKIP, stretch=False)
        remaining = max(0.0, duration - progress)
        until_end = remaining + cfg.end_margin
        # Unstretched, the rest of the item takes ceil(until_end / interval) checks, the last
        # one at the end: the others are this member's routine demand until then.
        self._set_rate(state, (math.ceil(until_end / interval) - 1) / until_end)
        expected_change = purpose in (CheckKind.END, CheckKind.STALE)
        if (
            expected_change
            and obs.item_key == state.last_item_key
            and remaining <= cfg.end_margin + cfg.recheck_after_stale
        ):
            # The end was due but the old item is still there: Spotify's progress lags.
            # Look again soon, backing off if it stays stuck (e.g. a device that stopped).
            state.streak = state.streak + 1 if state.outcome is CheckOutcome.STALE else 1
            state.outcome = CheckOutcome.STALE
            delay = cfg.recheck_after_stale * 2.0 ** min(state.streak - 1, 16)
            delay = min(cap, max(until_end, delay))
            return self._plan(member_id, state, now + delay, CheckKind.STALE)
        state.outcome, state.streak = CheckOutcome.PLAYING, 0
        if pace is not None:
            return self._plan_paced(member_id, state, pace, (progress, duration), now)
        if until_end <= cap:
            delay = until_end + self._rng.uniform(0.0, cfg.end_jitter)
            return self._plan(member_id, state, now + delay, CheckKind.END)
        gaps = math.ceil(until_end / cap)
        due = self._plan_routine(
            member_id, state, now, until_end / gaps, CheckKind.SKIP, stretch=False
        )
        # Should the budget hold that skip check back past the predicted end, the same check
        # becomes the end check then (whichever entry comes out first plans anew).
        end = now + until_end + self._rng.uniform(0.0, cfg.end_jitter)
        self._queue.plan_end_fallback(member_id, state, end)
        return due

    def _plan_paced(
        self,
        member_id: int,
        state: MemberState,
        pace: DailyPace,
        track: tuple[float, float],
        now: float,
    ) -> float:
        """A playing track under the daily pace: its end check, and before it a skip check
        only where the price says one pays (``skips.py``); when the budget cannot carry every
        end check, the next look at least ``end_gap`` later, wherever the member is then."""
        progress, duration = track
        cfg = self.config
        until_end = max(0.0, duration - progress) + cfg.end_margin
        end = until_end + self._rng.uniform(0.0, cfg.end_jitter)
        gap = pace.plan(now).end_gap
        if gap > end and self._rng.random() * gap > end:
            # Thinned: this end check only as often as it fits the gap on average; else a
            # look one gap later, wherever the member is then.
            self._set_rate(state, 0.0)
            return self._plan(member_id, state, now + gap, CheckKind.END)
        skip = pace.skip_check_in(progress, duration, now)
        if skip is None or skip >= until_end:
            self._set_rate(state, 0.0)
            return self._plan(member_id, state, now + end, CheckKind.END)
        self._set_rate(state, 1.0 / until_end)
        due = self._plan(member_id, state, now + skip, CheckKind.SKIP)
        self._queue.plan_end_fallback(member_id, state, now + end)
        return due

    def _idle_paced(
        self, pace: DailyPace, member_id: int, state: MemberState, now: float, floor: float
    ) -> float:
        """The paced wait of a member with nothing to end soon (idle, long paused)."""
        delay = pace.idle_interval(member_id, now, floor)
        self._set_rate(state, 1.0 / delay)
        return delay

    def _before_a_resumed_end(
        self, state: MemberState, obs: Playing, now: float, delay: float
    ) -> float:
        """A track paused near its end, resumed just after this check, would end before the
        ladder's next one: look again by then instead (the ladder waits a step), for the
        first ``resume_watch`` seconds of the pause. Either the track played out by then (its
        successor is seen at most ``end_margin`` late) or the check sees it playing and plans
        its end. Not for a track paused under ``min_resume_check`` from its end: that is
        mostly a playlist or album that finished, and checks that often would only cost."""
        cfg = self.config
        if obs.duration_ms <= 0 or now - state.paused_since >= cfg.resume_watch:
            return delay
        remaining = (obs.duration_ms - obs.progress_ms) / 1000.0
        until_end = remaining + cfg.end_margin
        if remaining < cfg.min_resume_check or until_end >= delay:
            return delay
        state.streak -= 1  # this short check is not a step of the ladder
        return until_end

    def _ladder(
        self, state: MemberState, outcome: CheckOutcome, ladder: tuple[float, ...]
    ) -> float:
        step = state.next_step(outcome, ladder)
        self._set_rate(state, 1.0 / step)
        return step

    def _plan_routine(
        self,
        member_id: int,
        state: MemberState,
        now: float,
        delay: float,
        kind: CheckKind,
        *,
        stretch: bool = True,
    ) -> float:
        if stretch:
            delay *= self.stretch(now)
            delay *= 1.0 - self._rng.uniform(0.0, self.config.jitter_fraction)
        return self._plan(member_id, state, now + delay, kind)

    def _plan(self, member_id: int, state: MemberState, due: float, kind: CheckKind) -> float:
        return self._queue.plan(member_id, state, due, kind)

    def _set_rate(self, state: MemberState, rate: float) -> None:
        self._demand += rate - state.rate
        state.rate = rate
        self._updates_since_resum += 1
        if self._updates_since_resum > 100_000:  # wash out floating-point drift
            self._demand = math.fsum(m.rate for m in self._queue.states())
            self._updates_since_resum = 0
