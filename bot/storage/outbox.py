"""The auto-post outbox: posts the polling process queued, each with its nonce, that any
process's sender claims and sends."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bot.storage.base import Store
from bot.storage.engines import Row


@dataclass(frozen=True, slots=True)
class OutboxPost:
    """An auto-post waiting in the outbox (``payload``: the message as JSON) for the member
    ``member_id`` in the server ``guild_id``."""

    nonce: str
    guild_id: int
    channel_id: int
    member_id: int
    payload: str
    created_at: float
    message_id: int | None = None
    failure: str | None = None


_COLUMNS = "nonce, guild_id, channel_id, discord_user_id, payload, created_at"
# A member's rows not sent yet: what going private, unlinking and opting out delete.
UNSENT_OF_MEMBER = "DELETE FROM autopost_outbox WHERE discord_user_id = ? AND message_id IS NULL"


def _post(row: Row) -> OutboxPost:
    return OutboxPost(row[0], int(row[1]), int(row[2]), int(row[3]), row[4], float(row[5]))


class OutboxStore(Store):
    """The auto-post outbox."""

    async def outbox_put(self, post: OutboxPost) -> None:
        """Queue a post; a nonce already queued keeps its row (the same post, once)."""
        await self._db.write(
            f"INSERT INTO autopost_outbox ({_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING",
            (
                post.nonce,
                post.guild_id,
                post.channel_id,
                post.member_id,
                post.payload,
                post.created_at,
            ),
        )

    async def outbox_claim(
        self, now: float, lease: float, *, nonce: str | None = None, limit: int = 10
    ) -> list[OutboxPost]:
        """Claim unsent rows nobody holds (oldest first; one ``nonce`` only when given) until
        ``now + lease``: the claimer sends them. Rows another session locked are skipped."""
        where = "message_id IS NULL AND failure IS NULL AND claimed_until <= ?"
        parameters: list[Any] = [now]
        if nonce is not None:
            where += " AND nonce = ?"
            parameters.append(nonce)
        skip = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgresql" else ""
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM autopost_outbox "  # noqa: S608
                f"WHERE {where} ORDER BY created_at LIMIT ?{skip}",
                (*parameters, limit),
            )
            await tx.executemany(
                "UPDATE autopost_outbox SET claimed_until = ? WHERE nonce = ?",
                [(now + lease, row[0]) for row in rows],
            )
        return [_post(row) for row in rows]

    async def outbox_release(self, nonce: str) -> None:
        """Sending failed in a way that may pass: any sender may try again now."""
        await self._db.write(
            "UPDATE autopost_outbox SET claimed_until = 0 WHERE nonce = ? AND message_id IS NULL",
            (nonce,),
        )

    async def outbox_sent(self, nonce: str, message_id: int) -> None:
        await self._db.write(
            "UPDATE autopost_outbox SET message_id = ? WHERE nonce = ?", (message_id, nonce)
        )

    async def outbox_failed(self, nonce: str, failure: str) -> None:
        await self._db.write(
            "UPDATE autopost_outbox SET failure = ? WHERE nonce = ?", (failure, nonce)
        )

    async def outbox_drop(self, nonce: str) -> None:
        """Forget a row not sent (no longer wanted, or too old): the same post queued again
        later is a new decision with a row of its own."""
        await self._db.write(
            "DELETE FROM autopost_outbox WHERE nonce = ? AND message_id IS NULL", (nonce,)
        )

    async def outbox_get(self, nonce: str) -> OutboxPost | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS}, message_id, failure "  # noqa: S608
            "FROM autopost_outbox WHERE nonce = ?",
            (nonce,),
        )
        if row is None:
            return None
        message_id = None if row[6] is None else int(row[6])
        return replace(_post(row), message_id=message_id, failure=row[7])

    async def outbox_prune(self, before: float) -> int:
        """Drop rows queued before ``before`` (sent, failed, or too old to be worth sending)."""
        return await self._db.write("DELETE FROM autopost_outbox WHERE created_at < ?", (before,))
