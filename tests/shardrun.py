"""Two processes of one bot (SHARD_COUNT=2, shards 0 and 1) against one fake Discord, one fake
Spotify and one PostgreSQL: in this process (``two_processes``: two ``Stack``s) or as a real
``python -m bot`` process next to a ``Stack`` (``shard_process``, for kill -9)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from tests import harness
from tests.clirun import PYTHON_M_BOT, BotProcess, bot_process, env_for_fakes
from tests.fakes.discord import FakeDiscord, shard_of
from tests.fakes.spotify import FakeSpotify
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    GUILD_ID,
    MUSIC_ID,
    Stack,
    default_guild,
    fast_autopost,
    free_port,
    guild_of,
    set_autopost_channel,
)
from tests.helpers import eventually

OTHER_GUILD_ID = GUILD_ID + (1 << 22)  # the neighbouring shard of two
OTHER_GENERAL_ID = 700000000000000110
OTHER_MUSIC_ID = 700000000000000111
# Every track its own post (not an edit of the last one).
FAST_AUTOPOST = dataclasses.replace(fast_autopost(skip_check=0.5), edit_window=0.0)
IDENTIFY_INTERVAL = 0.5


def other_guild() -> dict[str, object]:
    return guild_of(
        OTHER_GUILD_ID,
        "Second Server",
        [(OTHER_GENERAL_ID, "general"), (OTHER_MUSIC_ID, "music")],
        [(ALICE_ID, "alice"), (BOB_ID, "bob"), (ADMIN_ID, "admin")],
    )


def music_channel_of(guild_id: int) -> int:
    return MUSIC_ID if guild_id == GUILD_ID else OTHER_MUSIC_ID


def guild_of_shard(shard_id: int) -> int:
    return next(g for g in (GUILD_ID, OTHER_GUILD_ID) if shard_of(g, 2) == shard_id)


async def set_both_music_channels(stack: Stack, *known_by: Stack) -> None:
    """The admin's /autopost channel in both servers, each answered by its shard's process;
    returns once the processes ``known_by`` know both (the change reaches them by NOTIFY)."""
    channels = ((GUILD_ID, MUSIC_ID), (OTHER_GUILD_ID, OTHER_MUSIC_ID))
    for guild_id, channel_id in channels:
        reply = await set_autopost_channel(stack, channel_id, guild_id=guild_id)
        assert f"<#{channel_id}>" in reply.content
    for process in known_by:
        autopost = process.app.services.autopost
        await eventually(lambda a=autopost: all(a.music_channel(g) == c for g, c in channels))


def posted_titles(fake_discord: FakeDiscord, channel_id: int) -> list[str]:
    return [
        m.embeds[0]["title"]
        for m in fake_discord.channel_posts
        if m.channel_id == str(channel_id) and m.embeds
    ]


def posted_in_both(fake_discord: FakeDiscord, title: str) -> bool | None:
    """True once a post titled ``title`` is in both servers' music channels (for wait_for)."""
    done = all(title in posted_titles(fake_discord, c) for c in (MUSIC_ID, OTHER_MUSIC_ID))
    return True if done else None


def shard_env(shard_id: int, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"SHARD_COUNT": "2", "SHARD_IDS": str(shard_id), "WEB_PORT": str(port), **(extra or {})}


@contextlib.asynccontextmanager
async def two_processes(
    tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Stack, Stack, FakeDiscord]]:
    """Shard 0 and shard 1 of one bot, sharing the fake Discord, Spotify and the database."""
    ports = (free_port(), free_port())
    redirect_uri = f"http://127.0.0.1:{ports[0]}/callback"  # the proxy sends it to shard 0
    guilds = [default_guild(), other_guild()]
    async with (
        FakeSpotify.running(redirect_uris=[redirect_uri]) as spotify,
        FakeDiscord.running(guilds=guilds) as fake_discord,
    ):
        options = {"identify_interval": IDENTIFY_INTERVAL, "autopost_config": FAST_AUTOPOST}
        stacks: list[Stack] = []
        async with contextlib.AsyncExitStack() as processes:
            for shard_id, port in enumerate(ports):
                stack = await processes.enter_async_context(
                    Stack.running(
                        tmp_path / f"shard{shard_id}",
                        env=shard_env(shard_id, port, env),
                        spotify=spotify,
                        fake_discord=fake_discord,
                        redirect_uri=redirect_uri,
                        app_options=options,
                    )
                )
                stacks.append(stack)
            yield stacks[0], stacks[1], fake_discord


@contextlib.asynccontextmanager
async def shard_process(
    tmp_path: Path,
    shard_id: int,
    stack: Stack,
    env: dict[str, str] | None = None,
) -> AsyncIterator[BotProcess]:
    """``python -m bot run`` for ``shard_id`` of 2, on the stack's fakes and database, once it
    is connected to Discord (killed, if still running, at the end)."""
    assert harness.database_url is not None
    folder = tmp_path / f"process{shard_id}"
    folder.mkdir(parents=True, exist_ok=True)
    values = env_for_fakes(
        folder,
        stack.discord,
        stack.spotify,
        DATABASE_URL=harness.database_url,
        LOG_LEVEL="INFO",
        **shard_env(shard_id, free_port(), env),
    )
    async with bot_process((*PYTHON_M_BOT, "run"), values, folder) as process:
        await process.wait_for_line("Connected to Discord", timeout=30)
        yield process
