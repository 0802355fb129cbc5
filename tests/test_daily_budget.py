"""The daily budget of Web API calls on a clock the test moves: the count, the reserve, the
hold after QUOTA_EXCEEDED and what is learned from it (``bot.spotify.budget``)."""

from __future__ import annotations

import logging
import math

import pytest

from bot.errors import SpotifyDailyLimit
from bot.spotify.budget import DailyBudget, QuotaState
from bot.spotify.http import Purpose
from bot.spotify.rolling import WINDOW

DAY = 86_400.0
T0 = 1_750_000_040.0  # 20 s into a minute


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budget_of(setting: int, clock: Clock) -> DailyBudget:
    return DailyBudget(setting, clock=clock, monotonic=lambda: clock.now - T0)


def spend(budget: DailyBudget, calls: int, purpose: Purpose = "poll") -> None:
    for _ in range(calls):
        budget.admit(purpose)
        budget.count("api", purpose)


def test_polling_keeps_off_the_commands_reserve() -> None:
    clock = Clock()
    budget = budget_of(600, clock)
    assert budget.polling_left() == 600 - 90  # 15 % of 600
    spend(budget, 500)
    spend(budget, 10, "recently_played")  # the listening log's calls are background work too
    assert budget.polling_left() == 0
    with pytest.raises(SpotifyDailyLimit) as refused:
        budget.admit("poll")
    # Refused until the oldest call's minute has left the window (counted to its minute's end).
    assert refused.value.reason == "budget"
    assert refused.value.until == T0 - 20 + 60 + DAY
    assert refused.value.retry_at == pytest.approx(refused.value.until - T0)
    spend(budget, 90, "command")  # a command may use the reserve, then the rest
    with pytest.raises(SpotifyDailyLimit):
        budget.admit("linking")
    assert budget.state() == "budget_spent"
    budget.count("accounts", "command")  # token requests are counted apart, never limited
    assert budget.calls_by_purpose() == {"poll": 500, "recently_played": 10, "command": 90}
    assert budget.calls_by_purpose("accounts") == {"command": 1}


def test_the_reserve_is_at_least_fifty_calls() -> None:
    budget = budget_of(200, Clock())
    assert budget.polling_left() == 150


def test_calls_leave_the_window_after_24_hours() -> None:
    clock = Clock()
    budget = budget_of(600, clock)
    spend(budget, 100)
    clock.now += 3600
    spend(budget, 50, "command")
    assert budget.freed_within(DAY - 3600 - 60) == 0
    assert budget.freed_within(DAY - 3600 + 60) == 100
    assert budget.freed_within(DAY + 60) == 150
    clock.now = T0 + DAY + 40  # the first minute has ended a day ago
    assert budget.polling_left() == 510 - 50
    assert budget.calls_by_purpose() == {"command": 50}


def test_no_daily_limit_when_the_setting_is_zero() -> None:
    budget = budget_of(0, Clock())
    spend(budget, 5000)
    assert budget.polling_left() == math.inf
    assert budget.effective() == math.inf
    assert budget.state() == "ok"


def test_a_quota_refusal_before_a_full_day_counted_holds_until_retry_after() -> None:
    clock = Clock()
    budget = budget_of(600, clock)
    heard: list[QuotaState] = []
    budget.add_refusal_listener(heard.append)
    spend(budget, 477)  # another app of the same developer used the rest
    until = budget.quota_exceeded(48_925)
    assert until == T0 + 48_925  # the count (477) is under the budget: Retry-After decides
    assert not budget.is_learned()  # the count does not cover 24 hours
    assert budget.polling_left() == 0
    assert budget.state() == "quota_spent"
    for purpose in ("command", "linking", "poll"):
        with pytest.raises(SpotifyDailyLimit) as held:
            budget.admit(purpose)  # type: ignore[arg-type]
        assert (held.value.until, held.value.reason) == (T0 + 48_925, "quota")
    assert heard == [QuotaState(T0, T0 + 48_925, None, None)]
    clock.now = T0 + 48_925
    budget.admit("command")
    assert budget.state() == "ok"


def test_a_refusal_after_a_full_day_teaches_a_smaller_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    budget = budget_of(2000, clock)
    spend(budget, 1)
    clock.now += WINDOW - 120  # the count covers a whole day when the refusal comes
    spend(budget, 1143)
    clock.now += 120
    spend(budget, 1)  # refused by Spotify: 1,144 calls counted before it
    with caplog.at_level(logging.WARNING):
        until = budget.quota_exceeded(600)
    assert budget.effective() == 1029  # 90 % of 1,144
    assert budget.is_learned()
    # Held until the count (1,145 with the refused call) falls under 1,029: 117 calls must
    # leave, the 1,143 made two minutes before the refusal (the first one left already).
    assert until == pytest.approx(T0 + WINDOW - 120 + 40 + WINDOW)
    assert budget.hold_end() == until
    assert "now spends at most 1029 a day" in caplog.text


def test_a_learned_budget_never_goes_below_a_quarter_of_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    budget = budget_of(2000, clock)
    spend(budget, 1)
    clock.now += WINDOW + 60
    spend(budget, 300)
    with caplog.at_level(logging.ERROR):
        budget.quota_exceeded(60)
    assert budget.effective() == 500
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "another app of the same Spotify developer account" in error.getMessage()


def test_with_no_daily_limit_the_refusal_is_learned_all_the_same() -> None:
    clock = Clock()
    budget = budget_of(0, clock)
    spend(budget, 1)
    clock.now += WINDOW + 60
    spend(budget, 1001)  # the last one refused by Spotify
    budget.quota_exceeded(60)
    assert budget.effective() == 900
    assert budget.is_learned()
    assert budget.polling_left() == 0  # held


def test_the_learned_budget_rises_ten_percent_a_day_after_seven_days() -> None:
    clock = Clock()
    budget = budget_of(600, clock)
    budget.load([], QuotaState(T0 - 2 * DAY, 0.0, 400, T0))
    assert budget.effective() == 400
    clock.now = T0 + 7 * DAY - 1
    assert budget.effective() == 400
    clock.now = T0 + 7 * DAY
    assert budget.effective() == 440
    clock.now = T0 + 8 * DAY
    assert budget.effective() == 484
    clock.now = T0 + 12 * DAY
    assert budget.effective() == 600  # back at the setting, never above
    assert not budget.is_learned()


def test_a_refusal_made_here_survives_an_older_database_read() -> None:
    clock = Clock()
    budget = budget_of(600, clock)
    budget.quota_exceeded(3600)
    budget.load([], QuotaState(T0 - DAY, 0.0, None, None))  # read before our write landed
    assert budget.quota.hold_until == T0 + 3600
    assert budget.quota.counting_since == T0 - DAY  # the earliest count wins
