"""IDENTIFY turns across the processes of one bot.

Discord lets a bot start ``max_concurrency`` sessions per 5 s: shard ``n`` belongs to bucket
``n % max_concurrency`` and a bucket may IDENTIFY once every 5 s, whichever process runs the
shard. Each IDENTIFY takes its bucket's lock in the shared database (a PostgreSQL advisory
lock) and keeps it 5 s after the IDENTIFY is sent, so the next one in that bucket, in any
process, waits its turn. A process that dies releases its lock with its connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from bot.aio.tasks import cancel_and_wait

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
        await cancel_and_wait(self._holders)


__all__ = ["IDENTIFY_INTERVAL", "IdentifyGate", "LockFactory"]
