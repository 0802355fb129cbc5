"""The web port cannot be starved: real sockets against the real web server.

``bot.web.connections.WebListener`` serving ``bot.web.server.create_app`` (as ``bot.app`` does),
with a small limit and short timeouts; the last test runs the whole ``Application``, whose
limit comes from this process's descriptor limit. Every wait has a timeout; none measures
time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import aiohttp

from bot.linking.service import LinkService
from bot.web.access import runner_options
from bot.web.connections import MAX_CONNECTIONS, WebListener, connection_limit
from bot.web.server import WebDependencies, create_app
from tests.harness import Stack
from tests.peek import open_connections

WAIT = 15.0
HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished


def always_ok() -> Callable[[], Awaitable[bool]]:
    async def ok() -> bool:
        return True

    return ok


@contextlib.asynccontextmanager
async def listening(
    *,
    max_connections: int,
    idle_timeout: float = 60.0,
    database_ok: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[tuple[WebListener, int]]:
    app = create_app(
        WebDependencies(
            links=cast(LinkService, object()),  # only /healthz is asked here
            redirect_path="/callback",
            database_ok=database_ok or always_ok(),
            gateway_ok=lambda: True,
        )
    )
    listener = WebListener(
        app,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        runner_options=runner_options(),
    )
    port = await listener.start("127.0.0.1", 0)
    try:
        yield listener, port
    finally:
        await listener.close()


class Held:
    """Connections a client opens and holds; which ones the server closed."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.closed: list[asyncio.Task[bytes]] = []

    async def open(self, port: int, count: int, *, send: bytes = b"") -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if send:
                writer.write(send)
            self.writers.append(writer)
            self.closed.append(asyncio.ensure_future(reader.read()))  # b"" once closed

    async def until_closed(self, count: int) -> None:
        """Until the server has closed at least ``count`` of them."""
        async with asyncio.timeout(WAIT):
            while sum(task.done() for task in self.closed) < count:
                await asyncio.wait(
                    [t for t in self.closed if not t.done()], return_when=asyncio.FIRST_COMPLETED
                )

    def still_open(self) -> int:
        return sum(not task.done() for task in self.closed)

    async def release(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.closed:
            task.cancel()
        await asyncio.gather(*self.closed, return_exceptions=True)


@contextlib.asynccontextmanager
async def held() -> AsyncIterator[Held]:
    connections = Held()
    try:
        yield connections
    finally:
        await connections.release()


async def healthz(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        await response.read()
        return response.status


def test_the_limit_is_a_quarter_of_the_descriptors_at_most_512() -> None:
    assert 1 <= connection_limit() <= MAX_CONNECTIONS


async def test_one_client_holding_connections_cannot_keep_others_out() -> None:
    async with listening(max_connections=8) as (listener, port), held() as client:
        await client.open(port, 10)  # idle
        await client.open(port, 10, send=HALF_SENT)  # headers a byte at a time, forever
        assert await healthz(port) == 200
        assert open_connections(listener) <= 8
        await client.until_closed(20 - 7)  # the oldest gave way to the newer ones
        assert client.still_open() <= 7
        assert await healthz(port) == 200


async def test_at_the_limit_with_every_connection_busy_the_new_one_is_closed() -> None:
    entered = 0
    go_on = asyncio.Event()

    async def slow_database() -> bool:
        nonlocal entered
        entered += 1
        await go_on.wait()
        return True

    async with (
        listening(max_connections=4, database_ok=slow_database) as (listener, port),
        held() as client,
    ):
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        await client.open(port, 4, send=request)
        async with asyncio.timeout(WAIT):
            while entered < 4:  # noqa: ASYNC110 - the handlers say nothing else
                await asyncio.sleep(0.01)
        late = Held()
        await late.open(port, 1)
        await late.until_closed(1)  # closed at once, with no answer
        assert late.closed[0].result() == b""
        assert listener.refused == 1
        await late.release()
        go_on.set()  # the four running requests were kept: each gets its answer
        await client.until_closed(4)
        assert all(b"200 OK" in task.result() for task in client.closed)


async def test_idle_connections_and_slow_headers_are_closed() -> None:
    async with listening(max_connections=8, idle_timeout=0.3) as (_, port), held() as client:
        await client.open(port, 1)
        await client.open(port, 1, send=HALF_SENT)
        await client.open(port, 1, send=b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive
        await client.until_closed(3)
        assert b"200 OK" in client.closed[2].result()


async def test_the_bot_keeps_its_web_port_answering(tmp_path: Path) -> None:
    """The whole Application: a client opening more connections than the limit, idle or half
    sent, leaves /healthz answering; what it holds is closed after the idle timeout (10 s)."""
    async with Stack.running(tmp_path) as stack, held() as client:
        limit = connection_limit()
        await client.open(stack.app.web_port, limit // 2 + 5)
        await client.open(stack.app.web_port, limit // 2 + 5, send=HALF_SENT)
        async with stack.http.get(f"{stack.web_base}/healthz") as response:
            assert response.status == 200
        await client.until_closed(10)  # more than the limit: the oldest gave way
        assert client.still_open() < limit
        await client.until_closed(limit + 10)  # and the rest once idle too long
