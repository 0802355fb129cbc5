"""Spotify is one app for every process: one request budget and one 429 hold per service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from bot.aio.tasks import cancel_and_wait
from bot.config import whole_number
from bot.spotify.http import SERVICES, SpotifySender, SpotifyService
from bot.storage import Notifications

log = logging.getLogger(__name__)


REQUESTS_CHANNEL: Final = "nowplaying_spotify_requests"
REQUESTS_FLUSH_SECONDS: Final = 0.5
# A count above this is garbage: no process makes ten thousand requests in half a second,
# and one huge count would fill the polling budget for good.
MOST_REQUESTS_PER_COUNT: Final = 10_000
# ``until`` of a hold: Unix time in seconds, ASCII digits with at most a fraction.
_UNIX_TIME = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


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
        storage: Notifications,
        note: Callable[[float, int], None],
        is_leader: Callable[[], bool],
        *,
        clock: Callable[[], float],
        flush_every: float = REQUESTS_FLUSH_SECONDS,
    ) -> None:
        self._storage, self._note, self._is_leader = storage, note, is_leader
        self._clock, self._flush_every = clock, flush_every
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
        count = whole_number(raw)
        if origin == self._origin or not self._is_leader():
            return
        if count is None or not 0 < count <= MOST_REQUESTS_PER_COUNT:
            return  # malformed, or more than any process sends: it would stop polling
        self.received += count
        self._note(self._clock(), count)

    async def close(self) -> None:
        if self._flusher is not None:
            await cancel_and_wait([self._flusher])


HOLDS_CHANNEL: Final = "nowplaying_spotify_holds"
# A hold announced for longer than this is garbage (Spotify's longest waits are hours).
LONGEST_HOLD_SECONDS: Final = 86_400.0


class SharedSpotifyHold:
    """A 429 answered to any process holds that Spotify service (accounts or Web API) in
    every process until the same moment.

    The process that got the 429 holds the service itself (``SpotifySender``) and tells the
    others ``origin:service:until:quota`` (``until``: Unix time, as the processes share no
    monotonic clock; ``quota``: 1 when the answer said QUOTA_EXCEEDED). A receiver holds the
    service as long, never shorter than a hold it already keeps; a malformed payload is
    ignored. A process that misses the notification still obeys the 429s it gets itself.
    """

    def __init__(
        self,
        storage: Notifications,
        sender: SpotifySender,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._sender = sender
        self._wall_clock = wall_clock
        self._origin = secrets.token_hex(8)
        self._sending: set[asyncio.Task[None]] = set()
        self.received = 0  # holds applied from other processes (tests, logs)
        sender.add_hold_listener(self._held_here)

    def listening(self) -> AbstractAsyncContextManager[None]:
        return self._storage.listen(HOLDS_CHANNEL, self._received)

    def _held_here(self, service: SpotifyService, seconds: float, quota_exceeded: bool) -> None:
        until = self._wall_clock() + seconds
        payload = f"{self._origin}:{service}:{until:.3f}:{int(quota_exceeded)}"
        task = asyncio.create_task(self._send(payload), name="spotify-hold-notify")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, payload: str) -> None:
        try:
            await self._storage.notify(HOLDS_CHANNEL, payload)
        except Exception:  # each process still obeys the 429s it gets itself
            log.warning("could not tell the other processes about Spotify's rate limit")

    def _received(self, payload: str) -> None:
        parts = payload.split(":")
        if len(parts) != 4 or parts[0] == self._origin or parts[3] not in ("0", "1"):
            return
        service = next((s for s in SERVICES if s == parts[1]), None)
        if service is None or not _UNIX_TIME.fullmatch(parts[2]):
            return
        until = float(parts[2])
        seconds = min(until - self._wall_clock(), LONGEST_HOLD_SECONDS)
        if self._sender.extend_hold(service, seconds, quota_exceeded=parts[3] == "1"):
            self.received += 1
            log.warning(
                "spotify: rate limited in another process, holding every %s request for %.0fs",
                "accounts service" if service == "accounts" else "Web API",
                seconds,
            )

    async def close(self) -> None:
        for task in list(self._sending):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)


__all__ = [
    "HOLDS_CHANNEL",
    "LONGEST_HOLD_SECONDS",
    "REQUESTS_CHANNEL",
    "SharedRequestCount",
    "SharedSpotifyHold",
]
