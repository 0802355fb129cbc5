"""Tuning of the auto-poster: the poll scheduler's policy and the service around it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PaceConfig:
    """Tuning of the daily pace (``bot.autopost.pace``), used only under a daily budget.

    * ``horizons``: the stretches ahead (seconds) over which the planned spending must fit the
      room polling has (what is left now plus what leaves the rolling 24 h by then): an hour
      keeps a burst from spending tomorrow's room, a day makes the budget last the window.
    * ``fill``: the share of that room the plan may use; the rest absorbs the forecast's errors
      and commands beyond their reserve. ``burst``: end checks are thinned when the day's room,
      spent no faster than this many times its average, cannot carry them (heavy listening:
      spread over the day rather than spent by noon and blind until the next morning).
      Polls leave the listening log the recently-played calls of the next ``fills_ahead``
      seconds: one of those is worth dozens of plays logged.
    * ``max_idle_interval``: the longest an idle member goes unchecked, however dear calls are.
    * ``min_skip_gap``: skip checks never closer than this, however cheap calls are.
    * ``skip_within_5s``, ``skip_within_30s``, ``skip_before_end``: the share of plays skipped
      by then (Lamere, "The Skip", 2014: 24 %, 35 %, 49 % of billions of plays). Skip checks go
      where those skips happen, densest in a track's first seconds.
    * ``typical_track``: the length of a track (seconds) when planning skip checks ahead;
      ``shortest_track``: no track that plays to its end is shorter. A skip long before the
      end check leaves room for a whole track nobody sees (never posted, and the natural
      change after it late): a check ``shortest_track`` before the end closes that room,
      where the chance of it is worth the price (a play never posted costs its length).
    * Until a member's own hours are known the profile assumes ``prior_listening_hours`` of
      listening and ``prior_sessions`` sessions a day, spread evenly, weighted like
      ``prior_days`` days of data; data fade with a half-life of ``half_life_days``. A member
      listening now is expected to go on for ``session_hours`` on average.
    * ``end_checks_per_hour``: the first guess at the calls a listening member-hour costs
      that the pace does not trim (end checks and their rechecks), learned as checks are made;
      ``fills_per_hour``: the listening log's recently-played calls per listening hour.
    """

    horizons: tuple[float, ...] = (3600.0, 3 * 3600.0, 8 * 3600.0, 24 * 3600.0)
    fill: float = 0.95
    burst: float = 3.0
    fills_ahead: float = 8 * 3600.0
    repace_every: float = 60.0
    max_idle_interval: float = 2 * 3600.0
    min_skip_gap: float = 5.0
    skip_within_5s: float = 0.24
    skip_within_30s: float = 0.35
    skip_before_end: float = 0.49
    typical_track: float = 210.0
    shortest_track: float = 120.0
    prior_listening_hours: float = 4.0
    prior_sessions: float = 2.0
    prior_days: float = 0.5
    session_hours: float = 1.0
    half_life_days: float = 7.0
    end_checks_per_hour: float = 20.0
    fills_per_hour: float = 1.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.horizons or any(not h > 0 for h in self.horizons):
            problems.append("horizons need at least one positive duration")
        if not 0 < self.fill <= 1:
            problems.append("fill must be in (0, 1]")
        if self.burst < 1:
            problems.append("burst must be at least 1")
        for name in (
            "repace_every",
            "max_idle_interval",
            "min_skip_gap",
            "typical_track",
            "shortest_track",
            "prior_days",
            "session_hours",
            "half_life_days",
            "end_checks_per_hour",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if not 0 <= self.skip_within_5s <= self.skip_within_30s <= self.skip_before_end < 1:
            problems.append("the skip shares must rise from 5 s to the end and stay under 1")
        if not 0 < self.prior_listening_hours < 24 or self.prior_sessions <= 0:
            problems.append("the prior needs some listening and some sessions")
        if self.fills_per_hour < 0:
            problems.append("fills_per_hour must not be negative")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Tuning of the poll scheduler. All durations are seconds.

    The defaults are chosen for these targets (see the module docstring and the project's
    benchmark): a natural track change noticed within 2 s, a skip within 30 s (p95), at most
    144 requests per playing member-hour, at most 40 per idle member-hour, and no track that
    played for 30 s or more going unseen.

    * ``skip_check_interval`` 28 s. The time left on a track (plus the 1 s margin) is covered
      by ``n = ceil(left / 28)`` equal gaps, the last check landing just after the end, where
      it is the next track's first sighting. A track of D seconds thus costs about
      ``D / 28 + 0.5`` checks and the gaps average about ``28 x (1 - 1 / 2n)`` ~ 26 s: about
      137 requests per playing hour (2-5 min tracks, a quarter skipped; pauses make it less),
      against a 144 target. A skip lands uniformly inside a gap, so its p95 latency is about
      0.95 x 26 ~ 25 s (target 30 s), never more than 28 s while the budget keeps up; the
      2 s left are for the checks the budget holds back a little when it runs full (100
      listeners fill it). Every gap is under 30 s, so a track that plays 30 s always meets a
      check.
    * ``end_margin`` 1 s plus ``end_jitter`` up to 0.5 s after the predicted end.
    * ``idle_backoff`` 30, 60, 90, then 105 s (a member idle at its first check starts at
      105 s): 3600 / (105 x 0.985) ~ 34.8 requests per idle hour, at most 35.3 with the full
      jitter, and at most 37 in the hour after someone stops playing (30 + 60 + 90 s first).
      The ceiling stays below 120 s, the shortest track, so someone who starts listening is
      noticed while their first (unskipped) track still plays. ``paused_backoff`` (15, 29,
      29, 29, 60, 105 s) keeps checks under 30 s apart for the first two minutes of a pause
      (a track left while paused is still seen and posted), then backs off like idle.
    * ``budget_per_window`` 120 per ``window`` 30 s matches ``Settings.spotify_request_budget``:
      108 for polls (``interactive_reserve_fraction`` keeps 12 for ``/np``); routine checks stop
      11 short of that (``urgent_headroom_fraction``), the room end checks always find, and
      keep 2 of each second's 8 for them (``urgent_burst_fraction``). It carries about 100
      listeners (80 playing) with the budget nearly full; beyond, skip checks stretch first.
    """

    skip_check_interval: float = 28.0
    end_margin: float = 1.0
    end_jitter: float = 0.5
    recheck_after_stale: float = 1.5
    # Checks stay under 30 s apart for the first minutes of a pause (a track left while paused
    # is still posted), then back off like idle.
    paused_backoff: tuple[float, ...] = (15.0, 29.0, 29.0, 29.0, 60.0, 105.0)
    # A track paused this close to its end is checked that often for the first resume_watch
    # seconds of the pause: resumed, it would end before the ladder's next check, and its
    # successor would be posted late. Not under min_resume_check from the end (mostly a
    # playlist that finished: its last track stays paused at its end).
    resume_watch: float = 120.0
    min_resume_check: float = 3.0
    idle_backoff: tuple[float, ...] = (30.0, 60.0, 90.0, 105.0)
    error_backoff: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 120.0)
    # Fraction by which routine delays are randomly shortened (never lengthened: the caps hold).
    jitter_fraction: float = 0.03
    budget_per_window: int = 120
    window: float = 30.0
    # Share of each window's budget that polling never uses: the room for interactive /np.
    interactive_reserve_fraction: float = 0.10
    # Polls in any one second stay under burst_factor x the average rate the budget allows.
    burst_factor: float = 2.0
    # Share of that per-second cap routine checks leave to end checks (at least one slot): a
    # backlog of skip checks (after a 429 hold) never makes an end check wait for the next second.
    urgent_burst_fraction: float = 0.25
    # Share of the poll budget routine checks never use: the room end checks always find.
    urgent_headroom_fraction: float = 0.10
    # Share of the poll budget routine checks always keep, however many end checks there are
    # (requests noted from outside count against it; end checks do not).
    min_routine_fraction: float = 0.10
    # Stretch routine delays once their estimated demand passes this share of their room.
    target_utilisation: float = 0.95
    max_stretch: float = 20.0
    # Members added at the same instant are spread at least over this many seconds.
    initial_spread: float = 2.0
    # A popped member whose answer never gets recorded is checked again after this long.
    in_flight_timeout: float = 60.0
    # A change seen after an unobserved stretch at least this long may hide a whole play
    # (Spotify counts a play from 30 s), so ``record`` suggests a recently-played backfill.
    min_counted_play: float = 30.0
    # Under a daily budget (SPOTIFY_DAILY_BUDGET), how the day is planned.
    pace: PaceConfig = field(default_factory=PaceConfig)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in (
            "skip_check_interval",
            "end_margin",
            "recheck_after_stale",
            "window",
            "burst_factor",
            "in_flight_timeout",
            "min_counted_play",
            "min_resume_check",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        for name in ("end_jitter", "initial_spread", "resume_watch"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        for name in ("paused_backoff", "idle_backoff", "error_backoff"):
            ladder = getattr(self, name)
            if not ladder or any(not step > 0 for step in ladder):
                problems.append(f"{name} needs at least one positive step")
        if not 0 <= self.jitter_fraction < 1:
            problems.append("jitter_fraction must be in [0, 1)")
        if self.budget_per_window < 1:
            problems.append("budget_per_window must be at least 1")
        if not 0 <= self.interactive_reserve_fraction < 1:
            problems.append("interactive_reserve_fraction must be in [0, 1)")
        for name in ("urgent_headroom_fraction", "min_routine_fraction", "urgent_burst_fraction"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1)")
        if not 0 < self.target_utilisation <= 1:
            problems.append("target_utilisation must be in (0, 1]")
        if self.max_stretch < 1:
            problems.append("max_stretch must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def interactive_reserve(self) -> int:
        """Requests per window kept free for interactive use (at least one, if possible)."""
        reserve = math.ceil(self.budget_per_window * self.interactive_reserve_fraction)
        return min(reserve, self.budget_per_window - 1)

    @property
    def poll_budget(self) -> int:
        """The most requests (polls plus everything noted) polling lets into one window."""
        return self.budget_per_window - self.interactive_reserve

    @property
    def poll_rate(self) -> float:
        """Average polls per second the budget allows."""
        return self.poll_budget / self.window

    @property
    def per_second_cap(self) -> int:
        return max(1, math.ceil(self.burst_factor * self.poll_rate))

    @property
    def routine_per_second_cap(self) -> int:
        """Routine checks in any one second: the cap less the end checks' slots (at least 1)."""
        cap = self.per_second_cap
        return max(1, cap - max(1, math.ceil(cap * self.urgent_burst_fraction)))

    @property
    def min_urgent_headroom(self) -> int:
        """Slots per window routine checks leave free for predicted-end checks, at least."""
        return math.ceil(self.poll_budget * self.urgent_headroom_fraction)

    @property
    def min_routine_room(self) -> int:
        """Slots per window routine checks may always use."""
        return max(1, math.ceil(self.poll_budget * self.min_routine_fraction))


@dataclass(frozen=True, slots=True)
class AutopostConfig:
    """Tuning of the service around the scheduler. Durations are seconds.

    * ``max_concurrent_polls``: polls in flight at once. The shared aiohttp connector allows 100
      connections; polling stays far below so an interactive ``/np`` always finds one.
    * ``edit_window``: a member's post younger than this, still the channel's last message, is
      edited for their next item instead of followed by a new post (rapid skips).
    * ``membership_ttl``: how long a guild-membership lookup (present or not) is trusted for
      deciding whom to poll, and how often members found in no music guild are looked up
      again. Posting always looks a present member up afresh.
    * ``membership_lookups``: concurrent member lookups while (re)building who is followed.
    * ``shutdown_grace``: how long ``stop`` lets polls and posts in flight finish.
    """

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_concurrent_polls: int = 8
    edit_window: float = 30.0
    membership_ttl: float = 600.0
    membership_lookups: int = 4
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        if self.max_concurrent_polls < 1:
            raise ValueError("max_concurrent_polls must be at least 1")
        if self.membership_lookups < 1:
            raise ValueError("membership_lookups must be at least 1")
        if self.edit_window < 0 or self.membership_ttl <= 0:
            raise ValueError("edit_window must not be negative, membership_ttl must be positive")
