"""The listening log without polling: recently-played once per stretch of listening.

``FillPlan`` alone (pure, Unix times passed in), then the log against the fake Spotify: a real
SQLite log, the real client, the fake's recently-played, and a poller that looks rarely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from bot.listening.fills import (
    FIRST_INTERVAL,
    LONGEST_INTERVAL,
    OVERLAP,
    RETRY_AFTER,
    SWEEP_EVERY,
    FillPlan,
)
from bot.listening.log import ListeningLog
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SCOPES
from bot.spotify.http import SpotifySender
from bot.spotify.models import NothingPlaying, Playback, PlayedTrack, Track
from bot.storage import Storage
from tests.fakes.spotify import FakeSpotify, track_object
from tests.helpers import ManualClock, linked_account, no_sleep
from tests.peek import log_idle

NOW = 1_800_000_000.0
ALICE = 11
MINUTE = 60.0


# --- the plan ------------------------------------------------------------------------------------


def test_a_stretch_of_listening_is_asked_for_once_before_entries_can_pile_up() -> None:
    plan = FillPlan()
    assert plan.observe(ALICE, NOW, "stopped") is None  # the first answer: nothing to ask
    # Seen playing ten minutes later: the listening may have begun right after NOW.
    assert plan.observe(ALICE, NOW + 10 * MINUTE, "playing") is None
    assert plan.observe(ALICE, NOW + 19 * MINUTE, "playing") is None
    assert plan.observe(ALICE, NOW + 21 * MINUTE, "playing") == NOW - OVERLAP
    assert plan.observe(ALICE, NOW + 22 * MINUTE, "playing") is None  # one call at a time
    plan.asked(ALICE, NOW + 21 * MINUTE, [NOW + 15 * MINUTE + i * 60 for i in range(6)])
    assert plan.observe(ALICE, NOW + 30 * MINUTE, "playing") is None
    # Six plays in 21 minutes: 40 take over two hours; after the longest stretch, once more.
    assert plan.observe(ALICE, NOW + 21 * MINUTE + LONGEST_INTERVAL, "playing") == (
        NOW + 21 * MINUTE - OVERLAP
    )


def test_stopping_asks_at_once_and_a_known_pace_asks_less_often() -> None:
    plan = FillPlan()
    plan.observe(ALICE, NOW, "playing")
    assert plan.fill_interval(ALICE) == FIRST_INTERVAL  # unknown: the worst case, 30 s plays
    after = plan.observe(ALICE, NOW + 10 * MINUTE, "stopped")
    assert after == NOW - OVERLAP
    # Ten minutes, three plays counted: at that pace 40 entries take over two hours.
    plan.asked(ALICE, NOW + 10 * MINUTE, [NOW + 3 * MINUTE, NOW + 6 * MINUTE, NOW + 9 * MINUTE])
    assert plan.fill_interval(ALICE) == LONGEST_INTERVAL
    assert plan.observe(ALICE, NOW + 11 * MINUTE, "stopped") is None  # nothing new since
    # A full answer (50 entries) may have lost older ones: ask sooner.
    plan.observe(ALICE, NOW + 20 * MINUTE, "playing")
    due = plan.observe(ALICE, NOW + 3 * 3600.0, "playing")
    assert due is not None
    plan.asked(ALICE, NOW + 3 * 3600.0, [NOW + 3 * 3600.0 - i for i in range(50)])
    assert plan.fill_interval(ALICE) == FIRST_INTERVAL


def test_without_answers_the_timer_asks_and_a_quiet_answer_ends_the_stretch() -> None:
    plan = FillPlan()
    plan.observe(ALICE, NOW, "playing")  # then the poller looks no more (throttled, held)
    assert plan.due(NOW + 19 * MINUTE) == []
    assert plan.due(NOW + 21 * MINUTE) == [(ALICE, NOW - OVERLAP)]
    assert plan.due(NOW + 22 * MINUTE) == []  # under way
    plan.asked(ALICE, NOW + 21 * MINUTE, [NOW + 5 * MINUTE, NOW + 12 * MINUTE])
    later = NOW + 21 * MINUTE + LONGEST_INTERVAL  # two plays in 21 minutes: a slow pace
    assert plan.due(later - MINUTE) == []
    assert plan.due(later) == [(ALICE, NOW + 21 * MINUTE - OVERLAP)]
    plan.asked(ALICE, later, [NOW + 12 * MINUTE])  # nothing after the last call: stopped
    assert plan.due(later + 3 * 3600.0) == []  # nothing piles up
    assert plan.due(later + SWEEP_EVERY) == [(ALICE, later - OVERLAP)]


def test_a_failed_call_is_tried_again_later() -> None:
    plan = FillPlan()
    plan.observe(ALICE, NOW, "playing")
    assert plan.observe(ALICE, NOW + 25 * MINUTE, "playing") is not None
    plan.failed(ALICE, NOW + 25 * MINUTE)
    assert plan.observe(ALICE, NOW + 26 * MINUTE, "playing") is None
    assert plan.due(NOW + 25 * MINUTE + RETRY_AFTER) == [(ALICE, NOW - OVERLAP)]


# --- the log against the fake Spotify ----------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeSpotify]:
    async with FakeSpotify.running() as fake:
        yield fake


class Privacy:
    def is_private_now(self, user_id: int) -> bool:
        return False


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


History = tuple[ListeningLog, list[int | None]]


@pytest.fixture
async def history(tmp_path: Path, fake: FakeSpotify, clock: ManualClock) -> AsyncIterator[History]:
    token = fake.grant_tokens("alice", scope=" ".join(SCOPES))[0]
    calls: list[int | None] = []
    async with (
        aiohttp.ClientSession() as session,
        await Storage.open(tmp_path / "bot.db") as storage,
    ):
        await storage.links.save_link(linked_account(ALICE))
        api = SpotifyApi(SpotifySender(session, sleep=no_sleep), api_base=fake.api_base)

        async def recently_played(member: int, after_ms: int | None) -> Sequence[PlayedTrack]:
            calls.append(after_ms)
            return await api.recently_played(token, after_ms=after_ms)

        log = ListeningLog(
            storage, Privacy(), keep_days=90, recently_played=recently_played, clock=clock
        )
        await log.start()
        yield log, calls
        await log.stop()


def song(number: int) -> Track:
    uri = f"spotify:track:s{number}"
    return Track(name=f"Song {number}", uri=uri, duration_ms=180_000, id=f"s{number}")


def listen(fake: FakeSpotify, first: int, last: int, start: float) -> float:
    """Plays ``first``..``last`` back to back from ``start``, 3 minutes each; the end."""
    for number in range(first, last + 1):
        end = start + 180.0
        fake.add_played("alice", track_object(f"s{number}", f"Song {number}", 180_000), end)
        start = end
    return start


async def test_the_log_stays_complete_while_the_poller_looks_rarely(
    history: History, fake: FakeSpotify, clock: ManualClock
) -> None:
    log, calls = history
    playback = Playback("track", song(1), True, 1000, received_at=NOW)
    log.gaps.polled(ALICE, playback)  # the poller sees Alice start; then it is throttled
    end = listen(fake, 1, 12, NOW - 1)  # 36 minutes of listening nobody watches
    clock.now = NOW + 21 * MINUTE
    log.gaps.tick()  # the log's own timer
    await log_idle(log)
    assert calls == [int((NOW - OVERLAP) * 1000)]
    clock.now = end + 60
    log.gaps.polled(ALICE, NothingPlaying(received_at=clock.now))  # she stopped: once more
    await log_idle(log)
    assert len(calls) == 2
    plays = await log.recent(ALICE, limit=50)
    assert sorted(p.track_id for p in plays) == sorted(f"s{n}" for n in range(1, 13))
    assert all(p.source == "recently_played" for p in plays)
    clock.now += 30 * MINUTE
    log.gaps.tick()
    log.gaps.polled(ALICE, NothingPlaying(received_at=clock.now))
    await log_idle(log)
    assert len(calls) == 2  # stopped: no more calls


async def test_a_play_the_poller_saw_is_logged_once(
    history: History, fake: FakeSpotify, clock: ManualClock
) -> None:
    log, _ = history
    playback = Playback("track", song(1), True, 5_000, received_at=NOW)
    await log.observe(ALICE, playback, source="spotify")
    log.gaps.polled(ALICE, playback)
    listen(fake, 1, 3, NOW - 5)
    clock.now = NOW + 10 * MINUTE
    log.gaps.polled(ALICE, NothingPlaying(received_at=clock.now))
    await log_idle(log)
    plays = await log.recent(ALICE, limit=50)
    assert sorted((p.track_id, p.source) for p in plays) == [
        ("s1", "spotify"),
        ("s2", "recently_played"),
        ("s3", "recently_played"),
    ]


async def test_a_refused_call_leaves_the_gap_to_the_next(
    history: History, fake: FakeSpotify, clock: ManualClock
) -> None:
    log, calls = history
    log.gaps.polled(ALICE, Playback("track", song(1), True, 1000, received_at=NOW))
    listen(fake, 1, 8, NOW - 1)
    fake.fail_next("recently_played", 429, retry_after=0)
    clock.now = NOW + 25 * MINUTE
    log.gaps.tick()
    await log_idle(log)
    assert len(calls) == 1
    assert await log.recent(ALICE) == []
    clock.now += RETRY_AFTER
    log.gaps.tick()
    await log_idle(log)
    assert calls[-1] == int((NOW - OVERLAP) * 1000)  # the same stretch, still whole
    assert len(await log.recent(ALICE, limit=50)) == 8
