"""The daily pace: how the poller spends a daily budget of Web API calls so that it lasts.

Under ``SPOTIFY_DAILY_BUDGET`` Spotify's quota is counted over a rolling 24 hours, and the
poller gets what the :class:`~bot.autopost.ports.DailyAllowance` says is left. Spending at the
30-second rate until something refuses would leave the rest of the day unwatched, so the pace
plans the next day of checks from two things: the room polling has over each stretch ahead
(what is left now plus what leaves the window by then) and the listening it expects (each
member's hours of the day, ``profile.py``).

Checks at a track's predicted end (and their rechecks) are what posts natural track changes on
time; they cost about one call per track, and the pace plans them first. Everything else is
priced: one *price* ``p``, in seconds of delay a call must save, spaces both idle checks and
skip checks by the same rule. An event with hazard ``h`` (session starts per idle second, or
skips per second of a track) checked every ``I`` seconds costs ``1 / I`` calls a second and
leaves ``h I / 2`` seconds of delay a second, so the best interval is ``I = sqrt(2 p / h)``:
idle checks are dense in the hours a member usually starts listening and sparse at night, skip
checks dense in a track's first seconds (``skips.py``). The price is the lowest at which the
plan fits every horizon ``T`` (an hour to a day):

    need(T, p) = sum over members m and the hours t of the next T of
                 3600 x [ L(m,t) x (e + f)                        end checks, log fills
                        + L(m,t) x e x k(p)                       skip checks
                        + (1 - L(m,t)) / clamp(sqrt(2p / h(m,t)))] idle checks
    p = max over T of  min { p : need(T, p) <= fill x (polling_left + freed_within(T)) }

with ``L`` the share of the hour the member listens, ``h`` their session-start hazard, ``e``
the calls per listening second that are not priced (learned), ``f`` the log's recently-played
calls and ``k(p)`` the skip checks per track at that price. When even the price's ceiling does
not fit (more listening than the budget carries), end checks themselves are thinned: a
listening member is checked at most once per ``end_gap`` seconds.

Pure: ``now`` is passed in (the scheduler's clock); ``wall_offset`` turns it into Unix time
for the hours of the day. Nothing here is used without an allowance that has a limit.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from bot.autopost.config import PaceConfig
from bot.autopost.observations import Idle, Playing
from bot.autopost.ports import DailyAllowance
from bot.autopost.profile import DAY, HOUR, ListeningProfile, hour_of_day
from bot.autopost.skips import SkipModel

MIN_PRICE = 1.0  # seconds of delay per call: never denser than this, however much is left
MAX_PRICE = 1e9
_SEARCH_STEPS = 30
_FREES_SEARCH_STEPS = 24


@dataclass(frozen=True, slots=True)
class Plan:
    """What the pace decided at ``at``: the price of a call (seconds of delay it must save),
    the least time between two checks of a listening member (0: every end check), the room
    priced checks leave to end checks (what the next hour's end checks need) and the room
    every check leaves to the listening log's recently-played calls of the next hour."""

    at: float
    price: float = MIN_PRICE
    end_gap: float = 0.0
    headroom: float = 0.0
    fills: float = 0.0


class CostMeter:
    """The last day in hourly buckets: the calls the pace does not price (end checks and
    their kin) and the listening they were made for, both counted only while every end check
    is made (from a first guess worth one listening hour), and all the listening seen."""

    def __init__(self, per_hour: float) -> None:
        self._prior = per_hour / HOUR
        self._buckets = [[0.0, 0.0, 0.0] for _ in range(24)]  # calls, their listening, all
        self._hour = -1  # the absolute hour the buckets were last cleared up to
        self._since: float | None = None

    def add(self, at: float, *, calls: float = 0.0, listening: float = 0.0, costed: bool) -> None:
        bucket = self._buckets[self._advance(at)]
        if costed:
            bucket[0] += calls
            bucket[1] += listening
        bucket[2] += listening
        if self._since is None:
            self._since = at

    def per_second(self, at: float) -> float:
        """Unpriced calls per second of listening."""
        self._advance(at)
        calls = sum(b[0] for b in self._buckets)
        listening = sum(b[1] for b in self._buckets)
        return (calls + self._prior * HOUR) / (listening + HOUR)

    def listening_per_day(self, at: float) -> float:
        """Member-seconds of listening the last day saw (scaled up to a day when less than
        one was watched, from half a day on)."""
        self._advance(at)
        seen = at - (at if self._since is None else self._since)
        return sum(b[2] for b in self._buckets) * DAY / min(DAY, max(seen, DAY / 2))

    def _advance(self, at: float) -> int:
        hour = int(at // HOUR)
        if hour > self._hour:
            first = max(self._hour + 1, hour - 23)
            for step in range(first, hour + 1):
                self._buckets[step % 24] = [0.0, 0.0, 0.0]
            self._hour = hour
        return hour % 24


class DailyPace:
    """Plans the day's checks within a daily allowance. See the module docstring."""

    def __init__(
        self,
        allowance: DailyAllowance,
        config: PaceConfig | None = None,
        *,
        idle_floor: float,
        wall_offset: float = 0.0,
    ) -> None:
        self.config = config = config or PaceConfig()
        self._allowance = allowance
        self._idle_floor = idle_floor  # the idle ladder's last step: never denser than that
        self._wall_offset = wall_offset
        self.profile = ListeningProfile(config)
        self.skips = SkipModel(config)
        self._members: set[int] = set()
        self._meter = CostMeter(config.end_checks_per_hour)
        self._plan = Plan(at=-math.inf)

    # -- the allowance ------------------------------------------------------------------------

    @property
    def limited(self) -> bool:
        """Whether there is a daily limit now (no limit: the scheduler plans as without)."""
        return not math.isinf(self._allowance.polling_left())

    def room(self) -> float:
        """Polls that may start now."""
        return self._allowance.polling_left()

    def poll_room(self, now: float) -> tuple[int, int]:
        """Polls that may start now: (end checks and their kin, priced checks)."""
        plan = self.plan(now)
        room = self._allowance.polling_left() - plan.fills
        return max(0, math.floor(room)), max(0, math.floor(room - plan.headroom))

    def frees_at(self, now: float, *, urgent: bool = True) -> float:
        """When a poll may start, from what leaves the window (a minute after ``now`` when
        nothing would: a hold, which the sender's answer times anyway); ``urgent=False``: a
        priced one, which leaves the end checks' headroom."""
        plan = self.plan(now)
        headroom = plan.fills + (0.0 if urgent else plan.headroom)
        needed = 1.0 + headroom - self._allowance.polling_left()
        if needed <= 0:
            return now
        low, high = 0.0, DAY + 120.0
        if self._allowance.freed_within(high) < needed:
            return now + 60.0
        for _ in range(_FREES_SEARCH_STEPS):
            middle = (low + high) / 2.0
            if self._allowance.freed_within(middle) >= needed:
                high = middle
            else:
                low = middle
        return now + max(1.0, high)

    # -- members and what is learned about them -----------------------------------------------

    def add(self, member_id: int) -> None:
        self._members.add(member_id)

    def remove(self, member_id: int) -> None:
        """No longer polled (for now: a status covers them): their hours are kept."""
        self._members.discard(member_id)
        self.profile.pause(member_id)

    def forget(self, member_id: int) -> None:
        """Unlinked, or private: nothing is kept."""
        self._members.discard(member_id)
        self.profile.forget(member_id)

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"paced members": self._members, **self.profile.per_member_state()}

    def observe(self, member_id: int, observation: Playing | Idle, now: float) -> None:
        """An answer about the member: their hours, and the listening the costs are per."""
        at = now + self._wall_offset
        if isinstance(observation, Playing) and observation.is_playing:
            progress = observation.progress_ms / 1000.0
            left = max(0.0, observation.duration_ms / 1000.0 - progress)
            listened = self.profile.note(
                member_id, at, playing=True, left=left, began=at - progress
            )
        else:
            listened = self.profile.note(member_id, at, playing=False)
        # (Thinned end checks would teach a false low cost.)
        self._meter.add(at, listening=listened, costed=self._plan.end_gap == 0.0)

    def spent(self, now: float, calls: int) -> None:
        """``calls`` polls the pace does not price (end checks, rechecks, first checks)."""
        if calls and self._plan.end_gap == 0.0:
            self._meter.add(now + self._wall_offset, calls=calls, costed=True)

    # -- what the scheduler asks ----------------------------------------------------------------

    def plan(self, now: float) -> Plan:
        if now - self._plan.at >= self.config.repace_every:
            self._plan = self._replan(now)
        return self._plan

    def idle_interval(self, member_id: int, now: float, floor: float) -> float:
        """How long until the idle member's next check: where ``sqrt(hazard / 2p)`` over the
        hours ahead adds up to one check, between ``floor`` and ``max_idle_interval``."""
        price = self.plan(now).price
        ceiling = max(floor, self.config.max_idle_interval)
        at = now + self._wall_offset
        owed, waited = 1.0, 0.0
        while waited < ceiling:
            hour_end = (math.floor((at + waited) / HOUR) + 1) * HOUR - at
            density = math.sqrt(
                self.profile.start_hazard(member_id, hour_of_day(at + waited)) / (2.0 * price)
            )
            span = min(hour_end, ceiling) - waited
            if density * span >= owed:
                return max(floor, waited + owed / density)
            owed -= density * span
            waited += span
        return ceiling

    def skip_check_in(self, progress: float, duration: float, now: float) -> float | None:
        """Seconds from now to the next skip check of a track at ``progress``; None when
        only its end check is worth making."""
        at = self.skips.next_check(progress, duration, self.plan(now).price)
        return None if at is None else at - progress

    # -- planning ------------------------------------------------------------------------------

    def _replan(self, now: float) -> Plan:
        config = self.config
        left = self._allowance.polling_left()
        if math.isinf(left):
            return Plan(at=now)
        at = now + self._wall_offset
        per_second = self._meter.per_second(at)
        hours = self._expected_hours(at, self._meter.listening_per_day(at))
        price, thinned, headroom, fills = MIN_PRICE, 1.0, 0.0, 0.0
        day = config.horizons[-1]
        day_room = config.fill * (left + self._allowance.freed_within(day))
        for horizon in config.horizons:
            room = config.fill * (left + self._allowance.freed_within(horizon))
            need = self._need_function(hours, _hour_weights(at, horizon), per_second)
            if horizon == config.horizons[0]:
                headroom = need.fixed()
            if horizon <= config.fills_ahead:
                fills = need.fills()
            # End checks are thinned only when the day's room, spent no faster than
            # ``burst`` times its average, cannot carry them (what a shorter stretch lacks
            # now, the headroom keeps for them).
            paced_room = min(day_room, config.burst * day_room * horizon / day)
            spare = paced_room - need.priced(MAX_PRICE)
            if need.fixed() > spare:
                thinned = max(thinned, need.fixed() / max(spare, 1.0))
            price = max(price, _lowest_price(need, room, price))
        end_gap = thinned / per_second if thinned > 1.0 else 0.0
        return Plan(at=now, price=price, end_gap=end_gap, headroom=headroom, fills=fills)

    def _expected_hours(self, at: float, last_day: float) -> list[list[tuple[float, float]]]:
        """For each of the next 24 hours of the day: (listening share, start hazard) of each
        followed member. A member listening now is expected to go on for a while (a session
        lasts ``session_hours`` on average), whatever their usual hours say; and the next day
        is expected to hold at least the listening of the last (``last_day`` member-seconds):
        when the hours say less, every share grows to make up for it."""
        first = hour_of_day(at)
        profile = self.profile
        now_listening = {m for m in self._members if profile.listening_now(m)}
        hours = [
            [
                (
                    max(
                        profile.listening_share(member, (first + step) % 24),
                        _going_on(step, self.config.session_hours)
                        if member in now_listening
                        else 0.0,
                    ),
                    profile.start_hazard(member, (first + step) % 24),
                )
                for member in self._members
            ]
            for step in range(24)
        ]
        expected = sum(share for members in hours for share, _ in members) * HOUR
        if expected <= 0 or last_day <= expected:
            return hours
        more = last_day / expected
        return [[(min(1.0, share * more), hazard) for share, hazard in m] for m in hours]

    def _need_function(
        self, hours: list[list[tuple[float, float]]], weights: list[float], per_second: float
    ) -> _Need:
        idle = (self._idle_floor, max(self._idle_floor, self.config.max_idle_interval))
        fill_rate = self.config.fills_per_hour / HOUR
        listening = [(w, members) for w, members in zip(weights, hours, strict=True) if w > 0]
        return _Need(self.skips, listening, (per_second, fill_rate), idle)


class _Need:
    """need(T, p) of the module docstring for one horizon: calls the plan makes at price
    ``p``; ``priced(p)`` is the part the price trims (skip and idle checks). ``rates``: end
    checks per listening second (one per observed track) and the log's fills."""

    def __init__(
        self,
        skips: SkipModel,
        hours: list[tuple[float, list[tuple[float, float]]]],
        rates: tuple[float, float],
        idle: tuple[float, float],
    ) -> None:
        per_track, fill_rate = rates
        self._skips = skips
        self._floor, self._ceiling = idle
        listening = sum(weight * HOUR * share for weight, members in hours for share, _ in members)
        self._fills = listening * fill_rate
        self._fixed = listening * per_track + self._fills
        self._skip_seconds = listening * per_track  # x checks per track: the skip checks
        # Idle checks: seconds of each member-hour idle, and 1 / sqrt(hazard) (the interval
        # at price p is sqrt(2p) times that).
        self._idle = [
            (weight * HOUR * (1.0 - share), 1.0 / math.sqrt(hazard) if hazard > 0 else math.inf)
            for weight, members in hours
            for share, hazard in members
        ]

    def __call__(self, price: float) -> float:
        return self._fixed + self.priced(price)

    def fixed(self) -> float:
        """What the price does not trim: end checks and the log's fills."""
        return self._fixed

    def fills(self) -> float:
        return self._fills

    def priced(self, price: float) -> float:
        root = math.sqrt(2.0 * price)
        floor, ceiling = self._floor, self._ceiling
        total = self._skip_seconds * self._skips.checks_per_track(price)
        for seconds, scale in self._idle:
            interval = root * scale
            total += seconds / (floor if interval < floor else min(interval, ceiling))
        return total


def _lowest_price(need: _Need, room: float, at_least: float) -> float:
    """The lowest price from ``at_least`` on at which ``need`` fits ``room`` (the ceiling
    when none does): a bisection on the logarithm, need falling as the price rises."""
    if need(at_least) <= room:
        return at_least
    if need(MAX_PRICE) > room:
        return MAX_PRICE
    low, high = math.log(at_least), math.log(MAX_PRICE)
    for _ in range(_SEARCH_STEPS):
        middle = (low + high) / 2.0
        if need(math.exp(middle)) <= room:
            high = middle
        else:
            low = middle
    return math.exp(high)


def _going_on(hours_ahead: int, session_hours: float) -> float:
    """The chance a session going on now still goes on in that hour ahead (its middle),
    sessions ending at random after ``session_hours`` on average."""
    return math.exp(-(hours_ahead + 0.5) / session_hours)


def _hour_weights(at: float, horizon: float) -> list[float]:
    """How much of each of the next 24 hours of the day (from the one ``at`` is in) falls
    within ``horizon`` seconds of ``at``; a horizon over a day counts whole days again."""
    weights = [0.0] * 24
    start, end = at, at + horizon
    step = 0
    while start < end:
        boundary = min(end, (math.floor(start / HOUR) + 1) * HOUR)
        weights[step % 24] += (boundary - start) / HOUR
        start = boundary
        step += 1
    return weights


__all__ = ["CostMeter", "DailyPace", "Plan"]
