"""The sender with the daily budget, against the fake Spotify on loopback: every attempt
counted with its purpose, nothing sent that the budget refuses, QUOTA_EXCEEDED held, and no
token refresh while the Web API would refuse the call it is for."""

from __future__ import annotations

import random

import aiohttp
import pytest

from bot.errors import SpotifyDailyLimit, SpotifyRateLimited, SpotifyUnavailable
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.budget import DailyBudget
from bot.spotify.http import SpotifySender
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.helpers import ManualClock, no_sleep

WALL = 1_750_000_040.0


class World:
    def __init__(self, session: aiohttp.ClientSession, fake: FakeSpotify, setting: int) -> None:
        self.monotonic = ManualClock(1_000.0)
        self.wall = ManualClock(WALL)
        self.budget = DailyBudget(setting, clock=self.wall, monotonic=self.monotonic)
        self.sender = SpotifySender(
            session,
            clock=self.monotonic,
            wall_clock=self.wall,
            sleep=no_sleep,
            rng=random.Random(3),
            budget=self.budget,
        )
        self.api = SpotifyApi(self.sender, api_base=fake.api_base)
        self.auth = SpotifyAuth(
            self.sender,
            client_id=fake.client_id,
            client_secret=fake.client_secret,
            redirect_uri=fake.redirect_uris[0],
            accounts_base=fake.accounts_base,
        )


@pytest.fixture
def world(session: aiohttp.ClientSession, fake: FakeSpotify) -> World:
    return World(session, fake, 600)


async def test_every_attempt_counts_retries_and_refusals_included(
    fake: FakeSpotify, world: World
) -> None:
    token, refresh = fake.grant_tokens("alice")
    fake.fail_next("currently_playing", 503, times=3)  # the first try and both retries
    with pytest.raises(SpotifyUnavailable):
        await world.api.currently_playing(token, purpose="poll")
    fake.fail_next("recently_played", 429, retry_after=1)
    with pytest.raises(SpotifyRateLimited):
        await world.api.recently_played(token, purpose="recently_played")
    world.monotonic.advance(2)
    await world.api.me(token)  # linking, by default
    await world.auth.refresh(refresh, purpose="poll")
    assert world.budget.calls_by_purpose() == {"poll": 3, "recently_played": 1, "linking": 1}
    assert world.budget.calls_by_purpose("accounts") == {"poll": 1}  # counted apart
    assert fake.call_count("currently_playing") == 3


async def test_nothing_is_sent_that_the_budget_refuses(
    session: aiohttp.ClientSession, fake: FakeSpotify
) -> None:
    world = World(session, fake, 60)  # polling may spend 60 - 50 (the reserve) = 10
    token, refresh = fake.grant_tokens("alice")
    fake.set_playing("alice", track_payload("t1", "Song", 200_000, 1_000))
    for _ in range(10):
        await world.api.currently_playing(token, purpose="poll")
    with pytest.raises(SpotifyDailyLimit) as refused:
        await world.api.currently_playing(token, purpose="poll")
    assert refused.value.reason == "budget"
    with pytest.raises(SpotifyDailyLimit):  # nor a refresh that only a poll would use
        await world.auth.refresh(refresh, purpose="poll")
    assert fake.call_count("currently_playing") == 10
    assert fake.call_count("token") == 0
    await world.api.currently_playing(token)  # a command still may: the reserve
    assert fake.call_count("currently_playing") == 11


async def test_quota_exceeded_holds_the_web_api_and_no_refresh_is_asked(
    fake: FakeSpotify, world: World
) -> None:
    quota = fake.set_daily_quota(2)
    assert quota is not None
    token, refresh = fake.grant_tokens("alice")
    await world.api.me(token)
    await world.api.currently_playing(token)
    with pytest.raises(SpotifyDailyLimit) as refused:
        await world.api.currently_playing(token)
    retry_after = float(quota.refused_until - fake.now())
    assert refused.value.reason == "quota"
    assert refused.value.until == pytest.approx(WALL + retry_after, abs=1.0)
    assert world.sender.hold_quota_exceeded
    assert world.budget.state() == "quota_spent"
    calls = fake.call_count("me") + fake.call_count("currently_playing")
    for attempt in (world.api.me(token), world.auth.refresh(refresh)):
        with pytest.raises(SpotifyDailyLimit) as held:
            await attempt
        assert held.value.until == refused.value.until
    assert fake.call_count("me") + fake.call_count("currently_playing") == calls == 3
    assert fake.call_count("token") == 0  # the accounts service is free, but nothing needs it
    assert quota.refusals == 1
    # The code exchange of a /link still goes through: the accounts service is not held.
    code = fake.issue_code("bob")
    grant = await world.auth.exchange_code(code)
    assert grant.refresh_token
