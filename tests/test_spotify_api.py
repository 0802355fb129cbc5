"""The Web API client against the fake: parsing and the status table."""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import pytest

from bot.errors import (
    SpotifyBadResponse,
    SpotifyError,
    SpotifyForbidden,
    SpotifyNotRegistered,
    SpotifyRateLimited,
    SpotifyUnauthorized,
    SpotifyUnavailable,
)
from bot.spotify.api import SpotifyApi
from bot.spotify.http import SpotifySender
from bot.spotify.models import Episode, NothingPlaying, Playback, Track
from tests.fakes.spotify import (
    NOT_REGISTERED_TEXT,
    FakeSpotify,
    ad_payload,
    episode_payload,
    fixture_payload,
    local_track_payload,
    track_payload,
    unknown_payload,
)
from tests.helpers import no_sleep


@pytest.fixture
def api(session: aiohttp.ClientSession, fake: FakeSpotify) -> SpotifyApi:
    return SpotifyApi(SpotifySender(session, sleep=no_sleep), api_base=fake.api_base)


@pytest.fixture
def alice_token(fake: FakeSpotify) -> str:
    return fake.grant_tokens("alice")[0]


async def test_me(api: SpotifyApi, fake: FakeSpotify) -> None:
    fake.add_user("zoe", display_name="Zoë Z", account_id="immutable-42")
    user = await api.me(fake.grant_tokens("zoe")[0])
    assert user.account_id == "immutable-42"
    assert user.id == "zoe"
    assert user.display_name == "Zoë Z"


async def test_currently_playing_real_capture(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.set_playing("alice", fixture_payload())
    before = time.time()
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert before <= playback.received_at <= time.time()
    assert playback.kind == "track"
    assert playback.is_playing
    assert playback.progress_ms == 46170
    assert isinstance(playback.item, Track)
    assert playback.item.name == "Yume no Naka e"
    assert [artist.name for artist in playback.item.artists] == ["Cherish"]
    assert playback.item.album_name == "Best Collection '75"
    assert playback.item.duration_ms == 151933
    assert fake.requests[-1].query == {"additional_types": "episode"}


async def test_currently_playing_built_track(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.set_playing(
        "alice",
        track_payload("t9", "Nine", 180_000, 90_000, is_playing=False, artists=("A", "B")),
    )
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert isinstance(playback.item, Track)
    assert playback.item.id == "t9"
    assert [artist.name for artist in playback.item.artists] == ["A", "B"]
    assert playback.item.images
    assert playback.item.url == "https://open.spotify.com/track/t9"
    assert not playback.is_playing
    assert playback.progress_ms is not None
    assert playback.item.duration_ms - playback.progress_ms == 90_000


async def test_currently_playing_episode(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.set_playing("alice", episode_payload("e1", "Ep", 3_600_000, 60_000, show="Pod"))
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert playback.kind == "episode"
    assert isinstance(playback.item, Episode)
    assert playback.item.show_name == "Pod"
    assert playback.item.publisher == "Fake Publisher"


async def test_fake_hides_episodes_without_additional_types(
    fake: FakeSpotify, session: aiohttp.ClientSession, alice_token: str
) -> None:
    fake.set_playing("alice", episode_payload("e1", "Ep", 3_600_000, 60_000))
    async with session.get(
        f"{fake.api_base}/me/player/currently-playing",
        headers={"Authorization": f"Bearer {alice_token}"},
    ) as response:
        payload = await response.json()
    assert payload["item"] is None
    assert payload["currently_playing_type"] == "episode"


async def test_currently_playing_local_file(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.set_playing("alice", local_track_payload("Home Demo", 120_000, 5_000))
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert isinstance(playback.item, Track)
    assert playback.item.is_local
    assert playback.item.id is None
    assert playback.item.images == ()
    assert playback.item.uri.startswith("spotify:local:")


@pytest.mark.parametrize(
    ("payload", "kind"), [(ad_payload(), "ad"), (unknown_payload(), "unknown")]
)
async def test_currently_playing_ad_and_unknown(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str, payload: dict[str, Any], kind: str
) -> None:
    fake.set_playing("alice", payload)
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert playback.kind == kind
    assert playback.item is None


async def test_204_is_nothing_playing(api: SpotifyApi, fake: FakeSpotify, alice_token: str) -> None:
    fake.set_playing("alice", None)
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, NothingPlaying)
    assert playback.received_at > 0
    assert fake.requests[-1].status == 204


async def test_player_state_callable_is_read_at_request_time(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    timeline = iter([None, track_payload("t1", "One", 100_000, 0)])
    fake.set_playing("alice", lambda: next(timeline))
    assert isinstance(await api.currently_playing(alice_token), NothingPlaying)
    playback = await api.currently_playing(alice_token)
    assert isinstance(playback, Playback)
    assert playback.item_key == "t1"


@pytest.mark.parametrize("style", ["new", "old"])
async def test_expired_token_is_unauthorized_in_both_message_styles(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str, style: str
) -> None:
    fake.unauthorized_style = style  # type: ignore[assignment]
    fake.expire_access_tokens("alice")
    with pytest.raises(SpotifyUnauthorized) as caught:
        await api.currently_playing(alice_token)
    assert caught.value.status == 401
    expected = "The access token expired" if style == "old" else "Missing/invalid/expired"
    assert expected in str(caught.value)
    assert fake.calls["currently_playing", "alice"] == 1  # 401 is not the sender's to retry


async def test_unknown_token_is_unauthorized(api: SpotifyApi) -> None:
    with pytest.raises(SpotifyUnauthorized):
        await api.me("not-a-token")


async def test_plain_text_403_is_not_registered_and_not_retried(
    api: SpotifyApi, fake: FakeSpotify
) -> None:
    token = fake.grant_tokens("outsider")[0]
    with pytest.raises(SpotifyNotRegistered) as caught:
        await api.currently_playing(token)
    assert caught.value.status == 403
    assert "allow-list" in caught.value.user_message
    assert fake.calls["currently_playing", "outsider"] == 1
    with pytest.raises(SpotifyNotRegistered):
        await api.me(token)
    assert NOT_REGISTERED_TEXT.startswith("The user is not registered")


async def test_json_403_is_forbidden_not_unregistered(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.fail_next(
        "currently_playing",
        403,
        body={"error": {"status": 403, "message": "Premium required", "reason": "PREMIUM"}},
    )
    with pytest.raises(SpotifyForbidden) as caught:
        await api.currently_playing(alice_token)
    assert not isinstance(caught.value, SpotifyNotRegistered)
    assert "Premium required" in str(caught.value)


async def test_429_from_the_api(api: SpotifyApi, fake: FakeSpotify, alice_token: str) -> None:
    fake.fail_next("currently_playing", 429, retry_after=3600)
    with pytest.raises(SpotifyRateLimited):
        await api.currently_playing(alice_token)
    with pytest.raises(SpotifyRateLimited):  # the hold covers /me too: it fails at once
        await api.me(alice_token)
    assert fake.call_count("me") == 0


async def test_5xx_after_retries_is_unavailable(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.fail_next("currently_playing", 502, times=3)
    with pytest.raises(SpotifyUnavailable):
        await api.currently_playing(alice_token)
    assert fake.calls["currently_playing", "alice"] == 3


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("{not json", "application/json"), ("[1, 2]", "application/json"), ("<html>", "text/html")],
)
async def test_unparseable_200_is_a_bad_response(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str, body: str, content_type: str
) -> None:
    fake.fail_next("currently_playing", 200, body=body, content_type=content_type)
    with pytest.raises(SpotifyBadResponse):
        await api.currently_playing(alice_token)


async def test_me_without_an_id_is_a_bad_response(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.fail_next("me", 200, body={"display_name": "x"})
    with pytest.raises(SpotifyBadResponse):
        await api.me(alice_token)


async def test_other_statuses_are_spotify_errors(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str
) -> None:
    fake.fail_next("me", 404, body={"error": {"status": 404, "message": "Not found."}})
    with pytest.raises(SpotifyError) as caught:
        await api.me(alice_token)
    assert caught.value.status == 404


async def test_tokens_never_reach_logs_or_errors(
    api: SpotifyApi, fake: FakeSpotify, alice_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next("currently_playing", 503)
    fake.fail_next("me", 401)
    await api.currently_playing(alice_token)
    with pytest.raises(SpotifyUnauthorized) as caught:
        await api.me(alice_token)
    assert alice_token not in caplog.text
    assert alice_token not in str(caught.value)
    assert alice_token not in repr(caught.value)
