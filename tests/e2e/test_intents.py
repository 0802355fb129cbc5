"""Presence is on by default, safely: the bot asks for the privileged intents only when the
Developer Portal's switches are on (as ``GET /oauth2/applications/@me`` reports them), and
when Discord refuses them anyway (4014) it connects again without them. Either way it stays
up without statuses, says so in one WARNING line, and ``/healthz`` says ``"presence": false``.

The fake Discord's "Developer Portal" switches decide; the bot under test is an
``AutoShardedBot`` with SHARD_COUNT unset, as by default.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.gateway.application import FLAG_GUILD_MEMBERS, FLAG_PRESENCE
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import INTENT_GUILD_MEMBERS, INTENT_GUILD_PRESENCES
from tests.harness import Stack, default_guild

DATABASE_BACKENDS = ("sqlite",)
PRESENCE_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES


async def health(stack: Stack) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.web_base}/healthz") as r:
        return await r.json()


def presence_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "Privileged Gateway Intents" in r.getMessage()
    ]


async def test_switches_off_in_the_portal_mean_no_privileged_intent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # ENABLE_PRESENCE is not set: on by default. The portal's switches are off.
    async with Stack.running(tmp_path, discord_options={"enabled_privileged_intents": 0}) as stack:
        assert stack.app.settings.enable_presence
        assert stack.app.settings.shard_count is None
        assert [r.path for r in stack.discord.requests if "applications/@me" in r.path]
        assert len(stack.discord.identifies) == 1  # read first: no 4014 round trip
        assert stack.discord.identifies[0]["intents"] & PRESENCE_INTENTS == 0
        assert not stack.app.services.discord.presence
        body = await health(stack)
        assert (body["status"], body["presence"]) == ("ok", False)
        reply = await (await stack.discord.send_slash_command("np")).wait_for_reply()
        assert "/link" in (reply.content or "")
    [warning] = presence_warnings(caplog)
    assert warning.startswith("Presence is off: the Presence and Server Members intents are off")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


async def test_refused_intents_connect_again_without_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeDiscord.running(
        guilds=[default_guild()], enabled_privileged_intents=0
    ) as discord:
        # The portal says both switches are on, the gateway refuses them all the same.
        discord.application_flags = FLAG_PRESENCE | FLAG_GUILD_MEMBERS
        async with Stack.running(tmp_path, fake_discord=discord) as stack:
            assert stack.app.services.discord.gateway_connected()
            assert [i["intents"] & PRESENCE_INTENTS for i in discord.identifies] == [
                PRESENCE_INTENTS,
                0,
            ]
            assert not stack.app.services.discord.presence
            assert not stack.app.bot.intents.presences
            assert (await health(stack))["presence"] is False
            reply = await (await stack.discord.send_slash_command("np")).wait_for_reply()
            assert "/link" in (reply.content or "")
    [warning] = presence_warnings(caplog)
    assert "Discord refused the privileged intents (4014)" in warning
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
