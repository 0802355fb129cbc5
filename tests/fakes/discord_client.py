"""Pointing the real discord.py at the fake Discord, and running a client against it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from .discord_http import API_PREFIX
from .discord_waiting import DEFAULT_TIMEOUT, FakeDiscordTimeoutError

if TYPE_CHECKING:
    from .discord import FakeDiscord

_log = logging.getLogger(__name__)


def point_discord_py_at(
    base_url: str, gateway_url: str | yarl.URL | None = None
) -> Callable[[], None]:
    """Send discord.py's REST (and webhooks) to ``{base_url}/api/v10`` and its gateway to
    ``gateway_url`` (default: the fake's ``/gateway`` on the same host). Returns a function
    that restores the previous values; tests must call it (``run_client`` does).

    These are class attributes, process-wide: ``discord.http.Route.BASE`` (a str, read each
    time a Route is built) and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (a
    ``yarl.URL``; Client.connect dials it and never asks ``/gateway/bot`` itself).
    """
    previous_base = discord.http.Route.BASE
    previous_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if gateway_url is None:
        base = yarl.URL(base_url)
        gateway_url = base.with_scheme("wss" if base.scheme == "https" else "ws").with_path(
            "/gateway"
        )
    discord.http.Route.BASE = f"{base_url.rstrip('/')}{API_PREFIX}"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway_url))

    def restore() -> None:
        discord.http.Route.BASE = previous_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = previous_gateway

    return restore


@contextlib.contextmanager
def discord_py_pointed_at(
    base_url: str, gateway_url: str | yarl.URL | None = None
) -> Iterator[None]:
    """:func:`point_discord_py_at` as a context manager."""
    restore = point_discord_py_at(base_url, gateway_url)
    try:
        yield
    finally:
        restore()


async def fetch_gateway_url(base_url: str, token: str) -> yarl.URL:
    """``GET /api/v10/gateway/bot`` the way the bot does before connecting."""
    headers = {"Authorization": f"Bot {token}"}
    timeout = aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{base_url}{API_PREFIX}/gateway/bot", headers=headers) as response,
    ):
        response.raise_for_status()
        data = await response.json()
    return yarl.URL(data["url"])


@contextlib.asynccontextmanager
async def run_client(
    client: discord.Client,
    fake: FakeDiscord,
    token: str | None = None,
    *,
    ready_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[discord.Client]:
    """Log ``client`` in against ``fake``, connect it, wait for on_ready; close it on exit.

    discord.py waits ``guild_ready_timeout`` (default 2 s) after the last GUILD_CREATE before
    on_ready: build the client with e.g. ``guild_ready_timeout=0.05`` to keep tests fast.
    discord.py globals are restored on exit, and the client is closed (HTTP session, gateway,
    heartbeat thread) so no "Unclosed client session" warning is left behind.
    """
    token = fake.token if token is None else token
    restore = point_discord_py_at(fake.base_url)
    connect_task: asyncio.Task[None] | None = None
    body_failed = False
    try:
        await client.login(token)
        # As the bot does: ask /gateway/bot once logged in, and dial what it says.
        gateway = await fetch_gateway_url(fake.base_url, token)
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
        connect_task = asyncio.create_task(
            client.connect(reconnect=True), name="fake-discord-connect"
        )
        await _wait_until_ready(client, connect_task, ready_timeout)
        yield client
    except BaseException:
        body_failed = True
        raise
    finally:
        try:
            await _close_client(client, connect_task, close_timeout, raise_errors=not body_failed)
        finally:
            restore()


async def _wait_until_ready(
    client: discord.Client, connect_task: asyncio.Task[None], timeout: float
) -> None:
    ready_task = asyncio.create_task(client.wait_until_ready(), name="fake-discord-ready")
    done, _ = await asyncio.wait(
        {ready_task, connect_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if ready_task in done:
        return
    ready_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ready_task
    if connect_task in done:
        # e.g. PrivilegedIntentsRequired, LoginFailure-like closes, or discord.py's
        # AttributeError when the very first gateway connection fails.
        connect_task.result()
        raise RuntimeError("Client.connect returned before on_ready")
    raise FakeDiscordTimeoutError(
        f"the client was not ready after {timeout} s: is guild_ready_timeout low enough?"
    )


async def _close_client(
    client: discord.Client,
    connect_task: asyncio.Task[None] | None,
    timeout: float,
    *,
    raise_errors: bool,
) -> None:
    try:
        await asyncio.wait_for(client.close(), timeout)
        if connect_task is not None:
            await asyncio.wait_for(connect_task, timeout)
    except Exception:
        if connect_task is not None and not connect_task.done():
            connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connect_task
        if raise_errors:
            raise
        # Usually the very error the body already raised (connect died before on_ready).
        _log.debug("error while closing the client after the body failed", exc_info=True)
