"""What the processes of one bot coordinate: IDENTIFY turns, and member changes.

Discord lets a bot start ``max_concurrency`` sessions per 5 s: shard ``n`` belongs to bucket
``n % max_concurrency`` and a bucket may IDENTIFY once every 5 s, whichever process runs the
shard. Each IDENTIFY takes its bucket's lock in the shared database (a PostgreSQL advisory
lock) and keeps it 5 s after the IDENTIFY is sent, so the next one in that bucket, in any
process, waits its turn. A process that dies releases its lock with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from bot.storage import Storage

log = logging.getLogger(__name__)

IDENTIFY_INTERVAL: Final = 5.0

LockFactory = Callable[[str], AbstractAsyncContextManager[None]]


class IdentifyGate:
    def __init__(
        self,
        lock: LockFactory,
        max_concurrency: Callable[[], Awaitable[int]],
        *,
        interval: float = IDENTIFY_INTERVAL,
    ) -> None:
        self._lock = lock
        self._max_concurrency = max_concurrency
        self._interval = interval
        self._concurrency: int | None = None
        self._holders: set[asyncio.Task[None]] = set()

    async def _buckets(self) -> int:
        if self._concurrency is None:
            try:
                self._concurrency = max(1, await self._max_concurrency())
            except Exception as exc:  # Discord said nothing useful: the safe answer is 1
                log.debug("max_concurrency unknown (%s); identifying one at a time", exc)
                return 1
        return self._concurrency

    async def wait_turn(self, shard_id: int) -> None:
        """Return when this shard may IDENTIFY; the bucket stays taken for the interval."""
        bucket = shard_id % await self._buckets()
        acquired = asyncio.Event()
        holder = asyncio.create_task(self._hold(bucket, acquired), name=f"identify-turn-{bucket}")
        self._holders.add(holder)
        holder.add_done_callback(self._holders.discard)
        waiter = asyncio.create_task(acquired.wait())
        try:
            await asyncio.wait({holder, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            holder.cancel()
            raise
        finally:
            waiter.cancel()
        if not acquired.is_set():
            holder.result()  # the lock could not be taken: raise why
        log.debug("shard %s identifies (bucket %s)", shard_id, bucket)

    async def _hold(self, bucket: int, acquired: asyncio.Event) -> None:
        async with self._lock(f"identify:{bucket}"):
            acquired.set()
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        for holder in list(self._holders):
            holder.cancel()
        for holder in list(self._holders):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await holder


MEMBER_CHANNEL: Final = "nowplaying_members"


class MemberChangeRelay:
    """What one process changes for a member, the others apply to what they keep in memory.

    The database holds the change already; the notification only says "member N: look again"
    (``linked``, ``unlinked``, ``visibility``; ``settings``: auto-post channels or opt-ins),
    tagged with the sending process so it skips its own. Another process re-reads what it
    needs: who it follows for auto-posting, the private members it must not show, the cached
    access token of a member who unlinked.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        on_linked: Callable[[int], Awaitable[None]],
        on_unlinked: Callable[[int], None],
        on_visibility: Callable[[int], Awaitable[None]],
        on_settings: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._storage = storage
        self._on_linked = on_linked
        self._on_unlinked = on_unlinked
        self._on_visibility = on_visibility
        self._on_settings = on_settings
        self._origin = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()

    def listening(self) -> AbstractAsyncContextManager[None]:
        return self._storage.listen(MEMBER_CHANNEL, self._received)

    # --- sending (local listeners) ----------------------------------------------------------

    async def linked(self, member_id: int, *_: object) -> None:
        await self._send("linked", member_id)

    def unlinked(self, member_id: int) -> None:
        self._spawn(self._send("unlinked", member_id))

    def visibility_changed(self, member_id: int) -> None:
        self._spawn(self._send("visibility", member_id))

    def settings_changed(self) -> None:
        """Auto-post settings (music channels, opt-ins) changed here."""
        self._spawn(self._send("settings", 0))

    async def _send(self, kind: str, member_id: int) -> None:
        try:
            await self._storage.notify(MEMBER_CHANNEL, f"{self._origin}:{kind}:{member_id}")
        except Exception:  # the database has the change; other processes see it on restart
            log.warning("could not tell the other processes that member %s %s", member_id, kind)

    # --- receiving --------------------------------------------------------------------------

    def _received(self, payload: str) -> None:
        origin, _, rest = payload.partition(":")
        kind, _, raw_id = rest.partition(":")
        if origin == self._origin or not raw_id.isdigit():
            return
        member_id = int(raw_id)
        if kind == "linked":
            self._spawn(self._on_linked(member_id))
        elif kind == "unlinked":
            self._on_unlinked(member_id)
        elif kind == "visibility":
            self._spawn(self._on_visibility(member_id))
        elif kind == "settings" and self._on_settings is not None:
            self._spawn(self._on_settings())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("applying a change from another process failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["IDENTIFY_INTERVAL", "MEMBER_CHANNEL", "IdentifyGate", "MemberChangeRelay"]


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


__all__ += ["REQUESTS_CHANNEL", "SharedRequestCount"]
