"""bot.pictures.charts: real charts rendered from generated covers; pixels checked where
they must be."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image, ImageDraw

from bot.pictures.charts import (
    BACKGROUND,
    BOLD_FONT,
    FONT_DIR,
    NEUTRAL_TILE,
    REGULAR_FONT,
    ChartRenderer,
    ChartTile,
    TopAlbum,
    drawable_text,
    fit_text,
    layout_for,
    render_chart,
    render_top_albums,
    track_tiles,
)
from bot.pictures.decode import open_cover
from bot.pictures.images import ImageFetcher
from tests.fakes.cdn import FakeCdn, cover_colour
from tests.helpers import encode_image, solid_image


def solid(rgb: tuple[int, int, int]) -> bytes:
    return solid_image(rgb, "JPEG", 300)


def gradient() -> bytes:
    """Black at the top to white at the bottom (greyscale, 300 x 300)."""
    return encode_image(Image.linear_gradient("L").resize((300, 300)).convert("RGB"), "JPEG")


def wide_transparent() -> bytes:
    """A 300 x 150 PNG: transparent except an opaque blue right half."""
    image = Image.new("RGBA", (300, 150), (255, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((150, 0, 299, 149), fill=(0, 0, 255, 255))
    return encode_image(image, "PNG")


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


def ink_in(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    """How many pixels in ``box`` differ clearly from the background (drawn text)."""
    region = image.crop(box)
    raw = region.tobytes()
    return sum(
        1
        for i in range(0, len(raw), 3)
        if abs(raw[i] - BACKGROUND[0]) + abs(raw[i + 1] - BACKGROUND[1]) > 60
    )


SOLIDS = [(230, 30, 30), (30, 200, 60), (40, 80, 230), (250, 220, 0), (160, 0, 200)]


@pytest.mark.parametrize("size", [3, 4, 5])
def test_grid_dimensions_and_solid_cover_colours(size: int) -> None:
    count = size * size
    tiles = [
        ChartTile(solid(SOLIDS[i % len(SOLIDS)]), f"Track {i}", f"Artist {i}") for i in range(count)
    ]
    image = open_png(render_chart(tiles, size, heading="Top tracks"))
    layout = layout_for(size, heading=True)
    assert image.size == (layout.width, layout.height)
    assert layout.width <= 1200  # readable in Discord without a giant download
    for index in range(count):
        x, y = layout.tile_origin(index)
        t = layout.tile
        for px, py in ((x + t // 2, y + t // 2), (x + 3, y + 3), (x + t - 4, y + t - 4)):
            assert close_to(pixel(image, px, py), SOLIDS[index % len(SOLIDS)]), (index, px, py)
        # Text under the cover, never over it: ink in the band below the tile.
        assert ink_in(image, (x, y + t + 4, x + t, y + t + layout.text_band)) > 40


def test_greyscale_gradient_is_drawn_whole() -> None:
    image = open_png(render_chart([ChartTile(gradient(), "Grey", "Scale")], 3))
    layout = layout_for(3, heading=False)
    x, y = layout.tile_origin(0)
    top = pixel(image, x + 150, y + 2)
    bottom = pixel(image, x + 150, y + layout.tile - 3)
    middle = pixel(image, x + 150, y + layout.tile // 2)
    assert max(top) < 20
    assert min(bottom) > 235
    assert 100 < middle[0] < 160
    assert close_to(middle, (middle[0],) * 3, 3)


def test_wide_transparent_png_is_letterboxed_uncropped_over_the_tile_colour() -> None:
    image = open_png(render_chart([ChartTile(wide_transparent(), "Wide", "PNG")], 3))
    layout = layout_for(3, heading=False)
    x, y = layout.tile_origin(0)
    t = layout.tile
    assert close_to(pixel(image, x + 3 * t // 4, y + t // 2), (0, 0, 255))  # opaque right half
    assert close_to(pixel(image, x + t // 4, y + t // 2), NEUTRAL_TILE, 3)  # transparent half
    assert close_to(pixel(image, x + 3 * t // 4, y + 10), NEUTRAL_TILE, 3)  # letterbox above
    assert close_to(pixel(image, x + 3 * t // 4, y + t - 10), NEUTRAL_TILE, 3)  # and below


@pytest.mark.parametrize(
    "cover",
    [
        None,
        b"",
        b"corrupt file",
        b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # a JPEG header and nothing usable
        encode_image(Image.new("RGB", (10, 10), (255, 0, 0)), "GIF"),
    ],
)
def test_missing_or_corrupt_cover_is_a_neutral_tile_with_its_text(cover: bytes | None) -> None:
    image = open_png(render_chart([ChartTile(cover, "Still named", "Artist")], 3))
    layout = layout_for(3, heading=False)
    x, y = layout.tile_origin(0)
    t = layout.tile
    assert close_to(pixel(image, x + 5, y + 5), NEUTRAL_TILE, 2)
    assert close_to(pixel(image, x + t // 2, y + t // 2 + t // 9), NEUTRAL_TILE, 2)
    assert ink_in(image, (x, y + t + 4, x + t, y + t + layout.text_band)) > 40


def test_fewer_items_than_tiles_gives_neutral_tiles_without_text() -> None:
    image = open_png(render_chart([ChartTile(solid((230, 30, 30)), "Only", "One")], 4))
    layout = layout_for(4, heading=False)
    for index in range(1, 16):
        x, y = layout.tile_origin(index)
        t = layout.tile
        assert close_to(pixel(image, x + 5, y + 5), NEUTRAL_TILE, 2)
        assert ink_in(image, (x, y + t + 4, x + t, y + t + layout.text_band)) == 0


def test_no_items_at_all_still_renders() -> None:
    image = open_png(render_chart([], 5))
    assert image.size == (layout_for(5, heading=False).width, layout_for(5, heading=False).height)


def test_heading_and_attribution_are_drawn() -> None:
    with_heading = open_png(render_chart([], 3, heading="Alice's top tracks"))
    without = open_png(render_chart([], 3))
    layout = layout_for(3, heading=True)
    assert ink_in(with_heading, (0, 0, layout.width, layout.header - 8)) > 200
    plain = layout_for(3, heading=False)
    assert ink_in(without, (0, 0, plain.width, plain.header - 4)) == 0
    footer = (0, layout.height - layout.footer, layout.width, layout.height)
    assert ink_in(with_heading, footer) > 200  # the Spotify attribution
    # The green attribution mark.
    green = [
        pixel(with_heading, x, y)
        for x in range(80)
        for y in range(layout.height - layout.footer, layout.height)
    ]
    assert any(close_to(p, (29, 185, 84), 10) for p in green)


def test_text_is_cut_to_the_tile_not_drawn_over_the_neighbour() -> None:
    long = "An extremely long track title that could never fit in one tile " * 3
    image = open_png(render_chart([ChartTile(None, long, long)], 3))
    layout = layout_for(3, heading=False)
    x, y = layout.tile_origin(0)
    t = layout.tile
    band = (x + t + 1, y + t + 4, x + t + 15, y + t + layout.text_band)  # the gap to tile 2
    assert ink_in(image, band) == 0


def test_too_big_or_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="chart size"):
        render_chart([], 6)
    with pytest.raises(ValueError, match="chart size"):
        render_chart([], 2)


def test_decompression_bomb_is_a_neutral_tile() -> None:
    bomb = encode_image(Image.new("L", (5000, 5000), 255), "PNG")  # small file, 25 Mpx
    image = open_png(render_chart([ChartTile(bomb, "Bomb", "")], 3))
    x, y = layout_for(3, heading=False).tile_origin(0)
    assert close_to(pixel(image, x + 5, y + 5), NEUTRAL_TILE, 2)


@pytest.mark.parametrize("size", [(4096, 4096), (1281, 64), (64, 1281)])
def test_a_cover_larger_than_album_art_is_never_decoded(size: tuple[int, int]) -> None:
    """A 4096 x 4096 PNG is about 70 kB and took seconds to decode for a 200 px tile."""
    huge = encode_image(Image.new("RGB", size, (240, 30, 30)), "PNG")
    with pytest.raises(ValueError, match="too large"):
        open_cover(huge, 200)
    image = open_png(render_chart([ChartTile(huge, "Huge", "")], 5))
    x, y = layout_for(5, heading=False).tile_origin(0)
    assert close_to(pixel(image, x + 5, y + 5), NEUTRAL_TILE, 2)
    largest = encode_image(Image.new("RGB", (1280, 1280), (240, 30, 30)), "PNG")
    assert open_cover(largest, 200).size == (1280, 1280)


def test_track_tiles_are_numbered_and_recap_counts_plays() -> None:
    tiles = track_tiles([(None, "Song", "Band"), (None, "Other", "Act")])
    assert [t.title for t in tiles] == ["1. Song", "2. Other"]
    assert tiles[1].subtitle == "Act"
    png = render_top_albums(
        [TopAlbum(solid((230, 30, 30)), "Album", "Band", 12), TopAlbum(None, "B", "C", 1)],
        heading="This week in Listening Club",
    )
    image = open_png(png)
    layout = layout_for(3, heading=True)
    assert image.size == (layout.width, layout.height)
    x, y = layout.tile_origin(0)
    assert close_to(pixel(image, x + 100, y + 100), (230, 30, 30))


# --- text the font can and cannot draw ---------------------------------------------------------


def test_font_ships_with_its_licence() -> None:
    assert REGULAR_FONT.is_file()
    assert BOLD_FONT.is_file()
    licence = (FONT_DIR / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL Open Font License" in licence
    assert "Noto" in licence


def test_latin_greek_cyrillic_are_drawn_other_scripts_fall_back() -> None:
    from bot.pictures.charts import _font

    font = _font(False, 20)
    assert (
        drawable_text("Beyoncé · Ωμέγα · Привет · Việt", font) == "Beyoncé · Ωμέγα · Привет · Việt"
    )
    assert drawable_text("坂本龍一 - Merry Christmas", font) == "\ufffd - Merry Christmas"
    assert drawable_text("🎵🎶", font) == "\ufffd"
    # Bidirectional controls would reorder the line in the picture as in an embed.
    assert drawable_text("Ann\u202egpj.exe\u2066x\u2069", font) == "Anngpj.exex"
    assert fit_text("x" * 500, font, 100).endswith("…")
    assert font.getlength(fit_text("x" * 500, font, 100)) <= 100


# --- covers from the fake CDN, a 404 among them ----------------------------------------------


async def test_chart_from_fetched_covers_with_a_404(cdn: tuple[FakeCdn, str]) -> None:
    fake, base = cdn
    fake.missing.add("album-gone-300")
    ids = ["album-a-300", "album-gone-300", "album-b-300", "album-c-300"]
    async with aiohttp.ClientSession() as session:
        fetcher = ImageFetcher(session, image_base=base)
        covers = [await fetcher.fetch(f"https://i.scdn.co/image/{i}") for i in ids]
    assert covers[1] is None
    assert all(c is not None for i, c in enumerate(covers) if i != 1)
    image = open_png(render_chart(track_tiles([(c, "T", "A") for c in covers]), 3))
    layout = layout_for(3, heading=False)
    for index, image_id in enumerate(ids):
        x, y = layout.tile_origin(index)
        # The generated cover: its colour at the edge, a lighter square in the middle.
        expected = NEUTRAL_TILE if covers[index] is None else cover_colour(image_id)
        assert close_to(pixel(image, x + 20, y + 20), expected, 16), image_id


# --- off the event loop -------------------------------------------------------------------------


async def test_renderer_runs_off_the_loop_one_at_a_time() -> None:
    import asyncio
    import threading

    renderer = ChartRenderer()
    tiles = [ChartTile(solid((230, 30, 30)), "Song", "Band")]
    pngs = await asyncio.gather(*(renderer.chart(tiles, 3) for _ in range(3)))
    assert all(png == pngs[0] for png in pngs)
    albums = [TopAlbum(None, "Album", "Band", 3)]
    recap = open_png(await renderer.top_albums(albums, heading="Recap"))
    assert recap.size == (layout_for(3, heading=True).width, layout_for(3, heading=True).height)
    names = {thread.name for thread in threading.enumerate()}
    assert any(name.startswith("chart-render") for name in names)
    renderer.close()
