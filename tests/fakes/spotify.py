"""A fake Spotify (accounts service + Web API) as a real aiohttp application on loopback.

Behaves as ``docs/spotify.md`` describes, errors included, so the client is tested over real HTTP
with nothing patched inside it. Accounts routes live at ``accounts_base`` (the server root) and
the Web API under ``api_base`` (``/v1``).

Typical use::

    async with FakeSpotify.running() as fake:
        fake.set_playing("alice", track_payload("t1", "Song", 200_000, 1_000))
        access, refresh = fake.grant_tokens("alice")
        fake.fail_next("currently_playing", 503, times=2)
        ...
        assert fake.calls["currently_playing", "alice"] == 3

Endpoint labels used for ``calls``, ``fail_next`` and ``requests``: ``authorize``, ``token``,
``me``, ``currently_playing``, ``recently_played``, ``top_tracks``, ``top_artists`` (paths
such as ``/api/token`` are accepted too). Recently-played and top items need their scope in the
access token (403 ``Insufficient client scope`` otherwise, as Spotify answers).
Handling stays far below a millisecond: benchmarks make thousands of calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web

from tests.fakes.cdn import FakeCdn
from tests.fakes.spotify_quota import QUOTA_BODY, DailyQuota

# Shaped like a real one (32 hexadecimal characters): the setup wizard checks the shape.
DEFAULT_CLIENT_ID = "fa4ef00dfa4ef00dfa4ef00dfa4ef00d"
DEFAULT_CLIENT_SECRET = "fake-client-secret"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/callback"
DEFAULT_USERS = ("alice", "bob", "carol")
UNREGISTERED_USER = "outsider"  # finishes consent, then every API call is a plain-text 403

NOT_REGISTERED_TEXT = (
    "The user is not registered for this application. "
    "Please check your settings on https://developer.spotify.com/dashboard."
)
OLD_EXPIRED_MESSAGE = "The access token expired"
OLD_INVALID_MESSAGE = "Invalid access token"
NEW_401_MESSAGE = "Missing/invalid/expired access token"

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

PlayerState = Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None

_PATH_TO_ENDPOINT: dict[str, str] = {
    "/authorize": "authorize",
    "/api/token": "token",
    "/v1/me": "me",
    "/me": "me",
    "/v1/me/player/currently-playing": "currently_playing",
    "/me/player/currently-playing": "currently_playing",
    "/v1/me/player/recently-played": "recently_played",
    "/me/player/recently-played": "recently_played",
    "/v1/me/top/tracks": "top_tracks",
    "/me/top/tracks": "top_tracks",
    "/v1/me/top/artists": "top_artists",
    "/me/top/artists": "top_artists",
}
ENDPOINTS = (
    "authorize",
    "token",
    "token.client_credentials",
    "me",
    "currently_playing",
    "recently_played",
    "top_tracks",
    "top_artists",
)
RECENTLY_PLAYED_SCOPE = "user-read-recently-played"
TOP_READ_SCOPE = "user-top-read"
INSUFFICIENT_SCOPE_MESSAGE = "Insufficient client scope"
TIME_RANGES = ("short_term", "medium_term", "long_term")


# --- payload builders ----------------------------------------------------------------------


def _external(kind: str, item_id: str) -> dict[str, Any]:
    return {
        "external_urls": {"spotify": f"https://open.spotify.com/{kind}/{item_id}"},
        "href": f"https://api.spotify.com/v1/{kind}s/{item_id}",
        "id": item_id,
        "type": kind,
        "uri": f"spotify:{kind}:{item_id}",
    }


def _images(seed: str) -> list[dict[str, Any]]:
    return [
        {"height": size, "width": size, "url": f"https://i.scdn.co/image/{seed}-{size}"}
        for size in (640, 300, 64)
    ]


def _envelope(
    item: Mapping[str, Any] | None,
    kind: str,
    progress_ms: int | None,
    is_playing: bool,
    timestamp: int | None,
) -> dict[str, Any]:
    return {
        "timestamp": timestamp if timestamp is not None else int(time.time() * 1000),
        "context": None,
        "progress_ms": progress_ms,
        "item": item,
        "currently_playing_type": kind,
        "actions": {"disallows": {"resuming": True} if is_playing else {"pausing": True}},
        "is_playing": is_playing,
    }


def track_payload(
    track_id: str,
    name: str,
    duration_ms: int,
    progress_ms: int,
    *,
    is_playing: bool = True,
    artists: Iterable[str] = ("Fake Artist",),
    album: str = "Fake Album",
    album_id: str | None = None,
    images: bool = True,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A currently-playing answer for a music track (shape of the real capture)."""
    album_id = album_id or f"album-{track_id}"
    album_obj = {
        **_external("album", album_id),
        "album_type": "album",
        "total_tracks": 12,
        "available_markets": ["US"],
        "name": album,
        "release_date": "2026-01-01",
        "release_date_precision": "day",
        "images": _images(album_id) if images else [],
        "artists": [],
    }
    artist_objs = [
        {**_external("artist", f"artist-{index}-{track_id}"), "name": artist}
        for index, artist in enumerate(artists)
    ]
    album_obj["artists"] = artist_objs[:1]
    item = {
        **_external("track", track_id),
        "name": name,
        "duration_ms": duration_ms,
        "artists": artist_objs,
        "album": album_obj,
        "is_local": False,
        "explicit": False,
        "disc_number": 1,
        "track_number": 1,
        "popularity": 50,
    }
    return _envelope(item, "track", progress_ms, is_playing, timestamp)


def episode_payload(
    episode_id: str,
    name: str,
    duration_ms: int,
    progress_ms: int,
    *,
    show: str = "Fake Show",
    publisher: str = "Fake Publisher",
    is_playing: bool = True,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A podcast episode: ``show`` and ``images``, no album or artists."""
    show_id = f"show-{episode_id}"
    item = {
        **_external("episode", episode_id),
        "name": name,
        "duration_ms": duration_ms,
        "images": _images(episode_id),
        "description": "An episode.",
        "html_description": "<p>An episode.</p>",
        "audio_preview_url": None,
        "explicit": False,
        "is_externally_hosted": False,
        "is_playable": True,
        "languages": ["en"],
        "release_date": "2026-01-01",
        "release_date_precision": "day",
        "show": {
            **_external("show", show_id),
            "name": show,
            "publisher": publisher,
            "images": _images(show_id),
            "description": "A show.",
            "html_description": "<p>A show.</p>",
            "available_markets": ["US"],
            "copyrights": [],
            "explicit": False,
            "is_externally_hosted": False,
            "languages": ["en"],
            "media_type": "audio",
            "total_episodes": 10,
        },
    }
    return _envelope(item, "episode", progress_ms, is_playing, timestamp)


def local_track_payload(
    name: str,
    duration_ms: int,
    progress_ms: int,
    *,
    artist: str = "Local Artist",
    album: str = "Local Album",
    is_playing: bool = True,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A local file: ``is_local``, null ids, URLs and album facts, an album without images or
    artists, a spotify:local URI (every key of a track is there, the unknown ones null)."""
    uri = f"spotify:local:{artist}:{album}:{name}:{duration_ms // 1000}".replace(" ", "+")
    unknown = {"id": None, "href": None, "external_urls": {}, "uri": None}
    item: dict[str, Any] = {
        **unknown,
        "type": "track",
        "uri": uri,
        "name": name,
        "duration_ms": duration_ms,
        "is_local": True,
        "available_markets": [],
        "disc_number": 0,
        "explicit": False,
        "external_ids": {},
        "popularity": 0,
        "preview_url": None,
        "track_number": 0,
        "artists": [{**unknown, "name": artist, "type": "artist"}],
        "album": {
            **unknown,
            "name": album,
            "type": "album",
            "album_type": None,
            "total_tracks": None,
            "available_markets": [],
            "release_date": None,
            "release_date_precision": None,
            "images": [],
            "artists": [],
        },
    }
    return _envelope(item, "track", progress_ms, is_playing, timestamp)


def track_object(
    track_id: str,
    name: str,
    duration_ms: int = 200_000,
    *,
    artists: Iterable[str] = ("Fake Artist",),
    album: str = "Fake Album",
    album_id: str | None = None,
) -> dict[str, Any]:
    """A full track object, as recently-played and top tracks list them."""
    item = track_payload(
        track_id, name, duration_ms, 0, artists=artists, album=album, album_id=album_id
    )["item"]
    assert isinstance(item, dict)
    return item


def played_item(
    track: Mapping[str, Any], played_at: float, *, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One recently-played entry; ``played_at`` (Unix seconds) in Spotify's ISO form."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(played_at))
    millis = round((played_at % 1) * 1000) % 1000
    return {"track": dict(track), "played_at": f"{stamp}.{millis:03d}Z", "context": context}


def artist_object(artist_id: str, name: str, *, genres: Iterable[str] = ()) -> dict[str, Any]:
    """A top-artists entry. No popularity or followers: development-mode apps lost them."""
    return {
        **_external("artist", artist_id),
        "name": name,
        "images": _images(artist_id),
        "genres": list(genres),
    }


def ad_payload(progress_ms: int = 5_000, *, is_playing: bool = True) -> dict[str, Any]:
    return _envelope(None, "ad", progress_ms, is_playing, None)


def unknown_payload(progress_ms: int | None = None, *, is_playing: bool = True) -> dict[str, Any]:
    return _envelope(None, "unknown", progress_ms, is_playing, None)


def fixture_payload(name: str = "currently_playing_track.json") -> dict[str, Any]:
    """A copy of a stored real capture from ``tests/fixtures``."""
    payload: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return payload


# --- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class FakeUser:
    id: str
    account_id: str
    display_name: str
    registered: bool = True  # False: not on the development-mode allow-list
    product: str = "premium"
    player: PlayerState = None
    recently_played: list[dict[str, Any]] = field(default_factory=list)  # newest first
    top: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Code:
    user_id: str
    client_id: str
    redirect_uri: str
    scope: str
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class _AccessToken:
    user_id: str | None  # None: a client-credentials token
    scope: str
    expires_at: float


@dataclass(slots=True)
class _RefreshToken:
    user_id: str
    scope: str
    authorized_at: float  # refreshing does not extend a refresh token's life
    revoked: bool = False


@dataclass(slots=True)
class Injection:
    """One queued failure (or delay) for an endpoint; used ``times`` times."""

    status: int | None
    times: int
    retry_after: str | None = None
    body: Any = None
    content_type: str | None = None
    delay: float = 0.0
    user: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    endpoint: str
    method: str
    path: str
    query: Mapping[str, str]
    user: str | None
    status: int
    at: float  # the fake's clock
    form: Mapping[str, str] = field(default_factory=dict)


class _Fail(Exception):
    def __init__(self, response: web.StreamResponse, user: str | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.user = user


def _oauth_error(error: str, description: str, status: int = 400) -> _Fail:
    return _Fail(
        web.json_response({"error": error, "error_description": description}, status=status)
    )


def _api_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message, **extra}}, status=status
    )


class FakeSpotify:
    """State and behaviour of the fake; ``running()`` serves it on 127.0.0.1."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uris: Iterable[str] = (DEFAULT_REDIRECT_URI,),
        users: Iterable[str] = DEFAULT_USERS,
        expires_in: int = 3600,
        code_lifetime: float = 300.0,
        refresh_token_lifetime: float = 183 * 86400.0,
        rotate_refresh_tokens: bool = False,
        unauthorized_style: Literal["new", "old"] = "new",
        record_requests: bool = True,
        daily_quota: int | None = None,
    ) -> None:
        """``daily_quota``: Web API calls allowed in any 24 hours of the fake's clock (see
        :meth:`set_daily_quota`); None: no quota."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris: list[str] = list(redirect_uris)
        self.expires_in = expires_in
        self.code_lifetime = code_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.unauthorized_style: Literal["new", "old"] = unauthorized_style
        self.record_requests = record_requests

        self.users: dict[str, FakeUser] = {}
        for user_id in users:
            self.add_user(user_id)
        self.add_user(UNREGISTERED_USER, registered=False)
        self.authorizing_user: str = next(iter(self.users))  # who approves /authorize
        self._deny_next = 0

        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._injections: dict[str, deque[Injection]] = {name: deque() for name in ENDPOINTS}
        self._time_offset = 0.0
        self._rate_limit: tuple[int, float, int] | None = None
        self.quota: DailyQuota | None = None if daily_quota is None else DailyQuota(daily_quota)
        self._api_hits: deque[float] = deque()
        self._counter = itertools.count(1)

        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.requests: list[RecordedRequest] = []
        self.authorize_params: list[dict[str, str]] = []

        self.base_url = ""
        self.cdn = FakeCdn()  # album art under /image/<id>, as on https://i.scdn.co
        self.app = self._make_app()

    # --- serving --------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, **kwargs: Any) -> AsyncIterator[FakeSpotify]:
        """Serve a new fake on 127.0.0.1 (a free port) for the duration of the block."""
        fake = cls(**kwargs)
        runner = web.AppRunner(
            fake.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            fake.set_base_url(f"http://{host}:{port}")
            yield fake
        finally:
            await runner.cleanup()

    def set_base_url(self, url: str) -> None:
        """For use with pytest-aiohttp: ``fake.set_base_url(str(server.make_url("")))``."""
        self.base_url = url.rstrip("/")

    @property
    def accounts_base(self) -> str:
        return self.base_url

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def image_base(self) -> str:
        """SPOTIFY_IMAGE_BASE for the bot: album art URLs stay https://i.scdn.co/image/<id>."""
        return self.base_url

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/authorize", self._handle_authorize)
        app.router.add_post("/api/token", self._handle_token)
        app.router.add_get("/v1/me", self._handle_me)
        app.router.add_get("/v1/me/player/currently-playing", self._handle_currently_playing)
        self.cdn.add_routes(app.router)
        app.router.add_get("/v1/me/player/recently-played", self._handle_recently_played)
        app.router.add_get("/v1/me/top/{kind}", self._handle_top)
        return app

    # --- configuration for tests ----------------------------------------------------------

    def now(self) -> float:
        """The fake's clock: monotonic time plus whatever ``advance`` added."""
        return time.monotonic() + self._time_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock: codes, access and refresh tokens age by ``seconds``."""
        self._time_offset += seconds

    def add_user(
        self,
        user_id: str,
        *,
        display_name: str | None = None,
        account_id: str | None = None,
        registered: bool = True,
        product: str = "premium",
    ) -> FakeUser:
        user = FakeUser(
            id=user_id,
            account_id=account_id or f"acct-{user_id}",
            display_name=display_name or user_id.capitalize(),
            registered=registered,
            product=product,
        )
        self.users[user_id] = user
        return user

    def approve_as(self, user_id: str) -> None:
        """Every following /authorize is approved by this user (until changed)."""
        if user_id not in self.users:
            raise KeyError(user_id)
        self.authorizing_user = user_id

    def deny_next(self, times: int = 1) -> None:
        """The next /authorize answers ``?error=access_denied`` (the member clicked Cancel)."""
        self._deny_next += times

    def set_playing(self, user_id: str, state: PlayerState) -> None:
        """A payload dict, a callable returning one (or None) at request time, or None (204)."""
        self.users[user_id].player = state

    def set_recently_played(self, user_id: str, items: Iterable[Mapping[str, Any]]) -> None:
        """Entries made with :func:`played_item`, in any order (served newest first)."""
        self.users[user_id].recently_played = [dict(item) for item in items]

    def add_played(self, user_id: str, track: Mapping[str, Any], played_at: float) -> None:
        self.users[user_id].recently_played.append(played_item(track, played_at))

    def set_top(
        self, user_id: str, kind: str, time_range: str, items: Iterable[Mapping[str, Any]]
    ) -> None:
        """Top ``tracks`` (track objects) or ``artists`` (artist objects) for a time range."""
        if kind not in ("tracks", "artists") or time_range not in TIME_RANGES:
            raise ValueError(f"unknown top items {kind!r} / {time_range!r}")
        self.users[user_id].top[kind, time_range] = [dict(item) for item in items]

    def fail_next(
        self,
        endpoint: str,
        status: int | None,
        *,
        times: int = 1,
        retry_after: float | str | None = None,
        body: Any = None,
        content_type: str | None = None,
        delay: float = 0.0,
        user: str | None = None,
        quota_exceeded: bool = False,
    ) -> None:
        """Queue ``times`` failures for an endpoint (label or path), optionally for one user.

        ``body``: a dict (sent as JSON), str/bytes (sent as is, ``content_type`` or text/plain),
        or None for Spotify's body for that status. ``status=None`` with ``delay`` only delays
        the normal answer (for timeout tests). Injections run in the order queued.
        """
        label = _PATH_TO_ENDPOINT.get(endpoint, endpoint)
        if label not in self._injections:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
        if quota_exceeded:
            body = QUOTA_BODY
            status = 429 if status is None else status
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        self._injections[label].append(
            Injection(
                status=status,
                times=times,
                retry_after=None if retry_after is None else str(retry_after),
                body=body,
                content_type=content_type,
                delay=delay,
                user=user,
            )
        )

    def delay_next(self, endpoint: str, seconds: float, *, times: int = 1) -> None:
        """Answer normally, but only after ``seconds`` (a client timeout test)."""
        self.fail_next(endpoint, None, times=times, delay=seconds)

    def clear_failures(self) -> None:
        for queue in self._injections.values():
            queue.clear()

    def rate_limit(
        self, max_requests: int | None, window: float = 30.0, retry_after: int = 5
    ) -> None:
        """Answer Web API calls with 429 once more than ``max_requests`` fall in ``window``."""
        self._rate_limit = None if max_requests is None else (max_requests, window, retry_after)
        self._api_hits.clear()

    def set_daily_quota(self, calls: int | None, window: float = 86_400.0) -> DailyQuota | None:
        """Spotify's daily quota: at most ``calls`` Web API calls in any ``window`` seconds of
        the fake's clock, then 429 QUOTA_EXCEEDED until the oldest counted call leaves it."""
        self.quota = None if calls is None else DailyQuota(calls, window)
        return self.quota

    def issue_code(self, user_id: str, *, redirect_uri: str | None = None, scope: str = "") -> str:
        """Mint an authorization code as if ``user_id`` approved /authorize."""
        code = f"code-{next(self._counter)}-{secrets.token_urlsafe(12)}"
        self._codes[code] = _Code(
            user_id=user_id,
            client_id=self.client_id,
            redirect_uri=redirect_uri or self.redirect_uris[0],
            scope=scope,
            expires_at=self.now() + self.code_lifetime,
        )
        return code

    def grant_tokens(self, user_id: str, *, scope: str = "") -> tuple[str, str]:
        """Mint (access_token, refresh_token) as a completed link would hold."""
        refresh = self._new_refresh_token(user_id, scope)
        return self._new_access_token(user_id, scope), refresh

    def expire_access_tokens(self, user_id: str | None = None) -> int:
        """Expire every access token (of one user); returns how many."""
        now = self.now()
        count = 0
        for token in self._access.values():
            if user_id is None or token.user_id == user_id:
                token.expires_at = now
                count += 1
        return count

    def revoke(self, user_id: str, *, access_tokens: bool = False) -> None:
        """The member removed the app's access: refresh tokens stop working."""
        for refresh in self._refresh.values():
            if refresh.user_id == user_id:
                refresh.revoked = True
        if access_tokens:
            self.expire_access_tokens(user_id)

    def refresh_tokens_of(self, user_id: str, *, valid_only: bool = True) -> list[str]:
        return [
            token
            for token, info in self._refresh.items()
            if info.user_id == user_id and not (valid_only and info.revoked)
        ]

    def access_tokens_of(self, user_id: str, *, valid_only: bool = True) -> list[str]:
        now = self.now()
        return [
            token
            for token, info in self._access.items()
            if info.user_id == user_id and not (valid_only and info.expires_at <= now)
        ]

    def call_count(self, endpoint: str, user: str | None = None) -> int:
        """Calls to an endpoint: of one user, or (``user=None``) of everyone together."""
        label = _PATH_TO_ENDPOINT.get(endpoint, endpoint)
        if user is not None:
            return self.calls[label, user]
        return sum(count for (name, _), count in self.calls.items() if name == label)

    def reset_calls(self) -> None:
        self.calls.clear()
        self.requests.clear()

    # --- internals ------------------------------------------------------------------------

    def _new_access_token(self, user_id: str | None, scope: str) -> str:
        token = f"AT-{next(self._counter)}-{secrets.token_urlsafe(16)}"
        self._access[token] = _AccessToken(user_id, scope, self.now() + self.expires_in)
        return token

    def _new_refresh_token(self, user_id: str, scope: str) -> str:
        token = f"RT-{next(self._counter)}-{secrets.token_urlsafe(16)}"
        self._refresh[token] = _RefreshToken(user_id, scope, authorized_at=self.now())
        return token

    def _count(self, endpoint: str, user: str | None) -> None:
        """Counted on arrival, so a request the client gave up on (timeout) still counts."""
        self.calls[endpoint, user] += 1

    def _record(
        self,
        endpoint: str,
        request: web.Request,
        user: str | None,
        status: int,
        form: Mapping[str, str] | None = None,
    ) -> None:
        if self.record_requests:
            self.requests.append(
                RecordedRequest(
                    endpoint=endpoint,
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    user=user,
                    status=status,
                    at=self.now(),
                    form=dict(form or {}),
                )
            )

    async def _injected(self, endpoint: str, user: str | None) -> web.StreamResponse | None:
        """Apply the first queued injection matching this request, if any."""
        queue = self._injections[endpoint]
        if not queue:
            return None
        for injection in queue:
            if injection.user is None or injection.user == user:
                break
        else:
            return None
        injection.times -= 1
        if injection.times <= 0:
            queue.remove(injection)
        if injection.delay:
            await asyncio.sleep(injection.delay)
        if injection.status is None:
            return None
        return self._failure_response(injection)

    @staticmethod
    def _failure_response(injection: Injection) -> web.Response:
        status = injection.status
        assert status is not None
        headers = {"Retry-After": injection.retry_after} if injection.retry_after else None
        body = injection.body
        if isinstance(body, Mapping):
            return web.json_response(dict(body), status=status, headers=headers)
        if isinstance(body, str | bytes):
            return web.Response(
                body=body.encode() if isinstance(body, str) else body,
                status=status,
                headers=headers,
                content_type=injection.content_type or "text/plain",
            )
        if status == 429:
            if headers is None:
                headers = {"Retry-After": "5"}
            return web.json_response(
                {"error": {"status": 429, "message": "API rate limit exceeded"}},
                status=429,
                headers=headers,
            )
        if status == 503 or status == 504:
            return web.Response(status=status, headers=headers)  # empty, no Content-Type
        if status == 403:
            return web.Response(text=NOT_REGISTERED_TEXT, status=403, content_type="text/plain")
        if status == 401:
            return _api_error(401, NEW_401_MESSAGE)
        messages = {500: "Server error.", 502: "Bad gateway."}
        return web.json_response(
            {"error": {"status": status, "message": messages.get(status, "Error")}},
            status=status,
            headers=headers,
        )

    # --- /authorize -----------------------------------------------------------------------

    async def _handle_authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        self.authorize_params.append(dict(query))
        user = self.authorizing_user
        self._count("authorize", user)
        injected = await self._injected("authorize", user)
        if injected is not None:
            self._record("authorize", request, user, injected.status)
            return injected
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id:
            return self._error_page(request, user, "INVALID_CLIENT: Invalid client")
        if redirect_uri not in self.redirect_uris:  # exact match: case, trailing slash
            return self._error_page(request, user, "INVALID_CLIENT: Invalid redirect URI")
        params: dict[str, str] = {}
        if query.get("response_type") != "code":
            params["error"] = "unsupported_response_type"
        elif self._deny_next > 0:
            self._deny_next -= 1
            params["error"] = "access_denied"
        else:
            params["code"] = self.issue_code(
                user, redirect_uri=redirect_uri, scope=query.get("scope", "")
            )
        if "state" in query:
            params["state"] = query["state"]
        separator = "&" if "?" in redirect_uri else "?"
        self._record("authorize", request, user, 302)
        raise web.HTTPFound(f"{redirect_uri}{separator}{urlencode(params)}")

    def _error_page(self, request: web.Request, user: str, message: str) -> web.Response:
        self._record("authorize", request, user, 400)
        return web.Response(
            text=f"<html><body><h1>Oops! Something went wrong</h1><p>{message}</p></body></html>",
            status=400,
            content_type="text/html",
        )

    # --- /api/token -----------------------------------------------------------------------

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        form = {key: str(value) for key, value in (await request.post()).items()}
        # An app-only token (the bot's start-up check, `check`) is counted apart from the
        # members' grants, so a test counting a member's token requests is not thrown off.
        app_only = form.get("grant_type") == "client_credentials"
        endpoint = "token.client_credentials" if app_only else "token"
        user: str | None = None
        try:
            user = self._token_owner(form)
            self._count(endpoint, user)
            injected = await self._injected(endpoint, user)
            if injected is not None:
                response: web.StreamResponse = injected
            else:
                response = self._token(request, form)
        except _Fail as failure:
            response = failure.response
            user = failure.user or user
        safe_form = {k: v for k, v in form.items() if k in ("grant_type", "redirect_uri")}
        self._record(endpoint, request, user, response.status, safe_form)
        return response

    def _token_owner(self, form: Mapping[str, str]) -> str | None:
        code = self._codes.get(form.get("code", ""))
        if code is not None:
            return code.user_id
        refresh = self._refresh.get(form.get("refresh_token", ""))
        return refresh.user_id if refresh is not None else None

    def _check_client(self, request: web.Request, form: Mapping[str, str]) -> None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _oauth_error("invalid_client", "Invalid client") from None
            client_id, _, client_secret = decoded.partition(":")
        else:
            client_id = form.get("client_id", "")
            client_secret = form.get("client_secret", "")
        if client_id != self.client_id:
            raise _oauth_error("invalid_client", "Invalid client")
        if not secrets.compare_digest(client_secret.encode(), self.client_secret.encode()):
            raise _oauth_error("invalid_client", "Invalid client secret")

    def _token(self, request: web.Request, form: Mapping[str, str]) -> web.Response:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _oauth_error("unsupported_grant_type", "grant_type parameter is missing")
        if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
            raise _oauth_error(
                "unsupported_grant_type",
                "grant_type must be client_credentials, authorization_code or refresh_token",
            )
        self._check_client(request, form)
        if grant_type == "authorization_code":
            return self._grant_code(form)
        if grant_type == "refresh_token":
            return self._grant_refresh(form)
        return web.json_response(
            {
                "access_token": self._new_access_token(None, ""),
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        )

    def _grant_code(self, form: Mapping[str, str]) -> web.Response:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or code.client_id != self.client_id:
            raise _oauth_error("invalid_grant", "Invalid authorization code")
        if self.now() >= code.expires_at:
            raise _oauth_error("invalid_grant", "Authorization code expired")
        if form.get("redirect_uri") != code.redirect_uri:
            raise _oauth_error("invalid_grant", "Invalid redirect URI")
        code.used = True
        refresh = self._new_refresh_token(code.user_id, code.scope)
        return web.json_response(
            {
                "access_token": self._new_access_token(code.user_id, code.scope),
                "token_type": "Bearer",
                "scope": code.scope,
                "expires_in": self.expires_in,
                "refresh_token": refresh,
            }
        )

    def _grant_refresh(self, form: Mapping[str, str]) -> web.Response:
        presented = form.get("refresh_token")
        if not presented:
            raise _oauth_error("invalid_request", "refresh_token must be supplied")
        info = self._refresh.get(presented)
        if info is None:
            raise _oauth_error("invalid_grant", "Invalid refresh token")
        if info.revoked or self.now() - info.authorized_at >= self.refresh_token_lifetime:
            raise _oauth_error("invalid_grant", "Refresh token revoked")
        body: dict[str, Any] = {
            "access_token": self._new_access_token(info.user_id, info.scope),
            "token_type": "Bearer",
            "scope": info.scope,
            "expires_in": self.expires_in,
        }
        if self.rotate_refresh_tokens:
            info.revoked = True
            new_token = f"RT-{next(self._counter)}-{secrets.token_urlsafe(16)}"
            self._refresh[new_token] = _RefreshToken(
                info.user_id, info.scope, authorized_at=info.authorized_at
            )
            body["refresh_token"] = new_token
        return web.json_response(body)

    # --- Web API --------------------------------------------------------------------------

    def _bearer_user(self, request: web.Request) -> FakeUser:
        header = request.headers.get("Authorization", "")
        old = self.unauthorized_style == "old"
        if not header.startswith("Bearer "):
            raise _Fail(_api_error(401, "No token provided" if old else NEW_401_MESSAGE))
        token = self._access.get(header[7:])
        if token is None:
            raise _Fail(_api_error(401, OLD_INVALID_MESSAGE if old else NEW_401_MESSAGE))
        if token.user_id is None:
            raise _Fail(_api_error(401, "Valid user authentication required"))
        if self.now() >= token.expires_at:
            raise _Fail(
                _api_error(401, OLD_EXPIRED_MESSAGE if old else NEW_401_MESSAGE), token.user_id
            )
        return self.users[token.user_id]

    def _token_scopes(self, request: web.Request) -> list[str]:
        token = self._access.get(request.headers.get("Authorization", "")[7:])
        return token.scope.split() if token is not None else []

    def _bearer_user_id(self, request: web.Request) -> str | None:
        token = self._access.get(request.headers.get("Authorization", "")[7:])
        return token.user_id if token is not None else None

    def _rate_limited(self) -> web.Response | None:
        if self._rate_limit is None:
            return None
        max_requests, window, retry_after = self._rate_limit
        now = self.now()
        hits = self._api_hits
        while hits and hits[0] <= now - window:
            hits.popleft()
        hits.append(now)
        if len(hits) <= max_requests:
            return None
        return web.json_response(
            {"error": {"status": 429, "message": "API rate limit exceeded"}},
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    async def _api(
        self,
        endpoint: str,
        request: web.Request,
        answer: Callable[[FakeUser], web.Response],
        *,
        scope: str | None = None,
    ) -> web.StreamResponse:
        user_id = self._bearer_user_id(request)
        self._count(endpoint, user_id)
        response: web.StreamResponse | None = await self._injected(endpoint, user_id)
        if response is None and self.quota is not None:
            response = self.quota.admit(self.now())
        if response is None:
            response = self._rate_limited()
        if response is None:
            try:
                user = self._bearer_user(request)
                if not user.registered:
                    response = web.Response(
                        text=NOT_REGISTERED_TEXT, status=403, content_type="text/plain"
                    )
                elif scope is not None and scope not in self._token_scopes(request):
                    response = _api_error(403, INSUFFICIENT_SCOPE_MESSAGE)
                else:
                    response = answer(user)
            except _Fail as failure:
                response = failure.response
        self._record(endpoint, request, user_id, response.status)
        return response

    async def _handle_me(self, request: web.Request) -> web.StreamResponse:
        return await self._api("me", request, self._me)

    @staticmethod
    def _me(user: FakeUser) -> web.Response:
        return web.json_response(
            {
                "account_id": user.account_id,
                "id": user.id,
                "display_name": user.display_name,
                "type": "user",
                "uri": f"spotify:user:{user.id}",
                "href": f"https://api.spotify.com/v1/users/{user.id}",
                "external_urls": {"spotify": f"https://open.spotify.com/user/{user.id}"},
                "images": [],
                "product": user.product,
            }
        )

    async def _handle_currently_playing(self, request: web.Request) -> web.StreamResponse:
        wants_episodes = "episode" in request.query.get("additional_types", "").split(",")

        def answer(user: FakeUser) -> web.Response:
            state = user.player
            payload = state() if callable(state) else state
            if payload is None:
                return web.Response(status=204)  # empty body, no Content-Type
            item = payload.get("item")
            if not wants_episodes and isinstance(item, Mapping) and item.get("type") == "episode":
                payload = {**payload, "item": None}
            return web.json_response(payload)

        return await self._api("currently_playing", request, answer)

    async def _handle_recently_played(self, request: web.Request) -> web.StreamResponse:
        query = request.query

        def answer(user: FakeUser) -> web.Response:
            try:
                limit = int(query.get("limit", "20"))
                after = int(query["after"]) if "after" in query else None
                before = int(query["before"]) if "before" in query else None
            except ValueError:
                return _api_error(400, "Invalid limit")
            if not 1 <= limit <= 50 or (after is not None and before is not None):
                return _api_error(400, "Invalid limit" if after is None else "Only one cursor")
            entries = sorted(user.recently_played, key=lambda e: str(e["played_at"]), reverse=True)[
                :50
            ]  # Spotify keeps the last 50
            if after is not None:
                entries = [e for e in entries if _iso_ms(e["played_at"]) > after]
            if before is not None:
                entries = [e for e in entries if _iso_ms(e["played_at"]) < before]
            page = entries[:limit]
            cursors = (
                {
                    "after": str(_iso_ms(page[0]["played_at"])),
                    "before": str(_iso_ms(page[-1]["played_at"])),
                }
                if page
                else None
            )
            return web.json_response(
                {
                    "items": page,
                    "next": None,
                    "cursors": cursors,
                    "limit": limit,
                    "href": f"https://api.spotify.com/v1/me/player/recently-played?limit={limit}",
                }
            )

        return await self._api("recently_played", request, answer, scope=RECENTLY_PLAYED_SCOPE)

    async def _handle_top(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in ("tracks", "artists"):
            return _api_error(404, "Service not found")
        query = request.query

        def answer(user: FakeUser) -> web.Response:
            time_range = query.get("time_range", "medium_term")
            try:
                limit = int(query.get("limit", "20"))
                offset = int(query.get("offset", "0"))
            except ValueError:
                return _api_error(400, "Invalid limit")
            if time_range not in TIME_RANGES:
                return _api_error(400, "Invalid time range")
            if not 1 <= limit <= 50 or offset < 0:
                return _api_error(400, "Invalid limit")
            items = user.top.get((kind, time_range), [])
            return web.json_response(
                {
                    "items": items[offset : offset + limit],
                    "total": len(items),
                    "limit": limit,
                    "offset": offset,
                    "href": f"https://api.spotify.com/v1/me/top/{kind}",
                    "next": None,
                    "previous": None,
                }
            )

        return await self._api(f"top_{kind}", request, answer, scope=TOP_READ_SCOPE)


def _iso_ms(text: str) -> int:
    """Spotify's ``played_at`` (``2026-11-28T21:04:00.123Z``) in Unix milliseconds."""
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
