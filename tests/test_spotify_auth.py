"""The accounts client against the fake accounts service: authorize URL, code, refresh."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.errors import (
    InvalidClient,
    InvalidGrant,
    SpotifyAuthError,
    SpotifyBadResponse,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SCOPES, SpotifyAuth
from bot.spotify.http import SpotifySender
from tests.fakes.spotify import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    FakeSpotify,
)
from tests.helpers import ManualClock, no_sleep

pytestmark = pytest.mark.fake_spotify(
    redirect_uris=[DEFAULT_REDIRECT_URI, "https://np.example.org/callback"]
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(500.0)


@pytest.fixture
def sender(session: aiohttp.ClientSession, clock: ManualClock) -> SpotifySender:
    return SpotifySender(session, clock=clock, sleep=no_sleep)


def make_auth(
    sender: SpotifySender,
    fake: FakeSpotify,
    *,
    secret: str = DEFAULT_CLIENT_SECRET,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    client_id: str = DEFAULT_CLIENT_ID,
) -> SpotifyAuth:
    return SpotifyAuth(
        sender,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=redirect_uri,
        accounts_base=fake.accounts_base,
    )


@pytest.fixture
def auth(sender: SpotifySender, fake: FakeSpotify) -> SpotifyAuth:
    return make_auth(sender, fake)


async def approve(session: aiohttp.ClientSession, url: str) -> dict[str, list[str]]:
    """Open the authorize URL like a browser would, and read where it redirects to."""
    async with session.get(url, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(DEFAULT_REDIRECT_URI + "?")
    return parse_qs(urlsplit(location).query)


# --- authorize URL -------------------------------------------------------------------------


def test_authorize_url_contents(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    url = auth.authorize_url("state-123")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == fake.accounts_base
    assert parts.path == "/authorize"
    query = parse_qs(parts.query)
    assert query == {
        "client_id": [DEFAULT_CLIENT_ID],
        "response_type": ["code"],
        "redirect_uri": [DEFAULT_REDIRECT_URI],
        "state": ["state-123"],
        "scope": [
            "user-read-currently-playing user-read-playback-state "
            "user-read-recently-played user-top-read"
        ],
    }
    assert "scope=user-read-currently-playing%20user-read-playback-state" in parts.query
    assert auth.scopes == SCOPES


def test_authorize_url_show_dialog(auth: SpotifyAuth) -> None:
    query = parse_qs(urlsplit(auth.authorize_url("s", show_dialog=True)).query)
    assert query["show_dialog"] == ["true"]


# --- the code flow -------------------------------------------------------------------------


async def test_approve_then_exchange_code(
    auth: SpotifyAuth,
    fake: FakeSpotify,
    session: aiohttp.ClientSession,
    sender: SpotifySender,
    clock: ManualClock,
) -> None:
    fake.approve_as("bob")
    query = await approve(session, auth.authorize_url("st-1"))
    assert query["state"] == ["st-1"]
    grant = await auth.exchange_code(query["code"][0])
    assert grant.access_token
    assert grant.refresh_token
    assert grant.expires_in == 3600
    assert grant.scope == " ".join(SCOPES)
    assert grant.received_at == clock.now
    user = await SpotifyApi(sender, api_base=fake.api_base).me(grant.access_token)
    assert (user.id, user.account_id, user.display_name) == ("bob", "acct-bob", "Bob")
    assert fake.calls["token", "bob"] == 1
    assert fake.authorize_params[-1]["scope"] == " ".join(SCOPES)


async def test_denied_consent_redirects_with_access_denied(
    auth: SpotifyAuth, fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    fake.deny_next()
    assert await approve(session, auth.authorize_url("st-2")) == {
        "error": ["access_denied"],
        "state": ["st-2"],
    }
    # Only the next one: the member may try again.
    assert "code" in await approve(session, auth.authorize_url("st-3"))


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:8080/callback/",  # trailing slash
        "http://127.0.0.1:8080/Callback",  # case
        "http://localhost:8080/callback",
        "https://evil.example/callback",
    ],
)
async def test_redirect_uri_mismatch_shows_an_error_page_and_never_redirects(
    fake: FakeSpotify,
    session: aiohttp.ClientSession,
    sender: SpotifySender,
    redirect_uri: str,
) -> None:
    auth = make_auth(sender, fake, redirect_uri=redirect_uri)
    async with session.get(auth.authorize_url("s"), allow_redirects=False) as response:
        assert response.status == 400
        assert "Location" not in response.headers
        assert "Invalid redirect URI" in await response.text()


async def test_unknown_client_id_at_authorize(
    fake: FakeSpotify, session: aiohttp.ClientSession, sender: SpotifySender
) -> None:
    auth = make_auth(sender, fake, client_id="someone-else")
    async with session.get(auth.authorize_url("s"), allow_redirects=False) as response:
        assert response.status == 400
        assert "Location" not in response.headers


async def test_used_code_is_refused(
    auth: SpotifyAuth, fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    code = (await approve(session, auth.authorize_url("s")))["code"][0]
    await auth.exchange_code(code)
    with pytest.raises(InvalidGrant) as caught:
        await auth.exchange_code(code)  # a page reload re-sends the code
    assert caught.value.error == "invalid_grant"
    assert caught.value.description == "Invalid authorization code"
    assert caught.value.status == 400


async def test_unknown_code_is_refused(auth: SpotifyAuth) -> None:
    with pytest.raises(InvalidGrant, match="Invalid authorization code"):
        await auth.exchange_code("never-issued")


async def test_expired_code_is_refused(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    code = fake.issue_code("alice")
    fake.advance(fake.code_lifetime + 1)
    with pytest.raises(InvalidGrant) as caught:
        await auth.exchange_code(code)
    assert caught.value.description == "Authorization code expired"


async def test_code_lifetime_is_configurable(session: aiohttp.ClientSession) -> None:
    async with FakeSpotify.running(code_lifetime=60) as fake:
        auth = make_auth(SpotifySender(session), fake)
        code = fake.issue_code("alice")
        fake.advance(61)
        with pytest.raises(InvalidGrant, match="expired"):
            await auth.exchange_code(code)


async def test_redirect_uri_must_equal_the_one_sent_to_authorize(
    fake: FakeSpotify, sender: SpotifySender, session: aiohttp.ClientSession
) -> None:
    code = fake.issue_code("alice", redirect_uri="https://np.example.org/callback")
    with pytest.raises(InvalidGrant) as caught:
        await make_auth(sender, fake).exchange_code(code)
    assert caught.value.description == "Invalid redirect URI"


async def test_wrong_secret_is_invalid_client(fake: FakeSpotify, sender: SpotifySender) -> None:
    code = fake.issue_code("alice")
    auth = make_auth(sender, fake, secret="wrong")
    with pytest.raises(InvalidClient) as caught:
        await auth.exchange_code(code)
    assert caught.value.description == "Invalid client secret"
    assert "wrong" not in str(caught.value)
    with pytest.raises(InvalidClient):
        await auth.client_credentials()


async def test_client_sends_basic_auth_and_a_form(
    fake: FakeSpotify, auth: SpotifyAuth, session: aiohttp.ClientSession
) -> None:
    await auth.client_credentials()
    recorded = fake.requests[-1]
    assert recorded.form == {"grant_type": "client_credentials"}
    # The same credentials, sent by hand, are what the fake checks.
    expected = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    async with session.post(
        f"{fake.accounts_base}/api/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {expected}"},
    ) as response:
        assert response.status == 200


async def test_missing_grant_type_row(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{fake.accounts_base}/api/token", data={"code": "x"}) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": "unsupported_grant_type",
            "error_description": "grant_type parameter is missing",
        }


async def test_other_oauth_errors_become_spotify_auth_error(
    fake: FakeSpotify, auth: SpotifyAuth
) -> None:
    fake.fail_next(
        "token",
        400,
        body={
            "error": "unsupported_grant_type",
            "error_description": "grant_type parameter is missing",
        },
    )
    with pytest.raises(SpotifyAuthError) as caught:
        await auth.refresh("whatever")
    assert type(caught.value) is SpotifyAuthError
    assert caught.value.error == "unsupported_grant_type"


async def test_non_json_token_error_is_a_bad_response(fake: FakeSpotify, auth: SpotifyAuth) -> None:
    fake.fail_next(
        "token.client_credentials", 400, body="<html>oops</html>", content_type="text/html"
    )
    with pytest.raises(SpotifyBadResponse):
        await auth.client_credentials()


async def test_token_answer_without_access_token_is_a_bad_response(
    fake: FakeSpotify, auth: SpotifyAuth
) -> None:
    fake.fail_next("token.client_credentials", 200, body={"token_type": "Bearer"})
    with pytest.raises(SpotifyBadResponse):
        await auth.client_credentials()


# --- refresh -------------------------------------------------------------------------------


async def test_refresh_without_rotation_keeps_no_new_refresh_token(
    auth: SpotifyAuth, fake: FakeSpotify, clock: ManualClock
) -> None:
    _, refresh_token = fake.grant_tokens("alice")
    clock.now = 900.0
    grant = await auth.refresh(refresh_token)
    assert grant.refresh_token is None
    assert grant.received_at == 900.0
    assert grant.access_token in fake.access_tokens_of("alice")
    again = await auth.refresh(refresh_token)  # the old one keeps working
    assert again.access_token != grant.access_token


async def test_refresh_with_rotation_revokes_the_old_token(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeSpotify.running(rotate_refresh_tokens=True) as fake:
        auth = make_auth(SpotifySender(session), fake)
        _, old = fake.grant_tokens("alice")
        grant = await auth.refresh(old)
        assert grant.refresh_token is not None
        assert grant.refresh_token != old
        with pytest.raises(InvalidGrant) as caught:
            await auth.refresh(old)
        assert caught.value.description == "Refresh token revoked"
        newer = await auth.refresh(grant.refresh_token)
        assert newer.refresh_token is not None


async def test_revoked_refresh_token(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    _, refresh_token = fake.grant_tokens("alice")
    fake.revoke("alice")
    with pytest.raises(InvalidGrant) as caught:
        await auth.refresh(refresh_token)
    assert caught.value.description == "Refresh token revoked"
    assert fake.calls["token", "alice"] == 1


async def test_unknown_refresh_token(auth: SpotifyAuth) -> None:
    with pytest.raises(InvalidGrant) as caught:
        await auth.refresh("not-a-token")
    assert caught.value.description == "Invalid refresh token"


async def test_refresh_token_expires_six_months_after_authorization(
    auth: SpotifyAuth, fake: FakeSpotify
) -> None:
    _, refresh_token = fake.grant_tokens("alice")
    fake.advance(150 * 86400)
    await auth.refresh(refresh_token)  # refreshing does not extend its life
    fake.advance(40 * 86400)
    with pytest.raises(InvalidGrant):
        await auth.refresh(refresh_token)


async def test_client_credentials(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    grant = await auth.client_credentials()
    assert grant.access_token
    assert grant.refresh_token is None
    assert fake.call_count("token.client_credentials") == 1


async def test_token_endpoint_5xx_is_retried(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    _, refresh_token = fake.grant_tokens("alice")
    fake.fail_next("token", 503, times=2)
    await auth.refresh(refresh_token)
    assert fake.calls["token", "alice"] == 3
    fake.fail_next("token", 502, times=3)
    with pytest.raises(SpotifyUnavailable):
        await auth.refresh(refresh_token)


async def test_token_endpoint_429_raises_at_once(auth: SpotifyAuth, fake: FakeSpotify) -> None:
    fake.fail_next("token.client_credentials", 429, retry_after=60)
    with pytest.raises(SpotifyRateLimited) as caught:
        await auth.client_credentials()
    assert caught.value.retry_after == 60
