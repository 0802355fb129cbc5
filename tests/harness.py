"""The whole bot, in-process, against the fake Discord and the fake Spotify on 127.0.0.1.

``async with Stack.running(tmp_path) as stack:`` starts both fakes, builds real Settings
pointing at them, runs ``bot.app.Application`` (the same start-up code ``python -m bot`` uses)
and waits until the bot is ready and its commands are synced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord.gateway
import discord.http

from bot.app import Application
from bot.autopost.config import AutopostConfig, SchedulerConfig
from bot.config import Settings, load_settings
from tests.fakes.discord import ChannelArg, FakeDiscord, FakeMessage, SentInteraction
from tests.fakes.discord_payloads import (
    make_channel,
    make_guild,
    make_member,
    make_spotify_activity,
    make_user,
)
from tests.fakes.spotify import FakeSpotify

GUILD_ID = 700000000000000001
GENERAL_ID = 700000000000000010
MUSIC_ID = 700000000000000011
ALICE_ID = 800000000000000001  # linked as Spotify "alice" in most tests
BOB_ID = 800000000000000002
CAROL_ID = 800000000000000003
ADMIN_ID = 800000000000000009
KEY = base64.urlsafe_b64encode(b"e2e-test-key-0123456789abcdefghi"[:32]).decode()


# The end-to-end tests run once per storage backend: tests/e2e/conftest.py puts the URL of a
# fresh PostgreSQL database here for the PostgreSQL run (None: SQLite under tmp_path).
database_url: str | None = None


def database_target(tmp_path: Path) -> str | Path:
    """Where the stack's database lives in this run (to seed it before, or read it after)."""
    return database_url if database_url is not None else tmp_path / "data" / "bot.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listener(user_id: int, username: str) -> dict[str, Any]:
    """A member whose display name is the capitalised username ("alice" shows as "Alice")."""
    return make_member(make_user(user_id, username, global_name=username.capitalize()))


def guild_of(
    guild_id: int,
    name: str,
    channels: list[tuple[int, str]],
    members: list[tuple[int, str]],
) -> dict[str, Any]:
    """A server the admin owns: its text channels in order, and its members by username."""
    return make_guild(
        id=guild_id,
        name=name,
        channels=[
            make_channel(id=channel_id, name=channel_name, position=position)
            for position, (channel_id, channel_name) in enumerate(channels)
        ],
        members=[listener(user_id, username) for user_id, username in members],
        owner_id=ADMIN_ID,
    )


def default_guild() -> dict[str, Any]:
    return guild_of(
        GUILD_ID,
        "Listening Club",
        [(GENERAL_ID, "general"), (MUSIC_ID, "music")],
        [(ALICE_ID, "alice"), (BOB_ID, "bob"), (CAROL_ID, "carol"), (ADMIN_ID, "admin")],
    )


async def set_autopost_channel(
    stack: Stack, channel_id: int = MUSIC_ID, *, guild_id: int | None = None, timeout: float = 8.0
) -> FakeMessage:
    """The admin's ``/autopost channel`` (in the default server unless ``guild_id`` names
    another); the bot's reply."""
    sent = await stack.discord.send_slash_command(
        "autopost",
        {"channel": ChannelArg(str(channel_id))},
        subcommand="channel",
        user_id=str(ADMIN_ID),
        guild_id=guild_id,
    )
    return await sent.wait_for_reply(timeout=timeout)


def fast_autopost(*, skip_check: float = 1.0, backoff: float = 0.4) -> AutopostConfig:
    """Auto-post timings short enough for a test to watch a track end and the next post go out."""
    return AutopostConfig(
        scheduler=SchedulerConfig(
            skip_check_interval=skip_check,
            end_margin=0.2,
            end_jitter=0.05,
            recheck_after_stale=0.3,
            paused_backoff=(backoff,),
            idle_backoff=(backoff,),
            error_backoff=(backoff,),
            initial_spread=0.1,
            budget_per_window=3000,
        ),
    )


@dataclass
class Stack:
    discord: FakeDiscord
    spotify: FakeSpotify
    settings: Settings
    app: Application
    http: aiohttp.ClientSession

    @property
    def web_base(self) -> str:
        return f"http://127.0.0.1:{self.app.web_port}"

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        tmp_path: Path,
        *,
        guilds: Sequence[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        spotify_options: dict[str, Any] | None = None,
        discord_options: dict[str, Any] | None = None,
        app_options: dict[str, Any] | None = None,
        spotify: FakeSpotify | None = None,
        fake_discord: FakeDiscord | None = None,
        redirect_uri: str | None = None,
    ) -> AsyncIterator[Stack]:
        """``app_options`` go to ``Application`` (e.g. ``autopost_config``). Pass a running
        ``spotify`` to keep its users and tokens across two runs (a restart on the same DB), and
        a running ``fake_discord`` (and one ``redirect_uri``) to run two processes of one bot."""
        saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        port = free_port()
        redirect_uri = redirect_uri or f"http://127.0.0.1:{port}/callback"
        if spotify is not None:
            spotify.redirect_uris.append(redirect_uri)  # so /link works in this run too
        try:
            spotify_context: contextlib.AbstractAsyncContextManager[FakeSpotify] = (
                contextlib.nullcontext(spotify)
                if spotify is not None
                else FakeSpotify.running(redirect_uris=[redirect_uri], **(spotify_options or {}))
            )
            async with (
                spotify_context as sp,
                (
                    contextlib.nullcontext(fake_discord)
                    if fake_discord is not None
                    else FakeDiscord.running(
                        guilds=list(guilds) if guilds is not None else [default_guild()],
                        **(discord_options or {}),
                    )
                ) as dc,
                aiohttp.ClientSession() as http,
            ):
                values = {
                    "DISCORD_TOKEN": dc.token,
                    "SPOTIFY_CLIENT_ID": sp.client_id,
                    "SPOTIFY_CLIENT_SECRET": sp.client_secret,
                    "SPOTIFY_REDIRECT_URI": redirect_uri,
                    "TOKEN_ENCRYPTION_KEY": KEY,
                    "DATABASE_PATH": str(tmp_path / "data" / "bot.db"),
                    "WEB_HOST": "127.0.0.1",
                    "WEB_PORT": str(port),
                    "DISCORD_API_BASE": dc.api_url,
                    "SPOTIFY_ACCOUNTS_BASE": sp.accounts_base,
                    "SPOTIFY_API_BASE": sp.api_base,
                    "SPOTIFY_IMAGE_BASE": sp.image_base,  # album art from the fake CDN
                    "DEV_GUILD_ID": str(GUILD_ID),
                    # Most tests watch posts within seconds (fast_autopost); the daily pace would
                    # ration their checks. Tests of the daily budget name one in ``env``.
                    "SPOTIFY_DAILY_BUDGET": "0",
                }
                if database_url is not None:
                    values["DATABASE_URL"] = database_url
                values.update(env or {})
                settings = load_settings(values)
                checks = sp.call_count("token.client_credentials")
                async with Application(
                    settings, guild_ready_timeout=0.05, **(app_options or {})
                ) as app:
                    stack = cls(dc, sp, settings, app, http)
                    await asyncio.wait_for(app.services.discord.wait_until_ready(), 10)
                    if app.bot.syncs_commands:
                        await dc.wait_for_command_sync(str(GUILD_ID))
                    # The start-up check of the Spotify client id runs in the background: once
                    # it reached Spotify, every request counted from here on is the test's own.
                    await _spotify_calls_above(sp, "token.client_credentials", checks)
                    yield stack
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved

    def member_spotify_calls(self) -> int:
        """Every request Spotify saw but the start-up check of the bot's own client id."""
        return sum(
            count
            for (endpoint, _), count in self.spotify.calls.items()
            if endpoint != "token.client_credentials"
        )

    # --- flows used by many tests ---------------------------------------------------------

    async def commands_finished(self, timeout: float = 10) -> None:
        """Wait until every running slash command (its follow-ups included) has returned."""
        from bot.app import INTERACTION_TASK_PREFIXES

        running = [
            task
            for task in asyncio.all_tasks()
            if task.get_name().startswith(INTERACTION_TASK_PREFIXES) and not task.done()
        ]
        if running:
            await asyncio.wait(running, timeout=timeout)

    @contextlib.asynccontextmanager
    async def database_write_lock_held(self) -> AsyncIterator[None]:
        """Another process holds the database's write lock for the block (SQLite's
        BEGIN IMMEDIATE; on PostgreSQL the advisory lock every write transaction takes)."""
        if self.settings.database_url is None:
            other = sqlite3.connect(self.settings.database_path, timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                yield
            finally:
                other.rollback()
                other.close()
            return
        import asyncpg

        from bot.storage.engines.postgresql import WRITE_LOCK_KEY

        connection = await asyncpg.connect(self.settings.database_url)
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", WRITE_LOCK_KEY)
            yield
        finally:
            await connection.close()

    async def follow(self, url: str) -> tuple[int, str, str]:
        """Visit a URL like a browser: follow redirects; return (status, final URL, body)."""
        async with self.http.get(url, allow_redirects=True) as response:
            return response.status, str(response.url), await response.text()

    async def start_link(self, user_id: int) -> str:
        """Run /link as the member; return the authorize URL from the DM's link button (or
        from the reply's, when /link handed out the member's still-valid link again)."""
        before = len(self.discord.dms_to(str(user_id)))
        sent = await self.discord.send_slash_command("link", {}, user_id=str(user_id))
        reply = await sent.wait_for_reply()
        if any(c.get("style") == 5 for c in components_flat(reply.components)):
            return authorize_url_of(reply.components)
        dms = await self.discord.wait_for(
            lambda: self.discord.dms_to(str(user_id))[before:] or None
        )
        return authorize_url_of(dms[-1].components)

    async def link(self, user_id: int, spotify_user: str) -> None:
        """The whole /link flow through the browser; asserts the success page."""
        url = await self.start_link(user_id)
        self.spotify.approve_as(spotify_user)
        status, _, body = await self.follow(url)
        assert status == 200, body
        assert "Linked as" in body

    async def np(self, user_id: int, member_id: int | None = None) -> SentInteraction:
        from tests.fakes.discord import UserArg

        options: dict[str, Any] = {}
        if member_id is not None:
            options["member"] = UserArg(str(member_id))
        return await self.discord.send_slash_command("np", options, user_id=str(user_id))


async def _spotify_calls_above(spotify: FakeSpotify, endpoint: str, count: int) -> None:
    async with asyncio.timeout(10):
        while spotify.call_count(endpoint) <= count:  # noqa: ASYNC110 - the fake has no event
            await asyncio.sleep(0.01)


def components_flat(components: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for row in components:
        flat.extend(row.get("components", [row]))
    return flat


def authorize_url_of(components: Sequence[dict[str, Any]]) -> str:
    for component in components_flat(components):
        if component.get("style") == 5 and "url" in component:
            return str(component["url"])
    raise AssertionError(f"no link button in {components!r}")


def listening(track_id: str, title: str) -> dict[str, Any]:
    """A Discord Spotify activity for a 200 s track that started 5 s ago."""
    return make_spotify_activity(
        title=title,
        track_id=track_id,
        start_ms=int(time.time() * 1000) - 5_000,
        duration_ms=200_000,
    )
