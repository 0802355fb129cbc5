"""The /recap picture: a server's top albums of the period as a 3 x 3 chart.

A recap is shared for a minute by everyone who asks in the server (``bot.listening.server``),
and so is its picture: drawn once per recap, in the server's turn of the render queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from bot.listening.embeds import RECAP_PERIOD_WORDS
from bot.pictures.charts import ChartRenderer, RenderBusy, TopAlbum
from bot.pictures.images import ImageFetcher
from bot.storage import Recap

log = logging.getLogger(__name__)

COVER_WAIT_SECONDS = 2.0  # the picture waits this long for covers not in the cache
KEPT_PICTURES: Final = 64  # the latest recaps' pictures (one per server and period)


class RecapPictures:
    def __init__(self, images: ImageFetcher, charts: ChartRenderer) -> None:
        self._images = images
        self._charts = charts
        # (server, period) -> the recap drawn and its picture (being drawn, or drawn)
        self._drawn: dict[tuple[int, str], tuple[Recap, asyncio.Future[bytes | None]]] = {}

    async def picture(
        self, recap: Recap, *, guild_id: int, guild_name: str, period: str
    ) -> bytes | None:
        """The server's top albums, or None (no albums, the render queue full, or the picture
        failed: the answer goes out without it). Covers come from the image cache or
        Spotify's CDN. The same recap asked again gets the same picture, drawn once."""
        if not recap.albums:
            return None
        key = (guild_id, period)
        drawn = self._drawn.get(key)
        if drawn is None or drawn[0] is not recap:
            task = asyncio.ensure_future(self._draw(recap, guild_id, guild_name, period))
            self._drawn.pop(key, None)
            self._drawn[key] = drawn = (recap, task)
            while len(self._drawn) > KEPT_PICTURES:
                del self._drawn[next(iter(self._drawn))]
        png = await asyncio.shield(drawn[1])
        if png is None and self._drawn.get(key) is drawn:
            del self._drawn[key]  # no picture this time: the next one asking tries again
        return png

    async def _draw(
        self, recap: Recap, guild_id: int, guild_name: str, period: str
    ) -> bytes | None:
        try:
            with self._charts.turn(guild_id):
                covers = await self._images.fetch_many(
                    [album.image_url for album in recap.albums], wait=COVER_WAIT_SECONDS
                )
                albums = [
                    TopAlbum(cover=cover, album=album.name, artist=album.artist, plays=album.plays)
                    for cover, album in zip(covers, recap.albums, strict=True)
                ]
                heading = f"{guild_name} · {RECAP_PERIOD_WORDS.get(period, period)}"
                return await self._charts.top_albums(albums, size=3, heading=heading)
        except RenderBusy:
            log.info("/recap: the render queue is full; answering without the picture")
            return None
        except Exception:
            log.exception("/recap: the picture could not be drawn; answering without it")
            return None


__all__ = ["RecapPictures"]
