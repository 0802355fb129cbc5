"""Members' visibility choice."""

from __future__ import annotations

import time
from typing import Final, Literal

from bot.storage.base import Store
from bot.storage.outbox import UNSENT_OF_MEMBER

Visibility = Literal["server", "private"]


VISIBILITIES: Final[tuple[Visibility, ...]] = ("server", "private")


class PrivacyStore(Store):
    """Members' visibility choice."""

    # --- privacy -------------------------------------------------------------------------------

    async def get_visibility_choice(self, user_id: int) -> Visibility | None:
        """The visibility the member chose with /privacy, or None when they never chose."""
        row = await self._db.fetchone(
            "SELECT visibility FROM member_privacy WHERE discord_user_id = ?", (user_id,)
        )
        if row is None:
            return None
        value = str(row[0])
        return "private" if value == "private" else "server"

    async def get_visibility(self, user_id: int) -> Visibility:
        """``"server"`` (the default: members of a shared server see you) or ``"private"``."""
        return await self.get_visibility_choice(user_id) or "server"

    async def set_visibility(
        self, user_id: int, value: Visibility, *, now: float | None = None
    ) -> None:
        """Store the member's choice. Choosing ``private`` also forgets the auto-poster's record
        of what they last played (``last_posts``) and drops their posts not sent yet (the
        outbox), in the same transaction."""
        if value not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {VISIBILITIES}")
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO member_privacy (discord_user_id, visibility, updated_at)
                VALUES (?, ?, ?)
                ON CONFLICT (discord_user_id) DO UPDATE SET
                    visibility = excluded.visibility,
                    updated_at = excluded.updated_at
                """,
                (user_id, value, time.time() if now is None else now),
            )
            if value == "private":
                await tx.execute("DELETE FROM last_posts WHERE discord_user_id = ?", (user_id,))
                await tx.execute(UNSENT_OF_MEMBER, (user_id,))

    async def list_explicit_server_user_ids(self) -> set[int]:
        """Members who chose ``server`` with /privacy (rather than never choosing)."""
        rows = await self._db.fetchall(
            "SELECT discord_user_id FROM member_privacy WHERE visibility = 'server'"
        )
        return {int(row[0]) for row in rows}

    async def list_private_user_ids(self) -> set[int]:
        """Every member whose visibility is ``private``."""
        rows = await self._db.fetchall(
            "SELECT discord_user_id FROM member_privacy WHERE visibility = 'private'"
        )
        return {int(row[0]) for row in rows}
