"""The fake Spotify itself behaves as docs/spotify.md says (raw HTTP, no client code involved)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image as PilImage

from tests.fakes.spotify import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    NEW_401_MESSAGE,
    NOT_REGISTERED_TEXT,
    FakeSpotify,
    track_payload,
)


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


BASIC = basic(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)


async def get(
    session: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def test_binds_loopback_only(fake: FakeSpotify) -> None:
    assert fake.accounts_base.startswith("http://127.0.0.1:")
    assert fake.api_base == fake.accounts_base + "/v1"


async def test_204_has_no_body_and_no_content_type(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    token = fake.grant_tokens("alice")[0]
    status, headers, body = await get(
        session, f"{fake.api_base}/me/player/currently-playing", token
    )
    assert status == 204
    assert body == b""
    assert "Content-Type" not in headers


async def test_default_failure_bodies(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    token = fake.grant_tokens("alice")[0]
    url = f"{fake.api_base}/me"
    fake.fail_next("me", 502)
    fake.fail_next("/v1/me", 503)  # paths work as well as labels
    fake.fail_next("me", 429, retry_after=3600)
    status, _, body = await get(session, url, token)
    assert (status, body) == (502, b'{"error": {"status": 502, "message": "Bad gateway."}}')
    status, headers, body = await get(session, url, token)
    assert (status, body) == (503, b"")
    assert "Content-Type" not in headers
    status, headers, body = await get(session, url, token)
    assert status == 429
    assert headers["Retry-After"] == "3600"
    assert b"API rate limit exceeded" in body
    assert (await get(session, url, token))[0] == 200


async def test_quota_exceeded_body(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    fake.fail_next("me", 429, retry_after=86400, quota_exceeded=True)
    status, headers, body = await get(session, f"{fake.api_base}/me", fake.grant_tokens("bob")[0])
    assert status == 429
    assert headers["Retry-After"] == "86400"
    assert json.loads(body) == {
        "error": {"status": 429, "message": "Too many requests", "reason": "QUOTA_EXCEEDED"}
    }


async def test_the_daily_quota_refuses_until_the_oldest_call_leaves_the_window(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    """Spotify's development-mode quota on the fake's own clock: three calls in 24 hours,
    every endpoint of every user counted; then QUOTA_EXCEEDED with a Retry-After that points
    at the oldest call's 24 h end (not midnight), and every call refused until then."""
    quota = fake.set_daily_quota(3)
    assert quota is not None
    fake.expires_in = 3 * 86_400  # the tokens outlive the day this test lets pass
    alice, bob = fake.grant_tokens("alice")[0], fake.grant_tokens("bob")[0]
    me, playing = f"{fake.api_base}/me", f"{fake.api_base}/me/player/currently-playing"
    assert (await get(session, me, alice))[0] == 200  # at t0
    fake.advance(3600)
    assert (await get(session, playing, bob))[0] == 204  # t0 + 1 h
    assert (await get(session, me, bob))[0] == 200
    fake.advance(3600)  # t0 + 2 h: the fourth call of the day
    status, headers, body = await get(session, me, alice)
    assert status == 429
    assert json.loads(body)["error"]["reason"] == "QUOTA_EXCEEDED"
    assert 22 * 3600 - 1 <= int(headers["Retry-After"]) <= 22 * 3600  # the first call's end
    fake.advance(12 * 3600)  # still inside: refused, not counted, same end
    status, headers, _ = await get(session, playing, bob)
    assert (status, 10 * 3600 - 1 <= int(headers["Retry-After"]) <= 10 * 3600) == (429, True)
    # The accounts service is not held by it.
    async with session.post(
        f"{fake.accounts_base}/api/token", data={"grant_type": "client_credentials"}, headers=BASIC
    ) as response:
        assert response.status == 200
    fake.advance(10 * 3600)  # t0 + 24 h: the first call left the window, one call fits
    assert (await get(session, me, alice))[0] == 200
    assert (await get(session, me, alice))[0] == 429
    assert quota.refusals == 3
    assert fake.call_count("me") + fake.call_count("currently_playing") == 7


@pytest.mark.parametrize(
    ("style", "expired", "invalid"),
    [
        ("old", "The access token expired", "Invalid access token"),
        ("new", NEW_401_MESSAGE, NEW_401_MESSAGE),
    ],
)
async def test_401_message_styles(
    fake: FakeSpotify, session: aiohttp.ClientSession, style: str, expired: str, invalid: str
) -> None:
    fake.unauthorized_style = style  # type: ignore[assignment]
    token = fake.grant_tokens("alice")[0]
    fake.expire_access_tokens("alice")
    status, _, body = await get(session, f"{fake.api_base}/me", token)
    assert status == 401
    assert expired.encode() in body
    status, _, body = await get(session, f"{fake.api_base}/me", "bogus")
    assert status == 401
    assert invalid.encode() in body


async def test_unregistered_user_gets_plain_text_403(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    fake.add_user("stranger", registered=False)
    status, headers, body = await get(
        session, f"{fake.api_base}/me", fake.grant_tokens("stranger")[0]
    )
    assert status == 403
    assert headers["Content-Type"].startswith("text/plain")
    assert body.decode() == NOT_REGISTERED_TEXT


async def test_client_credentials_token_is_not_a_user(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{fake.accounts_base}/api/token", data={"grant_type": "client_credentials"}, headers=BASIC
    ) as response:
        token = (await response.json())["access_token"]
    assert (await get(session, f"{fake.api_base}/me", token))[0] == 401


async def test_token_error_rows(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    async def post(form: dict[str, str], auth: dict[str, str] = BASIC) -> Any:
        async with session.post(
            f"{fake.accounts_base}/api/token", data=form, headers=auth
        ) as response:
            assert response.status == 400
            return await response.json()

    code = fake.issue_code("alice")
    wrong = basic(DEFAULT_CLIENT_ID, "nope")
    assert (await post({"grant_type": "authorization_code", "code": code}, wrong))[
        "error_description"
    ] == "Invalid client secret"
    assert (await post({"code": code}))["error"] == "unsupported_grant_type"
    assert (await post({"grant_type": "password"}))["error"] == "unsupported_grant_type"
    assert (await post({"grant_type": "refresh_token", "refresh_token": "x"}))[
        "error_description"
    ] == "Invalid refresh token"


async def test_failures_for_one_user_leave_others_alone(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    fake.fail_next("me", 500, user="bob")
    assert (await get(session, f"{fake.api_base}/me", fake.grant_tokens("alice")[0]))[0] == 200
    assert (await get(session, f"{fake.api_base}/me", fake.grant_tokens("bob")[0]))[0] == 500
    assert fake.calls == {("me", "alice"): 1, ("me", "bob"): 1}
    assert fake.call_count("me") == 2
    assert [(r.user, r.status) for r in fake.requests] == [("alice", 200), ("bob", 500)]
    fake.reset_calls()
    assert fake.call_count("me") == 0


async def test_rate_limit_window(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    fake.rate_limit(3, window=30, retry_after=7)
    token = fake.grant_tokens("alice")[0]
    statuses = [(await get(session, f"{fake.api_base}/me", token))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    fake.advance(31)
    assert (await get(session, f"{fake.api_base}/me", token))[0] == 200


async def test_authorize_keeps_existing_query_and_optional_state(
    session: aiohttp.ClientSession,
) -> None:
    redirect = "https://np.example.org/cb?x=1"
    async with FakeSpotify.running(redirect_uris=[redirect]) as fake:
        url = f"{fake.accounts_base}/authorize?" + "&".join(
            [f"client_id={DEFAULT_CLIENT_ID}", "response_type=code", f"redirect_uri={redirect}"]
        )
        async with session.get(url, allow_redirects=False) as response:
            location = response.headers["Location"]
        assert location.startswith(redirect + "&code=")
        assert "state" not in parse_qs(urlsplit(location).query)


async def test_player_callable_and_fixture_shape(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    calls: list[int] = []

    def state() -> dict[str, Any]:
        calls.append(1)
        return track_payload("t1", "One", 1000, 10)

    fake.set_playing("alice", state)
    token = fake.grant_tokens("alice")[0]
    url = f"{fake.api_base}/me/player/currently-playing?additional_types=episode"
    status, headers, _ = await get(session, url, token)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert calls == [1]


async def test_works_with_pytest_aiohttp_server(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    session: aiohttp.ClientSession,
) -> None:
    fake = FakeSpotify()
    server = await aiohttp_server(fake.app)
    fake.set_base_url(str(server.make_url("")))
    assert (await get(session, f"{fake.api_base}/me", fake.grant_tokens("carol")[0]))[0] == 200


async def test_album_art_points_at_spotify_cdn_and_is_served_under_its_path(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    images = track_payload("t9", "Song", 1_000, 0)["item"]["album"]["images"]
    assert [image["url"] for image in images] == [
        f"https://i.scdn.co/image/album-t9-{size}" for size in (640, 300, 64)
    ]
    kinds = set()
    for image in images:
        path = image["url"].removeprefix("https://i.scdn.co")
        status, headers, body = await get(session, fake.image_base + path)
        assert status == 200
        kinds.add(headers["Content-Type"])
        assert body.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"))
        with PilImage.open(io.BytesIO(body)) as picture:
            assert picture.size == (image["width"], image["height"])
    assert kinds <= {"image/jpeg", "image/png"}
    fake.cdn.missing.add("album-t9-64")
    status, _, _ = await get(session, f"{fake.image_base}/image/album-t9-64")
    assert status == 404
    assert fake.cdn.requests["album-t9-64"] == 2
