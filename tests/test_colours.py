"""bot.pictures.colours: the colour picked from real generated covers, and its cache
(memory, database, a bounded wait) against the fake CDN on loopback."""

from __future__ import annotations

import asyncio
import colorsys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image, ImageDraw

from bot.pictures.colours import (
    MAX_LUMINANCE,
    MIN_LUMINANCE,
    CoverColours,
    colour_key,
    cover_url,
    pick_colour,
    relative_luminance,
)
from bot.pictures.images import ImageFetcher
from bot.spotify.models import (
    Artist,
    Episode,
    NothingPlaying,
    Playback,
    Track,
)
from bot.spotify.models import (
    Image as SpotifyImage,
)
from bot.storage import Storage
from tests.fakes.cdn import FakeCdn, cover_colour
from tests.helpers import encode_image, solid_image


def contrast_ratio(first: int, second: int) -> float:
    """WCAG's contrast ratio of two 0xRRGGBB colours."""
    lum = sorted(
        relative_luminance(((c >> 16 & 0xFF) / 255, (c >> 8 & 0xFF) / 255, (c & 0xFF) / 255))
        for c in (first, second)
    )
    return (lum[1] + 0.05) / (lum[0] + 0.05)


DISCORD_DARK = 0x313338
DISCORD_LIGHT = 0xFFFFFF


def hue_of(colour: int) -> float:
    r, g, b = ((colour >> 16) & 255) / 255, ((colour >> 8) & 255) / 255, (colour & 255) / 255
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def saturation_of(colour: int) -> float:
    r, g, b = ((colour >> 16) & 255) / 255, ((colour >> 8) & 255) / 255, (colour & 255) / 255
    return colorsys.rgb_to_hsv(r, g, b)[1]


def hue_distance(first: float, second: float) -> float:
    return min(abs(first - second), 360 - abs(first - second))


def assert_readable(colour: int) -> None:
    assert contrast_ratio(colour, DISCORD_DARK) >= 2.45, hex(colour)
    assert contrast_ratio(colour, DISCORD_LIGHT) >= 2.45, hex(colour)


# --- picking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "hue"),
    [
        ((220, 20, 60), 348),  # crimson
        ((255, 255, 0), 60),  # pure yellow: far too light for a white theme as it is
        ((0, 0, 139), 240),  # dark blue: far too dark for the dark theme as it is
        ((30, 215, 96), 141),
        ((255, 140, 0), 33),
    ],
)
@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_solid_covers_keep_their_hue_and_become_readable(
    rgb: tuple[int, int, int], hue: float, kind: str
) -> None:
    colour = pick_colour(solid_image(rgb, kind))
    assert colour is not None
    assert hue_distance(hue_of(colour), hue) < 8
    assert saturation_of(colour) > 0.5
    assert_readable(colour)


def test_already_readable_colour_is_kept() -> None:
    colour = pick_colour(solid_image((200, 60, 60)))
    assert colour is not None
    assert abs(((colour >> 16) & 255) - 200) <= 3


def test_vivid_dominant_colour_beats_a_large_dull_area() -> None:
    # 70 % dull grey-brown, 30 % vivid orange: the average would be mud; we want the orange.
    image = Image.new("RGB", (100, 100), (110, 100, 95))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 29), fill=(255, 120, 0))
    colour = pick_colour(encode_image(image))
    assert colour is not None
    assert hue_distance(hue_of(colour), 28) < 8
    assert saturation_of(colour) > 0.6


def test_gradient_cover_gives_a_colour_from_its_dominant_half() -> None:
    # Horizontal gradient: left two thirds shades of blue, right third shades of red.
    image = Image.new("RGB", (90, 90))
    draw = ImageDraw.Draw(image)
    for x in range(90):
        shade = 120 + x
        draw.line((x, 0, x, 89), fill=(0, 40, shade) if x < 60 else (shade, 20, 20))
    colour = pick_colour(encode_image(image, "JPEG"))
    assert colour is not None
    assert hue_distance(hue_of(colour), 225) < 15
    assert_readable(colour)


@pytest.mark.parametrize(("level", "lighter"), [(20, False), (128, None), (235, True)])
def test_greyscale_covers_get_a_readable_neutral_grey(level: int, lighter: bool | None) -> None:
    image = Image.linear_gradient("L").resize((64, 64)).point(lambda v: level + (v - 128) // 16)
    colour = pick_colour(encode_image(image.convert("RGB"), "JPEG"))
    assert colour is not None
    r, g, b = (colour >> 16) & 255, (colour >> 8) & 255, colour & 255
    assert max(r, g, b) - min(r, g, b) <= 2  # grey, not a tint from JPEG noise
    assert_readable(colour)
    luminance = relative_luminance((r / 255, g / 255, b / 255))
    if lighter is True:
        assert luminance == pytest.approx(MAX_LUMINANCE, abs=0.01)
    elif lighter is False:
        assert luminance == pytest.approx(MIN_LUMINANCE, abs=0.01)


def test_transparent_areas_are_ignored() -> None:
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red everywhere
    ImageDraw.Draw(image).ellipse((16, 16, 47, 47), fill=(0, 90, 255, 255))
    colour = pick_colour(encode_image(image))
    assert colour is not None
    assert hue_distance(hue_of(colour), 219) < 8
    assert pick_colour(encode_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"not a picture", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, solid_image((1, 2, 3))[:60]],
)
def test_corrupt_covers_give_none(data: bytes) -> None:
    assert pick_colour(data) is None


def test_a_huge_picture_in_a_small_file_is_not_decoded() -> None:
    bomb = encode_image(Image.new("L", (5000, 5000), 200), "PNG")
    assert len(bomb) < 100_000
    assert pick_colour(bomb) is None


def test_gif_is_not_accepted() -> None:
    assert pick_colour(encode_image(Image.new("RGB", (8, 8), (255, 0, 0)), "GIF")) is None


def test_every_colour_is_readable_on_both_themes() -> None:
    for red in range(0, 256, 51):
        for green in range(0, 256, 51):
            for blue in range(0, 256, 51):
                colour = pick_colour(solid_image((red, green, blue), size=8))
                assert colour is not None
                assert colour != 0  # 0 means "no colour" to Discord
                assert_readable(colour)


# --- which picture, which key -------------------------------------------------------------


def track(images: tuple[SpotifyImage, ...], *, local: bool = False) -> Playback:
    item = Track(
        name="Song",
        uri="spotify:track:t1",
        duration_ms=200_000,
        artists=(Artist("A"),),
        album_name="Album",
        images=images,
        is_local=local,
    )
    return Playback(kind="track", item=item, is_playing=True, progress_ms=0)


API_IMAGES = (
    SpotifyImage("https://i.scdn.co/image/ab67616d0000b273fce712500a4be6eaf874c20e", 640, 640),
    SpotifyImage("https://i.scdn.co/image/ab67616d00004851fce712500a4be6eaf874c20e", 64, 64),
    SpotifyImage("https://i.scdn.co/image/ab67616d00001e02fce712500a4be6eaf874c20e", 300, 300),
)


def test_cover_url_is_the_smallest_image() -> None:
    assert cover_url(track(API_IMAGES)) == API_IMAGES[1].url
    # A status's one unsized 640 px album art: its 64 px sibling is fetched instead.
    presence = (SpotifyImage("https://i.scdn.co/image/ab67616d0000b273fce712500a4be6eaf874c20e"),)
    assert cover_url(track(presence)) == (
        "https://i.scdn.co/image/ab67616d00004851fce712500a4be6eaf874c20e"
    )
    other = (SpotifyImage("https://i.scdn.co/image/not-album-art"),)
    assert cover_url(track(other)) == other[0].url
    assert cover_url(track(API_IMAGES, local=True)) is None
    assert cover_url(track(())) is None
    assert cover_url(NothingPlaying()) is None
    assert cover_url(Playback(kind="ad", item=None, is_playing=True, progress_ms=0)) is None
    episode = Episode(name="E", uri="spotify:episode:e", duration_ms=1, images=API_IMAGES[:1])
    assert cover_url(Playback(kind="episode", item=episode, is_playing=True, progress_ms=0)) == (
        API_IMAGES[0].url
    )


def test_every_size_of_one_cover_shares_a_key() -> None:
    keys = {colour_key(image.url) for image in API_IMAGES}
    assert keys == {"ab67616d-fce712500a4be6eaf874c20e"}
    assert colour_key("https://i.scdn.co/image/album-t1-64") == "album-t1-64"
    assert colour_key("https://evil.example/image/x") is None


# --- the cache ------------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    async with await Storage.open(":memory:") as opened:
        yield opened


def fake_track(album: str) -> Playback:
    images = tuple(
        SpotifyImage(f"https://i.scdn.co/image/{album}-{size}", size, size)
        for size in (640, 300, 64)
    )
    return track(images)


async def test_colour_is_fetched_once_then_served_from_memory_and_the_database(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    fake, base = cdn
    playback = fake_track("album-red")
    async with await Storage.open(tmp_path / "bot.db") as storage:
        colours = CoverColours(ImageFetcher(session, image_base=base), storage.colours)
        colour = await colours.colour_for(playback, wait=5)
        assert colour is not None
        expected_hue = colorsys.rgb_to_hsv(*(c / 255 for c in cover_colour("album-red-64")))[0]
        assert hue_distance(hue_of(colour), expected_hue * 360) < 10
        assert fake.requests == {"album-red-64": 1}  # only the smallest image
        assert colours.known(playback) == colour
        assert await colours.colour_for(playback, wait=0) == colour
        await colours.settle()  # the database write follows the answer
        assert await storage.colours.get_image_colour("album-red-64") == colour
        await colours.close()
    # A restart: a new process, the same database, no fetch.
    async with await Storage.open(tmp_path / "bot.db") as storage:
        colours = CoverColours(ImageFetcher(session, image_base=base), storage.colours)
        assert colours.known(playback) is None
        assert await colours.colour_for(playback, wait=5) == colour
        assert fake.requests == {"album-red-64": 1}
        await colours.close()


async def test_a_slow_picture_answers_none_within_the_bound_and_is_ready_later(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession, storage: Storage
) -> None:
    fake, base = cdn
    fake.delay = 0.5
    colours = CoverColours(ImageFetcher(session, image_base=base), storage.colours)
    playback = fake_track("album-slow")
    started = asyncio.get_running_loop().time()
    assert await colours.colour_for(playback, wait=0.1) is None
    assert asyncio.get_running_loop().time() - started < 0.3
    # The work goes on in the background: a later ask finds it without a second request.
    colour = await colours.colour_for(playback, wait=5)
    assert colour is not None
    assert fake.requests == {"album-slow-64": 1}
    await colours.close()


async def test_missing_or_corrupt_pictures_give_none_and_are_not_refetched_in_a_loop(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession, storage: Storage
) -> None:
    fake, base = cdn
    fake.missing.add("album-404-64")
    fake.put("album-bad-64", b"\x89PNG\r\n\x1a\nbroken", "image/png")
    colours = CoverColours(ImageFetcher(session, image_base=base), storage.colours)
    for _ in range(3):
        assert await colours.colour_for(fake_track("album-404"), wait=5) is None
        assert await colours.colour_for(fake_track("album-bad"), wait=5) is None
    assert fake.requests["album-404-64"] == 1
    assert fake.requests["album-bad-64"] == 1  # cached bytes, decoded again: no new request
    await colours.close()


async def test_memory_is_bounded(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession, storage: Storage
) -> None:
    _, base = cdn
    colours = CoverColours(
        ImageFetcher(session, image_base=base), storage.colours, memory_entries=5
    )
    for n in range(12):
        assert await colours.colour_for(fake_track(f"album-{n}"), wait=5) is not None
        assert len(colours) <= 5
    await colours.close()


async def test_close_cancels_background_work(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession, storage: Storage
) -> None:
    fake, base = cdn
    fake.delay = 5
    colours = CoverColours(ImageFetcher(session, image_base=base), storage.colours)
    assert await colours.colour_for(fake_track("album-hang"), wait=0.05) is None
    await asyncio.wait_for(colours.close(), 2)
    assert await colours.colour_for(fake_track("album-hang"), wait=1) is None


class SlowStore:
    """A database that is busy writing: saves wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.saved: dict[str, int] = {}

    async def get_image_colour(self, image_key: str) -> int | None:
        return self.saved.get(image_key)

    async def save_image_colour(self, image_key: str, colour: int) -> None:
        await self.release.wait()
        self.saved[image_key] = colour


async def test_a_busy_database_does_not_hold_the_answer(
    cdn: tuple[FakeCdn, str], session: aiohttp.ClientSession
) -> None:
    _, base = cdn
    store = SlowStore()
    colours = CoverColours(ImageFetcher(session, image_base=base), store)
    colour = await colours.colour_for(fake_track("album-busy"), wait=5)
    assert colour is not None
    assert store.saved == {}  # answered while the write still waits
    store.release.set()
    await asyncio.wait_for(colours.settle(), 5)
    assert store.saved == {"album-busy-64": colour}
    await colours.close()
