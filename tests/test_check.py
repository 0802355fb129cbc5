"""``python -m bot check`` against the fake Discord and the fake Spotify on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.cli.check import check_async, invite_url
from bot.crypto import TokenCipher
from bot.storage import SpotifyQuota, Storage
from bot.storage import migrations as db
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_payloads import INTENT_MESSAGE_CONTENT
from tests.fakes.spotify import FakeSpotify
from tests.harness import KEY, free_port
from tests.helpers import linked_account
from tests.peek import database_at_version

REPO_ROOT = Path(__file__).resolve().parent.parent
OLD_KEY = base64.urlsafe_b64encode(b"old-key-for-check-tests-32-bytes"[:32]).decode()
LOST_KEY = base64.urlsafe_b64encode(b"a-key-nobody-configured-anymore!"[:32]).decode()
REDIRECT_URI = "http://127.0.0.1:8080/callback"
LOOPBACK_LINE = (
    f"ok       redirect uri: {REDIRECT_URI} is loopback: Spotify accepts it without https, but "
    "only a browser on this machine can open it. Members on other devices land on a page that "
    'does not load and finish with the "Paste the link" button in the bot\'s DM'
)


@dataclass
class Fakes:
    discord: FakeDiscord
    spotify: FakeSpotify
    tmp_path: Path

    @property
    def db_path(self) -> Path:
        return self.tmp_path / "data" / "bot.db"

    def env(self, **changes: str) -> dict[str, str]:
        values = {
            "DISCORD_TOKEN": self.discord.token,
            "SPOTIFY_CLIENT_ID": self.spotify.client_id,
            "SPOTIFY_CLIENT_SECRET": self.spotify.client_secret,
            "SPOTIFY_REDIRECT_URI": REDIRECT_URI,
            "TOKEN_ENCRYPTION_KEY": KEY,
            "DATABASE_PATH": str(self.db_path),
            "DISCORD_API_BASE": self.discord.api_url,
            "SPOTIFY_ACCOUNTS_BASE": self.spotify.accounts_base,
            "SPOTIFY_API_BASE": self.spotify.api_base,
        }
        values.update(changes)
        return values


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    async with (
        FakeDiscord.running(application_id="900000000000000042") as discord,
        FakeSpotify.running(client_secret="spotify-secret-for-check") as spotify,
    ):
        yield Fakes(discord, spotify, tmp_path)


async def run(env: dict[str, str], **options: Any) -> tuple[int, list[str], str]:
    out = io.StringIO()
    status = await asyncio.wait_for(check_async(env, out=out, **options), 30)
    text = out.getvalue()
    return status, text.splitlines(), text


def verdict_line(lines: list[str], item: str) -> str:
    found = [line for line in lines if line[9:].startswith(f"{item}: ")]
    assert len(found) == 1, lines
    return found[0]


def assert_no_secrets(text: str, env: dict[str, str]) -> None:
    for name in ("DISCORD_TOKEN", "SPOTIFY_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY"):
        for value in env[name].split(","):
            assert value not in text, name


def raw_key(text: str) -> bytes:
    return base64.urlsafe_b64decode(text)


async def seed(path: Path, key: str, user_ids: range) -> None:
    cipher = TokenCipher([raw_key(key)])
    async with await Storage.open(path) as storage:
        for user_id in user_ids:
            await storage.links.save_link(
                linked_account(user_id, cipher.encrypt(user_id, f"RT-{user_id}"))
            )


# --- success -----------------------------------------------------------------------------------


async def test_everything_usable(fakes: Fakes) -> None:
    env = fakes.env()
    status, lines, text = await run(env)
    bot_id = fakes.discord.bot_user_id
    data = fakes.tmp_path / "data"
    assert lines == [
        "ok       settings: every value is valid",
        f"ok       database: folder {data} does not exist yet; the bot creates it and bot.db at "
        f"start-up ({fakes.tmp_path} is writable), with schema version {db.LATEST_SCHEMA_VERSION}",
        "ok       encryption keys: 1 key(s) valid; no stored secrets yet",
        f"ok       discord token: accepted; the bot is NowPlaying (id {bot_id})",
        "ok       discord application: id 900000000000000042 (NowPlaying)",
        "ok       privileged intents: ENABLE_PRESENCE=true needs the Presence and Server "
        "Members intents switched on in the Developer Portal (your application -> Bot -> "
        "Privileged Gateway Intents): both are on",
        f"ok       spotify credentials: client id {fakes.spotify.client_id} and its secret "
        f"accepted by {fakes.spotify.accounts_base}",
        "ok       spotify budget: nothing counted yet; a budget of 600 (SPOTIFY_DAILY_BUDGET) "
        "in any 24 hours",
        LOOPBACK_LINE,
        "",
        "Register this exact redirect URI in the Spotify dashboard (app settings):",
        f"  {REDIRECT_URI}",
        "Invite the bot with this URL (scopes bot and applications.commands; permissions "
        "View Channels, Send Messages, Embed Links):",
        "  https://discord.com/oauth2/authorize?client_id=900000000000000042"
        "&scope=bot+applications.commands&permissions=19456",
        "",
        "Everything checked is usable.",
    ]
    assert status == 0
    assert_no_secrets(text, env)
    assert not data.exists(), "check must not create the database folder"
    # It asked Discord exactly what it needed, with the bot token.
    asked = [(r.method, r.path) for r in fakes.discord.requests]
    assert asked == [("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")]
    assert fakes.spotify.call_count("token.client_credentials") == 1


def test_invite_permissions_are_only_what_the_bot_uses() -> None:
    import discord

    permissions = discord.Permissions(19456)
    assert {name for name, value in permissions if value} == {
        "read_messages",  # discord.py's name for View Channel
        "send_messages",
        "embed_links",
    }
    assert invite_url(1).endswith("permissions=19456")


async def test_current_database_is_read_not_changed(fakes: Fakes) -> None:
    await seed(fakes.db_path, KEY, range(1, 4))
    before = fakes.db_path.read_bytes()
    status, lines, _ = await run(fakes.env())
    assert status == 0
    assert verdict_line(lines, "database") == (
        f"ok       database: {fakes.db_path} is writable, schema version "
        f"{db.LATEST_SCHEMA_VERSION} (current)"
    )
    assert verdict_line(lines, "encryption keys") == (
        "ok       encryption keys: 1 key(s) valid; 3 stored secret(s): 3 under the first key"
    )
    assert fakes.db_path.read_bytes() == before
    assert sorted(p.name for p in fakes.db_path.parent.iterdir()) == ["bot.db"]


async def test_older_schema_is_usable_and_left_alone(fakes: Fakes) -> None:
    await database_at_version(fakes.db_path, 1)
    status, lines, _ = await run(fakes.env())
    assert status == 0
    assert verdict_line(lines, "database") == (
        f"ok       database: {fakes.db_path} is writable, schema version 1; the bot migrates "
        f"it to {db.LATEST_SCHEMA_VERSION} at start-up (back the file up first)"
    )
    with contextlib.closing(sqlite3.connect(fakes.db_path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1


async def test_newer_schema_is_a_problem(fakes: Fakes) -> None:
    await database_at_version(fakes.db_path, db.LATEST_SCHEMA_VERSION)
    with contextlib.closing(sqlite3.connect(fakes.db_path)) as connection:
        connection.execute("PRAGMA user_version = 99")
    status, lines, _ = await run(fakes.env())
    assert status == 1
    assert verdict_line(lines, "database") == (
        f"problem  database: {fakes.db_path} is at schema version 99, newer than this bot "
        f"supports ({db.LATEST_SCHEMA_VERSION}): upgrade the bot or restore a matching backup"
    )


async def test_not_a_database(fakes: Fakes) -> None:
    fakes.db_path.parent.mkdir()
    fakes.db_path.write_bytes(b"this is not SQLite " * 100)
    status, lines, _ = await run(fakes.env())
    assert status == 1
    assert verdict_line(lines, "database") == (
        f"problem  database: {fakes.db_path} cannot be read as a SQLite database "
        "(file is not a database)"
    )


# --- settings ----------------------------------------------------------------------------------


async def test_bad_settings_are_problems_and_the_rest_is_skipped(fakes: Fakes) -> None:
    env = fakes.env(SPOTIFY_REDIRECT_URI="http://localhost:8080/callback", WEB_PORT="http")
    del env["SPOTIFY_CLIENT_SECRET"]
    status, lines, text = await run(env)
    assert status == 1
    assert lines == [
        "problem  settings: SPOTIFY_CLIENT_SECRET: missing; set it to the client secret of your "
        "Spotify app",
        "problem  settings: SPOTIFY_REDIRECT_URI: 'http://localhost:8080/callback' uses "
        "'localhost', which Spotify rejects; use the loopback literal "
        "http://127.0.0.1:8080/callback instead",
        "problem  settings: WEB_PORT: 'http' is not a port number (1-65535)",
        "skipped  database: not checked until the settings are fixed",
        "skipped  encryption keys: not checked until the settings are fixed",
        "skipped  discord token: not checked until the settings are fixed",
        "skipped  discord application: not checked until the settings are fixed",
        "skipped  privileged intents: not checked until the settings are fixed",
        "skipped  spotify credentials: not checked until the settings are fixed",
        "skipped  spotify budget: not checked until the settings are fixed",
        "skipped  redirect uri: not checked until the settings are fixed",
        "",
        "3 problem(s) in the settings (see .env.example): fix them, then run "
        "`nowplaying-bot check` again.",
    ]
    assert fakes.discord.requests == []
    assert fakes.spotify.call_count("token.client_credentials") == 0
    assert fakes.discord.token not in text


async def test_https_redirect_uri(fakes: Fakes) -> None:
    uri = "https://np.example.org/spotify/callback"
    status, lines, _ = await run(fakes.env(SPOTIFY_REDIRECT_URI=uri))
    assert status == 0
    assert verdict_line(lines, "redirect uri") == (
        f"ok       redirect uri: {uri} is public https: your reverse proxy must pass "
        "/spotify/callback to this bot's web server (127.0.0.1:8080)"
    )
    assert f"  {uri}" in lines


async def test_loopback_redirect_on_another_port_says_so(fakes: Fakes) -> None:
    status, lines, _ = await run(fakes.env(WEB_PORT="9000"))
    assert status == 0
    assert verdict_line(lines, "redirect uri") == (
        f"{LOOPBACK_LINE} (its port 8080 is not WEB_PORT 9000: the page only loads if something "
        "forwards that port)"
    )


# --- database folder ---------------------------------------------------------------------------


async def test_database_folder_under_a_file(fakes: Fakes) -> None:
    blocker = fakes.tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    status, lines, _ = await run(fakes.env())
    assert status == 1
    assert verdict_line(lines, "database") == (
        f"problem  database: {blocker} is a file, so {blocker} cannot be a folder"
    )
    assert verdict_line(lines, "encryption keys") == (
        "ok       encryption keys: 1 key(s) valid; no stored secrets yet"
    )
    assert lines[-1].startswith("1 problem(s): the bot is not usable")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root, which may write into any folder: a read-only one cannot be made",
)
async def test_database_folder_not_writable(fakes: Fakes) -> None:
    folder = fakes.tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        status, lines, _ = await run(fakes.env())
    finally:
        folder.chmod(0o700)
    assert status == 1
    assert verdict_line(lines, "database") == (
        f"problem  database: folder {folder} is not writable (Permission denied)"
    )


# --- keys --------------------------------------------------------------------------------------


async def test_secrets_under_an_older_key_are_counted(fakes: Fakes) -> None:
    await seed(fakes.db_path, OLD_KEY, range(1, 3))
    await seed(fakes.db_path, KEY, range(3, 4))
    env = fakes.env(TOKEN_ENCRYPTION_KEY=f"{KEY},{OLD_KEY}")
    status, lines, text = await run(env)
    assert status == 0
    assert verdict_line(lines, "encryption keys") == (
        "ok       encryption keys: 2 key(s) valid; 3 stored secret(s): 1 under the first key, "
        "2 under an older key; run `nowplaying-bot rotate-keys`, then remove the older key(s)"
    )
    assert_no_secrets(text, env)


async def test_secrets_no_key_can_read(fakes: Fakes) -> None:
    await seed(fakes.db_path, LOST_KEY, range(1, 3))
    await seed(fakes.db_path, KEY, range(3, 4))
    status, lines, text = await run(fakes.env())
    assert status == 1
    assert verdict_line(lines, "encryption keys") == (
        "problem  encryption keys: TOKEN_ENCRYPTION_KEY opens 1 of 3 stored secret(s): 1 under "
        "the first key, 2 that no configured key can read. To fix it, put the key that "
        "encrypted them back into TOKEN_ENCRYPTION_KEY (after the first key), or run "
        "`nowplaying-bot rotate-keys --skip-unreadable` to re-encrypt the others and leave "
        "those as they are: their members must run /link again"
    )
    assert status == 1  # a failed item
    assert LOST_KEY not in text


async def test_rotated_keys_say_the_old_one_can_go(fakes: Fakes) -> None:
    await seed(fakes.db_path, KEY, range(1, 3))
    status, lines, _ = await run(fakes.env(TOKEN_ENCRYPTION_KEY=f"{KEY},{OLD_KEY}"))
    assert status == 0
    assert verdict_line(lines, "encryption keys") == (
        "ok       encryption keys: 2 key(s) valid; 2 stored secret(s): 2 under the first key; "
        "the other key(s) can be removed"
    )


# --- Discord -----------------------------------------------------------------------------------


async def test_discord_token_rejected(fakes: Fakes) -> None:
    env = fakes.env(DISCORD_TOKEN="MTIz.not-the-right.token")
    status, lines, text = await run(env)
    assert status == 1
    assert verdict_line(lines, "discord token") == (
        "problem  discord token: rejected by Discord (HTTP 401): copy the token again from the "
        "Developer Portal (your application -> Bot -> Reset Token) into DISCORD_TOKEN"
    )
    assert verdict_line(lines, "discord application") == (
        "skipped  discord application: needs an accepted token"
    )
    assert "Invite URL: unknown until Discord accepts the token (it needs the app id)." in lines
    assert "MTIz.not-the-right.token" not in text
    assert lines[-1].startswith("1 problem(s)")


async def test_discord_unreachable(fakes: Fakes) -> None:
    port = free_port()  # nothing listens there
    status, lines, _ = await run(fakes.env(DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10"))
    assert status == 1
    assert verdict_line(lines, "discord token") == (
        f"problem  discord token: cannot reach Discord at http://127.0.0.1:{port}/api/v10: "
        f"cannot connect to 127.0.0.1:{port} (Connection refused)"
    )
    assert not any("Traceback" in line for line in lines)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers: a timeout, quickly."""
    connections: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_discord_timeout(fakes: Fakes) -> None:
    async with silent_server() as port:
        env = fakes.env(DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10")
        status, lines, _ = await run(env, timeout=0.3)
    assert status == 1
    assert verdict_line(lines, "discord token") == (
        f"problem  discord token: cannot reach Discord at http://127.0.0.1:{port}/api/v10: "
        "no answer within 0.3 s"
    )


async def test_presence_needs_privileged_intents(fakes: Fakes) -> None:
    status, lines, _ = await run(fakes.env(ENABLE_PRESENCE="true"))
    assert status == 0
    assert verdict_line(lines, "privileged intents") == (
        "ok       privileged intents: ENABLE_PRESENCE=true needs the Presence and Server Members "
        "intents switched on in the Developer Portal (your application -> Bot -> Privileged "
        "Gateway Intents): both are on"
    )


async def test_presence_with_intents_off(tmp_path: Path) -> None:
    async with (
        # The Developer Portal switches for presence and members are off.
        FakeDiscord.running(enabled_privileged_intents=INTENT_MESSAGE_CONTENT) as discord,
        FakeSpotify.running() as spotify,
    ):
        env = Fakes(discord, spotify, tmp_path).env()  # ENABLE_PRESENCE is on by default
        status, lines, _ = await run(env)
    # Usable without statuses: what the bot's WARNING at start says, not a problem.
    assert status == 0
    assert verdict_line(lines, "privileged intents") == (
        "warning  privileged intents: Presence is off: the Presence and Server Members intents "
        "are off: switch them on in the Developer Portal -> your app -> Bot -> Privileged "
        "Gateway Intents. Until then the bot sees no member's Spotify status, so /np and "
        "auto-posts spend Spotify's small daily quota of Web API calls instead (restart the bot "
        "after switching them on), or set ENABLE_PRESENCE=false to silence this"
    )
    assert lines[-1] == "Everything checked is usable. 1 warning(s) above: worth a look."


async def test_presence_switched_off_in_the_settings(fakes: Fakes) -> None:
    status, lines, _ = await run(fakes.env(ENABLE_PRESENCE="false"))
    assert status == 0
    assert verdict_line(lines, "privileged intents") == (
        "skipped  privileged intents: none needed (ENABLE_PRESENCE is off)"
    )


async def test_presence_when_discord_cannot_say(fakes: Fakes) -> None:
    env = fakes.env(ENABLE_PRESENCE="true", DISCORD_TOKEN="wrong")
    status, lines, _ = await run(env)
    assert status == 1
    assert verdict_line(lines, "privileged intents").startswith(
        "skipped  privileged intents: ENABLE_PRESENCE=true needs the Presence and Server Members "
        "intents switched on"
    )


# --- the daily Spotify budget ------------------------------------------------------------------


async def seed_budget(fakes: Fakes, quota: SpotifyQuota | None = None) -> float:
    """Calls of the last 24 hours (and one a day older) as the bot counted them; ``now``."""
    now = time.time()
    minute = int(now // 60)
    async with await Storage.open(fakes.db_path) as storage:
        await storage.spotify_budget.add_calls(
            fakes.spotify.client_id,
            [
                (minute - 5, "api", "poll", 280),
                (minute - 3, "api", "command", 25),
                (minute - 2, "api", "recently_played", 5),
                (minute - 1, "api", "linking", 2),
                (minute - 1, "accounts", "command", 11),
                (minute - 25 * 60, "api", "poll", 400),  # left the window
            ],
            counting_since=now - 100_000,
        )
        if quota is not None:
            await storage.spotify_budget.save_refusal(fakes.spotify.client_id, quota)
    return now


async def test_the_daily_spotify_budget_by_purpose(fakes: Fakes) -> None:
    await seed_budget(fakes)
    status, lines, _ = await run(fakes.env())
    assert status == 0
    assert verdict_line(lines, "spotify budget") == (
        "ok       spotify budget: 312 Web API calls in the last 24 hours (polls 280, commands "
        "25, recently-played 5, linking 2) of a budget of 600 (SPOTIFY_DAILY_BUDGET); 11 token "
        "requests, counted apart; polling may spend 198 more"
    )


async def test_a_quota_hold_and_the_learned_budget_are_a_warning(fakes: Fakes) -> None:
    refused_at = time.time() - 60
    held_until = refused_at + 3 * 3600 + 60
    # Learned 400 from a refusal a minute ago; the 312 calls are under it: Retry-After decides.
    await seed_budget(fakes, SpotifyQuota(refused_at - 100_000, held_until, 400, refused_at))
    status, lines, _ = await run(fakes.env())
    assert status == 0  # usable: statuses answer meanwhile

    def utc(moment: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))

    assert verdict_line(lines, "spotify budget") == (
        f"warning  spotify budget: Spotify answered QUOTA_EXCEEDED: no Web API call until "
        f"{utc(held_until)} (in 3 h 0 min); commands answer from members' Discord statuses "
        "meanwhile. 312 Web API calls in the last 24 hours (polls 280, commands 25, "
        "recently-played 5, linking 2) of an effective budget of 400, learned from Spotify's "
        f"refusal at {utc(refused_at)} (SPOTIFY_DAILY_BUDGET=600; it rises 10 % a day from "
        f"{utc(refused_at + 7 * 86400)} without another refusal); 11 token requests, counted "
        "apart"
    )
    assert lines[-1] == "Everything checked is usable. 1 warning(s) above: worth a look."


async def test_reset_spotify_budget_forgets_the_count_the_hold_and_what_was_learned(
    fakes: Fakes,
) -> None:
    refused_at = time.time() - 60
    await seed_budget(fakes, SpotifyQuota(refused_at - 100_000, refused_at + 3600, 280, refused_at))
    workdir = fakes.tmp_path / "workdir"
    workdir.mkdir()
    code, stdout, stderr = await run_cli(fakes.env(), workdir, "--reset-spotify-budget")
    assert code == 0, stdout + stderr
    lines = stdout.splitlines()
    assert lines[0] == (
        f"Forgot the daily Spotify budget of client id {fakes.spotify.client_id} (7 row(s)): "
        "the count, the hold and what was learned. A bot that is running keeps what it holds "
        "in memory until it restarts."
    )
    assert verdict_line(lines, "spotify budget") == (
        "ok       spotify budget: 0 Web API calls in the last 24 hours (polls 0, commands 0, "
        "recently-played 0, linking 0) of a budget of 600 (SPOTIFY_DAILY_BUDGET); 0 token "
        "requests, counted apart; polling may spend 510 more"
    )
    code, _, stderr = await run_cli(fakes.env(), workdir, "--reset-spotify-budget", "--to", "x")
    assert code == 2
    assert "--to only goes with migrate-db" in stderr


# --- Spotify -----------------------------------------------------------------------------------


async def test_spotify_wrong_secret(fakes: Fakes) -> None:
    env = fakes.env(SPOTIFY_CLIENT_SECRET="not-the-secret")
    status, lines, text = await run(env)
    assert status == 1
    assert verdict_line(lines, "spotify credentials") == (
        f"problem  spotify credentials: Spotify rejected client id {fakes.spotify.client_id} "
        "or its secret "
        "(invalid_client: Invalid client secret); copy both again from the Spotify developer "
        "dashboard (developer.spotify.com/dashboard -> your app -> Settings) into "
        "SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET"
    )
    assert "not-the-secret" not in text
    # A refused credential is never retried.
    assert fakes.spotify.call_count("token.client_credentials") == 1


async def test_spotify_unreachable(fakes: Fakes) -> None:
    port = free_port()
    status, lines, _ = await run(fakes.env(SPOTIFY_ACCOUNTS_BASE=f"http://127.0.0.1:{port}"))
    assert status == 1
    assert verdict_line(lines, "spotify credentials") == (
        f"problem  spotify credentials: cannot reach the Spotify accounts service at "
        f"http://127.0.0.1:{port}: cannot connect to 127.0.0.1:{port} (Connection refused)"
    )


async def test_spotify_down(fakes: Fakes) -> None:
    fakes.spotify.fail_next("token.client_credentials", 503)
    status, lines, _ = await run(fakes.env())
    assert status == 1
    assert verdict_line(lines, "spotify credentials") == (
        "problem  spotify credentials: cannot reach the Spotify accounts service at "
        f"{fakes.spotify.accounts_base}: HTTP 503"
    )


# --- the real command line ---------------------------------------------------------------------


async def run_cli(env: dict[str, str], cwd: Path, *flags: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "check",
        *flags,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_cli_check_against_the_fakes(fakes: Fakes) -> None:
    workdir = fakes.tmp_path / "workdir"
    workdir.mkdir()
    assert not (workdir / ".env").exists()
    env = fakes.env()
    code, stdout, stderr = await run_cli(env, workdir)
    assert code == 0, stdout + stderr
    assert stderr == ""
    lines = stdout.splitlines()
    assert lines[0] == "ok       settings: every value is valid"
    assert [line[:9] for line in lines[:9]] == ["ok       "] * 9
    assert lines[-1] == "Everything checked is usable."
    assert f"  {invite_url('900000000000000042')}" in lines
    assert_no_secrets(stdout, env)


async def test_cli_bad_settings_exit_1_not_2(tmp_path: Path) -> None:
    code, stdout, stderr = await run_cli({"DISCORD_TOKEN": "x"}, tmp_path)
    assert code == 1  # `python -m bot` itself exits 2 for the same settings
    assert stdout.splitlines()[0] == (
        "problem  settings: SPOTIFY_CLIENT_ID: missing; set it to the client id of your Spotify app"
    )
    assert "Traceback" not in stdout + stderr


# --- PostgreSQL (DATABASE_URL) -------------------------------------------------------------------


@pytest.mark.postgresql
async def test_postgresql_connection_is_reported_and_left_alone(
    fakes: Fakes, postgres_database: str
) -> None:
    status, lines, text = await run(fakes.env(DATABASE_URL=postgres_database))
    assert status == 0, text
    assert verdict_line(lines, "database") == (
        f"ok       database: PostgreSQL at {postgres_database} accepts the connection, schema "
        f"version 0; the bot migrates it to {db.LATEST_SCHEMA_VERSION} at start-up"
    )
    async with await Storage.open(postgres_database) as storage:
        assert storage.applied_migrations  # check created nothing: the bot migrated it now
        cipher = TokenCipher([raw_key(KEY)])
        await storage.links.save_link(linked_account(5, cipher.encrypt(5, "RT-5")))
    status, lines, _ = await run(fakes.env(DATABASE_URL=postgres_database))
    assert verdict_line(lines, "database").endswith(
        f"schema version {db.LATEST_SCHEMA_VERSION} (current)"
    )
    assert verdict_line(lines, "encryption keys") == (
        "ok       encryption keys: 1 key(s) valid; 1 stored secret(s): 1 under the first key"
    )


@pytest.mark.postgresql
async def test_postgresql_refusal_and_absence_are_problems(
    fakes: Fakes, postgres_database: str
) -> None:
    wrong = postgres_database.replace("://nowplaying@", "://nobody:pw-x@", 1)
    status, lines, text = await run(fakes.env(DATABASE_URL=wrong))
    assert status == 1
    line = verdict_line(lines, "database")
    assert line.startswith(
        "problem  database: DATABASE_URL: PostgreSQL at postgresql://nobody:***@"
    )
    assert "pw-x" not in text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    status, lines, _ = await run(
        fakes.env(DATABASE_URL=f"postgresql://bot@127.0.0.1:{closed_port}/bot")
    )
    assert status == 1
    assert verdict_line(lines, "database") == (
        f"problem  database: PostgreSQL at postgresql://bot@127.0.0.1:{closed_port}/bot cannot "
        "be reached (connection refused); the bot keeps trying at start-up"
    )
