"""Small helpers several test modules share: a hand-moved clock, a sleep that returns at
once, pictures as file bytes, waiting for a condition, a stored link as a finished /link
leaves it, and a LinkService wired as the app wires it."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
from PIL import Image

from bot.crypto import TokenCipher
from bot.linking.completion import PendingLinkCompleter
from bot.linking.service import LinkService
from bot.members.events import MemberEvents
from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.auth import SpotifyAuth
from bot.spotify.http import SpotifySender
from bot.storage import LinkedAccount, Storage
from tests.fakes.spotify import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    FakeSpotify,
)


class ManualClock:
    """A clock (monotonic or Unix seconds) that moves only when a test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def no_sleep(seconds: float) -> None:
    return None


def encode_image(image: Image.Image, kind: str = "PNG") -> bytes:
    """The file bytes of ``image`` in format ``kind`` (PNG, JPEG, GIF...)."""
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def solid_image(rgb: tuple[int, int, int], kind: str = "PNG", size: int = 64) -> bytes:
    """A square picture of one colour, as file bytes."""
    return encode_image(Image.new("RGB", (size, size), rgb), kind)


def fake_spotify_auth(sender: SpotifySender, fake: FakeSpotify | str) -> SpotifyAuth:
    """The app's SpotifyAuth with the fake's registered client, pointed at the fake (or at
    its accounts base, for a benchmark whose fake runs in another process)."""
    return SpotifyAuth(
        sender,
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
        redirect_uri=DEFAULT_REDIRECT_URI,
        accounts_base=fake if isinstance(fake, str) else fake.accounts_base,
    )


async def refresh_token_blobs(storage: Storage) -> list[tuple[int, bytes]]:
    """Every stored refresh token as (member, encrypted blob), as key rotation reads them."""
    return [
        (value.owner_id, value.blob)
        for value in await storage.sealed.list_sealed()
        if value.column.table == "linked_accounts"
    ]


def linked_account(user_id: int, refresh_token: bytes | None = b"encrypted") -> LinkedAccount:
    return LinkedAccount(
        discord_user_id=user_id,
        spotify_account_id=f"acct-{user_id}",
        spotify_user_id=f"user-{user_id}",
        display_name=f"User {user_id}",
        refresh_token=refresh_token,
        scopes="user-read-currently-playing",
        linked_at=1_750_000_000.0,
        status="active",
    )


async def link_fake_user(
    storage: Storage, spotify: FakeSpotify, cipher: TokenCipher, member_id: int, user: str
) -> None:
    """Link Discord member ``member_id`` to the fake Spotify's ``user`` as /link would: a real
    refresh token from the fake, stored encrypted (benchmarks link hundreds this way)."""
    _, refresh = spotify.grant_tokens(user)
    await storage.links.save_link(
        LinkedAccount(
            discord_user_id=member_id,
            spotify_account_id=f"acct-{user}",
            spotify_user_id=user,
            display_name=user,
            refresh_token=cipher.encrypt(member_id, refresh),
            scopes="user-read-currently-playing user-read-playback-state",
            linked_at=time.time(),
        )
    )


async def eventually(
    condition: Callable[[], object], timeout: float = 5.0, *, interval: float = 0.01
) -> None:
    """Wait until ``condition()`` is true (polled: for state no event announces); fail after
    ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if condition():
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s") from None


ALICE = 111_111_111_111_111_111
BOB = 222_222_222_222_222_222


class LinkWorld:
    """A LinkService wired as ``bot.app`` wires it (the linking and web tests)."""

    def __init__(
        self,
        fake: FakeSpotify,
        storage: Storage,
        session: aiohttp.ClientSession,
        db_path: Path,
    ) -> None:
        self.fake = fake
        self.storage = storage
        self.session = session
        self.db_path = db_path
        self.cipher = TokenCipher([os.urandom(32)])
        self.clock = ManualClock(1_800_000_000.0)
        # Retries of 5xx answers happen, but without sleeping: the tests stay fast.
        # The sender's monotonic clock moves by hand too: 429 holds end when a test says so.
        self.monotonic = ManualClock(5_000.0)
        self.sender = SpotifySender(session, sleep=no_sleep, clock=self.monotonic)
        self.auth = fake_spotify_auth(self.sender, fake)
        self.api = SpotifyApi(self.sender, api_base=fake.api_base)
        self.tokens = TokenManager(storage, self.cipher, self.auth)
        self.events = MemberEvents()
        self.tokens.follow_members(self.events)
        self.links = LinkService(
            storage,
            self.auth,
            self.api,
            self.tokens,
            self.cipher,
            self.events,
            clock=self.clock,
        )
        self.completer = PendingLinkCompleter(
            storage.link_states,
            self.cipher,
            self.auth,
            self.api,
            self.links,
            hold_remaining=self.sender.hold_remaining,
            clock=self.clock,
            retry_seconds=0.05,
        )

    async def redirect_after_consent(self, authorize_url: str) -> str:
        """What the browser is sent to after the consent screen (not followed)."""
        async with self.session.get(authorize_url, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]

    async def approved_query(self, member: int, spotify_user: str = "alice") -> dict[str, str]:
        """Run /link's start, approve as ``spotify_user``; the callback's query parameters."""
        self.fake.approve_as(spotify_user)
        start = await self.links.start(member, f"Member {member} (@member{member})")
        location = await self.redirect_after_consent(start.authorize_url)
        return query_of(location)

    async def stored_refresh_token(self, member: int) -> str | None:
        link = await self.storage.links.get_link(member)
        if link is None or link.refresh_token is None:
            return None
        return self.cipher.decrypt(member, link.refresh_token)

    def database_bytes(self) -> bytes:
        """Everything SQLite wrote: the database file and its write-ahead log."""
        data = b""
        for suffix in ("", "-wal"):
            path = Path(str(self.db_path) + suffix)
            if path.exists():
                data += path.read_bytes()
        return data


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
