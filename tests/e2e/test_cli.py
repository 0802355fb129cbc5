"""``python -m bot`` as a self-hoster runs it: one clear line and an exit status, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.clirun import env_for_fakes as bot_env
from tests.clirun import run_cli
from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import KEY


async def test_bad_settings_exit_2_with_one_line_per_problem(tmp_path: Path) -> None:
    status, output = await run_cli(
        {"WEB_PORT": "eighty", "SPOTIFY_REDIRECT_URI": "http://localhost:8080/callback"}, tmp_path
    )
    assert status == 2
    assert "Traceback" not in output
    lines = [line.strip() for line in output.splitlines()]
    assert any(line.startswith("DISCORD_TOKEN: missing") for line in lines)
    assert any(line.startswith("WEB_PORT: 'eighty'") for line in lines)
    assert any("Spotify rejects" in line for line in lines)


async def test_rejected_discord_token_is_one_clear_line(tmp_path: Path) -> None:
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        env = bot_env(tmp_path, discord, spotify, DISCORD_TOKEN="not-the-token")
        status, output = await run_cli(env, tmp_path)
    assert status == 1
    assert "Traceback" not in output
    assert "DISCORD_TOKEN was rejected by Discord" in output
    assert "not-the-token" not in output


async def test_database_from_a_newer_bot_is_refused_clearly(tmp_path: Path) -> None:
    import sqlite3

    folder = tmp_path / "data"
    folder.mkdir()
    with sqlite3.connect(folder / "bot.db") as connection:
        connection.execute("PRAGMA user_version = 999")
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        status, output = await run_cli(bot_env(tmp_path, discord, spotify), tmp_path)
    assert status == 1
    assert "Traceback" not in output
    assert "written by a newer version of the bot" in output


async def test_gen_key_prints_a_usable_key(tmp_path: Path) -> None:
    status, output = await run_cli({}, tmp_path, "gen-key")
    assert status == 0
    from bot.config import decode_key

    assert len(decode_key(output.strip())) == 32


async def test_rotate_keys_reencrypts_with_the_first_key(tmp_path: Path) -> None:
    import base64

    from bot.crypto import TokenCipher
    from bot.storage import LinkedAccount, Storage

    old = base64.urlsafe_b64decode(KEY)
    new_text = base64.urlsafe_b64encode(b"n" * 32).decode()
    database = tmp_path / "data" / "bot.db"
    async with await Storage.open(database) as storage:
        blob = TokenCipher([old]).encrypt(42, "refresh-token-value")
        await storage.links.save_link(
            LinkedAccount(42, "acct", "user", "User", blob, "scope", 0.0, "active")
        )
    env = {
        "DISCORD_TOKEN": "t",
        "SPOTIFY_CLIENT_ID": "id",
        "SPOTIFY_CLIENT_SECRET": "secret",
        "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
        "TOKEN_ENCRYPTION_KEY": f"{new_text},{KEY}",
        "DATABASE_PATH": str(database),
    }
    status, output = await run_cli(env, tmp_path, "rotate-keys")
    assert status == 0, output
    assert "Re-encrypted 1 stored secret(s)" in output
    async with await Storage.open(database) as storage:
        link = await storage.links.get_link(42)
    assert link is not None
    assert link.refresh_token is not None
    new_only = TokenCipher([base64.urlsafe_b64decode(new_text)])
    assert new_only.decrypt(42, link.refresh_token) == "refresh-token-value"
    status, output = await run_cli(env, tmp_path, "rotate-keys")
    assert "Re-encrypted 0 stored secret(s)" in output


async def test_rotate_keys_and_check_cover_every_encrypted_column(tmp_path: Path) -> None:
    """A linked member's refresh token, a link waiting for a Spotify hold (its sealed grant
    holds a refresh and an access token) and a link state /link may hand out again: check
    counts all three, rotate-keys re-encrypts all three."""
    import base64

    from bot.crypto import TokenCipher
    from bot.storage import LinkedAccount, PendingLink, Storage

    old = TokenCipher([base64.urlsafe_b64decode(KEY)])
    new_key = base64.urlsafe_b64encode(b"n" * 32).decode()
    new_only = TokenCipher([base64.urlsafe_b64decode(new_key)])
    database = tmp_path / "data" / "bot.db"
    async with await Storage.open(database) as storage:
        await storage.links.save_link(
            LinkedAccount(42, "acct", "user", "User", old.encrypt(42, "refresh"), "s", 0.0)
        )
        await storage.link_states.save_pending_link(
            PendingLink(43, b"h" * 32, old.encrypt(43, '{"refresh_token": "r"}'), None, 0.0)
        )
        await storage.link_states.create_link_state(
            "state-of-44", 44, now=1e12, sealed_state=old.encrypt(44, "state-of-44")
        )
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        env = bot_env(tmp_path, discord, spotify, TOKEN_ENCRYPTION_KEY=f"{new_key},{KEY}")
        _, output = await run_cli(env, tmp_path, "check")
        assert "3 stored secret(s): 0 under the first key, 3 under an older key" in output
        status, output = await run_cli(env, tmp_path, "rotate-keys")
        assert status == 0, output
        assert "Re-encrypted 3 stored secret(s)" in output
        _, output = await run_cli(env, tmp_path, "check")
        assert "3 stored secret(s): 3 under the first key" in output
    async with await Storage.open(database) as storage:
        link = await storage.links.get_link(42)
        [pending] = await storage.link_states.list_pending_links()
        state = await storage.link_states.recent_link_state(44, created_since=0.0, now=1e12)
    assert link is not None
    assert link.refresh_token is not None
    assert state is not None
    assert state.sealed_state is not None
    assert new_only.decrypt(42, link.refresh_token) == "refresh"
    assert new_only.decrypt(43, pending.sealed_grant) == '{"refresh_token": "r"}'
    assert new_only.decrypt(44, state.sealed_state) == "state-of-44"


async def test_an_env_file_other_users_can_read_is_warned_about(tmp_path: Path) -> None:
    """The .env holds the Discord token, the Spotify secret and the encryption key: a file
    readable by its group or by everyone is named at start and by check, with the fix."""
    from tests.clirun import PYTHON_M_BOT, bot_process

    env_file = tmp_path / ".env"
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        settings = bot_env(tmp_path, discord, spotify)
        env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
        env_file.chmod(0o644)
        status, output = await run_cli({}, tmp_path, "check")
        assert status == 0, output  # usable: a warning, not a problem
        assert (
            f"warning  env file: {env_file} holds the bot's secrets and is readable by its "
            f"group and others (mode 0644): run `chmod 600 {env_file}`"
        ) in output

        env_file.chmod(0o640)
        async with bot_process(PYTHON_M_BOT, {}, tmp_path) as bot:
            line = await bot.wait_for_line("holds the bot's secrets")
            assert "WARNING" in line
            assert "readable by its group (mode 0640)" in line
            await bot.wait_for_line("Connected to Discord")
            assert await bot.stop() == 0

        env_file.chmod(0o600)
        status, output = await run_cli({}, tmp_path, "check")
        assert "env file" not in output
