"""The first run sets itself up: ``nowplaying-bot`` on a terminal with no configuration, and
``nowplaying-bot setup``, driven through a pseudo-terminal against the fakes."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import aiohttp
import pytest

from bot.cli.dotenv import read_env_file
from bot.cli.setup import env_file_text, write_private_file
from bot.config import decode_key, generate_key
from tests.clirun import CONSOLE_SCRIPT, PROJECT_ROOT, clean_environment
from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import GUILD_ID, default_guild, free_port
from tests.ptyrun import PtySession, pty_session

pytestmark = pytest.mark.skipif(
    not CONSOLE_SCRIPT.exists(), reason="the console script is installed by `pip install`"
)
SKIP_IN_COPY = shutil.ignore_patterns(
    ".git", ".venv", "venv", "data", ".env", "__pycache__", "*.egg-info", ".*_cache", "build"
)


def fresh_clone(tmp_path: Path) -> Path:
    """The repository as a fresh clone has it: no .env, no data, no venv."""
    target = tmp_path / "nowplaying-bot"
    shutil.copytree(PROJECT_ROOT, target, ignore=SKIP_IN_COPY)
    return target


def fake_endpoints(discord: FakeDiscord, spotify: FakeSpotify, web_port: int) -> dict[str, str]:
    """Where Discord and Spotify are (the fakes) and where to listen: the environment of the
    test run, not answers a person types."""
    return clean_environment(
        DISCORD_API_BASE=discord.api_url,
        SPOTIFY_ACCOUNTS_BASE=spotify.accounts_base,
        SPOTIFY_API_BASE=spotify.api_base,
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(web_port),
        DEV_GUILD_ID=str(GUILD_ID),
        TERM="dumb",
    )


async def answer_setup(
    terminal: PtySession, discord: FakeDiscord, spotify: FakeSpotify, redirect: str = ""
) -> None:
    await terminal.expect(r"Discord bot token \(.*\): ")
    terminal.type(discord.token)
    await terminal.expect(r"Spotify client id \(.*\): ")
    terminal.type(spotify.client_id)
    await terminal.expect(r"Spotify client secret \(.*\): ")
    terminal.type(spotify.client_secret)
    await terminal.expect(r"Redirect URI \[http://127\.0\.0\.1:\d+/callback\]: ")
    terminal.type(redirect)


def assert_private_env_file(path: Path, discord: FakeDiscord, spotify: FakeSpotify) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = read_env_file(path)
    assert values["DISCORD_TOKEN"] == discord.token
    assert values["SPOTIFY_CLIENT_ID"] == spotify.client_id
    assert values["SPOTIFY_CLIENT_SECRET"] == spotify.client_secret
    assert len(decode_key(values["TOKEN_ENCRYPTION_KEY"])) == 32


def assert_no_secret_echoed(transcript: str, discord: FakeDiscord, spotify: FakeSpotify) -> None:
    """Nothing typed at the three prompts is shown; the token and the secret never are (check
    names the client id, which is not a secret, in its verdict)."""
    answers = re.split(r"(?:Wrote|Updated) /", transcript)[0]
    for typed in (discord.token, spotify.client_id, spotify.client_secret):
        assert typed not in answers
    for secret in (discord.token, spotify.client_secret):
        assert secret not in transcript


async def test_first_run_on_a_fresh_clone_sets_up_checks_and_reaches_ready(
    tmp_path: Path,
) -> None:
    clone = fresh_clone(tmp_path)
    web_port = free_port()
    redirect = f"http://127.0.0.1:{web_port}/callback"
    async with (
        FakeSpotify.running(redirect_uris=[redirect]) as spotify,
        FakeDiscord.running(guilds=[default_guild()]) as discord,
        aiohttp.ClientSession() as http,
        pty_session(
            [str(CONSOLE_SCRIPT)], env=fake_endpoints(discord, spotify, web_port), cwd=clone
        ) as terminal,
    ):
        await terminal.expect(
            re.escape(f"No configuration yet. No .env file was found at {clone / '.env'}")
        )
        await terminal.expect(r"Set up the bot now\? \[Y/n\] ")
        terminal.type("")
        await answer_setup(terminal, discord, spotify)
        await terminal.expect(re.escape(f"Wrote {clone / '.env'} (mode 0600)"))
        await terminal.expect(r"Privileged Gateway Intents\) and switch on Presence Intent")
        await terminal.expect(r"ok +discord token")
        await terminal.expect(re.escape(redirect))
        await terminal.expect("Everything checked is usable.")
        await terminal.expect(re.escape(f"next time just run `{CONSOLE_SCRIPT}`"))
        await terminal.expect("Connected to Discord as NowPlaying", timeout=30)
        await discord.wait_for_command_sync(str(GUILD_ID))
        async with http.get(f"http://127.0.0.1:{web_port}/healthz") as response:
            assert (await response.json())["status"] == "ok"
        terminal.terminate()
        assert await terminal.wait() == 0
    transcript = terminal.transcript
    assert "Traceback" not in transcript
    assert transcript.count("Register this exact redirect URI") == 1
    assert "as a redirect URI" not in transcript  # said once, by check
    assert_no_secret_echoed(transcript, discord, spotify)
    assert_private_env_file(clone / ".env", discord, spotify)
    assert (clone / "data" / "bot.db").exists()


async def test_setup_never_replaces_an_existing_env_without_asking(tmp_path: Path) -> None:
    existing = tmp_path / ".env"
    existing.write_text("DISCORD_TOKEN=keep-me\n")
    async with (
        FakeSpotify.running() as spotify,
        FakeDiscord.running() as discord,
    ):
        env = fake_endpoints(discord, spotify, free_port())
        async with pty_session([str(CONSOLE_SCRIPT), "setup"], env=env, cwd=tmp_path) as terminal:
            await terminal.expect(re.escape(f"{existing} already exists."))
            await terminal.expect(re.escape(f"Warning: {existing} has no TOKEN_ENCRYPTION_KEY"))
            await terminal.expect(re.escape("Update it? [y/N] "))
            terminal.type("")
            await terminal.expect(re.escape(f"Left {existing} as it is."))
            assert await terminal.wait() == 1
        assert existing.read_text() == "DISCORD_TOKEN=keep-me\n"

        async with pty_session([str(CONSOLE_SCRIPT), "setup"], env=env, cwd=tmp_path) as terminal:
            await terminal.expect(r"Update it\? \[y/N\] ")
            terminal.type("y")
            await answer_setup(terminal, discord, spotify, redirect="http://localhost:8080/cb")
            await terminal.expect("uses 'localhost', which Spotify rejects")
            await terminal.expect(r"Redirect URI \[.*\]: ")
            terminal.type("http://127.0.0.1:9090/callback")
            await terminal.expect("Everything checked is usable.")
            await terminal.expect(re.escape(f"Start the bot with `{CONSOLE_SCRIPT}`."))
            assert await terminal.wait() == 0
    assert_no_secret_echoed(terminal.transcript, discord, spotify)
    assert_private_env_file(existing, discord, spotify)
    values = read_env_file(existing)
    assert values["SPOTIFY_REDIRECT_URI"] == "http://127.0.0.1:9090/callback"
    assert values["WEB_PORT"] == "9090"


def backups_in(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.name.startswith(".env.")]


async def test_running_setup_again_keeps_the_key_and_every_setting_it_does_not_ask(
    tmp_path: Path,
) -> None:
    """Issue 20 item 5: a new key would make every stored link unreadable."""
    key = generate_key()
    previous = (
        "# my bot, set up by hand\n"
        "DISCORD_TOKEN=old.token.value\n"
        f"TOKEN_ENCRYPTION_KEY={key}\n"
        "DATABASE_URL=postgresql://bot:pw@127.0.0.1:1/np\n"
        "ENABLE_PRESENCE=false\n"
        "LOG_LEVEL=DEBUG\n"
    )
    existing = tmp_path / ".env"
    existing.write_text(previous)
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        env = fake_endpoints(discord, spotify, free_port())
        async with pty_session([str(CONSOLE_SCRIPT), "setup"], env=env, cwd=tmp_path) as terminal:
            await terminal.expect("it keeps the encryption key and every other setting")
            await terminal.expect(r"Update it\? \[y/N\] ")
            terminal.type("y")
            await answer_setup(terminal, discord, spotify)
            await terminal.expect(re.escape(f"Updated {existing} (mode 0600): kept its "))
            await terminal.expect("problem(s)")  # check: nothing listens on that PostgreSQL
            assert await terminal.wait() == 1
    assert "Warning" not in terminal.transcript
    values = read_env_file(existing)
    assert values["TOKEN_ENCRYPTION_KEY"] == key
    assert values["DATABASE_URL"] == "postgresql://bot:pw@127.0.0.1:1/np"
    assert values["ENABLE_PRESENCE"] == "false"
    assert values["LOG_LEVEL"] == "DEBUG"
    assert values["DISCORD_TOKEN"] == discord.token
    assert existing.read_text().startswith("# my bot, set up by hand\n")
    [backup] = backups_in(tmp_path)
    assert backup.read_text() == previous
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert str(backup) in terminal.transcript


async def test_setup_refuses_a_value_that_cannot_be_a_token_or_a_client_id(
    tmp_path: Path,
) -> None:
    """Issue 21 item 9: offline, a mistyped value must not look like a network problem."""
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        env = fake_endpoints(discord, spotify, free_port())
        async with pty_session([str(CONSOLE_SCRIPT), "setup"], env=env, cwd=tmp_path) as terminal:
            await terminal.expect(r"Discord bot token \(.*\): ")
            terminal.type("abc")
            await terminal.expect("That is not a bot token: a token has three parts")
            await terminal.expect(r"Discord bot token \(.*\): ")
            terminal.type(discord.token)
            await terminal.expect(r"Spotify client id \(.*\): ")
            terminal.type("xyz")
            await terminal.expect("That is not a Spotify client id: it is 32 characters")
            assert not (tmp_path / ".env").exists()
            await terminal.expect(r"Spotify client id \(.*\): ")
            terminal.press_ctrl_c()
            await terminal.expect("Setup cancelled; nothing was written.")
            assert await terminal.wait() == 130
    assert not (tmp_path / ".env").exists()


async def test_ctrl_c_during_setup_writes_nothing(tmp_path: Path) -> None:
    env = clean_environment(TERM="dumb")
    async with pty_session([str(CONSOLE_SCRIPT)], env=env, cwd=tmp_path) as terminal:
        await terminal.expect(r"Set up the bot now\? \[Y/n\] ")
        terminal.type("y")
        await terminal.expect(r"Discord bot token \(.*\): ")
        terminal.type("typed.token.value")
        await terminal.expect(r"Spotify client id \(.*\): ")
        terminal.press_ctrl_c()
        await terminal.expect("Setup cancelled; nothing was written.")
        assert await terminal.wait() == 130  # as shells report an interrupted command
    assert "Traceback" not in terminal.transcript
    assert "typed.token.value" not in terminal.transcript
    assert not (tmp_path / ".env").exists()


async def test_declining_the_first_run_setup_prints_the_two_lines(tmp_path: Path) -> None:
    async with pty_session(
        [str(CONSOLE_SCRIPT)], env=clean_environment(TERM="dumb"), cwd=tmp_path
    ) as terminal:
        await terminal.expect(r"Set up the bot now\? \[Y/n\] ")
        terminal.type("n")
        await terminal.expect(r"not configured yet \(no file at .*\)\.")
        await terminal.expect(re.escape(f"Run `{CONSOLE_SCRIPT} setup` in a terminal"))
        assert await terminal.wait() == 2
    assert not (tmp_path / ".env").exists()


async def test_ctrl_d_at_the_first_question_prints_the_two_lines(tmp_path: Path) -> None:
    async with pty_session(
        [str(CONSOLE_SCRIPT)], env=clean_environment(TERM="dumb"), cwd=tmp_path
    ) as terminal:
        await terminal.expect(r"Set up the bot now\? \[Y/n\] ")
        terminal.press_ctrl_d()
        await terminal.expect(re.escape(f"Run `{CONSOLE_SCRIPT} setup` in a terminal"))
        assert await terminal.wait() == 2
    assert "Traceback" not in terminal.transcript
    assert not (tmp_path / ".env").exists()


def test_the_env_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        target = tmp_path / "conf" / ".env"
        write_private_file(target, env_file_text({"DISCORD_TOKEN": "t"}, "nowplaying-bot"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert read_env_file(target) == {"DISCORD_TOKEN": "t"}
    assert [p.name for p in target.parent.iterdir()] == [".env"]  # no temporary file left


def quick_start_command_1() -> str:
    """The README's first quick-start command, exactly as written there."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    return commands[0]


@pytest.mark.timeout(300)
async def test_readme_quick_start_command_1_on_a_fresh_clone_reaches_ready(
    tmp_path: Path,
) -> None:
    """Creates a venv and runs `pip install .` in a copy of the repository, like a new user."""
    command = quick_start_command_1()
    assert command.startswith("python3 -m venv .venv && ")
    clone = fresh_clone(tmp_path)
    web_port = free_port()
    async with (
        FakeSpotify.running() as spotify,
        FakeDiscord.running(guilds=[default_guild()]) as discord,
    ):
        env = fake_endpoints(discord, spotify, web_port)
        env.pop("PYTHONPATH")  # the clone's venv has everything it needs
        async with pty_session(["bash", "-c", command], env=env, cwd=clone) as terminal:
            await terminal.expect(r"Set up the bot now\? \[Y/n\] ", timeout=240)
            terminal.type("y")
            await answer_setup(terminal, discord, spotify)
            await terminal.expect("Everything checked is usable.")
            await terminal.expect("Connected to Discord as NowPlaying", timeout=30)
            await discord.wait_for_command_sync(str(GUILD_ID))
            terminal.press_ctrl_c()
            assert await terminal.wait() == 0
    assert "Traceback" not in terminal.transcript
    assert_no_secret_echoed(terminal.transcript, discord, spotify)
    assert_private_env_file(clone / ".env", discord, spotify)
