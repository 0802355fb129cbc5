"""The web port's share of the process: how many connections it keeps, and for how long.

The bot's web server shares one table of file descriptors with the gateway, Spotify and the
database. aiohttp alone keeps every connection it accepts, an idle one for an hour, so one
client holding a thousand connections (idle, or sending its headers a byte at a time) used
every descriptor of a process under systemd's default soft limit of 1,024: the web port
stopped answering and the bot's own sockets failed with "Too many open files". Here:

* At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (:func:`raise_open_file_limit`).
* The web server keeps at most :func:`connection_limit` connections, min(512, a quarter of the
  soft limit), in total: behind the documented reverse proxy every member comes from the
  proxy's address, so a limit per address would lock everyone out together. The other three
  quarters stay for Discord, Spotify and the database.
* At the limit, a new connection takes the place of the oldest one that is not in the middle
  of a request (idle between requests, or still sending its headers): a client holding many
  connections loses them one by one to whoever connects next, so ``/healthz`` and the link
  callback still get in. Only when every connection is running a request is the new one
  closed at once (no answer: the web server never answers 5xx).
* A connection idle for ``IDLE_TIMEOUT`` seconds, or that has not finished its headers that
  long after connecting, is closed (aiohttp's keep-alive timer, which also runs before the
  first request).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

IDLE_TIMEOUT: Final = 10.0
MAX_CONNECTIONS: Final = 512
WEB_SHARE: Final = 4  # the web server gets a quarter of the descriptors
LOG_EVERY: Final = 60.0  # at most one line a minute about connections at the limit
BACKLOG: Final = 128  # connections the kernel queues before we accept them (aiohttp's default)


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft >= hard):
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # an unlimited hard limit the kernel will not take
        log.debug("open files: the soft limit stays at %s (%s)", soft, exc)
        return soft
    log.debug("open files: soft limit raised from %s to %s", soft, hard)
    return hard


def connection_limit() -> int:
    """How many connections the web server keeps open at once."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // WEB_SHARE))


class _Refused(asyncio.Protocol):
    """A connection over the limit while every other one is busy: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class WebListener:
    """The web application on one address, with the connection limit and the timeouts."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int,
        idle_timeout: float = IDLE_TIMEOUT,
        runner_options: dict[str, Any] | None = None,
    ) -> None:
        self._max = max_connections
        self._busy: dict[RequestHandler, int] = {}  # connection -> requests running on it
        app.middlewares.append(self._track)
        self._runner = web.AppRunner(
            app, handle_signals=False, keepalive_timeout=idle_timeout, **(runner_options or {})
        )
        self._server: asyncio.AbstractServer | None = None
        self._young: list[tuple[RequestHandler, float]] = []
        self._logged_at = -LOG_EVERY
        self.replaced = 0  # idle connections closed for a newer one
        self.refused = 0  # connections closed at once: every other one was busy

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (``port`` 0 picks a free one). OSError when it cannot."""
        await self._runner.setup()
        inner = self._runner.server
        assert inner is not None, "set up just above"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._accept(inner), host, port, backlog=BACKLOG
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, then close every connection and the application."""
        if self._server is not None:
            self._server.close()
        await self._runner.cleanup()

    def _accept(self, server: web.Server) -> asyncio.Protocol:
        now = time.monotonic()
        live = _open(server)
        counted = set(live)
        # Accepted a moment ago, not yet in the server's list (asyncio tells the connection
        # it is made on the next turn of the loop, and accepts many in one turn).
        self._young = [(c, at) for c, at in self._young if c not in counted and now - at < 1.0]
        count = len(live) + len(self._young)
        if count >= self._max:
            idle = next((c for c in live if c not in self._busy), None)
            if idle is None:
                self.refused += 1
                self._note_limit(count)
                return _Refused()
            idle.force_close()  # frees its descriptor now, for the one arriving
            self.replaced += 1
            self._note_limit(count)
        connection = server()
        self._young.append((connection, now))
        return connection

    def _note_limit(self, count: int) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "web server: %d connections open, the most it keeps; each new one replaces the "
                "oldest idle one (or is closed when none is idle). Many idle connections from "
                "one place are a client holding them open.",
                count,
            )

    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        connection = request.protocol
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.pop(connection) - 1
            if left:
                self._busy[connection] = left


def _open(server: web.Server) -> list[RequestHandler]:
    """The server's connections still open, oldest first (a closed one may linger until its
    task ends)."""
    return [c for c in server.connections if c.transport is not None]


__all__ = [
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "WebListener",
    "connection_limit",
    "raise_open_file_limit",
]
