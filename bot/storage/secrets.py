"""Maintenance of stored secrets: key rotation (``rotate-keys``), per-key counts (``check``) and
the start-up report of secrets the configured keys cannot open.

A stored secret is every encrypted value the database holds (``bot.storage.sealed``): the
linked members' refresh tokens, the grants of links waiting for a Spotify hold to end (a
refresh and an access token each), and the link states /link may hand out again.

Rotation is all or nothing. Every secret is decrypted first; if any secret decrypts with none
of the configured keys, ``rotate_keys`` raises ``UndecryptableSecrets`` and writes nothing,
because the likely cause is an old key removed from TOKEN_ENCRYPTION_KEY too early, and the fix
(putting it back) should not be made harder by a half-done rotation. Nothing is ever deleted:
``skip_undecryptable=True`` (``rotate-keys --skip-unreadable``) rotates the rest and leaves
those rows exactly as they were.

Rotation leaves no old ciphertext behind in the database files: it writes with
``PRAGMA secure_delete`` on (freed and overwritten content is zeroed) and then checkpoints the
WAL with ``TRUNCATE``, so the old page images in ``-wal`` are gone too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.crypto import TokenCipher
from bot.errors import DecryptionError
from bot.storage import SealedStore, SealedValue, Storage

log = logging.getLogger(__name__)

_SHOWN_IDS = 10
# What the command line offers, named in every hint (one place to change the wording). Hints
# name the command the user runs (``command``: ``nowplaying-bot`` or ``<python> -m bot``).
DEFAULT_COMMAND = "nowplaying-bot"
SKIP_UNREADABLE_FLAG = "--skip-unreadable"


def keys_open_summary(readable: int, total: int) -> str:
    """``TOKEN_ENCRYPTION_KEY opens 3 of 12 stored secrets``: start-up and ``check`` agree."""
    return f"TOKEN_ENCRYPTION_KEY opens {readable} of {total} stored secret(s)"


def unreadable_advice(command: str = DEFAULT_COMMAND) -> str:
    return (
        "put the key that encrypted them back into TOKEN_ENCRYPTION_KEY (after the first "
        f"key), or run `{command} rotate-keys {SKIP_UNREADABLE_FLAG}` to re-encrypt the others "
        "and leave those as they are: their members must run /link again"
    )


class UndecryptableSecrets(DecryptionError):
    """Stored secrets that no configured key decrypts. ``owner_ids`` has each secret's member
    (a member may own several); ``user_ids`` names each member once."""

    def __init__(self, owner_ids: Sequence[int], command: str = DEFAULT_COMMAND) -> None:
        self.user_ids = tuple(dict.fromkeys(owner_ids))
        rotate = f"{command} rotate-keys"
        shown = ", ".join(str(user_id) for user_id in self.user_ids[:_SHOWN_IDS])
        more = len(self.user_ids) - _SHOWN_IDS
        if more > 0:
            shown += f", and {more} more"
        super().__init__(
            f"{len(owner_ids)} stored secret(s) could not be decrypted with any configured "
            f"key (Discord user ids: {shown}); nothing was changed. Either put the key that "
            f"encrypted them back into TOKEN_ENCRYPTION_KEY (after the first key) and run "
            f"`{rotate}` again, or run `{rotate} {SKIP_UNREADABLE_FLAG}` to "
            "re-encrypt the others and leave those as they are (those members must run /link "
            "again)."
        )


async def rotate_keys(
    storage: Storage,
    cipher: TokenCipher,
    *,
    skip_undecryptable: bool = False,
    command: str = DEFAULT_COMMAND,
) -> int:
    """Re-encrypt every stored secret with the first key, in one transaction.

    Returns the number of rows changed (0 when everything already uses the first key, so
    running it twice is harmless). Raises UndecryptableSecrets, before writing anything, when
    a secret decrypts with no configured key, unless ``skip_undecryptable`` is set: then those
    rows are left untouched and logged. A token refreshed by the running bot between the read
    and the write is not overwritten (compare-and-swap on the old blob).
    """
    updates: list[tuple[SealedValue, bytes]] = []
    undecryptable: list[int] = []
    for value in await storage.sealed.list_sealed():
        try:
            new_blob = cipher.reencrypt(value.owner_id, value.blob)
        except DecryptionError:
            undecryptable.append(value.owner_id)
            continue
        if new_blob is not None:
            updates.append((value, new_blob))
    if undecryptable:
        if not skip_undecryptable:
            raise UndecryptableSecrets(undecryptable, command)
        log.warning(
            "key rotation skipped %d secret(s) that no configured key decrypts", len(undecryptable)
        )
    async with storage.secure_delete():
        changed = await storage.sealed.replace_sealed(updates)
    if changed < len(updates):
        log.info(
            "%d secret(s) changed during rotation and were left as written by the bot",
            len(updates) - changed,
        )
    if not await storage.checkpoint_truncate():
        log.warning(
            "another connection kept the WAL busy: old ciphertext may stay in the -wal file "
            "until its next checkpoint; run `%s rotate-keys` again when the bot is idle",
            command,
        )
    return changed


async def count_secrets_by_key(
    sealed: SealedStore, cipher: TokenCipher, schema_version: int | None = None
) -> tuple[int, int, int]:
    """(under the first key, under an older key, undecryptable) over every stored secret (of a
    database at ``schema_version``, when ``check`` reads one not yet migrated).

    Each secret is authenticated, not just looked up by its key id.
    """
    current = older = undecryptable = 0
    for value in await sealed.list_sealed(schema_version):
        try:
            index = cipher.key_index(value.owner_id, value.blob)
        except DecryptionError:
            undecryptable += 1
            continue
        if index == 0:
            current += 1
        else:
            older += 1
    return current, older, undecryptable


async def report_unreadable_secrets(
    sealed: SealedStore, cipher: TokenCipher, command: str = DEFAULT_COMMAND
) -> tuple[int, int]:
    """At start-up: one ERROR line when the configured keys open none or only some of the
    stored secrets. Returns (readable, total)."""
    current, older, unreadable = await count_secrets_by_key(sealed, cipher)
    total = current + older + unreadable
    if unreadable:
        log.error(
            "%s; %d cannot be read, so those members' /np and auto-posts fail until you %s",
            keys_open_summary(total - unreadable, total),
            unreadable,
            unreadable_advice(command),
        )
    return total - unreadable, total


__all__ = [
    "SKIP_UNREADABLE_FLAG",
    "UndecryptableSecrets",
    "count_secrets_by_key",
    "keys_open_summary",
    "report_unreadable_secrets",
    "rotate_keys",
    "unreadable_advice",
]
