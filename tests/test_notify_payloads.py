"""What another process sends over NOTIFY is read strictly: numbers are 1 to 20 ASCII digits,
counts have a ceiling, and anything else is ignored whole, without an exception in the
listener (``"²".isdigit()`` is true and ``int("²")`` raises; a 4,000-digit count stopped
polling for good)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from bot.members.events import MemberEvents
from bot.shards import (
    HOLDS_CHANNEL,
    MEMBER_CHANNEL,
    REQUESTS_CHANNEL,
    MemberChangeRelay,
    SharedRequestCount,
    SharedSpotifyHold,
)
from bot.spotify.http import SpotifySender
from bot.storage import Storage
from tests.helpers import eventually

pytestmark = pytest.mark.postgresql

# Numbers that are no numbers here: digits str.isdigit accepts and int() refuses or reads
# in another script, too many digits, signs, spaces.
NOT_NUMBERS = ("²", "١٢", "１２", "9" * 4000, "1" * 21, "-3", " 3", "3\n", "")


@asynccontextmanager
async def two_storages(url: str) -> AsyncIterator[tuple[Storage, Storage]]:
    first, second = await Storage.open(url), await Storage.open(url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def no_listener_errors(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_member_changes_with_malformed_ids_are_ignored(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[int] = []
    events = MemberEvents()
    events.on("linked", heard.append)

    async def reload(_member_id: int) -> None:
        return None

    async with two_storages(postgres_database) as (here, other):
        relay = MemberChangeRelay(here, events, on_visibility=reload)
        try:
            async with relay.listening():
                for raw in NOT_NUMBERS:
                    await other.notify(MEMBER_CHANNEL, f"other:linked:{raw}")
                await other.notify(MEMBER_CHANNEL, "other:linked:5")  # well formed: the last
                await eventually(lambda: heard == [5])
        finally:
            await relay.close()
    no_listener_errors(caplog)


async def test_request_counts_must_be_small_whole_numbers(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    counted: list[int] = []
    async with two_storages(postgres_database) as (leader_storage, other):
        leader = SharedRequestCount(
            leader_storage, lambda _now, n: counted.append(n), lambda: True, clock=time.monotonic
        )
        try:
            async with leader.listening():
                for raw in (*NOT_NUMBERS, "0", "10001"):
                    await other.notify(REQUESTS_CHANNEL, f"other:{raw}")
                await other.notify(REQUESTS_CHANNEL, "other:3")
                await eventually(lambda: leader.received == 3)
        finally:
            await leader.close()
    assert counted == [3]
    no_listener_errors(caplog)


async def test_a_hold_written_in_other_digits_is_ignored(
    postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    later = str(int(time.time()) + 60)
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in later)  # float() reads these
    async with (
        two_storages(postgres_database) as (here, other),
        aiohttp.ClientSession() as session,
    ):
        sender = SpotifySender(session)
        hold = SharedSpotifyHold(here, sender)
        try:
            async with hold.listening():
                for until in (fullwidth, f" {later}", f"{later}e0", "1" * 40):
                    await other.notify(HOLDS_CHANNEL, f"other:api:{until}:0")
                await other.notify(HOLDS_CHANNEL, f"other:accounts:{later}.5:0")
                await eventually(lambda: hold.received == 1)
        finally:
            await hold.close()
        assert sender.hold_remaining("api") == 0
        assert sender.hold_remaining("accounts") > 50
    no_listener_errors(caplog)
