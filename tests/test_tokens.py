"""TokenManager with the real Storage and TokenCipher on tmp_path, against the fake Spotify."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.crypto import TokenCipher
from bot.errors import (
    DecryptionError,
    InvalidClient,
    LinkBroken,
    NotLinked,
    SpotifyNotRegistered,
    SpotifyRateLimited,
    SpotifyUnauthorized,
    SpotifyUnavailable,
)
from bot.members.tokens import TokenManager
from bot.spotify.api import SpotifyApi
from bot.spotify.http import SpotifySender
from bot.spotify.models import Playback, SpotifyUser, TokenGrant
from bot.storage import LinkedAccount, SpotifyAccountTaken, Storage
from tests.fakes.spotify import (
    FakeSpotify,
    track_payload,
)
from tests.helpers import ManualClock, eventually, fake_spotify_auth, no_sleep
from tests.peek import cached_token_count, member_lock_count

ALICE = 111_111_111_111_111_111
BOB = 222_222_222_222_222_222


class World:
    """Everything a token test needs, wired as the app wires it."""

    def __init__(
        self,
        fake: FakeSpotify,
        storage: Storage,
        cipher: TokenCipher,
        session: aiohttp.ClientSession,
        db_path: Path,
    ) -> None:
        self.fake = fake
        self.storage = storage
        self.cipher = cipher
        self.db_path = db_path
        self.clock = ManualClock(10_000.0)
        self.sender = SpotifySender(session, clock=self.clock, sleep=no_sleep)
        self.auth = fake_spotify_auth(self.sender, fake)
        self.api = SpotifyApi(self.sender, api_base=fake.api_base)
        self.tokens = TokenManager(storage, cipher, self.auth, clock=self.clock)
        self.secrets_seen: list[str] = []
        self.tokens.register_secret_listener(self.secrets_seen.append)

    async def link(self, discord_id: int, spotify_user: str) -> str:
        """Store a link as a completed /link would, without caching: returns the refresh token."""
        _, refresh_token = self.fake.grant_tokens(spotify_user)
        user = self.fake.users[spotify_user]
        await self.storage.links.save_link(
            LinkedAccount(
                discord_user_id=discord_id,
                spotify_account_id=user.account_id,
                spotify_user_id=user.id,
                display_name=user.display_name,
                refresh_token=self.cipher.encrypt(discord_id, refresh_token),
                scopes="user-read-currently-playing user-read-playback-state",
                linked_at=time.time(),
            )
        )
        return refresh_token

    async def stored_refresh_token(self, discord_id: int) -> str | None:
        link = await self.storage.links.get_link(discord_id)
        assert link is not None
        if link.refresh_token is None:
            return None
        return self.cipher.decrypt(discord_id, link.refresh_token)

    def refreshes(self, spotify_user: str) -> int:
        return self.fake.calls["token", spotify_user]


@pytest.fixture
async def world(fake: FakeSpotify, tmp_path: Path) -> AsyncIterator[World]:
    db_path = tmp_path / "bot.db"
    async with aiohttp.ClientSession() as session, await Storage.open(db_path) as storage:
        yield World(fake, storage, TokenCipher([os.urandom(32)]), session, db_path)


# --- links that cannot give a token --------------------------------------------------------


async def test_not_linked(world: World) -> None:
    with pytest.raises(NotLinked) as caught:
        await world.tokens.access_token(ALICE)
    assert "/link" in caught.value.user_message
    assert world.fake.call_count("token") == 0


async def test_broken_link(world: World) -> None:
    await world.link(ALICE, "alice")
    await world.storage.links.mark_link_broken(ALICE)
    with pytest.raises(LinkBroken):
        await world.tokens.access_token(ALICE)
    assert world.fake.call_count("token") == 0


# --- cache and early refresh ---------------------------------------------------------------


async def test_first_call_refreshes_then_the_cache_answers(world: World) -> None:
    await world.link(ALICE, "alice")
    first = await world.tokens.access_token(ALICE)
    second = await world.tokens.access_token(ALICE)
    assert first == second
    assert first in world.fake.access_tokens_of("alice")
    assert world.refreshes("alice") == 1


async def test_refresh_60_seconds_early_from_local_receive_time(world: World) -> None:
    await world.link(ALICE, "alice")
    first = await world.tokens.access_token(ALICE)
    world.clock.advance(3600 - 61)
    assert await world.tokens.access_token(ALICE) == first
    assert world.refreshes("alice") == 1
    world.clock.advance(2)  # 59 s left: counts as expired
    second = await world.tokens.access_token(ALICE)
    assert second != first
    assert world.refreshes("alice") == 2


async def test_force_refresh(world: World) -> None:
    await world.link(ALICE, "alice")
    first = await world.tokens.access_token(ALICE)
    assert await world.tokens.access_token(ALICE, force_refresh=True) != first
    assert world.refreshes("alice") == 2


async def test_concurrent_requests_for_one_member_refresh_once(world: World) -> None:
    await world.link(ALICE, "alice")
    await world.link(BOB, "bob")
    results = await asyncio.gather(
        *(world.tokens.access_token(ALICE if i % 2 else BOB) for i in range(100))
    )
    assert len(set(results)) == 2
    assert world.refreshes("alice") == 1
    assert world.refreshes("bob") == 1
    assert member_lock_count(world.tokens) == 0  # idle members keep no lock


async def test_forget_drops_the_cache(world: World) -> None:
    await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    world.tokens.forget(ALICE)
    await world.tokens.access_token(ALICE)
    assert world.refreshes("alice") == 2


async def test_forget_during_a_refresh_does_not_recache(world: World) -> None:
    await world.link(ALICE, "alice")
    refreshes = world.fake.call_count("token")
    world.fake.delay_next("token", 0.2)
    pending = asyncio.create_task(world.tokens.access_token(ALICE))
    # Forget once the refresh has reached Spotify (the fake counts it on arrival, before its
    # delayed answer): the same event loop runs both, so this always lands in between.
    await eventually(lambda: world.fake.call_count("token") > refreshes)
    world.tokens.forget(ALICE)
    with pytest.raises(NotLinked):
        await asyncio.wait_for(pending, 5)
    assert cached_token_count(world.tokens) == 0


# --- refresh tokens ------------------------------------------------------------------------


async def test_missing_refresh_token_keeps_the_old_one(world: World) -> None:
    refresh_token = await world.link(ALICE, "alice")
    before = await world.storage.links.get_link(ALICE)
    await world.tokens.access_token(ALICE)
    after = await world.storage.links.get_link(ALICE)
    assert before is not None
    assert after is not None
    assert after.refresh_token == before.refresh_token  # untouched
    assert await world.stored_refresh_token(ALICE) == refresh_token


async def test_rotated_refresh_token_is_stored_encrypted(world: World) -> None:
    world.fake.rotate_refresh_tokens = True
    old = await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    (new,) = world.fake.refresh_tokens_of("alice")
    assert new != old
    assert await world.stored_refresh_token(ALICE) == new
    raw = b"".join(path.read_bytes() for path in world.db_path.parent.iterdir() if path.is_file())
    assert new.encode() not in raw
    assert old.encode() not in raw
    # The rotated token is the one used next; the old one would be refused.
    await world.tokens.access_token(ALICE, force_refresh=True)
    assert world.refreshes("alice") == 2
    assert await world.storage.links.get_link(ALICE) is not None


async def test_concurrent_refresh_with_rotation_loses_nothing(world: World) -> None:
    world.fake.rotate_refresh_tokens = True
    await world.link(ALICE, "alice")
    for _ in range(3):
        await asyncio.gather(
            *(world.tokens.access_token(ALICE, force_refresh=True) for _ in range(5))
        )
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert link.status == "active"
    assert await world.stored_refresh_token(ALICE) in world.fake.refresh_tokens_of("alice")


async def test_invalid_grant_marks_the_link_broken(world: World) -> None:
    await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    world.fake.revoke("alice")
    with pytest.raises(LinkBroken) as caught:
        await world.tokens.access_token(ALICE, force_refresh=True)
    assert "/link" in caught.value.user_message
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert link.status == "broken"
    assert link.refresh_token is None
    assert cached_token_count(world.tokens) == 0
    with pytest.raises(LinkBroken):  # from the database now, without asking Spotify
        await world.tokens.access_token(ALICE)
    assert world.refreshes("alice") == 2


async def test_transient_refresh_failures_keep_the_link(world: World) -> None:
    await world.link(ALICE, "alice")
    world.fake.fail_next("token", 503, times=3)
    with pytest.raises(SpotifyUnavailable):
        await world.tokens.access_token(ALICE)
    world.fake.fail_next("token", 429, retry_after=30)
    world.clock.advance(1)
    with pytest.raises(SpotifyRateLimited):
        await world.tokens.access_token(ALICE)
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert link.status == "active"
    world.clock.advance(30)
    assert await world.tokens.access_token(ALICE)


async def test_invalid_client_is_not_the_members_fault(world: World) -> None:
    await world.link(ALICE, "alice")
    world.fake.client_secret = "rotated-by-the-owner"
    with pytest.raises(InvalidClient):
        await world.tokens.access_token(ALICE)
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert link.status == "active"


async def test_undecryptable_refresh_token(world: World) -> None:
    await world.link(ALICE, "alice")
    other = TokenManager(
        world.storage, TokenCipher([os.urandom(32)]), world.auth, clock=world.clock
    )
    with pytest.raises(DecryptionError):
        await other.access_token(ALICE)
    assert world.fake.call_count("token") == 0


# --- call(): one refresh and one retry after a 401 -----------------------------------------


@pytest.mark.parametrize("style", ["new", "old"])
async def test_401_refreshes_once_and_retries_once(world: World, style: str) -> None:
    world.fake.unauthorized_style = style  # type: ignore[assignment]
    world.fake.set_playing("alice", track_payload("t1", "One", 100_000, 10_000))
    await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    world.fake.expire_access_tokens("alice")  # Spotify disagrees with our cache
    playback = await world.tokens.call(ALICE, world.api.currently_playing)
    assert isinstance(playback, Playback)
    assert world.refreshes("alice") == 2
    assert world.fake.calls["currently_playing", "alice"] == 2
    statuses = [r.status for r in world.fake.requests if r.endpoint == "currently_playing"]
    assert statuses == [401, 200]


async def test_second_401_is_raised_without_a_second_refresh(world: World) -> None:
    await world.link(ALICE, "alice")
    world.fake.fail_next("currently_playing", 401, times=5)
    with pytest.raises(SpotifyUnauthorized):
        await world.tokens.call(ALICE, world.api.currently_playing)
    assert world.refreshes("alice") == 2  # the first token, then exactly one forced refresh
    assert world.fake.calls["currently_playing", "alice"] == 2


async def test_concurrent_401s_for_one_member_refresh_once(world: World) -> None:
    await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    world.fake.expire_access_tokens("alice")
    results = await asyncio.gather(
        *(world.tokens.call(ALICE, world.api.currently_playing) for _ in range(10))
    )
    assert len(results) == 10
    assert world.refreshes("alice") == 2


async def test_not_registered_is_not_retried(world: World) -> None:
    await world.link(ALICE, "outsider")
    with pytest.raises(SpotifyNotRegistered):
        await world.tokens.call(ALICE, world.api.currently_playing)
    assert world.fake.calls["currently_playing", "outsider"] == 1
    assert world.refreshes("outsider") == 1


# --- new links -----------------------------------------------------------------------------


async def test_store_new_link_caches_the_access_token(world: World) -> None:
    world.fake.set_playing("bob", track_payload("t2", "Two", 100_000, 10_000))
    code = world.fake.issue_code("bob", scope="user-read-currently-playing")
    grant = await world.auth.exchange_code(code)
    user = await world.api.me(grant.access_token)
    before = time.time()
    assert await world.tokens.store_new_link(BOB, user, grant) == "linked"
    account = await world.storage.links.get_link(BOB)
    assert account is not None
    assert account.status == "active"
    assert account.spotify_account_id == "acct-bob"
    assert account.scopes == "user-read-currently-playing"
    assert before <= account.linked_at <= time.time()
    assert await world.stored_refresh_token(BOB) == grant.refresh_token
    # The first /np needs no refresh.
    assert isinstance(await world.tokens.call(BOB, world.api.currently_playing), Playback)
    assert world.fake.calls["token", "bob"] == 1  # only the code exchange


async def test_a_spotify_account_linked_to_another_member_is_never_moved(world: World) -> None:
    await world.link(ALICE, "alice")
    alice_token = await world.tokens.access_token(ALICE)
    grant = await world.auth.exchange_code(world.fake.issue_code("alice"))
    alice = SpotifyUser(account_id="acct-alice", id="alice", display_name="Alice")
    with pytest.raises(SpotifyAccountTaken):
        await world.tokens.store_new_link(BOB, alice, grant)
    assert await world.storage.links.get_link(BOB) is None
    assert await world.tokens.access_token(ALICE) == alice_token  # untouched, still cached
    with pytest.raises(NotLinked):  # nothing of Alice's was cached for Bob either
        await world.tokens.access_token(BOB)
    # The same member renewing the same account is fine.
    renewal = await world.auth.exchange_code(world.fake.issue_code("alice"))
    assert await world.tokens.store_new_link(ALICE, alice, renewal) == "renewed"


async def test_secret_listener_learns_every_token(world: World) -> None:
    world.fake.rotate_refresh_tokens = True
    old = await world.link(ALICE, "alice")
    access = await world.tokens.access_token(ALICE)
    (rotated,) = world.fake.refresh_tokens_of("alice")
    assert {old, access, rotated} <= set(world.secrets_seen)
    grant = TokenGrant("AT-new", 3600, "", "RT-new", world.clock())
    await world.tokens.store_new_link(BOB, SpotifyUser("acct-bob", "bob", "Bob"), grant)
    assert {"AT-new", "RT-new"} <= set(world.secrets_seen)


async def test_tokens_never_reach_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.fake.rotate_refresh_tokens = True
    refresh_token = await world.link(ALICE, "alice")
    await world.tokens.access_token(ALICE)
    world.fake.expire_access_tokens("alice")
    await world.tokens.call(ALICE, world.api.currently_playing)
    world.fake.revoke("alice")
    with pytest.raises(LinkBroken):
        await world.tokens.access_token(ALICE, force_refresh=True)
    assert world.secrets_seen
    for secret in [refresh_token, *world.secrets_seen]:
        assert secret not in caplog.text


async def test_the_token_cache_drops_expired_tokens_as_it_grows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.members.tokens.SWEEP_MIN_ENTRIES", 4)
    world.tokens = TokenManager(world.storage, world.cipher, world.auth, clock=world.clock)
    members = [(ALICE, "alice"), (BOB, "bob")]
    for index in range(3):
        name = f"listener{index}"
        world.fake.add_user(name)
        members.append((300 + index, name))
    for discord_id, spotify_user in members[:4]:
        await world.link(discord_id, spotify_user)
        await world.tokens.access_token(discord_id)
    assert cached_token_count(world.tokens) == 4
    world.clock.advance(4000)  # every cached token has expired
    await world.link(*members[4])
    await world.tokens.access_token(members[4][0])
    assert cached_token_count(world.tokens) == 1  # only the fresh one is kept
