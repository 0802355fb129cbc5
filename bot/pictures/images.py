"""Album art from Spotify's CDN: one fetcher, a byte-bounded memory cache, nothing else.

Pictures come only from ``https://i.scdn.co/image/<id>``; such a URL is fetched from
``SPOTIFY_IMAGE_BASE`` with the same path (tests point it at a loopback fake) and every other
URL is refused without a request. A fetch has a timeout, reads at most ``max_bytes`` (checked
while reading, not only from Content-Length), accepts only JPEG and PNG (header and magic bytes),
follows no redirect and runs under a bounded concurrency on the app's shared session. Answers are
kept in an LRU cache by URL with a byte bound; a failure is remembered for ``failure_ttl`` so a
broken picture is asked for at most once per period, never in a loop. :meth:`ImageFetcher.fetch`
never raises because of a picture: it returns ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import aiohttp

from bot.aio.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SPOTIFY_IMAGE_HOST = "i.scdn.co"
DEFAULT_SPOTIFY_IMAGE_BASE = f"https://{SPOTIFY_IMAGE_HOST}"
ALLOWED_CONTENT_TYPES = ("image/jpeg", "image/png")
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
_IMAGE_PATH = re.compile(r"/image/([A-Za-z0-9_-]{1,128})")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spotify_image_id(url: str | None) -> str | None:
    """The id in ``https://i.scdn.co/image/<id>``; None for any other URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if (
        parts.scheme != "https"
        or parts.hostname != SPOTIFY_IMAGE_HOST
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or parts.query
        or parts.fragment
    ):
        return None
    match = _IMAGE_PATH.fullmatch(parts.path)
    return match.group(1) if match else None


def sniff_image_type(data: bytes) -> str | None:
    """``image/jpeg`` or ``image/png`` from the first bytes, else None."""
    if data.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    return None


class ByteBoundedLru:
    """An LRU map of bytes values whose total size stays at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[key] = value
        self._bytes += len(value)
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._items)


class RecentFailures:
    """URLs that failed lately, not asked again for ``ttl`` seconds (at most ``size`` kept)."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()  # url -> may be asked again at

    def holds(self, url: str) -> bool:
        """Whether ``url`` failed less than ``ttl`` seconds ago."""
        until = self._until.get(url)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._until[url]
        return False

    def add(self, url: str) -> None:
        self._until[url] = self._clock() + self._ttl
        self._until.move_to_end(url)
        while len(self._until) > self._size:
            self._until.popitem(last=False)


class _ImageRefused(Exception):
    """Why one fetch produced no picture (logged at DEBUG, never shown to a member)."""


class ImageFetcher:
    """Fetches and caches album art; see the module doc. One per app, on the shared session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        image_base: str = DEFAULT_SPOTIFY_IMAGE_BASE,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_concurrency: int = 4,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        failure_ttl: float = 120.0,
        max_failures_kept: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._base = image_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 3.0))
        self._max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max_concurrency)
        self.cache = ByteBoundedLru(cache_bytes)
        self._failures = RecentFailures(failure_ttl, max_failures_kept, clock)
        self._in_flight: dict[str, asyncio.Future[bytes | None]] = {}
        self.requests_made = 0

    def cdn_url(self, url: str) -> str | None:
        """Where ``url`` is fetched from (the image base + the same path), or None if refused."""
        image_id = spotify_image_id(url)
        return f"{self._base}/image/{image_id}" if image_id is not None else None

    def cached(self, url: str) -> bytes | None:
        return self.cache.get(url)

    async def fetch_many(self, urls: Sequence[str | None], *, wait: float) -> list[bytes | None]:
        """Each picture (None: no URL, refused, failed or later than ``wait`` seconds),
        fetched concurrently, each distinct URL once."""
        distinct = [url for url in dict.fromkeys(urls) if url]
        fetches = {url: asyncio.ensure_future(self.fetch(url)) for url in distinct}
        if fetches:
            await asyncio.wait(fetches.values(), timeout=wait)
        await cancel_and_wait(fetch for fetch in fetches.values() if not fetch.done())
        found = {
            url: fetch.result()
            for url, fetch in fetches.items()
            if not fetch.cancelled() and fetch.exception() is None
        }
        return [found.get(url) if url else None for url in urls]

    async def fetch(self, url: str) -> bytes | None:
        """The picture's bytes, or None (refused, failed recently, too big, wrong type)."""
        cached = self.cache.get(url)
        if cached is not None:
            return cached
        if self._failures.holds(url):
            return None
        running = self._in_flight.get(url)
        if running is not None:
            # Everyone asking for the same picture shares one request.
            return await asyncio.shield(running)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._in_flight[url] = future
        try:
            data = await self._fetch_once(url)
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._in_flight[url]
        if not future.done():
            future.set_result(data)
        return data

    async def _fetch_once(self, url: str) -> bytes | None:
        target = self.cdn_url(url)
        try:
            if target is None:
                raise _ImageRefused("not a picture on Spotify's CDN")
            async with self._slots:
                self.requests_made += 1
                data = await self._download(target)
        except Exception as exc:  # a picture never fails a command: whatever went wrong
            log.debug("picture %s not used: %s", url, exc or type(exc).__name__)
            self._failures.add(url)
            return None
        self.cache.put(url, data)
        return data

    async def _download(self, target: str) -> bytes:
        async with self._session.get(
            target, timeout=self._timeout, allow_redirects=False
        ) as response:
            if response.status != 200:
                raise _ImageRefused(f"HTTP {response.status}")
            if response.content_type not in ALLOWED_CONTENT_TYPES:
                raise _ImageRefused(f"content type {response.content_type!r}")
            length = response.content_length
            if length is not None and length > self._max_bytes:
                raise _ImageRefused(f"{length} bytes is over the {self._max_bytes}-byte cap")
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                received += len(chunk)
                if received > self._max_bytes:
                    raise _ImageRefused(f"over the {self._max_bytes}-byte cap while reading")
                chunks.append(chunk)
        data = b"".join(chunks)
        if sniff_image_type(data) is None:
            raise _ImageRefused("the body is not a JPEG or PNG")
        return data


__all__ = [
    "ALLOWED_CONTENT_TYPES",
    "DEFAULT_SPOTIFY_IMAGE_BASE",
    "SPOTIFY_IMAGE_HOST",
    "ByteBoundedLru",
    "ImageFetcher",
    "sniff_image_type",
    "spotify_image_id",
]
