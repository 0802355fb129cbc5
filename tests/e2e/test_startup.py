"""Start-up against a Discord that is not there yet, or that allows no new session right now."""

from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from bot.aio.retry import backoff_delays
from bot.gateway.connect import GatewayInfo, describe_failure, format_wait
from tests.clirun import PYTHON_M_BOT, bot_env, bot_process, env_for_fakes
from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import GUILD_ID, Stack, default_guild, free_port


def test_backoff_doubles_up_to_20_seconds() -> None:
    assert list(islice(backoff_delays(), 8)) == [1, 2, 4, 8, 16, 20, 20, 20]


def test_wait_lengths_read_naturally() -> None:
    assert format_wait(4) == "4 s"
    assert format_wait(600) == "10 min"
    assert format_wait(3 * 3600 + 5 * 60) == "3 h 5 min"


def test_session_start_limit_is_read_from_gateway_bot() -> None:
    info = GatewayInfo.from_payload(
        {
            "url": "wss://gateway.discord.gg",
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 0,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }
    )
    assert (info.remaining, info.total, info.reset_after) == (0, 1000, 14_400.0)
    assert str(info.url) == "wss://gateway.discord.gg"


async def test_a_refused_port_is_described_in_a_few_words() -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get(f"http://127.0.0.1:{port}/")
    assert (
        describe_failure(refused.value)
        == f"cannot connect to 127.0.0.1:{port} (Connection refused)"
    )


def test_a_dns_failure_is_described_in_a_few_words() -> None:
    # Built as aiohttp raises it: resolving a name sends traffic off this machine in a test.
    key = ConnectionKey("discord.com", 443, True, True, None, None, None)
    failure = aiohttp.ClientConnectorDNSError(key, OSError(-3, "Temporary failure"))
    assert describe_failure(failure) == "cannot resolve discord.com"


async def test_the_bot_waits_for_a_discord_that_comes_up_late(tmp_path: Path) -> None:
    """Nothing listens on Discord's port at start; the fake comes up a few seconds later."""
    discord_port = free_port()
    discord_base = f"http://127.0.0.1:{discord_port}"
    async with FakeSpotify.running() as spotify, aiohttp.ClientSession() as http:
        env = bot_env(
            tmp_path,
            discord_api=f"{discord_base}/api/v10",
            token="fake-bot-token.NowPlaying.0000",
            spotify=spotify,
            DEV_GUILD_ID=str(GUILD_ID),
        )
        async with bot_process(PYTHON_M_BOT, env, tmp_path) as bot:
            first = await bot.wait_for_line("retrying in")
            assert "WARNING" in first
            # Presence is on by default: the portal's switches are the first question.
            assert f"Could not reach Discord (cannot connect to 127.0.0.1:{discord_port}" in first
            # The web server is up meanwhile, and says the bot is not connected.
            async with http.get(f"http://127.0.0.1:{env['WEB_PORT']}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {
                    "status": "degraded",
                    "database": True,
                    "gateway": False,
                    "spotify": "ok",
                    "presence": False,
                }
            await bot.wait_for_line("retrying in", after=bot.lines.index(first) + 1)
            async with FakeDiscord.running(guilds=[default_guild()], port=discord_port) as fake:
                await bot.wait_for_line("Connected to Discord as", timeout=30)
                await fake.wait_for_command_sync(str(GUILD_ID))
                async with http.get(f"http://127.0.0.1:{env['WEB_PORT']}/healthz") as response:
                    assert (await response.json())["status"] == "ok"
                status = await bot.stop()
    assert status == 0, bot.output
    assert "Traceback" not in bot.output
    retries = [line for line in bot.lines if "retrying in" in line]
    assert len(retries) >= 2
    assert all(line.count("WARNING") == 1 for line in retries)
    # One line per retry: discord.py's own "logging in using static token" is not repeated.
    assert "logging in using static token" not in bot.output
    assert len(fake.identifies) == 1


async def test_a_wrong_spotify_secret_is_said_at_start_and_the_bot_stays_up(
    tmp_path: Path,
) -> None:
    """Issue 21 item 8: not only `check` says invalid_client; the start-up log does too."""
    async with (
        FakeSpotify.running() as spotify,
        FakeDiscord.running(guilds=[default_guild()]) as fake,
    ):
        env = env_for_fakes(tmp_path, fake, spotify, SPOTIFY_CLIENT_SECRET="not-the-secret")
        async with bot_process(PYTHON_M_BOT, env, tmp_path) as bot:
            refused = await bot.wait_for_line("invalid_client")
            connected = await bot.wait_for_line("Connected to Discord as", timeout=30)
            synced = await bot.wait_for_line("global commands")
            status = await bot.stop()
    assert status == 0, bot.output
    assert connected.endswith(" in 1 server")
    assert "set DEV_GUILD_ID to a server's id to see them there at once" in synced
    assert " ERROR " in refused
    assert f"Spotify rejected client id {spotify.client_id} or its secret" in refused
    assert "developer.spotify.com/dashboard -> your app -> Settings" in refused
    assert "not-the-secret" not in bot.output
    assert spotify.call_count("token.client_credentials") == 1


async def test_the_gateway_refusing_the_first_connection_is_retried_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """REST answers but the gateway does not yet: discord.py's own first-connect failure
    (a traceback, then an AttributeError) becomes one WARNING line and a retry."""
    caplog.set_level(logging.INFO)
    async with Stack.running(tmp_path, discord_options={"refuse_gateway_handshakes": 1}) as stack:
        assert stack.discord.refused_gateway_handshakes == 1
        assert stack.app.bot.is_ready()
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "bot.gateway.connect"
    ]
    assert [r.getMessage() for r in warnings] == [
        "Could not connect to the Discord gateway (the gateway answered HTTP 503); retrying in 1 s"
    ]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_no_identify_while_discord_allows_no_new_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    async with Stack.running(
        tmp_path,
        discord_options={"session_starts_remaining": 0, "session_starts_reset_after": 2.0},
    ) as stack:
        waited = time.monotonic() - started
        assert stack.discord.identifies_over_limit == []
        assert len(stack.discord.identifies) == 1
        assert stack.discord.session_starts_remaining == 999
    assert waited >= 2.0
    [warning] = [r.getMessage() for r in caplog.records if r.name == "bot.gateway.connect"]
    assert warning == (
        "Discord allows no new gateway session right now (0 of 1000 session starts left); "
        "waiting 2 s until the limit resets before identifying"
    )


async def test_a_wrong_api_base_stops_the_bot_in_one_line(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as fake:
        env = env_for_fakes(tmp_path, fake, spotify)
        env["DISCORD_API_BASE"] = f"{fake.base_url}/wrong/v10"
        async with bot_process(PYTHON_M_BOT, env, tmp_path) as bot:
            status = await bot.wait()
    assert status == 1
    assert "Traceback" not in bot.output
    assert "answered HTTP 404 at login; is DISCORD_API_BASE right?" in bot.output


async def test_a_stop_before_discord_ever_answered_is_clean(tmp_path: Path) -> None:
    """The bot was built but never logged in: stopping it closes everything quietly."""
    async with FakeSpotify.running() as spotify:
        env = bot_env(
            tmp_path,
            discord_api=f"http://127.0.0.1:{free_port()}/api/v10",
            token="fake-bot-token.NowPlaying.0000",
            spotify=spotify,
        )
        async with bot_process(PYTHON_M_BOT, env, tmp_path) as bot:
            await bot.wait_for_line("retrying in")
            status = await bot.stop()
    assert status == 0, bot.output
    assert "Traceback" not in bot.output
    assert "ERROR" not in bot.output
