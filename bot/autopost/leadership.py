"""Which process polls Spotify for auto-posting: exactly one at a time.

The leader holds a session-level advisory lock on a connection of its own
(``Storage.try_named_lock``); the others try again every ``retry`` seconds. When the leader
dies its connection closes, PostgreSQL frees the lock, and the next try of another process
takes it: a takeover within ``retry`` seconds plus the time the server needs to see the
connection gone (at once for a killed process: its socket closes). With SQLite (one process)
the process is always the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, Protocol

log = logging.getLogger(__name__)

LEADER_LOCK: Final = "autopost:leader"
LEADER_RETRY_SECONDS: Final = 3.0


class LeaderLock(Protocol):
    """The lock the leader holds (``bot.storage.Storage.try_named_lock``)."""

    def try_named_lock(self, name: str) -> AbstractAsyncContextManager[asyncio.Event | None]: ...


class Leadership:
    """``async with leadership.leading() as lost:`` returns once this process leads; ``lost``
    is set when the lock may have gone (the holder must stop polling then)."""

    def __init__(
        self, storage: LeaderLock, *, name: str = LEADER_LOCK, retry: float = LEADER_RETRY_SECONDS
    ) -> None:
        self._storage = storage
        self._name = name
        self._retry = retry
        self.is_leader = False
        self.tries = 0

    @property
    def retry(self) -> float:
        """Seconds between two tries to take the lead."""
        return self._retry

    @asynccontextmanager
    async def leading(
        self, on_wait: Callable[[], None] | None = None
    ) -> AsyncIterator[asyncio.Event]:
        """``on_wait`` is called each time another process was found leading. A process that
        led before steps back for one ``retry`` first: its connection was lost, another
        process gets the first chance."""
        if self.tries:
            await asyncio.sleep(self._retry)
        while True:
            self.tries += 1
            try:
                async with self._storage.try_named_lock(self._name) as lost:
                    if lost is not None:
                        self.is_leader = True
                        log.info("this process polls Spotify for auto-posting (the leader)")
                        try:
                            yield lost
                        finally:
                            self.is_leader = False
                        return
                if on_wait is not None:
                    on_wait()
            except Exception as exc:  # the database is away: ask again later
                log.warning("could not ask who polls for auto-posting (%s); trying again", exc)
            await asyncio.sleep(self._retry)


__all__ = ["LEADER_LOCK", "LEADER_RETRY_SECONDS", "Leadership"]
