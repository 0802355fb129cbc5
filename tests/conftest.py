"""Fixtures several test modules share: the fake Spotify on loopback and an HTTP session.

Plain helpers (a clock, ``eventually``, a wired LinkService) live in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

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
