"""A full link-and-np flow at DEBUG (discord.py's gateway payloads, aiohttp, ours): no secret
reaches the log, in either format."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.logs import SecretMasker, configure_logging
from tests.fakes.discord import SentInteraction
from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, KEY, Stack


class MaskerForRun(SecretMasker):
    """Filled with the run's settings once they exist (the Stack builds them)."""


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logging.getLogger(name).level
        for name in ("aiohttp.access", "aiosqlite", "discord", "discord.client", "discord.gateway")
    }
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            for log_filter in list(handler.filters):
                if isinstance(log_filter, SecretMasker):
                    handler.removeFilter(log_filter)
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_a_debug_log_of_link_and_np(tmp_path: Path, log_format: str) -> None:
    captured = io.StringIO()
    masker = MaskerForRun()
    configure_logging("DEBUG", log_format, masker, stream=captured)
    interactions: list[SentInteraction] = []
    codes: list[str] = []
    states: list[str] = []

    async with Stack.running(
        tmp_path,
        env={"LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format},
        app_options={"masker": masker},
        spotify_options={"rotate_refresh_tokens": True},
    ) as stack:
        settings = stack.settings
        masker.add_secrets(
            [settings.discord_token, settings.spotify_client_secret, KEY], pinned=True
        )

        # /link -> the authorize hop (read the code Spotify sends back) -> the callback page.
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        interactions.append(sent)
        await sent.wait_for_reply()
        dms = await stack.discord.wait_for(lambda: stack.discord.dms_to(str(ALICE_ID)) or None)
        authorize = next(
            c["url"]
            for row in dms[-1].components
            for c in row.get("components", [row])
            if c.get("url")
        )
        async with stack.http.get(authorize, allow_redirects=False) as hop:
            callback = hop.headers["Location"]
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        codes.append(query["code"])
        states.append(query["state"])
        async with stack.http.get(callback) as page:
            assert page.status == 200
            assert "Linked as" in await page.text()

        # /np with a warm token, then after the token expired (401 -> refresh -> rotation).
        stack.spotify.set_playing("alice", track_payload("t1", "Song", 200_000, 10_000))
        for _ in range(2):
            sent = await stack.np(ALICE_ID)
            interactions.append(sent)
            reply = await sent.wait_for_reply()
            assert reply.embeds[0]["title"] == "Song"
            stack.spotify.expire_access_tokens("alice")
        assert stack.spotify.call_count("token") >= 2  # the code exchange and a refresh

        access_tokens = stack.spotify.access_tokens_of("alice", valid_only=False)
        refresh_tokens = stack.spotify.refresh_tokens_of("alice", valid_only=False)

    output = captured.getvalue()
    assert output.count("\n") > 50, "DEBUG logging did not reach the stream"
    assert "discord.gateway" in output or "discord.http" in output
    secrets = {
        "discord token": [settings.discord_token],
        "client secret": [settings.spotify_client_secret],
        "encryption key": [KEY, KEY.rstrip("=")],
        "authorization code": codes,
        "oauth state": states,
        "access token": access_tokens,
        "refresh token": refresh_tokens,
        "interaction token": [sent.token for sent in interactions],
    }
    assert len(access_tokens) >= 2
    assert len(refresh_tokens) >= 2
    for kind, values in secrets.items():
        for value in values:
            assert value, kind
            assert value not in output, f"a {kind} leaked into the log"
    assert "***" in output  # masking did happen: there was something to hide
