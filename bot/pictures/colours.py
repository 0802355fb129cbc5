"""The embed colour of a now-playing message, taken from the album art.

:func:`pick_colour` (pure, Pillow) picks the cover's dominant *vivid* colour: pixels are binned
by hue, each weighted by how vivid it is (saturation x brightness), and the mean of the heaviest
bin wins, so a small bright logo on a grey sleeve still gives its colour while a wash of muddy
pixels does not. A cover with almost no colourful pixels (black-and-white photos, grey sleeves)
gets a neutral grey instead, lighter or darker with the cover. Either way the lightness is then
moved until the colour has a contrast of at least 2.5:1 against both of Discord's backgrounds
(dark ``#313338`` and light ``#FFFFFF``), so the embed's bar reads on either theme.

:class:`CoverColours` keeps colours by image id (memory, and the database so a restart does not
fetch again), fetches the smallest album image once, and answers within a caller-given bound:
``None`` (the caller uses Spotify green) when the colour is not ready in time, while the work
goes on in the background for next time.
"""

from __future__ import annotations

import asyncio
import colorsys
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from bot.aio.tasks import cancel_and_wait
from bot.pictures.decode import open_cover
from bot.pictures.images import ImageFetcher, spotify_image_id
from bot.spotify.models import CurrentlyPlaying, Episode, Image, Playback, Track

log = logging.getLogger(__name__)

# Relative luminance band giving >= 2.5:1 contrast against #313338 (0.0331) and #FFFFFF (1.0).
MIN_LUMINANCE = 0.16
MAX_LUMINANCE = 0.36
MIN_SATURATION = 0.35
HUE_BINS = 24
SAMPLE_SIZE = 32
# Below this share of colourful pixels a cover counts as greyscale.
COLOURFUL_SHARE = 0.05
_SPOTIFY_ART_ID = re.compile(r"(ab67616d)([0-9a-f]{8})([0-9a-f]{24})")


def relative_luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour with channels in 0..1."""

    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _unpack(colour: int) -> tuple[float, float, float]:
    return ((colour >> 16 & 255) / 255, (colour >> 8 & 255) / 255, (colour & 255) / 255)


def _pack(rgb: tuple[float, float, float]) -> int:
    red, green, blue = (max(0, min(255, round(c * 255))) for c in rgb)
    return red << 16 | green << 8 | blue


def readable(rgb: tuple[float, float, float]) -> int:
    """``rgb`` with at least MIN_SATURATION (unless grey) and its lightness moved into the band."""
    hue, lightness, saturation = colorsys.rgb_to_hls(*rgb)
    if saturation > 0.02:
        saturation = max(saturation, MIN_SATURATION)

    def luminance_at(value: float) -> float:
        return relative_luminance(colorsys.hls_to_rgb(hue, value, saturation))

    current = luminance_at(lightness)
    if not MIN_LUMINANCE <= current <= MAX_LUMINANCE:
        target = MIN_LUMINANCE if current < MIN_LUMINANCE else MAX_LUMINANCE
        low, high = (lightness, 1.0) if current < MIN_LUMINANCE else (0.0, lightness)
        for _ in range(20):  # luminance grows with HLS lightness: bisect
            middle = (low + high) / 2
            if luminance_at(middle) < target:
                low = middle
            else:
                high = middle
        lightness = high if current < MIN_LUMINANCE else low
    return _pack(colorsys.hls_to_rgb(hue, lightness, saturation))


def _linear(channel: int) -> float:
    value = channel / 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


_LINEAR = tuple(_linear(channel) for channel in range(256))


def _sample(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(RGB bytes, HSV bytes, alpha bytes) of the cover shrunk to SAMPLE_SIZE at most."""
    opened = open_cover(data, SAMPLE_SIZE * 2)  # we only need SAMPLE_SIZE pixels a side
    image = opened.convert("RGBA")
    image.thumbnail((SAMPLE_SIZE, SAMPLE_SIZE))
    rgb = image.convert("RGB")
    # Pillow converts to HSV in C (each channel 0-255): no per-pixel Python colour maths.
    return rgb.tobytes(), rgb.convert("HSV").tobytes(), image.getchannel("A").tobytes()


def pick_colour(data: bytes) -> int | None:
    """The embed colour for a cover (see the module doc); None when it cannot be decoded."""
    try:
        rgb, hsv, alpha = _sample(data)
    except Exception as exc:  # any undecodable picture: no colour, never an error
        log.debug("cover not decodable: %s", exc)
        return None
    weights = [0] * HUE_BINS
    sums = [[0, 0, 0] for _ in range(HUE_BINS)]
    seen = colourful = 0
    grey_luminance = 0.0
    linear = _LINEAR
    min_saturation, min_value = round(0.25 * 255), round(0.2 * 255)
    for index, opacity in enumerate(alpha):
        if opacity < 128:
            continue  # transparent areas are not part of the cover
        seen += 1
        at = 3 * index
        red, green, blue = rgb[at], rgb[at + 1], rgb[at + 2]
        grey_luminance += 0.2126 * linear[red] + 0.7152 * linear[green] + 0.0722 * linear[blue]
        saturation, value = hsv[at + 1], hsv[at + 2]
        if saturation < min_saturation or value < min_value:
            continue
        colourful += 1
        weight = saturation * value  # vividness, in 0..65025
        hue_bin = hsv[at] * HUE_BINS // 256
        weights[hue_bin] += weight
        bin_sum = sums[hue_bin]
        bin_sum[0] += red * weight
        bin_sum[1] += green * weight
        bin_sum[2] += blue * weight
    if seen == 0:
        return None
    if colourful < COLOURFUL_SHARE * seen:
        # Greyscale: a neutral grey, as light as the cover allows within the readable band.
        mean = grey_luminance / seen
        level = max(MIN_LUMINANCE, min(MAX_LUMINANCE, mean))
        channel = level * 12.92 if level <= 0.0031308 else 1.055 * level ** (1 / 2.4) - 0.055
        return _pack((channel, channel, channel))
    # Neighbouring bins count half, so a hue split across a bin edge is not outvoted.
    smoothed = [
        weights[i] + 0.5 * (weights[i - 1] + weights[(i + 1) % HUE_BINS]) for i in range(HUE_BINS)
    ]
    best = max(range(HUE_BINS), key=smoothed.__getitem__)
    total = weights[best] * 255
    if total <= 0:
        return None
    mean_rgb = (sums[best][0] / total, sums[best][1] / total, sums[best][2] / total)
    return readable(mean_rgb)


# --- which picture, under which key ----------------------------------------------------------


def _size(image: Image) -> int | None:
    sizes = [s for s in (image.width, image.height) if s is not None]
    return max(sizes) if sizes else None


def smallest_image(images: Sequence[Image]) -> Image | None:
    """The smallest image of known size, else the first (presence gives one, unsized)."""
    sized = [(size, image) for image in images if (size := _size(image)) is not None]
    if sized:
        return min(sized, key=lambda pair: pair[0])[1]
    return images[0] if images else None


SMALLEST_ART_SIZE_CODE = "00004851"  # 64 px


def cover_url(playback: CurrentlyPlaying) -> str | None:
    """The picture the colour comes from: the smallest image of the track or episode. A status
    gives only the 640 px album art: its 64 px sibling is asked for instead (50 times smaller)."""
    if not isinstance(playback, Playback):
        return None
    item = playback.item
    if isinstance(item, Track) and item.is_local:
        return None
    if not isinstance(item, Track | Episode):
        return None
    image = smallest_image(item.images)
    if image is None:
        return None
    image_id = spotify_image_id(image.url) if _size(image) is None else None
    match = _SPOTIFY_ART_ID.fullmatch(image_id) if image_id is not None else None
    if match is not None:
        return f"https://i.scdn.co/image/{match.group(1)}{SMALLEST_ART_SIZE_CODE}{match.group(3)}"
    return image.url


def colour_key(url: str) -> str | None:
    """Key by image id. Spotify's album-art ids are ``ab67616d`` + a size code + the art's own
    24 hex digits, so every size of one cover (the API's 64 px, a status's 640 px) shares a key."""
    image_id = spotify_image_id(url)
    if image_id is None:
        return None
    match = _SPOTIFY_ART_ID.fullmatch(image_id)
    return f"{match.group(1)}-{match.group(3)}" if match else image_id


# --- the cache ---------------------------------------------------------------------------------


class ColourStore(Protocol):
    async def get_image_colour(self, image_key: str) -> int | None: ...

    async def save_image_colour(self, image_key: str, colour: int) -> None: ...


class CoverColours:
    """Colours by image key: memory (bounded LRU), then the database, then a fetch.

    A waiter gets the colour as soon as it is picked; storing it in the database follows in the
    background, so a busy database never holds an answer.
    """

    def __init__(
        self,
        fetcher: ImageFetcher,
        store: ColourStore,
        *,
        memory_entries: int = 20_000,
        pick: Callable[[bytes], int | None] = pick_colour,
    ) -> None:
        self._fetcher = fetcher
        self._store = store
        self._pick = pick
        self._max_entries = memory_entries
        self._memory: OrderedDict[str, int] = OrderedDict()
        self._pending: dict[str, asyncio.Future[int | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def known(self, playback: CurrentlyPlaying) -> int | None:
        """The colour if it is in memory; no I/O."""
        url = cover_url(playback)
        key = colour_key(url) if url is not None else None
        return self._remembered(key) if key is not None else None

    async def colour_for(self, playback: CurrentlyPlaying, *, wait: float) -> int | None:
        """The colour, waiting at most ``wait`` seconds; None (use green) when not ready."""
        url = cover_url(playback)
        key = colour_key(url) if url is not None else None
        if url is None or key is None:
            return None
        colour = self._remembered(key)
        if colour is not None or self._closed:
            return colour
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            task = asyncio.create_task(self._resolve(key, url, future), name="cover-colour")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            return None

    def _remembered(self, key: str) -> int | None:
        colour = self._memory.get(key)
        if colour is not None:
            self._memory.move_to_end(key)
        return colour

    def _remember(self, key: str, colour: int) -> None:
        self._memory[key] = colour
        self._memory.move_to_end(key)
        while len(self._memory) > self._max_entries:
            self._memory.popitem(last=False)

    async def _resolve(self, key: str, url: str, future: asyncio.Future[int | None]) -> None:
        colour: int | None = None
        stored: int | None = None
        try:
            stored = colour = await self._store.get_image_colour(key)
            if colour is None:
                data = await self._fetcher.fetch(url)
                if data is not None:
                    started = time.perf_counter()
                    colour = await asyncio.to_thread(self._pick, data)
                    elapsed_ms = 1000 * (time.perf_counter() - started)
                    log.debug("cover colour of %s picked in %.1f ms", key, elapsed_ms)
            if colour is not None:
                self._remember(key, colour)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a colour is never worth an error: green it is
            log.info("cover colour for %s not available: %r", key, exc)
        finally:
            self._pending.pop(key, None)
            if not future.done():
                future.set_result(colour)
        if colour is not None and stored is None:
            try:
                await self._store.save_image_colour(key, colour)
            except Exception as exc:  # kept in memory all the same
                log.info("cover colour for %s not stored: %r", key, exc)

    def __len__(self) -> int:
        return len(self._memory)

    async def settle(self) -> None:
        """Wait until no colour is being picked or stored."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self, *, grace: float = 0.5) -> None:
        """Stop background work (at shutdown, before the database closes): what finishes
        within ``grace`` seconds is kept, the rest is cancelled."""
        self._closed = True
        tasks = list(self._tasks)
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=grace)
            await cancel_and_wait(running)


__all__ = [
    "MAX_LUMINANCE",
    "MIN_LUMINANCE",
    "ColourStore",
    "CoverColours",
    "colour_key",
    "cover_url",
    "pick_colour",
    "readable",
    "relative_luminance",
    "smallest_image",
]
