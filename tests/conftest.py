"""Fixtures several test modules share: the fake Spotify on loopback, an HTTP session, the fake
image CDN, and putting the process-wide logging set-up back after a test changed it.

Plain helpers (a clock, ``eventually``, a wired LinkService) live in ``tests/helpers.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.logs import SecretMasker
from tests.fakes.cdn import FakeCdn
from tests.fakes.spotify import FakeSpotify


@pytest.fixture
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeSpotify]:
    """The fake Spotify on 127.0.0.1. A module or test may pass it options with
    ``@pytest.mark.fake_spotify(redirect_uris=[...])`` (``FakeSpotify.running``'s keywords)."""
    marker = request.node.get_closest_marker("fake_spotify")
    options = dict(marker.kwargs) if marker is not None else {}
    async with FakeSpotify.running(**options) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


_LOGGERS_TOUCHED = ("aiohttp.access", "aiosqlite", "discord", "discord.client", "discord.gateway")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    root_level = root.level
    levels = {name: logging.getLogger(name).level for name in _LOGGERS_TOUCHED}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in root.handlers:
        for installed in [f for f in handler.filters if isinstance(f, SecretMasker)]:
            handler.removeFilter(installed)
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
async def cdn(aiohttp_server: object) -> tuple[FakeCdn, str]:
    """The fake Spotify image CDN on 127.0.0.1, and its base URL."""
    fake = FakeCdn()
    app = web.Application()
    fake.add_routes(app.router)
    server = await aiohttp_server(app)  # type: ignore[operator]
    assert isinstance(server, TestServer)
    return fake, str(server.make_url("")).rstrip("/")
