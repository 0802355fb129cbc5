"""The auto-post's last message per member and channel."""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.base import Store
from bot.storage.engines import Row


@dataclass(frozen=True, slots=True)
class LastPost:
    discord_user_id: int
    channel_id: int
    item_key: str
    message_id: int
    posted_at: float


def _last_post_from_row(row: Row) -> LastPost:
    return LastPost(
        discord_user_id=int(row[0]),
        channel_id=int(row[1]),
        item_key=str(row[2]),
        message_id=int(row[3]),
        posted_at=float(row[4]),
    )


class LastPostsStore(Store):
    """The auto-post's last message per member and channel."""

    # --- auto-post last posts ------------------------------------------------------------------

    async def get_last_post(self, user_id: int, channel_id: int) -> LastPost | None:
        row = await self._db.fetchone(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts WHERE discord_user_id = ? AND channel_id = ?",
            (user_id, channel_id),
        )
        return _last_post_from_row(row) if row is not None else None

    async def load_last_posts_of(self, user_id: int) -> list[LastPost]:
        """One member's last post in every channel (what any process posted for them)."""
        rows = await self._db.fetchall(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts WHERE discord_user_id = ? ORDER BY channel_id",
            (user_id,),
        )
        return [_last_post_from_row(row) for row in rows]

    async def record_post(self, post: LastPost) -> None:
        await self._db.write(
            """
            INSERT INTO last_posts (discord_user_id, channel_id, item_key, message_id, posted_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (discord_user_id, channel_id) DO UPDATE SET
                item_key = excluded.item_key,
                message_id = excluded.message_id,
                posted_at = excluded.posted_at
            """,
            (post.discord_user_id, post.channel_id, post.item_key, post.message_id, post.posted_at),
        )

    async def load_last_posts(self) -> list[LastPost]:
        rows = await self._db.fetchall(
            "SELECT discord_user_id, channel_id, item_key, message_id, posted_at "
            "FROM last_posts ORDER BY channel_id, discord_user_id"
        )
        return [_last_post_from_row(row) for row in rows]
