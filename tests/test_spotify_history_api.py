"""Recently-played and top items: the client against the fake, errors and scopes included."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.errors import (
    SpotifyMissingScope,
    SpotifyNotRegistered,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SCOPES, has_scope
from bot.spotify.http import SpotifySender
from bot.spotify.models import parse_timestamp
from tests.fakes.spotify import (
    UNREGISTERED_USER,
    FakeSpotify,
    artist_object,
    played_item,
    track_object,
)
from tests.helpers import no_sleep

ALL = " ".join(SCOPES)
OLD = "user-read-currently-playing user-read-playback-state"
T0 = 1_795_000_000.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeSpotify]:
    async with FakeSpotify.running() as fake:
        yield fake


@pytest.fixture
async def api(fake: FakeSpotify) -> AsyncIterator[SpotifyApi]:
    async with aiohttp.ClientSession() as session:
        yield SpotifyApi(SpotifySender(session, sleep=no_sleep), api_base=fake.api_base)


def test_new_scopes_are_asked_for() -> None:
    assert "user-read-recently-played" in SCOPES
    assert "user-top-read" in SCOPES
    assert has_scope(ALL, "user-top-read")
    assert not has_scope(OLD, "user-top-read")
    assert not has_scope("user-top-reader", "user-top-read")


def test_played_at_is_read_as_utc() -> None:
    expected = calendar.timegm((2026, 11, 28, 21, 4, 0)) + 0.123
    assert parse_timestamp("2026-11-28T21:04:00.123Z") == pytest.approx(expected)
    assert parse_timestamp("2026-11-28T22:04:00.123+01:00") == pytest.approx(expected)
    assert parse_timestamp("not a time") is None
    assert parse_timestamp(None) is None


async def test_recently_played_newest_first_with_after(fake: FakeSpotify, api: SpotifyApi) -> None:
    fake.set_recently_played(
        "alice",
        [
            played_item(track_object("a", "Old", artists=("X", "Y")), T0),
            played_item(track_object("b", "New", album_id="alb"), T0 + 300),
        ],
    )
    token = fake.grant_tokens("alice", scope=ALL)[0]
    played = await api.recently_played(token)
    assert [(p.track.id, p.played_at) for p in played] == [("b", T0 + 300), ("a", T0)]
    assert played[0].track.album_id == "alb"
    assert [a.name for a in played[1].track.artists] == ["X", "Y"]
    after = await api.recently_played(token, after_ms=int((T0 + 1) * 1000))
    assert [p.track.id for p in after] == ["b"]
    request = fake.requests[-1]
    assert request.query == {"limit": "50", "after": str(int((T0 + 1) * 1000))}


async def test_recently_played_without_the_scope(fake: FakeSpotify, api: SpotifyApi) -> None:
    token = fake.grant_tokens("alice", scope=OLD)[0]
    with pytest.raises(SpotifyMissingScope) as caught:
        await api.recently_played(token)
    assert "/link again" in caught.value.user_message


async def test_recently_played_errors(fake: FakeSpotify, api: SpotifyApi) -> None:
    token = fake.grant_tokens("alice", scope=ALL)[0]
    fake.fail_next("recently_played", 503, times=3)  # every attempt the sender makes
    with pytest.raises(SpotifyUnavailable):
        await api.recently_played(token)
    outsider = fake.grant_tokens(UNREGISTERED_USER, scope=ALL)[0]
    with pytest.raises(SpotifyNotRegistered):
        await api.recently_played(outsider)
    fake.fail_next("recently_played", 429, retry_after=7)  # last: the sender then holds all
    with pytest.raises(SpotifyRateLimited) as limited:
        await api.recently_played(token)
    assert limited.value.retry_after == pytest.approx(7, abs=1)


async def test_top_tracks_and_artists(fake: FakeSpotify, api: SpotifyApi) -> None:
    fake.set_top(
        "alice", "tracks", "short_term", [track_object(f"t{n}", f"T{n}") for n in range(12)]
    )
    fake.set_top("alice", "artists", "medium_term", [artist_object("ar", "Band", genres=["pop"])])
    token = fake.grant_tokens("alice", scope=ALL)[0]
    tracks = await api.top_items(token, "tracks", "short_term")
    assert [t.id for t in tracks.tracks] == [f"t{n}" for n in range(10)]
    assert len(tracks) == 10
    assert fake.requests[-1].query == {"time_range": "short_term", "limit": "10"}
    artists = await api.top_items(token, "artists", "medium_term")
    assert artists.artists[0].name == "Band"
    assert artists.artists[0].url == "https://open.spotify.com/artist/ar"
    assert artists.artists[0].genres == ("pop",)
    empty = await api.top_items(token, "artists", "long_term")
    assert len(empty) == 0


async def test_top_without_the_scope(fake: FakeSpotify, api: SpotifyApi) -> None:
    token = fake.grant_tokens("alice", scope=OLD)[0]
    with pytest.raises(SpotifyMissingScope):
        await api.top_items(token, "tracks", "long_term")


async def test_fake_refuses_bad_top_parameters(fake: FakeSpotify) -> None:
    token = fake.grant_tokens("alice", scope=ALL)[0]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{fake.api_base}/me/top/tracks?time_range=forever", headers=headers
        ) as response:
            assert response.status == 400
        async with session.get(f"{fake.api_base}/me/top/songs", headers=headers) as response:
            assert response.status == 404
        async with session.get(
            f"{fake.api_base}/me/player/recently-played?limit=51", headers=headers
        ) as response:
            assert response.status == 400
