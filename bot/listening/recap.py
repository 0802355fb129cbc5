"""The /recap picture: a server's top albums of the period as a 3 x 3 chart."""

from __future__ import annotations

import logging

from bot.listening.embeds import RECAP_PERIOD_WORDS
from bot.pictures.charts import ChartRenderer, TopAlbum
from bot.pictures.images import ImageFetcher
from bot.storage import Recap

log = logging.getLogger(__name__)

COVER_WAIT_SECONDS = 2.0  # the picture waits this long for covers not in the cache


class RecapPictures:
    def __init__(self, images: ImageFetcher, charts: ChartRenderer) -> None:
        self._images = images
        self._charts = charts

    async def picture(self, recap: Recap, *, guild_name: str, period: str) -> bytes | None:
        """The server's top albums, or None (no albums, or the picture failed: the answer
        goes out without it). Covers come from the image cache or Spotify's CDN."""
        if not recap.albums:
            return None
        covers = await self._images.fetch_many(
            [album.image_url for album in recap.albums], wait=COVER_WAIT_SECONDS
        )
        albums = [
            TopAlbum(cover=cover, album=album.name, artist=album.artist, plays=album.plays)
            for cover, album in zip(covers, recap.albums, strict=True)
        ]
        heading = f"{guild_name} · {RECAP_PERIOD_WORDS.get(period, period)}"
        try:
            return await self._charts.top_albums(albums, size=3, heading=heading)
        except Exception:
            log.exception("/recap: the picture could not be drawn; answering without it")
            return None


__all__ = ["RecapPictures"]
