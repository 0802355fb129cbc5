from __future__ import annotations

import os

import pytest

from bot.crypto import MIN_BLOB_SIZE, TokenCipher, key_id
from bot.errors import DecryptionError

OWNER = 123456789012345678
OTHER = 223456789012345678
TOKEN = "AQD-refresh-token-éè-✓"


def new_key() -> bytes:
    return os.urandom(32)


def test_round_trip() -> None:
    cipher = TokenCipher([new_key()])
    blob = cipher.encrypt(OWNER, TOKEN)
    assert isinstance(blob, bytes)
    assert TOKEN.encode() not in blob
    assert cipher.decrypt(OWNER, blob) == TOKEN
    assert cipher.uses_current_key(blob)
    assert cipher.reencrypt(OWNER, blob) is None


def test_empty_plaintext_round_trips() -> None:
    cipher = TokenCipher([new_key()])
    assert cipher.decrypt(OWNER, cipher.encrypt(OWNER, "")) == ""


def test_nonce_is_random() -> None:
    cipher = TokenCipher([new_key()])
    assert cipher.encrypt(OWNER, TOKEN) != cipher.encrypt(OWNER, TOKEN)


def test_format_header() -> None:
    key = new_key()
    blob = TokenCipher([key]).encrypt(OWNER, TOKEN)
    assert blob[0] == 1
    assert blob[1:5] == key_id(key)
    # version + key id + nonce + ciphertext + tag
    assert len(blob) == 1 + 4 + 12 + len(TOKEN.encode()) + 16


def test_wrong_owner_fails() -> None:
    cipher = TokenCipher([new_key()])
    blob = cipher.encrypt(OWNER, TOKEN)
    with pytest.raises(DecryptionError):
        cipher.decrypt(OTHER, blob)


def test_tampering_any_byte_fails() -> None:
    cipher = TokenCipher([new_key()])
    blob = cipher.encrypt(OWNER, TOKEN)
    for position in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= flip
            with pytest.raises(DecryptionError):
                cipher.decrypt(OWNER, bytes(tampered))


def test_truncated_and_extended_fail() -> None:
    cipher = TokenCipher([new_key()])
    blob = cipher.encrypt(OWNER, TOKEN)
    for length in range(len(blob)):
        with pytest.raises(DecryptionError):
            cipher.decrypt(OWNER, blob[:length])
    with pytest.raises(DecryptionError):
        cipher.decrypt(OWNER, blob + b"\x00")


def test_garbage_fails() -> None:
    cipher = TokenCipher([new_key()])
    for garbage in (b"", b"\x01", os.urandom(MIN_BLOB_SIZE), os.urandom(200), b"plain token"):
        with pytest.raises(DecryptionError):
            cipher.decrypt(OWNER, garbage)
        assert not cipher.uses_current_key(garbage)


def test_unknown_key_fails() -> None:
    blob = TokenCipher([new_key()]).encrypt(OWNER, TOKEN)
    stranger = TokenCipher([new_key(), new_key()])
    assert not stranger.uses_current_key(blob)
    with pytest.raises(DecryptionError, match="not configured"):
        stranger.decrypt(OWNER, blob)
    with pytest.raises(DecryptionError):
        stranger.reencrypt(OWNER, blob)


def test_rotation_across_two_keys() -> None:
    old_key, new_key_ = new_key(), new_key()
    old_blob = TokenCipher([old_key]).encrypt(OWNER, TOKEN)

    rotating = TokenCipher([new_key_, old_key])
    assert rotating.decrypt(OWNER, old_blob) == TOKEN
    assert not rotating.uses_current_key(old_blob)
    assert rotating.key_index(OWNER, old_blob) == 1

    moved = rotating.reencrypt(OWNER, old_blob)
    assert moved is not None
    assert rotating.uses_current_key(moved)
    assert rotating.key_index(OWNER, moved) == 0
    assert rotating.reencrypt(OWNER, moved) is None

    only_new = TokenCipher([new_key_])
    assert only_new.decrypt(OWNER, moved) == TOKEN
    with pytest.raises(DecryptionError):
        only_new.decrypt(OWNER, old_blob)
    # The moved blob is still bound to its owner.
    with pytest.raises(DecryptionError):
        only_new.decrypt(OTHER, moved)


def test_colliding_key_ids_try_every_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.crypto as crypto

    monkeypatch.setattr(crypto, "key_id", lambda key: b"\x00\x00\x00\x00")
    first, second = new_key(), new_key()
    blob = TokenCipher([second]).encrypt(OWNER, TOKEN)
    both = TokenCipher([first, second])
    assert both.uses_current_key(blob)  # the header alone cannot tell them apart
    assert both.decrypt(OWNER, blob) == TOKEN
    assert both.key_index(OWNER, blob) == 1
    assert both.reencrypt(OWNER, blob) is not None


def test_invalid_keys_rejected_without_echoing_them() -> None:
    short = b"k" * 31
    with pytest.raises(ValueError, match="#1") as excinfo:
        TokenCipher([short])
    assert repr(short) not in str(excinfo.value)
    with pytest.raises(ValueError, match="at least one"):
        TokenCipher([])
    with pytest.raises(TypeError):
        TokenCipher(new_key())


def test_no_secrets_in_repr_or_errors() -> None:
    key = new_key()
    cipher = TokenCipher([key])
    text = repr(cipher)
    assert key.hex() not in text
    assert repr(key) not in text
    assert not hasattr(cipher, "__dict__")
    blob = cipher.encrypt(OWNER, TOKEN)
    with pytest.raises(DecryptionError) as excinfo:
        cipher.decrypt(OTHER, blob)
    message = str(excinfo.value)
    assert TOKEN not in message
    assert key.hex() not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None


def test_owner_id_must_be_an_int() -> None:
    cipher = TokenCipher([new_key()])
    with pytest.raises(TypeError):
        cipher.encrypt("123", TOKEN)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cipher.encrypt(True, TOKEN)
