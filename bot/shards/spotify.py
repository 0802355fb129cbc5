"""Spotify is one app for every process: one request budget and one 429 hold per service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from bot.storage import Storage

log = logging.getLogger(__name__)


REQUESTS_CHANNEL: Final = "nowplaying_spotify_requests"
REQUESTS_FLUSH_SECONDS: Final = 0.5


class SharedRequestCount:
    """Spotify's request budget is one for the app: the interactive Web API requests (``/np``,
    ``/listening``...) of every process count in the polling budget of the one process that
    polls (the leader).

    Every request is counted locally (``note``: the local scheduler); a process that does not
    lead also adds it to a running count it sends the others at most every
    ``REQUESTS_FLUSH_SECONDS`` (``origin:count``); the leader counts what it receives. A
    count lost with a notification costs one window's precision, never a request.
    """

    def __init__(
        self,
        storage: Storage,
        note: Callable[[float, int], None],
        is_leader: Callable[[], bool],
        *,
        clock: Callable[[], float],
        flush_every: float = REQUESTS_FLUSH_SECONDS,
    ) -> None:
        self._storage = storage
        self._note = note
        self._is_leader = is_leader
        self._clock = clock
        self._flush_every = flush_every
        self._origin = secrets.token_hex(8)
        self._pending = 0
        self._flusher: asyncio.Task[None] | None = None
        self.received = 0

    def listening(self) -> AbstractAsyncContextManager[None]:
        return self._storage.listen(REQUESTS_CHANNEL, self._received)

    def note_request(self, now: float, count: int = 1) -> None:
        self._note(now, count)
        if self._is_leader():
            return
        self._pending += count
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="spotify-request-count")

    async def _flush(self) -> None:
        await asyncio.sleep(self._flush_every)
        count, self._pending = self._pending, 0
        if not count:
            return
        try:
            await self._storage.notify(REQUESTS_CHANNEL, f"{self._origin}:{count}")
        except Exception:  # the leader misses these requests for one window
            log.debug("could not tell the polling process about %d Spotify requests", count)

    def _received(self, payload: str) -> None:
        origin, _, raw = payload.partition(":")
        if origin == self._origin or not raw.isdigit() or not self._is_leader():
            return
        self.received += int(raw)
        self._note(self._clock(), int(raw))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher


__all__ = ["REQUESTS_CHANNEL", "SharedRequestCount"]
