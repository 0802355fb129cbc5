"""After rotate-keys no old ciphertext survives in the database, its WAL or its shared memory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bot.crypto import TokenCipher
from bot.storage import Storage
from bot.storage.secrets import (
    SKIP_UNREADABLE_FLAG,
    UndecryptableSecrets,
    report_unreadable_secrets,
    rotate_keys,
)
from tests.helpers import linked_account, refresh_token_blobs

OLD_KEY = os.urandom(32)
NEW_KEY = os.urandom(32)


def database_bytes(path: Path) -> dict[str, bytes]:
    found = {}
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            found[candidate.name] = candidate.read_bytes()
    return found


def files_holding(path: Path, blobs: list[bytes]) -> list[str]:
    """Names of the files that still contain any of ``blobs`` (or the ciphertext part of one,
    past the 5-byte header that names the key)."""
    return [
        name
        for name, data in database_bytes(path).items()
        if any(blob in data or blob[5:] in data for blob in blobs)
    ]


async def test_rotation_leaves_no_old_ciphertext_in_any_database_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    old = TokenCipher([OLD_KEY])
    # The running bot's connection stays open: SQLite keeps the -wal and -shm files.
    async with await Storage.open(path) as bot, await Storage.open(path) as tool:
        for user_id in range(1, 41):
            await bot.links.save_link(
                linked_account(user_id, old.encrypt(user_id, f"refresh-{user_id}"))
            )
        superseded = [blob for _, blob in await refresh_token_blobs(bot)]
        # Refreshes (of another length): the tokens they replace sit in free space and in
        # older page images in the WAL.
        for user_id in range(1, 41, 3):
            await bot.links.update_refresh_token(
                user_id, old.encrypt(user_id, f"a-longer-refresh-token-{user_id}")
            )
        old_blobs = superseded + [blob for _, blob in await refresh_token_blobs(bot)]
        assert files_holding(path, old_blobs), "the test must start with old ciphertext on disk"

        assert await rotate_keys(tool, TokenCipher([NEW_KEY, OLD_KEY])) == 40
        assert await bot.links.count_links() == 40  # the bot reads on afterwards

        assert files_holding(path, old_blobs) == []
        assert len(database_bytes(path)["bot.db-wal"]) == 0  # truncated, not just reused
        new_only = TokenCipher([NEW_KEY])
        secrets = dict(await refresh_token_blobs(bot))
        assert new_only.decrypt(1, secrets[1]) == "a-longer-refresh-token-1"
        assert new_only.decrypt(2, secrets[2]) == "refresh-2"


async def test_the_refusal_names_what_the_command_line_offers(tmp_path: Path) -> None:
    async with await Storage.open(tmp_path / "bot.db") as storage:
        lost = TokenCipher([os.urandom(32)])
        await storage.links.save_link(linked_account(3, lost.encrypt(3, "refresh-3")))
        with pytest.raises(UndecryptableSecrets) as caught:
            await rotate_keys(storage, TokenCipher([NEW_KEY, OLD_KEY]))
    message = str(caught.value)
    assert "`nowplaying-bot rotate-keys` again" in message
    assert f"`nowplaying-bot rotate-keys {SKIP_UNREADABLE_FLAG}`" in message
    assert "rotate with those secrets skipped" not in message


@pytest.mark.parametrize(("readable", "unreadable"), [(0, 3), (2, 1), (3, 0)])
async def test_one_error_line_with_the_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, readable: int, unreadable: int
) -> None:
    configured = TokenCipher([NEW_KEY])
    lost = TokenCipher([os.urandom(32)])
    async with await Storage.open(tmp_path / "bot.db") as storage:
        for user_id in range(1, readable + 1):
            await storage.links.save_link(linked_account(user_id, configured.encrypt(user_id, "t")))
        for user_id in range(10, 10 + unreadable):
            await storage.links.save_link(linked_account(user_id, lost.encrypt(user_id, "t")))
        with caplog.at_level(logging.INFO):
            assert await report_unreadable_secrets(storage.sealed, configured) == (
                readable,
                readable + unreadable,
            )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if not unreadable:
        assert errors == []
        return
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert line.startswith(
        f"TOKEN_ENCRYPTION_KEY opens {readable} of {readable + unreadable} stored secret(s); "
        f"{unreadable} cannot be read"
    )
    assert SKIP_UNREADABLE_FLAG in line
    assert "\n" not in line
