"""Keys that open only some of the stored secrets: one ERROR line at start, and rotate-keys
offers exactly what its message says."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from bot.crypto import TokenCipher
from bot.storage import Storage
from tests.clirun import run_cli
from tests.harness import KEY, Stack
from tests.helpers import linked_account, refresh_token_blobs

# It seeds and reads the SQLite file itself.
DATABASE_BACKENDS = ("sqlite",)

LOST_KEY = os.urandom(32)


async def seed(database: Path, readable: int, unreadable: int) -> None:
    configured = TokenCipher([base64.urlsafe_b64decode(KEY)])
    lost = TokenCipher([LOST_KEY])
    async with await Storage.open(database) as storage:
        for user_id in range(1, readable + 1):
            await storage.links.save_link(linked_account(user_id, configured.encrypt(user_id, "r")))
        for user_id in range(100, 100 + unreadable):
            await storage.links.save_link(linked_account(user_id, lost.encrypt(user_id, "r")))


async def test_start_up_logs_one_error_with_the_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(tmp_path / "data" / "bot.db", readable=2, unreadable=10)
    with caplog.at_level(logging.INFO):
        async with Stack.running(tmp_path) as stack:
            assert stack.app.bot.is_ready()  # the bot still starts: the others work
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert (
        errors[0]
        .getMessage()
        .startswith("TOKEN_ENCRYPTION_KEY opens 2 of 12 stored secret(s); 10 cannot be read")
    )
    assert errors[0].exc_info is None


async def test_rotate_keys_does_what_its_refusal_offers(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.db"
    await seed(database, readable=3, unreadable=1)
    new_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {
        "DISCORD_TOKEN": "t",
        "SPOTIFY_CLIENT_ID": "id",
        "SPOTIFY_CLIENT_SECRET": "secret",
        "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
        "TOKEN_ENCRYPTION_KEY": f"{new_key},{KEY}",
        "DATABASE_PATH": str(database),
    }
    status, output = await run_cli(env, tmp_path, "rotate-keys")
    assert status == 1
    assert "nothing was changed" in output
    assert "Traceback" not in output
    offered = "rotate-keys --skip-unreadable"
    assert offered in output

    status, output = await run_cli(env, tmp_path, *offered.split())
    assert status == 0, output
    assert "Re-encrypted 3 stored secret(s) with the first key." in output
    assert "Left 1 stored secret(s) that no configured key opens" in output
    new_only = TokenCipher([base64.urlsafe_b64decode(new_key)])
    async with await Storage.open(database) as storage:
        secrets = dict(await refresh_token_blobs(storage))
    assert {user_id for user_id in secrets if user_id < 100} == {1, 2, 3}
    for user_id in (1, 2, 3):
        assert new_only.decrypt(user_id, secrets[user_id]) == "r"
    assert TokenCipher([LOST_KEY]).decrypt(100, secrets[100]) == "r"  # left as it was

    status, output = await run_cli(env, tmp_path, "check", "--skip-unreadable")
    assert status == 2
    assert "--skip-unreadable only goes with rotate-keys" in output
