"""The fake Discord refuses what Discord's own OpenAPI description refuses, in Discord's words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest

from tests.fakes.discord import FakeDiscord, make_channel, make_guild, run_client
from tests.fakes.discord_spec import (
    SPEC_PATH,
    TOLERATED_DEVIATIONS,
    DiscordSpec,
    body_errors,
    discord_spec,
)

CHANNEL_ID = 900_000_000_000_000_011
USER_ID = 800_000_000_000_000_001


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def test_errors_are_nested_by_path_as_discord_nests_them() -> None:
    body = {"content": "hi", "embeds": [{"title": "x" * 257}]}
    assert body_errors("POST", "/channels/1/messages", body) == {
        "embeds": {
            "0": {"title": _errors("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")}
        }
    }


def test_a_callback_message_is_judged_by_the_branch_its_type_names() -> None:
    too_long = {"type": 4, "data": {"embeds": [{"title": "x" * 257}]}}
    errors = body_errors("POST", "/interactions/1/token/callback", too_long)
    assert errors == {
        "data": {
            "embeds": {
                "0": {"title": _errors("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")}
            }
        }
    }
    unknown_type = body_errors("POST", "/interactions/1/token/callback", {"type": 3})
    assert unknown_type is not None
    assert unknown_type["_errors"][0]["code"] == "UNION_TYPE_CHOICES"


def test_every_missing_required_field_is_named() -> None:
    modal = {"type": 9, "data": {"title": "Rename"}}
    errors = body_errors("POST", "/interactions/1/token/callback", modal)
    required = _errors("BASE_TYPE_REQUIRED", "This field is required")
    assert errors == {"data": {"custom_id": required, "components": required}}


def test_a_component_of_an_unknown_type_names_the_allowed_ones() -> None:
    errors = body_errors("POST", "/channels/1/messages", {"components": [{"type": 99}]})
    assert errors is not None
    [error] = errors["components"]["0"]["_errors"]
    assert error["code"] == "UNION_TYPE_CHOICES"
    assert error["message"].startswith('Value of field "type" must be one of (1, ')


@pytest.mark.parametrize("snowflake", [USER_ID, str(USER_ID), 0, "0"])
def test_a_snowflake_is_a_string_of_digits_or_a_number(snowflake: object) -> None:
    assert body_errors("POST", "/users/@me/channels", {"recipient_id": snowflake}) is None
    files = {"content": "chart", "attachments": [{"id": snowflake, "filename": "chart.png"}]}
    assert body_errors("POST", "/channels/1/messages", files) is None


@pytest.mark.parametrize("snowflake", ["12a", "0123", -5, True, 1.5])
def test_anything_else_is_not_a_snowflake(snowflake: object) -> None:
    shown = snowflake if isinstance(snowflake, str) else json.dumps(snowflake)
    assert body_errors("POST", "/users/@me/channels", {"recipient_id": snowflake}) == {
        "recipient_id": _errors("NUMBER_TYPE_COERCE", f'Value "{shown}" is not snowflake.')
    }


def test_each_tolerated_deviation_is_named_explained_and_still_needed() -> None:
    names = [deviation.name for deviation in TOLERATED_DEVIATIONS]
    assert len(names) == len(set(names))
    assert all(len(deviation.reason) > 40 for deviation in TOLERATED_DEVIATIONS)
    # Without the list, the description refuses what discord.py sends: when it stops doing so,
    # the deviation has become dead weight and should go.
    strict = DiscordSpec(json.loads(SPEC_PATH.read_text(encoding="utf-8")), deviations=())
    assert strict.body_errors("POST", "/users/@me/channels", {"recipient_id": USER_ID})


def test_routes_are_matched_to_templates_and_compiled_once() -> None:
    spec = discord_spec()
    assert spec.template("POST", "/users/@me/channels") == "/users/@me/channels"
    assert (
        spec.template("PATCH", "/webhooks/1/token/messages/@original")
        == "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    )
    assert spec.template("GET", "/channels/1/messages") is None  # no body to check
    first = spec.validator("POST", "/channels/1/messages")
    assert first is not None
    assert spec.validator("POST", "/channels/2/messages") is first


def test_a_body_met_again_gets_the_same_verdict_unshared() -> None:
    body = {"embeds": [{"title": "x" * 257}]}
    first = body_errors("POST", "/channels/1/messages", body)
    assert first is not None
    first.clear()  # a caller's copy: the remembered verdict stays whole
    assert body_errors("POST", "/channels/2/messages", body) == {
        "embeds": {
            "0": {"title": _errors("BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")}
        }
    }
    assert body_errors("POST", "/channels/1/messages", {"embeds": [{"title": "x"}]}) is None


async def test_every_route_the_fake_takes_a_body_on_has_a_schema() -> None:
    fake = FakeDiscord()
    unchecked = []
    for route in fake.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method not in ("POST", "PUT", "PATCH") or not path.startswith("/api/v10/"):
            continue
        concrete = "/".join("1" if p.startswith("{") else p for p in path.split("/"))
        if discord_spec().validator(route.method, concrete.removeprefix("/api/v10")) is None:
            unchecked.append(f"{route.method} {path}")
    # Typing is the one body-less POST the fake serves.
    assert unchecked == ["POST /api/v10/channels/{channel_id}/typing"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    guild = make_guild(channels=[make_channel(CHANNEL_ID, "general")])
    async with FakeDiscord.running(guilds=[guild]) as server:
        yield server


async def post(fake: FakeDiscord, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.api_url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_the_fake_answers_invalid_form_body(fake: FakeDiscord) -> None:
    status, body = await post(fake, f"/channels/{CHANNEL_ID}/messages", {"tts": "yes"})
    assert status == 400
    assert body == {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {"tts": _errors("BOOLEAN_TYPE_CONVERT", 'Could not interpret "yes" as boolean.')},
    }
    [request] = fake.requests
    assert request.invalid_form_body
    assert request.error == body
    assert fake.channel_posts == []


async def test_limits_stricter_than_the_description_still_apply(fake: FakeDiscord) -> None:
    # The description allows 4,000 characters of content; Discord allows a bot 2,000.
    status, body = await post(fake, f"/channels/{CHANNEL_ID}/messages", {"content": "x" * 2001})
    assert (status, body["code"]) == (400, 50035)
    assert body["errors"] == {
        "content": _errors("BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    }
    embeds = [{"description": "x" * 4000}, {"description": "x" * 2001}]
    status, body = await post(fake, f"/channels/{CHANNEL_ID}/messages", {"embeds": embeds})
    assert status == 400
    assert body["errors"] == {
        "embeds": _errors("MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    }


async def test_discord_py_sees_the_refusal_as_discord_would_make_it(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.none(), guild_ready_timeout=0.05)
    async with run_client(client, fake):
        channel = await client.fetch_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send(embed=discord.Embed(title="x" * 257))
        assert (refused.value.status, refused.value.code) == (400, 50035)
        assert "embeds.0.title: Must be 256 or fewer in length." in str(refused.value)
        # What discord.py sends of itself passes: a DM opened with a numeric recipient_id.
        user = await client.fetch_user(fake.bot_user_id)
        await user.create_dm()
