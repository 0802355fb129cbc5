"""Embed colours picked from album art, cached by image."""

from __future__ import annotations

import time

from bot.storage.base import Store


class ColoursStore(Store):
    """Embed colours picked from album art, cached by image."""

    # --- embed colours from album art ----------------------------------------------------------

    async def get_image_colour(self, image_key: str) -> int | None:
        row = await self._db.fetchone(
            "SELECT colour FROM image_colours WHERE image_key = ?", (image_key,)
        )
        return int(row[0]) if row is not None else None

    async def save_image_colour(
        self, image_key: str, colour: int, *, now: float | None = None
    ) -> None:
        await self._db.write(
            """
            INSERT INTO image_colours (image_key, colour, picked_at) VALUES (?, ?, ?)
            ON CONFLICT (image_key) DO UPDATE SET
                colour = excluded.colour,
                picked_at = excluded.picked_at
            """,
            (image_key, colour, time.time() if now is None else now),
        )
