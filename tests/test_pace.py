"""The poller under a daily budget: the pace, skip checks where skips happen, end checks first.

Pure scheduler tests on a manual clock (Unix seconds: the hours of the day matter), with the
in-memory ``DailyAllowance`` of ``tests/fakes/daily_budget.py``; the test plays the sender,
counting every poll it starts.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest

from bot.autopost.check_queue import CheckKind
from bot.autopost.config import PaceConfig, SchedulerConfig
from bot.autopost.observations import Idle, Observation, Playing
from bot.autopost.pace import DailyPace
from bot.autopost.profile import DAY, HOUR, ListeningProfile
from bot.autopost.scheduler import PollScheduler
from bot.autopost.skips import SkipModel
from tests.fakes.daily_budget import RollingAllowance, reserve_for
from tests.helpers import ManualClock, rolling_max
from tests.peek import check_purpose, next_check_kind

MIDNIGHT = 20_600 * DAY  # a midnight UTC
CONFIG = SchedulerConfig()
IDLE_CEILING = CONFIG.idle_backoff[-1]


def playing(key: str, progress: float, duration: float) -> Playing:
    return Playing(key, int(progress * 1000), int(duration * 1000))


def paced(budget: int, clock: ManualClock, seed: int = 1) -> tuple[PollScheduler, RollingAllowance]:
    allowance = RollingAllowance(budget, clock, counting_since=clock.now - DAY)
    scheduler = PollScheduler(CONFIG, rng=random.Random(seed), allowance=allowance)
    return scheduler, allowance


def run(
    scheduler: PollScheduler,
    allowance: RollingAllowance,
    clock: ManualClock,
    until: float,
    answer: Callable[[int, float], Observation],
) -> list[tuple[float, int]]:
    """Pop, count, answer at once, until ``until``; every poll started, as (time, member)."""
    polls: list[tuple[float, int]] = []
    while clock.now < until:
        popped = scheduler.pop_due(clock.now)
        for member in popped:
            assert allowance.refused_until("poll") is None  # the sender never refuses one
            allowance.count("poll")
            polls.append((clock.now, member))
            scheduler.record(member, answer(member, clock.now), clock.now)
        wake = scheduler.next_wakeup(clock.now)
        assert wake is not None
        clock.now = max(clock.now + 0.001, min(wake, until))
    return polls


def most_in_a_day(times: list[float]) -> int:
    return rolling_max(times, DAY)


# --- no daily limit: nothing changes ----------------------------------------------------------


def test_without_a_daily_limit_the_scheduler_plans_exactly_as_before() -> None:
    clock = ManualClock(MIDNIGHT)
    unlimited, _ = paced(0, clock)  # SPOTIFY_DAILY_BUDGET=0: polling_left() is infinite
    plain = PollScheduler(CONFIG, rng=random.Random(1))
    script: list[Observation] = [
        playing("a", 1, 240),
        playing("a", 30, 240),
        playing("b", 3, 180),  # a skip
        Idle(),
        Idle(),
        Playing("c", 50_000, 200_000, is_playing=False),
        playing("c", 60, 200),
    ]
    for scheduler in (unlimited, plain):
        for member in (1, 2, 3):
            scheduler.add(member, MIDNIGHT)
    now = MIDNIGHT + 5
    for observation in script:
        for member in (1, 2, 3):
            due = [s.record(member, observation, now).next_check_at for s in (unlimited, plain)]
            assert due[0] == due[1]
            kinds = [next_check_kind(s, member) for s in (unlimited, plain)]
            assert kinds[0] == kinds[1]
        now += 40
        assert unlimited.pop_due(now) == plain.pop_due(now)
    assert unlimited.stretch(now) == plain.stretch(now)


# --- the pace --------------------------------------------------------------------------------


def test_idle_members_cost_a_fraction_of_today_and_the_budget_lasts_the_day() -> None:
    clock = ManualClock(MIDNIGHT)
    scheduler, allowance = paced(600, clock)
    for member in range(1, 6):
        scheduler.add(member, clock.now)
    polls = run(scheduler, allowance, clock, MIDNIGHT + 2 * DAY, lambda m, at: Idle())
    times = [at for at, _ in polls]
    # Today: one check per idle member every 105 s, 3,400 a day for five members.
    assert most_in_a_day(times) <= 600 - reserve_for(600)
    per_member = [sum(1 for _, m in polls if m == member) / 2 for member in range(1, 6)]
    assert all(8 <= calls <= 120 for calls in per_member), per_member
    # Never blind for long: every idle member is checked at least every two hours.
    for member in range(1, 6):
        mine = [at for at, m in polls if m == member]
        assert max(b - a for a, b in itertools.pairwise(mine)) <= 2 * HOUR + 1


def test_idle_checks_gather_where_sessions_usually_start() -> None:
    clock = ManualClock(MIDNIGHT)
    scheduler, _ = paced(600, clock)
    scheduler.add(1, clock.now)
    # A week of evenings: idle all day, a session from 20:10 to 22:00.
    for day in range(7):
        base = MIDNIGHT + day * DAY
        for at in range(0, 20 * 3600, 1800):
            scheduler.record(1, Idle(), base + at)
        for at in range(20 * 3600 + 600, 22 * 3600, 200):
            scheduler.record(1, playing(f"t{day}-{at}", 1, 201), base + at)
        for at in range(22 * 3600, 24 * 3600, 1800):
            scheduler.record(1, Idle(), base + at)
    week = MIDNIGHT + 7 * DAY
    at_night = scheduler.record(1, Idle(), week + 3 * HOUR).next_check_at
    in_the_evening = scheduler.record(1, Idle(), week + 20 * HOUR + 60).next_check_at
    before_the_evening = scheduler.record(1, Idle(), week + 19 * HOUR + 30 * 60).next_check_at
    assert at_night is not None
    assert in_the_evening is not None
    assert before_the_evening is not None
    night, evening = at_night - (week + 3 * HOUR), in_the_evening - (week + 20 * HOUR + 60)
    assert night >= 3 * evening  # nights are watched rarely
    assert IDLE_CEILING * (1 - CONFIG.jitter_fraction) <= evening  # never below today's
    # Half an hour before the usual start, the next check is planned by then, not later.
    assert before_the_evening <= week + 20 * HOUR + 60


def test_end_checks_keep_their_room_when_the_allowance_runs_low() -> None:
    clock = ManualClock(MIDNIGHT + 20 * HOUR)
    scheduler, allowance = paced(600, clock)
    for member in (1, 2, 3):
        scheduler.add(member, clock.now)
    for member in (1, 2, 3):
        scheduler.record(member, playing(f"x{member}", 1, 201), clock.now)
    scheduler.add(4, clock.now)
    scheduler.record(4, Idle(), clock.now)  # idle: an idle check, a priced one
    left = 12
    allowance.count("poll", 600 - reserve_for(600) - left)  # twelve polls left in the day
    clock.now += 3 * HOUR  # everyone is due
    pace = scheduler.pace
    assert pace is not None
    plan = pace.plan(clock.now)
    # The log's recently-played calls keep theirs; the next hour's end checks need the rest.
    assert 0 < plan.fills < left - 3
    assert plan.headroom > left - plan.fills
    popped = scheduler.pop_due(clock.now)
    assert sorted(popped) == [1, 2, 3]  # the end checks; the idle check waits
    assert all(check_purpose(scheduler, m) is CheckKind.END for m in popped)


def test_no_poll_starts_when_the_allowance_is_spent_and_the_loop_sleeps_till_it_frees() -> None:
    clock = ManualClock(MIDNIGHT + 10 * HOUR)
    scheduler, allowance = paced(600, clock)
    scheduler.add(1, clock.now)
    allowance.count("poll", 600 - reserve_for(600))  # all spent, ten hours ago... now
    clock.now += HOUR
    assert scheduler.pop_due(clock.now) == []
    wake = scheduler.next_wakeup(clock.now)
    assert wake is not None
    # The calls counted at 10:00 leave the window one day after their minute ends.
    assert wake == pytest.approx(MIDNIGHT + 10 * HOUR + 60 + DAY, abs=1.0)
    clock.now = wake + 1
    assert scheduler.pop_due(clock.now) == [1]


def test_a_day_that_cannot_carry_its_end_checks_thins_them_and_stays_inside() -> None:
    clock = ManualClock(MIDNIGHT)
    scheduler, allowance = paced(600, clock)
    for member in range(1, 6):
        scheduler.add(member, clock.now)
    track = 200.0

    def always_playing(member: int, at: float) -> Observation:  # 24 hours a day, no skips
        index, progress = divmod(at - MIDNIGHT + member * 37.0, track)
        return playing(f"{member}-{index}", progress, track)

    polls = run(scheduler, allowance, clock, MIDNIGHT + 2 * DAY, always_playing)
    pace = scheduler.pace
    assert pace is not None
    assert pace.plan(clock.now).end_gap > track  # thinned
    times = [at for at, _ in polls]
    assert most_in_a_day(times) <= 600 - reserve_for(600)
    # Spread over the day, not spent by noon: nearly every hour of the second day sees checks.
    hours = {int((at - MIDNIGHT) // HOUR) for at in times if at >= MIDNIGHT + DAY}
    assert len(hours) >= 22


# --- skip checks where skips happen -------------------------------------------------------------


def test_the_skip_model_holds_the_published_figures() -> None:
    model = SkipModel(PaceConfig())
    assert 1 - model.survival(5.0, 210.0) == pytest.approx(0.24)
    assert 1 - model.survival(30.0, 210.0) == pytest.approx(0.35)
    assert 1 - model.survival(209.99, 210.0) == pytest.approx(0.49, abs=1e-3)


def test_skip_checks_go_first_where_skips_are_dense_and_thin_out_with_the_price() -> None:
    model = SkipModel(PaceConfig())

    def placements(price: float) -> list[float]:
        at, found = 1.0, []
        while (after := model.next_check(at, 210.0, price)) is not None:
            found.append(after)
            at = after
        return found

    cheap = placements(1.0)
    assert 5.0 <= cheap[0] <= 15.0  # just after the first seconds, where 24 % are skipped
    gaps = [b - a for a, b in itertools.pairwise([1.0, *cheap])]
    assert gaps[1] > gaps[0]  # sparser as the hazard falls
    assert max(gaps) > 2 * gaps[0]
    dearer = placements(10.0)
    assert 0 < len(dearer) < len(cheap)
    assert placements(1000.0) == []  # dear calls: only the end check
    assert model.checks_per_track(1.0) > model.checks_per_track(10.0) > 0


def test_under_a_budget_a_fresh_track_gets_an_early_skip_check_and_its_end_check() -> None:
    clock = ManualClock(MIDNIGHT + 12 * HOUR)
    scheduler, _ = paced(100_000, clock)  # plenty left: calls are cheap
    scheduler.add(1, clock.now)
    due = scheduler.record(1, playing("a", 1, 210), clock.now).next_check_at
    assert due is not None
    assert next_check_kind(scheduler, 1) is CheckKind.SKIP
    assert 4.0 <= due - clock.now <= 14.0  # today: ceil(210 / 28) even gaps of 26.4 s
    # Should the budget hold it, the skip check becomes the end check at the predicted end.
    assert scheduler.pop_due(clock.now + 210) == [1]
    assert check_purpose(scheduler, 1) is CheckKind.SKIP


def test_natural_track_ends_stay_one_check_when_calls_are_dear() -> None:
    clock = ManualClock(MIDNIGHT + 12 * HOUR)
    scheduler, allowance = paced(600, clock)
    scheduler.add(1, clock.now)
    allowance.count("poll", 380)  # most of the day spent: the price is high
    due = scheduler.record(1, playing("a", 1, 210), clock.now).next_check_at
    assert due is not None
    assert next_check_kind(scheduler, 1) is CheckKind.END
    assert 210.0 <= due - clock.now <= 210.5  # the predicted end, plus the margin


# --- what is learned ---------------------------------------------------------------------------


def test_the_profile_learns_hours_and_session_starts() -> None:
    profile = ListeningProfile(PaceConfig())
    prior_share = profile.listening_share(1, 8)
    for day in range(5):
        base = MIDNIGHT + day * DAY
        profile.note(1, base + 7 * HOUR, playing=False)
        profile.note(1, base + 8 * HOUR, playing=True, left=100, began=base + 8 * HOUR - 5)
        profile.note(1, base + 9 * HOUR, playing=True, left=100, began=base + 9 * HOUR)
        profile.note(1, base + 9 * HOUR + 50, playing=False)
        profile.pause(1)  # not watched until the next day
    assert profile.listening_share(1, 8) > 0.8 > prior_share
    assert profile.start_hazard(1, 7) > 5 * profile.start_hazard(1, 8)  # 07:59:55 starts
    assert profile.listening_share(1, 3) == pytest.approx(prior_share)  # never watched
    assert profile.start_hazard(2, 7) == pytest.approx(profile.start_hazard(1, 3))  # prior


def test_the_pace_keeps_no_state_beyond_its_members() -> None:
    clock = ManualClock(MIDNIGHT)
    pace = DailyPace(RollingAllowance(600, clock), PaceConfig(), idle_floor=IDLE_CEILING)
    pace.add(1)
    pace.observe(1, Idle(), clock.now)
    pace.remove(1)
    pace.profile.forget(1)
    assert all(not state for state in pace.per_member_state().values())
    assert math.isfinite(pace.plan(clock.now).price)
