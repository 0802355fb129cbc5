"""bot.pictures.images: the fetcher against a CDN on loopback (the fake CDN, misbehaving
routes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.pictures.images import ByteBoundedLru, ImageFetcher, sniff_image_type, spotify_image_id
from tests.fakes.cdn import FakeCdn, generate_cover
from tests.helpers import ManualClock
from tests.peek import cached_bytes

BIG = 2 * 1024 * 1024


@dataclass
class Cdn:
    fake: FakeCdn
    base: str
    hits: dict[str, int]
    release: asyncio.Event


@pytest.fixture
async def cdn(aiohttp_server: object) -> AsyncIterator[Cdn]:
    fake = FakeCdn()
    hits: dict[str, int] = {}
    release = asyncio.Event()
    app = web.Application()

    def counted(name: str) -> None:
        hits[name] = hits.get(name, 0) + 1

    async def html(request: web.Request) -> web.Response:
        counted("html")
        return web.Response(text="<html>", content_type="text/html")

    async def png_as_text(request: web.Request) -> web.Response:
        counted("png_as_text")
        return web.Response(body=generate_cover("x-64").data, content_type="text/plain")

    async def lying_jpeg(request: web.Request) -> web.Response:
        counted("lying_jpeg")
        return web.Response(body=b"GIF89a....", content_type="image/jpeg")

    async def declared_big(request: web.Request) -> web.Response:
        counted("declared_big")
        return web.Response(body=b"\xff\xd8\xff" + b"0" * BIG, content_type="image/jpeg")

    async def streamed_big(request: web.Request) -> web.StreamResponse:
        counted("streamed_big")
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff")
        for _ in range(40):  # 40 x 64 KiB: over the cap without a Content-Length
            await response.write(b"0" * 65536)
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.Response:
        counted("redirect")
        raise web.HTTPFound("http://127.0.0.2:9/elsewhere")

    async def slow(request: web.Request) -> web.Response:
        counted(request.match_info["image_id"])
        hits["in_flight"] = hits.get("in_flight", 0) + 1
        hits["max_in_flight"] = max(hits.get("max_in_flight", 0), hits["in_flight"])
        try:
            await release.wait()
        finally:
            hits["in_flight"] -= 1
        return web.Response(body=generate_cover("slow-64").data, content_type="image/jpeg")

    for name, handler in {
        "html": html,
        "png_as_text": png_as_text,
        "lying_jpeg": lying_jpeg,
        "declared_big": declared_big,
        "streamed_big": streamed_big,
        "redirect": redirect,
    }.items():
        app.router.add_get(f"/image/{name}", handler)
    app.router.add_get(r"/image/{image_id:slow\w*}", slow)
    fake.add_routes(app.router)
    server = await aiohttp_server(app)  # type: ignore[operator]
    assert isinstance(server, TestServer)
    yield Cdn(fake, str(server.make_url("")).rstrip("/"), hits, release)
    release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def scdn(image_id: str) -> str:
    return f"https://i.scdn.co/image/{image_id}"


# --- which URLs are pictures we fetch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://i.scdn.co/image/ab67616d00004851fce712500a4be6eaf874c20e",
            "ab67616d00004851fce712500a4be6eaf874c20e",
        ),
        ("https://i.scdn.co:443/image/abc-64", "abc-64"),
        ("http://i.scdn.co/image/abc", None),  # not https
        ("https://i.scdn.co.evil.example/image/abc", None),
        ("https://evil.example/image/abc", None),
        ("https://user@i.scdn.co/image/abc", None),
        ("https://i.scdn.co:8443/image/abc", None),
        ("https://i.scdn.co/image/../admin", None),
        ("https://i.scdn.co/image/abc?size=1", None),
        ("https://i.scdn.co/other/abc", None),
        ("https://mosaic.scdn.co/640/abc", None),
        ("https://i.scdn.co/image/", None),
        ("", None),
        (None, None),
        ("https://[::1/image/x", None),  # unparsable
    ],
)
def test_only_spotify_cdn_pictures_are_recognised(url: str | None, expected: str | None) -> None:
    assert spotify_image_id(url) == expected


def test_sniff() -> None:
    assert sniff_image_type(generate_cover("a-64").data) in ("image/jpeg", "image/png")
    assert sniff_image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image_type(b"\x89PNG\r\n\x1a\nxxxx") == "image/png"
    assert sniff_image_type(b"GIF89a") is None


def test_cdn_url_keeps_the_path_on_the_configured_base(session: aiohttp.ClientSession) -> None:
    fetcher = ImageFetcher(session, image_base="http://127.0.0.1:9999/cdn/")
    assert fetcher.cdn_url(scdn("abc-64")) == "http://127.0.0.1:9999/cdn/image/abc-64"
    assert fetcher.cdn_url("https://evil.example/image/abc") is None


# --- fetching -----------------------------------------------------------------------------------


async def test_fetches_jpeg_and_png_from_the_base_and_caches_them(
    cdn: Cdn, session: aiohttp.ClientSession
) -> None:
    fetcher = ImageFetcher(session, image_base=cdn.base)
    ids = [f"album{n}-64" for n in range(8)]
    kinds = set()
    for image_id in ids:
        data = await fetcher.fetch(scdn(image_id))
        assert data == cdn.fake.picture(image_id).data
        kinds.add(cdn.fake.picture(image_id).content_type)
    assert kinds == {"image/jpeg", "image/png"}  # the fake serves both
    for image_id in ids:
        assert await fetcher.fetch(scdn(image_id)) is not None
    assert all(cdn.fake.requests[image_id] == 1 for image_id in ids)
    assert fetcher.requests_made == len(ids)


async def test_other_hosts_are_refused_without_a_request(
    cdn: Cdn, session: aiohttp.ClientSession
) -> None:
    fetcher = ImageFetcher(session, image_base=cdn.base)
    assert await fetcher.fetch(f"{cdn.base}/image/album-64") is None  # our own loopback URL
    assert await fetcher.fetch("https://evil.example/image/album-64") is None
    assert fetcher.requests_made == 0
    assert cdn.fake.total_requests == 0


@pytest.mark.parametrize(
    "name", ["html", "png_as_text", "lying_jpeg", "declared_big", "streamed_big", "redirect"]
)
async def test_bad_answers_give_none_and_are_not_asked_again_soon(
    cdn: Cdn, session: aiohttp.ClientSession, name: str
) -> None:
    clock = ManualClock()
    fetcher = ImageFetcher(
        session, image_base=cdn.base, max_bytes=BIG, failure_ttl=60.0, clock=clock
    )
    for _ in range(5):
        assert await fetcher.fetch(scdn(name)) is None
    assert cdn.hits[name] == 1  # the failure is remembered: no retry loop
    clock.advance(61)
    assert await fetcher.fetch(scdn(name)) is None
    assert cdn.hits[name] == 2
    assert cached_bytes(fetcher.cache) == 0


async def test_404_is_none(cdn: Cdn, session: aiohttp.ClientSession) -> None:
    cdn.fake.missing.add("gone-64")
    fetcher = ImageFetcher(session, image_base=cdn.base)
    assert await fetcher.fetch(scdn("gone-64")) is None
    assert await fetcher.fetch(scdn("gone-64")) is None
    assert cdn.fake.requests["gone-64"] == 1


async def test_timeout_gives_none(cdn: Cdn, session: aiohttp.ClientSession) -> None:
    fetcher = ImageFetcher(session, image_base=cdn.base, timeout=0.2)
    assert await asyncio.wait_for(fetcher.fetch(scdn("slow")), 5) is None
    assert cdn.hits["slow"] == 1


async def test_unreachable_cdn_gives_none(session: aiohttp.ClientSession) -> None:
    fetcher = ImageFetcher(session, image_base="http://127.0.0.1:9", timeout=2)
    assert await fetcher.fetch(scdn("album-64")) is None


async def test_closed_session_gives_none() -> None:
    async with aiohttp.ClientSession() as closed:
        pass
    fetcher = ImageFetcher(closed, image_base="http://127.0.0.1:9")
    assert await fetcher.fetch(scdn("album-64")) is None


async def test_concurrent_asks_share_one_request_and_concurrency_is_bounded(
    cdn: Cdn, session: aiohttp.ClientSession
) -> None:
    fetcher = ImageFetcher(session, image_base=cdn.base, max_concurrency=2)
    same = [asyncio.create_task(fetcher.fetch(scdn("slow"))) for _ in range(10)]
    others = [asyncio.create_task(fetcher.fetch(scdn(f"slow{n}"))) for n in range(4)]
    async with asyncio.timeout(5):
        while cdn.hits.get("in_flight", 0) < 2:  # noqa: ASYNC110 - the CDN's own count
            await asyncio.sleep(0.01)
    assert cdn.hits["in_flight"] == 2  # the bound, though five distinct pictures are wanted
    cdn.release.set()
    results = await asyncio.wait_for(asyncio.gather(*same, *others), 5)
    assert all(result is not None for result in results)
    assert len({bytes(r) for r in results[:10] if r is not None}) == 1
    assert cdn.hits["slow"] == 1  # ten asks for one picture: one request
    assert cdn.hits["max_in_flight"] == 2


def test_lru_keeps_its_byte_bound() -> None:
    cache = ByteBoundedLru(1000)
    for n in range(100):
        cache.put(f"k{n}", bytes(300))
        assert cached_bytes(cache) <= 1000
    assert len(cache) == 3
    assert cache.get("k99") is not None
    assert cache.get("k0") is None
    cache.get("k97")  # recently used: survives the next insert
    cache.put("new", bytes(300))
    assert cache.get("k97") is not None
    assert cache.get("k98") is None
    cache.put("huge", bytes(2000))  # larger than the whole bound: not kept
    assert cache.get("huge") is None
    assert cached_bytes(cache) <= 1000


async def test_cache_stays_under_its_bound(cdn: Cdn, session: aiohttp.ClientSession) -> None:
    fetcher = ImageFetcher(session, image_base=cdn.base, cache_bytes=20_000)
    for n in range(60):
        assert await fetcher.fetch(scdn(f"many{n}-64")) is not None
        assert cached_bytes(fetcher.cache) <= 20_000
    assert 0 < len(fetcher.cache) < 60
