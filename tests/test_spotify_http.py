"""The sender against the fake Spotify on loopback: timeouts, retries, 429 holds, counting."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import aiohttp
import pytest

from bot.errors import SpotifyRateLimited, SpotifyUnavailable
from bot.spotify.http import (
    DEFAULT_RETRY_AFTER,
    RetryPolicy,
    SpotifyRequest,
    SpotifySender,
    parse_retry_after,
)
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.helpers import ManualClock


class RecordingSleep:
    """Records requested sleeps and returns at once (the sender's retries stay testable)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def outcomes() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def sender(
    session: aiohttp.ClientSession,
    clock: ManualClock,
    sleeps: RecordingSleep,
    outcomes: list[tuple[str, str]],
) -> SpotifySender:
    return SpotifySender(
        session,
        clock=clock,
        sleep=sleeps,
        rng=random.Random(7),
        on_response=lambda endpoint, outcome: outcomes.append((endpoint, outcome)),
    )


def now_playing(fake: FakeSpotify, user: str) -> SpotifyRequest:
    access, _ = fake.grant_tokens(user)
    return SpotifyRequest(
        method="GET",
        url=f"{fake.api_base}/me/player/currently-playing",
        endpoint="currently_playing",
        headers={"Authorization": f"Bearer {access}"},
        params={"additional_types": "episode"},
    )


def me(fake: FakeSpotify, user: str) -> SpotifyRequest:
    access, _ = fake.grant_tokens(user)
    return SpotifyRequest(
        method="GET",
        url=f"{fake.api_base}/me",
        endpoint="me",
        headers={"Authorization": f"Bearer {access}"},
    )


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens here any more: connecting is refused


# --- plain answers -------------------------------------------------------------------------


async def test_200_returns_body_and_content_type(fake: FakeSpotify, sender: SpotifySender) -> None:
    fake.set_playing("alice", track_payload("t1", "Song", 200_000, 1_000))
    response = await sender.send(now_playing(fake, "alice"))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.json()["item"]["id"] == "t1"


async def test_204_is_an_empty_response_never_parsed(
    fake: FakeSpotify, sender: SpotifySender
) -> None:
    response = await sender.send(now_playing(fake, "alice"))
    assert response.status == 204
    assert response.body == b""
    assert response.content_type == ""  # Spotify sends no Content-Type on 204
    assert response.content_type != "application/json"
    assert response.json_or_none() is None


async def test_4xx_is_returned_for_the_endpoint_to_interpret(
    fake: FakeSpotify, sender: SpotifySender, outcomes: list[tuple[str, str]]
) -> None:
    response = await sender.send(now_playing(fake, "outsider"))
    assert response.status == 403
    assert response.content_type == "text/plain"
    assert outcomes == [("currently_playing", "403")]


async def test_request_repr_hides_tokens_and_form() -> None:
    request = SpotifyRequest(
        method="POST",
        url="http://127.0.0.1:1/api/token",
        endpoint="token",
        headers={"Authorization": "Bearer secret-token-value"},
        data={"refresh_token": "secret-refresh-value"},
    )
    assert "secret" not in repr(request)


# --- 429 and the app-wide hold -------------------------------------------------------------


async def test_429_raises_at_once_even_with_retry_after_3600(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    slept: list[float] = []

    async def tracking_sleep(seconds: float) -> None:
        slept.append(seconds)

    sender = SpotifySender(session, sleep=tracking_sleep)  # real clock
    fake.fail_next("currently_playing", 429, retry_after=3600)
    with pytest.raises(SpotifyRateLimited) as caught:
        await sender.send(now_playing(fake, "alice"))
    assert slept == []  # never sleeps on a 429
    assert caught.value.retry_after == 3600
    assert caught.value.retry_at == pytest.approx(time.monotonic() + 3600, abs=2.0)
    assert caught.value.status == 429
    assert not caught.value.quota_exceeded
    assert fake.call_count("currently_playing") == 1  # not retried


async def test_429_holds_every_request_app_wide_without_touching_the_network(
    fake: FakeSpotify,
    sender: SpotifySender,
    clock: ManualClock,
    outcomes: list[tuple[str, str]],
) -> None:
    fake.fail_next("currently_playing", 429, retry_after=120, user="alice")
    with pytest.raises(SpotifyRateLimited):
        await sender.send(now_playing(fake, "alice"))
    assert sender.hold_until == clock.now + 120
    assert sender.hold_remaining() == 120

    clock.advance(20)
    with pytest.raises(SpotifyRateLimited) as caught:
        await sender.send(me(fake, "bob"))  # another member, another endpoint
    assert caught.value.retry_after == pytest.approx(100)
    assert caught.value.retry_at == sender.hold_until
    assert fake.call_count("me") == 0
    assert fake.call_count("currently_playing") == 1
    assert outcomes == [("currently_playing", "429")]  # the held request made no attempt


async def test_the_accounts_service_and_the_web_api_are_held_separately(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    fake.fail_next("me", 429, retry_after=3600)
    with pytest.raises(SpotifyRateLimited):
        await sender.send(me(fake, "alice"))
    assert sender.hold_remaining("api") == 3600
    assert sender.hold_remaining("accounts") == 0
    # A Web API hold does not stop a code exchange...
    token = SpotifyRequest(
        "POST",
        f"{fake.accounts_base}/api/token",
        "token",
        data={"grant_type": "client_credentials"},
        idempotent=False,
        service="accounts",
    )
    assert (await sender.send(token)).status in (200, 400)
    # ...and an accounts-service 429 holds only the accounts service.
    fake.fail_next("token.client_credentials", 429, retry_after=60)
    with pytest.raises(SpotifyRateLimited):
        await sender.send(token)
    assert sender.hold_remaining("accounts") == 60
    assert sender.hold_until == clock.now + 3600  # the Web API hold, as before
    with pytest.raises(SpotifyRateLimited) as held:
        await sender.send(token)
    assert held.value.retry_after == 60
    # The held request never reached Spotify.
    assert fake.call_count("token.client_credentials") == 2


async def test_hold_lifts_after_retry_after(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    fake.fail_next("me", 429, retry_after=30)
    with pytest.raises(SpotifyRateLimited):
        await sender.send(me(fake, "alice"))
    clock.advance(29.9)
    with pytest.raises(SpotifyRateLimited):
        await sender.send(me(fake, "alice"))
    clock.advance(0.1)
    response = await sender.send(me(fake, "alice"))
    assert response.status == 200
    assert fake.call_count("me") == 2


async def test_quota_exceeded_flag(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    fake.fail_next("currently_playing", 429, retry_after=86_400, quota_exceeded=True)
    with pytest.raises(SpotifyRateLimited) as caught:
        await sender.send(now_playing(fake, "alice"))
    assert caught.value.quota_exceeded
    assert caught.value.retry_after == 86_400
    with pytest.raises(SpotifyRateLimited) as held:
        await sender.send(me(fake, "bob"))
    assert held.value.quota_exceeded
    assert sender.hold_quota_exceeded


@pytest.mark.parametrize("header", [None, "soon", "-3", "nan", ""])
async def test_missing_or_garbage_retry_after_uses_the_default(
    fake: FakeSpotify, sender: SpotifySender, header: str | None
) -> None:
    if header is None:
        fake.fail_next(
            "me", 429, body={"error": {"status": 429, "message": "API rate limit exceeded"}}
        )
    else:
        fake.fail_next("me", 429, retry_after=header)
    with pytest.raises(SpotifyRateLimited) as caught:
        await sender.send(me(fake, "alice"))
    assert caught.value.retry_after == DEFAULT_RETRY_AFTER


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("inf") == DEFAULT_RETRY_AFTER
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") == DEFAULT_RETRY_AFTER


# --- 5xx, connection errors, timeouts ------------------------------------------------------


async def test_502_and_503_are_retried_then_succeed(
    fake: FakeSpotify,
    sender: SpotifySender,
    sleeps: RecordingSleep,
    outcomes: list[tuple[str, str]],
) -> None:
    fake.fail_next("me", 502)
    fake.fail_next("me", 503)
    response = await sender.send(me(fake, "alice"))
    assert response.status == 200
    assert fake.call_count("me") == 3
    assert [outcome for _, outcome in outcomes] == ["502", "503", "200"]
    assert len(sleeps.calls) == 2
    assert 0 < sleeps.calls[0] <= 2.0
    assert 0 < sleeps.calls[1] <= 2.0
    assert sum(sleeps.calls) <= 5.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_retried_at_most_twice_then_unavailable(
    fake: FakeSpotify, sender: SpotifySender, sleeps: RecordingSleep, status: int
) -> None:
    fake.fail_next("currently_playing", status, times=10)
    with pytest.raises(SpotifyUnavailable) as caught:
        await sender.send(now_playing(fake, "alice"))
    assert caught.value.status == status
    assert fake.call_count("currently_playing") == 3
    assert len(sleeps.calls) == 2
    assert sum(sleeps.calls) <= 5.0


async def test_5xx_total_time_is_bounded_with_real_sleeps(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    sender = SpotifySender(session)  # real clock, real asyncio.sleep
    fake.fail_next("me", 503, times=10)
    started = time.monotonic()
    with pytest.raises(SpotifyUnavailable):
        await sender.send(me(fake, "alice"))
    assert time.monotonic() - started <= 5.0
    assert fake.call_count("me") == 3


async def test_backoff_is_jittered_exponential_and_bounded(session: aiohttp.ClientSession) -> None:
    sender = SpotifySender(session, rng=random.Random(1))
    for _ in range(200):
        first, second = sender._backoff(0), sender._backoff(1)
        assert 0.25 <= first <= 0.5
        assert 0.5 <= second <= 1.0
    assert len({sender._backoff(0) for _ in range(20)}) > 1  # jittered


async def test_connection_refused_is_retried_then_unavailable(
    session: aiohttp.ClientSession, sleeps: RecordingSleep, outcomes: list[tuple[str, str]]
) -> None:
    sender = SpotifySender(session, sleep=sleeps, on_response=lambda e, o: outcomes.append((e, o)))
    request = SpotifyRequest("GET", f"http://127.0.0.1:{closed_port()}/v1/me", "me")
    with pytest.raises(SpotifyUnavailable) as caught:
        await sender.send(request)
    assert outcomes == [("me", "connection_error")] * 3
    assert len(sleeps.calls) == 2
    assert "3 attempts" in str(caught.value)


async def test_timeout_is_retried(
    fake: FakeSpotify,
    session: aiohttp.ClientSession,
    sleeps: RecordingSleep,
    outcomes: list[tuple[str, str]],
) -> None:
    sender = SpotifySender(
        session,
        sleep=sleeps,
        # Long enough for a loopback answer on a busy machine; the stuck one never comes.
        retry=RetryPolicy(timeout=aiohttp.ClientTimeout(total=1.0)),
        on_response=lambda e, o: outcomes.append((e, o)),
    )
    fake.delay_next("me", 30.0)
    response = await sender.send(me(fake, "alice"))
    assert response.status == 200
    assert [outcome for _, outcome in outcomes] == ["timeout", "200"]
    assert len(sleeps.calls) == 1


async def test_persistent_timeouts_end_in_unavailable(
    fake: FakeSpotify, session: aiohttp.ClientSession, sleeps: RecordingSleep
) -> None:
    sender = SpotifySender(
        session, sleep=sleeps, retry=RetryPolicy(timeout=aiohttp.ClientTimeout(total=0.1))
    )
    fake.delay_next("me", 30.0, times=3)  # answers that would come long after the test
    with pytest.raises(SpotifyUnavailable):
        await asyncio.wait_for(sender.send(me(fake, "alice")), 20)
    assert fake.call_count("me") == 3


async def test_non_idempotent_request_is_not_retried_after_a_timeout(
    fake: FakeSpotify, session: aiohttp.ClientSession, sleeps: RecordingSleep
) -> None:
    sender = SpotifySender(
        session, sleep=sleeps, retry=RetryPolicy(timeout=aiohttp.ClientTimeout(total=0.2))
    )
    fake.delay_next("token.client_credentials", 1.0)
    request = SpotifyRequest(
        "POST",
        f"{fake.accounts_base}/api/token",
        "token.refresh_token",
        data={"grant_type": "client_credentials"},
        idempotent=False,
    )
    with pytest.raises(SpotifyUnavailable, match="may have been acted on"):
        await sender.send(request)
    assert sleeps.calls == []


async def test_non_idempotent_request_is_retried_after_5xx_and_refused_connection(
    fake: FakeSpotify, session: aiohttp.ClientSession, sleeps: RecordingSleep
) -> None:
    sender = SpotifySender(session, sleep=sleeps)
    fake.fail_next("token", 503)
    request = SpotifyRequest(
        "POST",
        f"{fake.accounts_base}/api/token",
        "token",
        data={"grant_type": "nonsense"},
        idempotent=False,
    )
    response = await sender.send(request)
    assert response.status == 400
    assert fake.call_count("token") == 2
    refused = SpotifyRequest("POST", f"http://127.0.0.1:{closed_port()}/", "x", idempotent=False)
    with pytest.raises(SpotifyUnavailable):
        await sender.send(refused)
    assert len(sleeps.calls) == 3


# --- counting and hooks --------------------------------------------------------------------


async def test_requests_in_window_counts_attempts_in_a_rolling_window(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    assert sender.requests_in_window() == 0
    await sender.send(me(fake, "alice"))
    clock.advance(10)
    fake.fail_next("me", 503)
    await sender.send(me(fake, "alice"))  # two attempts
    assert sender.requests_in_window() == 3
    assert sender.requests_in_window(5) == 2
    clock.advance(25)  # the first request is now 35 s old
    assert sender.requests_in_window() == 2
    clock.advance(10)
    assert sender.requests_in_window() == 0


async def test_requests_in_window_keeps_history_for_a_longer_window(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    assert sender.requests_in_window(60) == 0  # asks for more history from now on
    await sender.send(me(fake, "alice"))
    clock.advance(45)
    await sender.send(me(fake, "alice"))
    assert sender.requests_in_window(60) == 2
    assert sender.requests_in_window(30) == 1


async def test_requests_in_window_stays_small_under_load(
    fake: FakeSpotify, sender: SpotifySender, clock: ManualClock
) -> None:
    for _ in range(200):
        await sender.send(me(fake, "alice"))
        clock.advance(1)
    assert sender.requests_in_window() == 29  # ages 1..29 s; one exactly 30 s old is out
    assert len(sender._window._sent_at) <= 30  # old entries are dropped as new ones arrive


async def test_a_failing_metrics_hook_does_not_break_requests(
    fake: FakeSpotify, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(endpoint: str, outcome: str) -> None:
        raise RuntimeError("metrics down")

    sender = SpotifySender(session, on_response=broken_hook)
    response = await sender.send(me(fake, "alice"))
    assert response.status == 200
    assert "on_response hook failed" in caplog.text


async def test_no_retry_starts_after_five_seconds_in_all(
    fake: FakeSpotify, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    # Each slow 502 "takes" 2.2 s on the fake clock: after the second one, 4.4 s have passed
    # and another backoff would end past the 5 s budget, so the sender gives up.
    async def slow_sleep(seconds: float) -> None:
        clock.advance(seconds)

    def outcome(endpoint: str, status: str) -> None:
        clock.advance(2.2)

    sender = SpotifySender(
        session, clock=clock, sleep=slow_sleep, rng=random.Random(1), on_response=outcome
    )
    fake.fail_next("currently_playing", 502, times=10)
    started = clock()
    with pytest.raises(SpotifyUnavailable):
        await sender.send(now_playing(fake, "alice"))
    assert fake.call_count("currently_playing") == 2
    assert clock() - started <= 5.0
