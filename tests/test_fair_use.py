"""Fair use per member: a minute's and a day's share of Spotify-calling commands, the asking
member counted, nothing counted that never left; the render queue."""

from __future__ import annotations

import math
import re
import time

import pytest

from bot.errors import MemberSpotifyLimit, NotLinked, SpotifyDailyLimit, SpotifyUnavailable
from bot.pictures.charts import ChartRenderer, RenderBusy
from bot.spotify.fair_use import FairUse
from tests.helpers import ManualClock

ALICE, BOB = 1, 2
RELATIVE = re.compile(r"<t:(\d+):R>")


def used(fair: FairUse, member: int, times: int) -> None:
    for _ in range(times):
        with fair.command(member):
            pass


def test_five_commands_a_minute_then_a_friendly_refusal_naming_when() -> None:
    clock = ManualClock(1_000_000.0)
    fair = FairUse(lambda: math.inf, clock=clock)
    for _ in range(5):
        used(fair, ALICE, 1)
        clock.advance(2)
    with pytest.raises(MemberSpotifyLimit) as refused:
        fair.before_command(ALICE)
    words = refused.value.user_message
    found = RELATIVE.search(words)
    assert found is not None
    assert int(found.group(1)) == 1_000_060
    assert "5 commands that ask Spotify in the last minute" in words
    assert not re.search(r"\d+ s\b", words)
    used(fair, BOB, 5)  # another member has their own five
    clock.advance(50)  # the first of Alice's five is a minute old
    used(fair, ALICE, 1)
    with pytest.raises(MemberSpotifyLimit):
        fair.before_command(ALICE)


def test_no_member_spends_more_than_a_tenth_of_the_daily_budget() -> None:
    clock = ManualClock(2_000_000.0)
    budget = [600.0]
    fair = FairUse(lambda: budget[0], clock=clock)
    assert fair.daily_share() == 60
    for _ in range(60):
        used(fair, ALICE, 1)
        clock.advance(61)
    with pytest.raises(MemberSpotifyLimit) as refused:
        fair.before_command(ALICE)
    assert refused.value.reason == "day"
    assert "60 a day" in refused.value.user_message
    first = 2_000_000
    assert f"<t:{first + 86_400}:t>" in refused.value.user_message
    used(fair, BOB, 1)
    # A learned (smaller) budget shrinks the share at once; no daily limit lifts it.
    budget[0] = 20.0
    used(fair, BOB, 1)
    with pytest.raises(MemberSpotifyLimit) as bob:
        fair.before_command(BOB)
    assert bob.value.reason == "day"
    # A day after the first, that one is free again, and no more.
    budget[0] = 600.0
    clock.now = first + 86_400 + 1
    used(fair, ALICE, 1)
    with pytest.raises(MemberSpotifyLimit) as again:
        fair.before_command(ALICE)
    assert again.value.reason == "day"
    budget[0] = math.inf  # no daily limit: only the minute's five
    used(fair, ALICE, 4)


def test_commands_that_never_reached_spotify_are_not_counted() -> None:
    fair = FairUse(lambda: math.inf, clock=ManualClock())
    for error in (NotLinked(), SpotifyDailyLimit(1, 1, until=time.time() + 60)):
        for _ in range(6):
            with pytest.raises(type(error)), fair.command(ALICE):
                raise error
    # A call that went out and failed counts: Spotify was asked.
    for _ in range(5):
        with pytest.raises(SpotifyUnavailable), fair.command(ALICE):
            raise SpotifyUnavailable()
    with pytest.raises(MemberSpotifyLimit):
        fair.before_command(ALICE)


async def test_the_render_queue_holds_one_per_owner_and_at_most_eight_waiting() -> None:
    renderer = ChartRenderer()
    try:
        with renderer.turn(ALICE):
            with pytest.raises(RenderBusy) as yours:
                renderer.turn(ALICE).__enter__()
            assert "still being drawn" in yours.value.user_message
            with renderer.turn(BOB):
                pass
            others = [renderer.turn(100 + n) for n in range(8)]
            for turn in others:
                turn.__enter__()  # one drawn (Alice's) and eight waiting
            with pytest.raises(RenderBusy) as full:
                renderer.turn(999).__enter__()
            assert "try again in a few seconds" in full.value.user_message
            for turn in others:
                turn.__exit__(None, None, None)
        with renderer.turn(ALICE):
            pass
    finally:
        renderer.close()
