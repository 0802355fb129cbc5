from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.crypto import TokenCipher
from bot.errors import DecryptionError
from bot.storage import SealedValue, Storage
from bot.storage.secrets import UndecryptableSecrets, count_secrets_by_key, rotate_keys
from tests.helpers import linked_account, refresh_token_blobs

OLD_KEY = os.urandom(32)
NEW_KEY = os.urandom(32)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with await Storage.open(tmp_path / "bot.db") as opened:
        yield opened


async def seed(storage: Storage, cipher: TokenCipher, user_ids: range) -> None:
    for user_id in user_ids:
        await storage.links.save_link(
            linked_account(user_id, cipher.encrypt(user_id, f"refresh-{user_id}"))
        )


async def plaintexts(storage: Storage, cipher: TokenCipher) -> dict[int, str]:
    return {
        user_id: cipher.decrypt(user_id, blob)
        for user_id, blob in await refresh_token_blobs(storage)
    }


async def test_rotate_keys_counts_and_is_idempotent(storage: Storage) -> None:
    await seed(storage, TokenCipher([OLD_KEY]), range(1, 4))
    rotating = TokenCipher([NEW_KEY, OLD_KEY])
    await seed(storage, rotating, range(4, 6))  # already under the new key
    await storage.links.save_link(linked_account(6, None))  # broken link: nothing to rotate
    assert await count_secrets_by_key(storage.sealed, rotating) == (2, 3, 0)

    assert await rotate_keys(storage, rotating) == 3
    assert await count_secrets_by_key(storage.sealed, rotating) == (5, 0, 0)
    assert await rotate_keys(storage, rotating) == 0

    only_new = TokenCipher([NEW_KEY])
    assert await plaintexts(storage, only_new) == {u: f"refresh-{u}" for u in range(1, 6)}
    assert await count_secrets_by_key(storage.sealed, only_new) == (5, 0, 0)


async def test_rotation_with_nothing_stored(storage: Storage) -> None:
    cipher = TokenCipher([NEW_KEY])
    assert await rotate_keys(storage, cipher) == 0
    assert await count_secrets_by_key(storage.sealed, cipher) == (0, 0, 0)


async def test_undecryptable_secret_stops_rotation_and_changes_nothing(storage: Storage) -> None:
    await seed(storage, TokenCipher([OLD_KEY]), range(1, 3))
    lost_key_blob = TokenCipher([os.urandom(32)]).encrypt(3, "refresh-3")
    await storage.links.save_link(linked_account(3, lost_key_blob))
    rotating = TokenCipher([NEW_KEY, OLD_KEY])
    before = await refresh_token_blobs(storage)
    assert await count_secrets_by_key(storage.sealed, rotating) == (0, 2, 1)

    with pytest.raises(UndecryptableSecrets) as excinfo:
        await rotate_keys(storage, rotating)
    assert isinstance(excinfo.value, DecryptionError)
    assert excinfo.value.user_ids == (3,)
    assert "1 stored secret(s)" in str(excinfo.value)
    assert "3" in str(excinfo.value)
    assert await refresh_token_blobs(storage) == before


async def test_skip_undecryptable_keeps_them_untouched(storage: Storage) -> None:
    await seed(storage, TokenCipher([OLD_KEY]), range(1, 3))
    # A secret copied onto another member's row does not authenticate either.
    copied = (await refresh_token_blobs(storage))[0][1]
    await storage.links.save_link(linked_account(3, copied))
    rotating = TokenCipher([NEW_KEY, OLD_KEY])

    assert await rotate_keys(storage, rotating, skip_undecryptable=True) == 2
    secrets = dict(await refresh_token_blobs(storage))
    assert secrets[3] == copied
    assert await count_secrets_by_key(storage.sealed, rotating) == (2, 0, 1)


async def test_rotation_does_not_overwrite_a_token_refreshed_meanwhile(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = TokenCipher([OLD_KEY])
    await seed(storage, old, range(1, 3))
    rotating = TokenCipher([NEW_KEY, OLD_KEY])
    real_list = storage.sealed.list_sealed

    async def list_then_bot_refreshes() -> list[SealedValue]:
        secrets = await real_list()
        # The running bot stores a rotated refresh token right after rotation read the rows.
        await storage.links.update_refresh_token(1, rotating.encrypt(1, "refreshed-by-bot"))
        return secrets

    monkeypatch.setattr(storage.sealed, "list_sealed", list_then_bot_refreshes)
    assert await rotate_keys(storage, rotating) == 1
    monkeypatch.undo()
    assert await plaintexts(storage, TokenCipher([NEW_KEY])) == {
        1: "refreshed-by-bot",
        2: "refresh-2",
    }
