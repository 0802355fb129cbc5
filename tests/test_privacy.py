"""The privacy service on a real database; the member: rule end to end is in tests/e2e."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot.members.events import MemberEvents
from bot.members.privacy import DM_ONLY_YOURSELF, PrivacyService, membership_refusal
from bot.storage import LastPost, Storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with await Storage.open(tmp_path / "bot.db") as opened:
        yield opened


async def test_default_is_server_and_private_is_remembered(storage: Storage) -> None:
    await storage.privacy.set_visibility(7, "private")  # chosen before this start
    privacy = PrivacyService(storage.privacy, MemberEvents())
    await privacy.start()
    assert privacy.is_private_now(7)
    assert await privacy.is_private(7)
    assert not await privacy.is_private(8)
    assert await privacy.visibility(8) == "server"
    assert await privacy.set_visibility(7, "server") == "private"
    assert not privacy.is_private_now(7)
    assert await storage.privacy.get_visibility(7) == "server"


async def test_private_listeners_run_in_order_and_a_failure_stops_none(storage: Storage) -> None:
    events = MemberEvents()
    privacy = PrivacyService(storage.privacy, events)
    await privacy.start()
    heard: list[tuple[str, int]] = []

    def broken(user_id: int) -> None:
        raise RuntimeError("listener bug")

    async def log_deleter(user_id: int) -> None:
        heard.append(("async", user_id))

    events.on("private", broken)
    events.on("private", log_deleter)
    events.on("private", lambda user_id: heard.append(("sync", user_id)))
    await storage.last_posts.record_post(LastPost(5, 100, "track", 1, 1.0))
    assert await privacy.set_visibility(5, "private") == "server"
    assert heard == [("async", 5), ("sync", 5)]
    assert privacy.is_private_now(5)
    assert await storage.last_posts.get_last_post(5, 100) is None
    back: list[int] = []
    events.on("public", back.append)
    await privacy.set_visibility(5, "server")  # going back calls no private listener
    assert heard == [("async", 5), ("sync", 5)]
    assert back == [5]
    await privacy.set_visibility(5, "server")  # no change: nothing to tell
    assert back == [5]


def test_membership_rule_without_a_resolved_member() -> None:
    someone = discord.Object(id=2)
    assert membership_refusal(guild_id=None, viewer_id=2, target=someone) is None  # yourself
    assert membership_refusal(guild_id=None, viewer_id=1, target=someone) == DM_ONLY_YOURSELF
    # A plain user (or an unresolved id) is not a member of the server where the command runs.
    refusal = membership_refusal(guild_id=10, viewer_id=1, target=someone)
    assert refusal is not None
    assert "not a member of this server" in refusal
