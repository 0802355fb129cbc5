"""Chart pictures: a size x size grid of album covers with names under them, as PNG bytes.

Pure: inputs in (cover bytes or None, names), PNG bytes out; no I/O but reading the shipped
font, no event loop. A render takes 0.1-0.2 s of CPU, so the bot runs it off the event loop
through :class:`ChartRenderer`: one worker thread of its own, renders queued one at a time.
(Ten renders on ten threads at once would each ask for the GIL between their C sections and
stall the event loop for tens of milliseconds; one worker keeps every stall to a few.)

Each cover is drawn whole (scaled to fit its square, never cropped; transparency over the tile
colour) and its text sits in a band *under* it, never over the art. A missing or undecodable cover,
and every tile beyond the items given, is a neutral tile. The picture carries Spotify's attribution
in its footer. Text uses Noto Sans (a Latin, Greek and Cyrillic subset shipped in
``bot/pictures/fonts`` under the SIL Open Font License); characters of other scripts (CJK, Arabic,
Hebrew, Indic scripts, Thai, emoji, ...) fall back to one replacement mark (U+FFFD) per run of such
characters, so a name in such a script shows what the font can draw plus that mark, while the
message text around the picture shows it in full.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import unicodedata
import zlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot.aio.turns import Refusal, Turns
from bot.errors import BotError
from bot.messages.text import without_bidi_controls
from bot.pictures.decode import open_cover

FONT_DIR = Path(__file__).resolve().parent / "fonts"
REGULAR_FONT = FONT_DIR / "NotoSans-Regular.ttf"
BOLD_FONT = FONT_DIR / "NotoSans-Bold.ttf"
CHART_SIZES = (3, 4, 5)
TILE_PIXELS = {3: 300, 4: 240, 5: 200}
GAP = 16
MARGIN = 28
BACKGROUND = (18, 18, 18)
NEUTRAL_TILE = (40, 40, 40)
NEUTRAL_MARK = (72, 72, 72)
TITLE_TEXT = (255, 255, 255)
SUBTITLE_TEXT = (179, 179, 179)
ATTRIBUTION_TEXT = (179, 179, 179)
SPOTIFY_GREEN_RGB = (29, 185, 84)
TOP_TRACKS_ATTRIBUTION = "Covers, names and rankings from Spotify"
RECAP_ATTRIBUTION = "Covers and names from Spotify · plays counted in this server"
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class ChartTile:
    """One tile: the cover's bytes (None: a neutral tile), a title line and a subtitle line."""

    cover: bytes | None
    title: str
    subtitle: str = ""


@dataclass(frozen=True, slots=True)
class TopAlbum:
    """One album of a server's recap: its cover, names and how often it was played."""

    cover: bytes | None
    album: str
    artist: str
    plays: int


@dataclass(frozen=True, slots=True)
class _Layout:
    size: int
    tile: int
    title_px: int
    subtitle_px: int
    text_band: int
    header: int
    footer: int

    @property
    def width(self) -> int:
        return 2 * MARGIN + self.size * self.tile + (self.size - 1) * GAP

    @property
    def height(self) -> int:
        cell = self.tile + self.text_band
        return self.header + self.size * cell + (self.size - 1) * GAP + self.footer

    def tile_origin(self, index: int) -> tuple[int, int]:
        row, column = divmod(index, self.size)
        x = MARGIN + column * (self.tile + GAP)
        y = self.header + row * (self.tile + self.text_band + GAP)
        return x, y


def layout_for(size: int, *, heading: bool) -> _Layout:
    if size not in CHART_SIZES:
        raise ValueError(f"chart size must be one of {CHART_SIZES}, not {size}")
    tile = TILE_PIXELS[size]
    title_px = max(14, round(tile * 0.07))
    subtitle_px = max(13, round(tile * 0.06))
    text_band = 10 + round(title_px * 1.35) + round(subtitle_px * 1.35) + 4
    return _Layout(
        size=size,
        tile=tile,
        title_px=title_px,
        subtitle_px=subtitle_px,
        text_band=text_band,
        header=76 if heading else MARGIN,
        footer=56,
    )


@functools.lru_cache(maxsize=32)
def _font(bold: bool, pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(BOLD_FONT if bold else REGULAR_FONT), pixels)


REPLACEMENT = "\ufffd"


@functools.lru_cache(maxsize=8192)
def _drawable(font: ImageFont.FreeTypeFont, char: str) -> bool:
    """Whether the font has a glyph for ``char`` (its missing-glyph box is empty: no ink)."""
    if char.isspace() or unicodedata.category(char) in ("Cf", "Mn", "Me", "Zs"):
        return True
    return font.getmask(char).getbbox() is not None


def drawable_text(text: str, font: ImageFont.FreeTypeFont) -> str:
    """``text`` with each run of characters the font cannot draw replaced by one U+FFFD, and
    no bidirectional control (as in embeds: they would reorder the rest of the line)."""
    pieces: list[str] = []
    for char in without_bidi_controls(text):
        if _drawable(font, char):
            pieces.append(char)
        elif not pieces or pieces[-1] != REPLACEMENT:
            pieces.append(REPLACEMENT)
    return "".join(pieces)


def fit_text(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` on one line, drawable by ``font``, cut with "…" to fit ``width`` pixels."""
    line = drawable_text(" ".join(text.split()), font)
    if font.getlength(line) <= width:
        return line
    low, high = 0, len(line)
    while low < high:  # the longest prefix that fits with the ellipsis
        middle = (low + high + 1) // 2
        if font.getlength(line[:middle].rstrip() + ELLIPSIS) <= width:
            low = middle
        else:
            high = middle - 1
    return line[:low].rstrip() + ELLIPSIS if low else ELLIPSIS


def _decode_cover(data: bytes | None, tile: int) -> Image.Image | None:
    """The cover scaled to fit ``tile`` x ``tile`` whole, over the tile colour; None if unusable."""
    if not data:
        return None
    try:
        opened = open_cover(data, tile)
        transparent = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
        cover = opened.convert("RGBA" if transparent else "RGB")
    except Exception:  # a corrupt or odd file is a neutral tile, never an error
        return None
    if cover.size != (tile, tile):
        cover = ImageOps.contain(cover, (tile, tile), Image.Resampling.BICUBIC)
    if not transparent:
        return cover
    flat = Image.new("RGBA", cover.size, (*NEUTRAL_TILE, 255))
    flat.alpha_composite(cover)
    return flat.convert("RGB")


def _neutral_tile(draw: ImageDraw.ImageDraw, x: int, y: int, tile: int) -> None:
    """A plain tile with a quiet record mark, for a missing cover or an empty place."""
    draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=NEUTRAL_TILE)
    centre_x, centre_y = x + tile // 2, y + tile // 2
    for radius, width in ((tile * 0.28, max(2, tile // 60)), (tile * 0.06, max(2, tile // 60))):
        r = round(radius)
        draw.ellipse(
            (centre_x - r, centre_y - r, centre_x + r, centre_y + r),
            outline=NEUTRAL_MARK,
            width=width,
        )


def _draw_tile(
    image: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, index: int, item: ChartTile
) -> None:
    x, y = layout.tile_origin(index)
    tile = layout.tile
    cover = _decode_cover(item.cover, tile)
    if cover is None:
        _neutral_tile(draw, x, y, tile)
    else:
        draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=NEUTRAL_TILE)
        image.paste(cover, (x + (tile - cover.width) // 2, y + (tile - cover.height) // 2))
    title_font = _font(True, layout.title_px)
    subtitle_font = _font(False, layout.subtitle_px)
    text_y = y + tile + 10
    draw.text((x, text_y), fit_text(item.title, title_font, tile), font=title_font, fill=TITLE_TEXT)
    if item.subtitle:
        draw.text(
            (x, text_y + round(layout.title_px * 1.35)),
            fit_text(item.subtitle, subtitle_font, tile),
            font=subtitle_font,
            fill=SUBTITLE_TEXT,
        )


def _draw_frame(
    draw: ImageDraw.ImageDraw, layout: _Layout, heading: str | None, attribution: str
) -> None:
    inner = layout.width - 2 * MARGIN
    if heading:
        font = _font(True, 30)
        draw.text((MARGIN, 22), fit_text(heading, font, inner), font=font, fill=TITLE_TEXT)
    # Attribution: a small green disc (no Spotify logo is shipped) and the line of text.
    font = _font(False, 17)
    baseline_y = layout.height - layout.footer + 18
    disc = 18
    draw.ellipse(
        (MARGIN, baseline_y + 1, MARGIN + disc, baseline_y + 1 + disc), fill=SPOTIFY_GREEN_RGB
    )
    draw.text(
        (MARGIN + disc + 10, baseline_y - 2),
        fit_text(attribution, font, inner - disc - 10),
        font=font,
        fill=ATTRIBUTION_TEXT,
    )


def render_chart(
    tiles: Sequence[ChartTile],
    size: int,
    *,
    heading: str | None = None,
    attribution: str = TOP_TRACKS_ATTRIBUTION,
) -> bytes:
    """A size x size chart (3, 4 or 5) of ``tiles`` in order, left to right, top to bottom.

    Fewer tiles than places leaves neutral tiles; extra tiles are ignored. Returns PNG bytes.
    ``attribution`` is the footer line beside the green mark (it always names Spotify).
    """
    layout = layout_for(size, heading=bool(heading))
    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _draw_frame(draw, layout, heading, attribution)
    for index in range(size * size):
        if index < len(tiles):
            _draw_tile(image, draw, layout, index, tiles[index])
        else:
            x, y = layout.tile_origin(index)
            _neutral_tile(draw, x, y, layout.tile)
    out = io.BytesIO()
    # Encoding dominates the render: fast zlib settings cost ~10 % in size (far under Discord's
    # 10 MiB) and save a fifth of the time.
    image.save(out, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return out.getvalue()


def track_tiles(entries: Sequence[tuple[bytes | None, str, str]]) -> list[ChartTile]:
    """Tiles for a member's top tracks: ``(cover, track, artist)`` each, numbered in order."""
    return [
        ChartTile(cover=cover, title=f"{rank}. {track}", subtitle=artist)
        for rank, (cover, track, artist) in enumerate(entries, start=1)
    ]


def render_top_albums(
    albums: Sequence[TopAlbum], *, size: int = 3, heading: str | None = None
) -> bytes:
    """The /recap picture: the server's top albums in order, with their play counts."""
    tiles = [
        ChartTile(
            cover=album.cover,
            title=f"{rank}. {album.album}",
            subtitle=f"{album.artist} · {album.plays} play{'s' if album.plays != 1 else ''}",
        )
        for rank, album in enumerate(albums, start=1)
    ]
    return render_chart(tiles, size, heading=heading, attribution=RECAP_ATTRIBUTION)


MAX_WAITING = 8  # renders waiting behind the one being drawn


class RenderBusy(BotError):
    """No place in the render queue: the owner has one already, or it is full."""


YOURS_WAITING = "Your last chart is still being drawn: it will be here in a moment."
QUEUE_FULL = "Many charts are being drawn right now: try again in a few seconds."


def _render_busy(refusal: Refusal) -> RenderBusy:
    return RenderBusy(user_message=YOURS_WAITING if refusal == "taken" else QUEUE_FULL)


class ChartRenderer:
    """Runs the renders above off the event loop, one at a time, on a thread of its own.

    The queue is bounded and fair: a render takes a :meth:`turn` for its owner (the member
    who asked; a server for its /recap picture) before anything is fetched for it, at most one
    per owner and ``MAX_WAITING`` waiting behind the one being drawn. One member's forty
    /chart at once cost everyone else at most one render's wait, not forty.

    One per app (``bot.app`` creates it and closes it at shutdown); commands await its methods.
    """

    def __init__(self, *, max_waiting: int = MAX_WAITING) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chart-render"
        )
        # Owners with a render waiting or being drawn: the one drawn and ``max_waiting`` more.
        self._turns: Turns[int] = Turns(at_most=max_waiting + 1)

    def turn(self, owner: int) -> AbstractContextManager[None]:
        """A place in the queue for ``owner``'s render, held for the block (the covers are
        fetched inside it, the render awaited). Raises RenderBusy with the words for the
        member when ``owner`` has a render queued already or the queue is full."""
        return self._turns.take(owner, _render_busy)

    async def chart(
        self,
        tiles: Sequence[ChartTile],
        size: int,
        *,
        heading: str | None = None,
        attribution: str = TOP_TRACKS_ATTRIBUTION,
    ) -> bytes:
        call = functools.partial(
            render_chart, tuple(tiles), size, heading=heading, attribution=attribution
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def top_albums(
        self, albums: Sequence[TopAlbum], *, size: int = 3, heading: str | None = None
    ) -> bytes:
        call = functools.partial(render_top_albums, tuple(albums), size=size, heading=heading)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        """Drop queued renders; one already running finishes on its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "CHART_SIZES",
    "MAX_WAITING",
    "TILE_PIXELS",
    "ChartRenderer",
    "ChartTile",
    "RenderBusy",
    "TopAlbum",
    "drawable_text",
    "fit_text",
    "layout_for",
    "render_chart",
    "render_top_albums",
    "track_tiles",
]
