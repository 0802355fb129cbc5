"""Presence-only members who neither linked nor opted in leave nothing behind: no cache entry
of ours and no database read, however many of them Discord shows listening."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.autopost.service import AutopostService
from bot.members.events import MemberEvents
from bot.members.privacy import PrivacyService
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.spotify.models import CurrentlyPlaying, NothingPlaying
from bot.storage import Storage
from bot.storage.engines.sqlite import SqliteDatabase
from cogs.presence import PresenceCog
from tests.fakes.discord_side import FakeDiscordSide
from tests.helpers import linked_account

GUILD = 10
MUSIC = 11
LINKED = 1
OPTED_IN = 2
PRIVATE = 3
LISTENERS = range(1000, 1300)


async def nothing(member_id: int) -> CurrentlyPlaying:
    return NothingPlaying(received_at=time.time())


def listening(member_id: int, track: str) -> Any:
    start = int(time.time() * 1000)
    activity = discord.Spotify(
        type=2,
        name="Spotify",
        sync_id=track,
        session_id="s",
        details=f"Song {track}",
        state="Artist",
        assets={"large_text": "Album"},
        timestamps={"start": start, "end": start + 200_000},
    )
    return SimpleNamespace(id=member_id, bot=False, activities=(activity,))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with await Storage.open(tmp_path / "bot.db") as opened:
        yield opened


async def test_presence_only_listeners_leave_no_trace(storage: Storage) -> None:
    await storage.settings.set_music_channel(GUILD, MUSIC)
    await storage.links.save_link(linked_account(LINKED))
    await storage.settings.set_guild_autopost_opt_in(OPTED_IN, GUILD, True)
    await storage.settings.set_guild_autopost_opt_in(PRIVATE, GUILD, True)
    await storage.privacy.set_visibility(PRIVATE, "private")
    privacy = PrivacyService(storage.privacy, MemberEvents())
    await privacy.start()
    side = FakeDiscordSide(first_message_id=1)
    service = AutopostService(
        storage, nothing, side, is_private=privacy.is_private_now, renderer=NowPlayingRenderer(None)
    )
    await service.start()
    await service.settle()
    cog = PresenceCog(service)
    statements: list[str] = []
    database = storage.database
    assert isinstance(database, SqliteDatabase)
    connection = database.connection  # counting statements is the point
    await connection.set_trace_callback(statements.append)
    try:
        for member_id in LISTENERS:
            await cog.observe_member(listening(member_id, f"t{member_id}"))  # type: ignore[arg-type]
        assert statements == []  # not one database read for them
        held = {
            member_id
            for structure in service.per_member_state().values()
            for key in structure
            for member_id in (key if isinstance(key, tuple) else (key,))
        }
        assert held.isdisjoint(LISTENERS)
        assert side.posts == []

        for member_id in (LINKED, OPTED_IN, PRIVATE):
            await cog.observe_member(listening(member_id, f"t{member_id}"))
        assert sorted(post.title for post in side.posts) == ["Song t1", "Song t2"]  # not private
        assert service.is_linked(LINKED)
        assert not privacy.is_private_now(OPTED_IN)
    finally:
        await connection.set_trace_callback(None)
        await service.stop()
