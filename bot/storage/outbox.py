"""The auto-post outbox: posts the polling process queued, each with its nonce, that any
process's sender claims and sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.storage.base import Store


@dataclass(frozen=True, slots=True)
class OutboxPost:
    """An auto-post waiting in the outbox (``payload``: the message as JSON)."""

    nonce: str
    channel_id: int
    payload: str
    created_at: float
    message_id: int | None = None
    failure: str | None = None


class OutboxStore(Store):
    """The auto-post outbox."""

    async def outbox_put(self, post: OutboxPost) -> None:
        """Queue a post; a nonce already queued keeps its row (the same post, once)."""
        await self._db.write(
            "INSERT INTO autopost_outbox (nonce, channel_id, payload, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING",
            (post.nonce, post.channel_id, post.payload, post.created_at),
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
                "SELECT nonce, channel_id, payload, created_at FROM autopost_outbox "  # noqa: S608
                f"WHERE {where} ORDER BY created_at LIMIT ?{skip}",
                (*parameters, limit),
            )
            await tx.executemany(
                "UPDATE autopost_outbox SET claimed_until = ? WHERE nonce = ?",
                [(now + lease, row[0]) for row in rows],
            )
        return [OutboxPost(row[0], int(row[1]), row[2], float(row[3])) for row in rows]

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

    async def outbox_get(self, nonce: str) -> OutboxPost | None:
        row = await self._db.fetchone(
            "SELECT nonce, channel_id, payload, created_at, message_id, failure "
            "FROM autopost_outbox WHERE nonce = ?",
            (nonce,),
        )
        if row is None:
            return None
        message_id = None if row[4] is None else int(row[4])
        return OutboxPost(row[0], int(row[1]), row[2], float(row[3]), message_id, row[5])

    async def outbox_prune(self, before: float) -> int:
        """Drop rows queued before ``before`` (sent, failed, or too old to be worth sending)."""
        return await self._db.write("DELETE FROM autopost_outbox WHERE created_at < ?", (before,))
