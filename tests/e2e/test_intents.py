"""Presence mode when Discord refuses the privileged intents: the bot stays up without them.

The fake Discord's "Developer Portal" switches decide; the bot under test is an
``AutoShardedBot`` with SHARD_COUNT unset, as by default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.harness import Stack

DATABASE_BACKENDS = ("sqlite",)


async def test_refused_intents_connect_again_without_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with Stack.running(
        tmp_path,
        env={"ENABLE_PRESENCE": "true"},
        discord_options={"enabled_privileged_intents": 0},
    ) as stack:
        assert stack.app.services.discord.gateway_connected()
        assert not stack.app.services.discord.presence
        assert not stack.app.bot.intents.presences
        reply = await (await stack.discord.send_slash_command("np")).wait_for_reply()
        assert "/link" in (reply.content or "")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len([r for r in warnings if "Privileged Gateway Intents" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
