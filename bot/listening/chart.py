"""/chart: a member's top tracks as a picture of album covers.

Three parts, the first two pure:

* :func:`album_entries`: one entry per album (deduplicated by album id, in the order each album
  first appears among the top tracks), at most size x size, each with the 300 px cover's URL and
  the album's best-placed track and its artists.
* :func:`render_chart_answer`: the embed that shows the attached picture
  (``attachment://chart.png``), lists the entries in full text (the picture's font lacks some
  scripts; the text does not) and credits Spotify.
* :class:`TopChart`: asks Spotify (through ``SpotifyListening.top``: the scope, 429 and link
  rules of /top), fetches the covers concurrently through the app's ``ImageFetcher`` (bounded by
  ``COVER_WAIT_SECONDS`` together; a late or broken cover is a neutral tile) and renders with the
  app's ``ChartRenderer`` off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import discord

from bot.listening.embeds import PERIOD_WORDS, fit_lines
from bot.listening.spotify import SpotifyListening
from bot.messages.message import BotMessage
from bot.messages.text import (
    EMBED_DESCRIPTION_LIMIT,
    EMBED_TITLE_LIMIT,
    SPOTIFY_GREEN,
    fit_markdown,
    markdown_link,
    truncate,
)
from bot.pictures.charts import CHART_SIZES, ChartRenderer, track_tiles
from bot.pictures.images import ImageFetcher
from bot.spotify.models import Image, Track

CHART_PICTURE_NAME = "chart.png"
COVER_PIXELS = 300  # Spotify lists 640, 300 and 64 px album images; tiles are 200-300 px
COVER_WAIT_SECONDS = 8.0  # all covers together; then the missing ones are neutral tiles
MAX_TOP_ITEMS = 50  # Spotify's page limit for /me/top
NAME_LIMIT = 60
CHART_FOOTER = "Covers, names and rankings from Spotify"


@dataclass(frozen=True, slots=True)
class ChartEntry:
    """One tile: an album, shown by its best-placed track among the member's top tracks."""

    track: str
    artists: tuple[str, ...]
    album: str | None
    cover_url: str | None
    track_url: str | None

    @property
    def artist_line(self) -> str:
        return ", ".join(self.artists)


def cover_url(images: Sequence[Image], pixels: int = COVER_PIXELS) -> str | None:
    """The image of ``pixels`` width; else the smallest wider one; else the largest there is."""
    if not images:
        return None
    exact = [image for image in images if image.width == pixels]
    if exact:
        return exact[0].url
    wider = [image for image in images if image.width is not None and image.width > pixels]
    if wider:
        return min(wider, key=lambda image: image.width or 0).url
    return max(images, key=lambda image: image.width or 0).url


def tracks_to_ask(size: int) -> int:
    """How many top tracks to ask Spotify for a size x size chart: size², at most 50."""
    if size not in CHART_SIZES:
        raise ValueError(f"chart size must be one of {CHART_SIZES}, not {size}")
    return min(size * size, MAX_TOP_ITEMS)


def album_entries(tracks: Sequence[Track], size: int) -> list[ChartEntry]:
    """One entry per album, in the order each album first appears, at most size x size.

    Tracks without an album id (local files, odd answers) count as their own album, keyed by
    the album's URL or else the track itself, so nothing is merged by mistake.
    """
    places = size * size
    seen: set[str] = set()
    entries: list[ChartEntry] = []
    for track in tracks:
        key = (
            f"album:{track.album_id}"
            if track.album_id
            else f"url:{track.album_url}"
            if track.album_url
            else f"track:{track.key}"
        )
        if key in seen:
            continue
        seen.add(key)
        entries.append(
            ChartEntry(
                track=track.name,
                artists=tuple(artist.name for artist in track.artists),
                album=track.album_name,
                cover_url=cover_url(track.images),
                track_url=track.url,
            )
        )
        if len(entries) == places:
            break
    return entries


def chart_heading(member_name: str, period: str) -> str:
    return f"{member_name} · top tracks · {PERIOD_WORDS.get(period, period)}"


def render_chart_answer(
    entries: Sequence[ChartEntry], *, member_name: str, period: str, size: int, png: bytes
) -> BotMessage:
    """The public answer: an embed showing the attached chart, the entries as text."""
    name = fit_markdown(member_name, NAME_LIMIT)
    when = PERIOD_WORDS.get(period, period)
    lines = []
    for number, entry in enumerate(entries, start=1):
        link = markdown_link(entry.track, entry.track_url, text_limit=NAME_LIMIT)
        artists = fit_markdown(entry.artist_line, NAME_LIMIT) if entry.artists else ""
        lines.append(f"{number}. {link}" + (f" · {artists}" if artists else ""))
    embed = discord.Embed(
        title=truncate(f"Chart of {name} · {when}", EMBED_TITLE_LIMIT),
        description=fit_lines(lines, EMBED_DESCRIPTION_LIMIT),
        colour=SPOTIFY_GREEN,
    )
    albums = "1 album" if len(entries) == 1 else f"{len(entries)} albums"
    embed.set_footer(text=f"{size}x{size} · {albums} · {CHART_FOOTER}")
    embed.set_image(url=f"attachment://{CHART_PICTURE_NAME}")
    return BotMessage(embed=embed, picture=(CHART_PICTURE_NAME, png))


def render_empty_chart(*, member_name: str, period: str, is_self: bool) -> BotMessage:
    when = PERIOD_WORDS.get(period, period)
    who = "you" if is_self else fit_markdown(member_name, NAME_LIMIT)
    return BotMessage(
        content=f"Spotify has no top tracks of {who} for {when} yet, so there is no chart to "
        "draw: it needs a little more listening."
    )


class TopChart:
    """Builds a member's /chart: Spotify's top tracks, their covers, the picture."""

    def __init__(
        self, spotify: SpotifyListening, images: ImageFetcher, charts: ChartRenderer
    ) -> None:
        self._spotify = spotify
        self._images = images
        self._charts = charts

    async def entries(
        self, member_id: int, period: str, size: int, *, is_self: bool, asker: int | None = None
    ) -> list[ChartEntry]:
        """The chart's albums. Raises BotError (not linked, old link, 429, 5xx) with the
        words for the member."""
        top = await self._spotify.top(
            member_id,
            "tracks",
            period,
            is_self=is_self,
            limit=tracks_to_ask(size),
            command="/chart",
            asker=asker,
        )
        return album_entries(top.tracks, size)

    async def covers(self, entries: Sequence[ChartEntry]) -> list[bytes | None]:
        """Each entry's cover (None: missing, broken or late), fetched concurrently."""
        urls = [entry.cover_url for entry in entries]
        return await self._images.fetch_many(urls, wait=COVER_WAIT_SECONDS)

    def turn(self, asker: int) -> AbstractContextManager[None]:
        """The asking member's place in the render queue, taken before anything is asked of
        Spotify or the CDN: RenderBusy, with the words for them, when they have a chart on
        its way already or the queue is full."""
        return self._charts.turn(asker)

    async def picture(self, entries: Sequence[ChartEntry], size: int, *, heading: str) -> bytes:
        covers = await self.covers(entries)
        tiles = track_tiles(
            [
                (cover, entry.track, entry.artist_line)
                for cover, entry in zip(covers, entries, strict=True)
            ]
        )
        return await self._charts.chart(tiles, size, heading=heading)


__all__ = [
    "CHART_PICTURE_NAME",
    "ChartEntry",
    "TopChart",
    "album_entries",
    "chart_heading",
    "cover_url",
    "render_chart_answer",
    "render_empty_chart",
    "tracks_to_ask",
]
