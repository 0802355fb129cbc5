"""Spotify's budget is the app's: the interactive requests of a process that does not poll
count in the polling process's budget (bot.shards.SharedRequestCount), and a 429 answered to
one process holds that service in every process (bot.shards.SharedSpotifyHold), over NOTIFY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest

from bot.errors import SpotifyRateLimited
from bot.shards import HOLDS_CHANNEL, SharedRequestCount, SharedSpotifyHold
from bot.spotify.api import SpotifyApi
from bot.spotify.http import SpotifySender
from bot.storage import Storage
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.helpers import eventually, fake_spotify_auth

pytestmark = pytest.mark.postgresql


async def test_requests_of_a_follower_count_at_the_leader(postgres_database: str) -> None:
    leader_storage = await Storage.open(postgres_database)
    follower_storage = await Storage.open(postgres_database)
    counted: dict[str, list[int]] = {"leader": [], "follower": []}
    arrived = asyncio.Event()

    def at_leader(_now: float, count: int) -> None:
        counted["leader"].append(count)
        if sum(counted["leader"]) >= 6:
            arrived.set()

    leader = SharedRequestCount(
        leader_storage, at_leader, lambda: True, clock=time.monotonic, flush_every=0.05
    )
    follower = SharedRequestCount(
        follower_storage,
        lambda _now, count: counted["follower"].append(count),
        lambda: False,
        clock=time.monotonic,
        flush_every=0.05,
    )
    try:
        async with leader.listening(), follower.listening():
            leader.note_request(time.monotonic())  # the leader's own /np
            for _ in range(5):  # five /np in the other process, sent as one count
                follower.note_request(time.monotonic())
            await asyncio.wait_for(arrived.wait(), 10)
            assert sum(counted["leader"]) == 6
            assert leader.received == 5
            assert sum(counted["follower"]) == 5  # counted where they were made, too
            assert follower.received == 0  # a process that does not poll ignores counts
    finally:
        await leader.close()
        await follower.close()
        await leader_storage.close()
        await follower_storage.close()


class Process:
    """What one process has for Spotify: its own database pool, sender and shared hold."""

    def __init__(self, storage: Storage, session: aiohttp.ClientSession, spotify: FakeSpotify):
        self.storage = storage
        self.sender = SpotifySender(session)
        self.api = SpotifyApi(self.sender, api_base=spotify.api_base)
        self.hold = SharedSpotifyHold(storage, self.sender)


@asynccontextmanager
async def two_processes(
    database_url: str, spotify: FakeSpotify
) -> AsyncIterator[tuple[Process, Process]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        processes = []
        for _ in range(2):
            storage = await Storage.open(database_url)
            stack.push_async_callback(storage.close)
            process = Process(storage, session, spotify)
            await stack.enter_async_context(process.hold.listening())
            stack.push_async_callback(process.hold.close)
            processes.append(process)
        yield processes[0], processes[1]


async def test_a_429_to_one_process_holds_the_service_in_the_other(
    postgres_database: str,
) -> None:
    async with (
        FakeSpotify.running() as spotify,
        two_processes(postgres_database, spotify) as (first, second),
    ):
        access_token, _ = spotify.grant_tokens("alice")
        spotify.set_playing("alice", track_payload("t1", "Song", 200_000, 1_000))
        spotify.fail_next("currently_playing", 429, retry_after=2)

        with pytest.raises(SpotifyRateLimited):
            await first.api.currently_playing(access_token)
        await eventually(lambda: second.hold.received == 1)
        # Held until the same moment, the Web API only: the accounts service still answers.
        assert 1.5 < second.sender.hold_remaining("api") <= 2.0
        assert abs(second.sender.hold_until - first.sender.hold_until) < 0.1
        assert second.sender.hold_remaining("accounts") == 0.0
        assert first.hold.received == 0  # its own notification is skipped

        with pytest.raises(SpotifyRateLimited) as held:
            await second.api.currently_playing(access_token)
        assert held.value.user_message.startswith("Spotify asks us to wait, try again in ")
        assert spotify.call_count("currently_playing") == 1  # the 429 only: nothing sent

        await eventually(lambda: second.sender.hold_remaining("api") == 0.0, timeout=3)
        answer = await second.api.currently_playing(access_token)
        assert answer.item is not None
        assert answer.item.name == "Song"
        assert spotify.call_count("currently_playing") == 2


async def test_an_accounts_429_holds_the_accounts_service_everywhere(
    postgres_database: str,
) -> None:
    async with (
        FakeSpotify.running() as spotify,
        two_processes(postgres_database, spotify) as (first, second),
    ):
        spotify.fail_next("token", 429, retry_after=30)
        with pytest.raises(SpotifyRateLimited):
            await fake_refresh(first.sender, spotify)
        await eventually(lambda: second.hold.received == 1)
        assert 29 < second.sender.hold_remaining("accounts") <= 30
        assert second.sender.hold_remaining("api") == 0.0
        with pytest.raises(SpotifyRateLimited):
            await fake_refresh(second.sender, spotify)
        assert spotify.call_count("token") == 1


async def fake_refresh(sender: SpotifySender, spotify: FakeSpotify) -> None:
    _, refresh_token = spotify.grant_tokens("alice")
    await fake_spotify_auth(sender, spotify).refresh(refresh_token)


async def test_a_shorter_or_malformed_hold_never_shortens_one_kept(
    postgres_database: str,
) -> None:
    async with (
        FakeSpotify.running() as spotify,
        two_processes(postgres_database, spotify) as (first, second),
    ):
        access_token, _ = spotify.grant_tokens("alice")
        spotify.fail_next("currently_playing", 429, retry_after=30)
        with pytest.raises(SpotifyRateLimited):
            await second.api.currently_playing(access_token)  # its own, longer hold
        kept = second.sender.hold_until
        await eventually(lambda: first.hold.received == 1)

        later = time.time() + 5
        for payload in (
            "garbage",
            f"other:api:{later}",  # a field missing
            "other:api:soon:0",
            "other:api:nan:0",
            "other:api:inf:0",
            f"other:playlists:{later}:0",  # no such service
            f"other:api:{later}:yes",
            f"other:accounts:{time.time() - 5}:0",  # already over
            f"other:accounts:{later}:1",  # well formed: the one applied
        ):
            await first.storage.notify(HOLDS_CHANNEL, payload)
        await eventually(lambda: second.hold.received == 1)
        assert second.sender.hold_until == kept  # the Web API's 30 s hold stands
        assert 4 < second.sender.hold_remaining("accounts") <= 5

        spotify.fail_next("currently_playing", 429, retry_after=2)
        with pytest.raises(SpotifyRateLimited):
            await first.api.currently_playing(access_token)
        await first.hold.close()  # its notification of the 2 s hold is sent
        await first.storage.notify(HOLDS_CHANNEL, f"other:accounts:{time.time() + 10}:0")
        await eventually(lambda: second.sender.hold_remaining("accounts") > 9)
        assert second.sender.hold_until == kept  # the 2 s hold came before: it changed nothing
