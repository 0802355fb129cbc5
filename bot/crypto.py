"""Encryption of members' Spotify refresh tokens at rest, with key rotation.

Format of one stored secret (all integers big-endian, nothing else in the blob)::

    version (1 byte, 0x01) | key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext + tag

The key id is the first 4 bytes of SHA-256 of the key. It only picks the key quickly and lets
``check`` count secrets per key; it is not trusted: when two configured keys share an id, each
is tried. The associated data binds the header and the owner's Discord user id, so a value
copied onto another member's row, or a changed header byte, fails authentication instead of
decrypting.

Nothing here ever puts plaintext or key material into an exception message or a repr.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.errors import DecryptionError

FORMAT_VERSION: Final = 1
KEY_SIZE: Final = 32
KEY_ID_SIZE: Final = 4
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 1 + KEY_ID_SIZE
MIN_BLOB_SIZE: Final = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
_CONTEXT: Final = b"nowplaying-bot/v1/refresh-token/"


def key_id(key: bytes) -> bytes:
    """The short, non-secret identifier stored in front of every ciphertext."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def _associated_data(header: bytes, owner_id: int) -> bytes:
    return header + _CONTEXT + str(owner_id).encode("ascii")


def _check_owner(owner_id: int) -> None:
    if isinstance(owner_id, bool) or not isinstance(owner_id, int) or owner_id < 0:
        raise TypeError("owner_id must be a non-negative int (a Discord user id)")


class _Key:
    __slots__ = ("aead", "index", "key_id")

    def __init__(self, index: int, raw: bytes) -> None:
        self.index = index
        self.key_id = key_id(raw)
        self.aead = AESGCM(raw)

    def __repr__(self) -> str:
        return f"<key #{self.index}>"


class TokenCipher:
    """AES-256-GCM with several keys: the first encrypts, every one decrypts."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        if isinstance(keys, bytes | bytearray):
            raise TypeError("keys must be a sequence of 32-byte keys, not a single key")
        if not keys:
            raise ValueError("at least one encryption key is required")
        prepared: list[_Key] = []
        for position, raw in enumerate(keys, start=1):
            if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_SIZE:
                raise ValueError(f"encryption key #{position} must be exactly {KEY_SIZE} bytes")
            prepared.append(_Key(position - 1, bytes(raw)))
        self._keys: tuple[_Key, ...] = tuple(prepared)

    def __repr__(self) -> str:
        return f"TokenCipher(<{len(self._keys)} key(s)>)"

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def encrypt(self, owner_id: int, plaintext: str) -> bytes:
        """Encrypt ``plaintext`` with the first key, bound to ``owner_id``."""
        _check_owner(owner_id)
        if not isinstance(plaintext, str):
            raise TypeError("plaintext must be a str")
        key = self._keys[0]
        header = bytes([FORMAT_VERSION]) + key.key_id
        nonce = os.urandom(NONCE_SIZE)
        sealed = key.aead.encrypt(
            nonce, plaintext.encode("utf-8"), _associated_data(header, owner_id)
        )
        return header + nonce + sealed

    def decrypt(self, owner_id: int, blob: bytes) -> str:
        """Return the plaintext, or raise DecryptionError; never returns unauthenticated data."""
        plaintext, _ = self._open(owner_id, blob)
        return plaintext

    def key_index(self, owner_id: int, blob: bytes) -> int:
        """Position (0 = current) of the configured key that decrypts ``blob``.

        Authenticates the blob, so unlike ``uses_current_key`` it cannot be fooled by a
        colliding or forged key id. Raises DecryptionError when no key decrypts it.
        """
        _, index = self._open(owner_id, blob)
        return index

    def uses_current_key(self, blob: bytes) -> bool:
        """Whether the header names the first key. A header check only: not authenticated."""
        blob = bytes(blob)
        return (
            len(blob) >= MIN_BLOB_SIZE
            and blob[0] == FORMAT_VERSION
            and blob[1:HEADER_SIZE] == self._keys[0].key_id
        )

    def reencrypt(self, owner_id: int, blob: bytes) -> bytes | None:
        """Return ``blob`` re-encrypted under the first key, or None when it already is.

        Raises DecryptionError when no configured key decrypts it.
        """
        plaintext, index = self._open(owner_id, blob)
        if index == 0:
            return None
        return self.encrypt(owner_id, plaintext)

    def _open(self, owner_id: int, blob: bytes) -> tuple[str, int]:
        _check_owner(owner_id)
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise DecryptionError("stored secret is not bytes")
        data = bytes(blob)
        if len(data) < MIN_BLOB_SIZE:
            raise DecryptionError("stored secret is truncated or not a secret of this bot")
        if data[0] != FORMAT_VERSION:
            raise DecryptionError("stored secret has an unknown format version")
        header = data[:HEADER_SIZE]
        wanted_id = data[1:HEADER_SIZE]
        candidates = [key for key in self._keys if key.key_id == wanted_id]
        if not candidates:
            raise DecryptionError(
                "stored secret was encrypted with a key that is not configured "
                "(was an old TOKEN_ENCRYPTION_KEY removed too early?)"
            )
        nonce = data[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        sealed = data[HEADER_SIZE + NONCE_SIZE :]
        associated = _associated_data(header, owner_id)
        for key in candidates:
            try:
                raw = key.aead.decrypt(nonce, sealed, associated)
            except InvalidTag:
                continue
            try:
                return raw.decode("utf-8"), key.index
            except UnicodeDecodeError:
                # Authenticated but not text: never ours, and never worth showing.
                raise DecryptionError("stored secret is not valid text") from None
        raise DecryptionError(
            "stored secret failed authentication (tampered, copied from another member, "
            "or encrypted with a different key)"
        )
