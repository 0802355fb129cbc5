"""A fake of Spotify's picture CDN (``https://i.scdn.co/image/<id>``), served on loopback.

The fake Spotify mounts it on its own server (``FakeSpotify.image_base``), so the bot's real
rewrite of ``https://i.scdn.co/image/<id>`` to ``SPOTIFY_IMAGE_BASE/image/<id>`` is exercised
and nothing leaves the machine. Every id has a generated cover: a solid colour derived from the
id (every size of one cover, ``<album>-640`` / ``-300`` / ``-64``, shares it) with a lighter
square in the middle, as a JPEG, or a PNG when the id's hash is odd. Tests can put their own
bytes and content type under an id, make an id 404, or slow the answers down.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass

from aiohttp import web
from PIL import Image, ImageDraw

_SIZE_SUFFIX = re.compile(r"-(\d{2,4})$")


@dataclass(frozen=True)
class Picture:
    data: bytes
    content_type: str


def cover_base(image_id: str) -> str:
    """The id without its ``-<size>`` suffix: what every size of one cover shares."""
    return _SIZE_SUFFIX.sub("", image_id)


def cover_colour(image_id: str) -> tuple[int, int, int]:
    """The generated cover's main colour: a vivid colour picked from the id's hash."""
    digest = hashlib.sha256(cover_base(image_id).encode()).digest()
    hue = digest[0] / 255
    # A fully saturated, bright colour from the hue wheel.
    sector, fraction = divmod(hue * 6, 1)
    rising, falling = round(255 * fraction), round(255 * (1 - fraction))
    return [
        (255, rising, 0),
        (falling, 255, 0),
        (0, 255, rising),
        (0, falling, 255),
        (rising, 0, 255),
        (255, 0, falling),
    ][int(sector) % 6]


def cover_format(image_id: str) -> str:
    return "PNG" if hashlib.sha256(cover_base(image_id).encode()).digest()[1] % 2 else "JPEG"


def generate_cover(image_id: str) -> Picture:
    match = _SIZE_SUFFIX.search(image_id)
    size = min(640, int(match.group(1))) if match else 64
    main = cover_colour(image_id)
    image = Image.new("RGB", (size, size), main)
    light = tuple(min(255, c + 90) for c in main)
    ImageDraw.Draw(image).rectangle(
        (size // 3, size // 3, 2 * size // 3, 2 * size // 3), fill=(light[0], light[1], light[2])
    )
    out = io.BytesIO()
    kind = cover_format(image_id)
    image.save(out, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
    return Picture(out.getvalue(), "image/png" if kind == "PNG" else "image/jpeg")


class FakeCdn:
    """State and handler of the picture CDN; ``add_routes`` mounts it on an application."""

    def __init__(self) -> None:
        self.pictures: dict[str, Picture] = {}  # set by tests; generated otherwise
        self.missing: set[str] = set()  # ids that answer 404
        self.delay = 0.0  # seconds before each answer
        self.requests: Counter[str] = Counter()
        self.remember_generated = True  # False: generate on every request (benchmarks' memory)
        self._generated: dict[str, Picture] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/image/{image_id}", self._handle_image)

    def put(self, image_id: str, data: bytes, content_type: str = "image/png") -> None:
        self.pictures[image_id] = Picture(data, content_type)

    def picture(self, image_id: str) -> Picture:
        """What the CDN serves for ``image_id`` (a test's own picture, or the generated one)."""
        own = self.pictures.get(image_id)
        if own is not None:
            return own
        generated = self._generated.get(image_id)
        if generated is None:
            generated = generate_cover(image_id)
            if self.remember_generated:
                self._generated[image_id] = generated
        return generated

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    async def _handle_image(self, request: web.Request) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        self.requests[image_id] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if image_id in self.missing:
            return web.Response(status=404, text="Not Found")
        picture = self.picture(image_id)
        return web.Response(body=picture.data, headers={"Content-Type": picture.content_type})
