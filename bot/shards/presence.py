"""Presence covers relayed between processes: the one that polls (the leader) polls nobody a
Discord presence covers in any process.

A process tells the others when one of its presences starts or stops covering a member
(``origin:cover:ids`` / ``origin:uncover:ids``), and announces everything it covers again every
``announce_every`` seconds. A receiver keeps another process's cover for ``ttl`` seconds from
the last announcement: a process that dies (kill -9, a lost database) leaves its members
unpolled for at most ``ttl``. One that stops cleanly says ``origin:gone:`` and its covers end at
once; one that starts asks ``origin:ask:`` and every process announces at once, so a process
that takes over polling soon after it started knows who is covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Final

from bot.aio.tasks import cancel_and_wait
from bot.autopost.coverage import PresenceCoverage
from bot.config import whole_number
from bot.storage import Notifications

log = logging.getLogger(__name__)

COVERS_CHANNEL: Final = "nowplaying_presence_covers"
ANNOUNCE_EVERY_SECONDS: Final = 5.0
COVER_TTL_SECONDS: Final = 15.0
PAYLOAD_LIMIT: Final = 7000  # bytes of member ids per notification (PostgreSQL allows 8000)

GuildFilter = Callable[[int], bool]


class PresenceCoverRelay:
    """``async with relay.running():`` for the life of the process (see the module doc)."""

    def __init__(
        self,
        storage: Notifications,
        coverage: PresenceCoverage,
        *,
        announce_every: float = ANNOUNCE_EVERY_SECONDS,
        ttl: float = COVER_TTL_SECONDS,
    ) -> None:
        self._storage, self._coverage, self._announce_every = storage, coverage, announce_every
        self._ttl = ttl
        self._origin = secrets.token_hex(8)
        self._clock = coverage.clock
        self._sending: set[asyncio.Task[None]] = set()
        self._in_order = asyncio.Lock()  # a cover and its uncover arrive in that order
        coverage.add_listener(self._changed_here)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._storage.listen(COVERS_CHANNEL, self._received):
            await self._send("ask", ())
            ticking = asyncio.create_task(self._tick(), name="presence-covers")
            try:
                yield
            finally:
                await cancel_and_wait([ticking])
                for task in list(self._sending):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 2.0)
                await self._send("gone", ())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._announce_every)
            self._coverage.expire()
            await self._announce()

    async def _announce(self) -> None:
        members = self._coverage.here()
        if members:
            await self._send("cover", members)

    # --- sending ------------------------------------------------------------------------

    def _changed_here(self, member_id: int, covered: bool) -> None:
        kind = "cover" if covered else "uncover"
        task = asyncio.create_task(self._send(kind, (member_id,)), name="presence-cover-notify")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, kind: str, members: Iterable[int]) -> None:
        prefix = f"{self._origin}:{kind}:"
        try:
            async with self._in_order:
                for chunk in _chunks([str(m) for m in members]):
                    await self._storage.notify(COVERS_CHANNEL, prefix + ",".join(chunk))
        except Exception as exc:  # covers expire on their own; the next announcement repeats
            log.warning("could not tell the other processes whom a presence covers (%s)", exc)

    # --- receiving ----------------------------------------------------------------------

    def _received(self, payload: str) -> None:
        origin, _, rest = payload.partition(":")
        kind, _, raw_ids = rest.partition(":")
        if not origin or origin == self._origin:
            return
        parsed = [whole_number(raw) for raw in raw_ids.split(",")] if raw_ids else []
        members = [m for m in parsed if m is not None]
        if len(members) != len(parsed):
            return  # malformed: ignored whole
        coverage = self._coverage
        if kind == "cover":
            until = self._clock() + self._ttl
            for member_id in members:
                coverage.cover(member_id, origin, until=until)
        elif kind == "uncover":
            for member_id in members:
                coverage.uncover(member_id, origin)
        elif kind == "gone":
            coverage.uncover_all_from(origin)
        elif kind == "ask":
            task = asyncio.create_task(self._announce(), name="presence-covers-answer")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    """Member ids in groups that fit one notification; one empty group when there are none."""
    chunk: list[str] = []
    size = 0
    for raw in ids:
        if chunk and size + len(raw) + 1 > PAYLOAD_LIMIT:
            yield chunk
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw) + 1
    yield chunk


__all__ = [
    "ANNOUNCE_EVERY_SECONDS",
    "COVERS_CHANNEL",
    "COVER_TTL_SECONDS",
    "PresenceCoverRelay",
]


def guild_filter(shard_count: int | None, shard_ids: Iterable[int] | None) -> GuildFilter | None:
    """Whether this process runs a guild's shard (``(guild_id >> 22) % shard_count``); None
    when it runs every shard (SHARD_COUNT unset, or every id named)."""
    if shard_count is None:
        return None
    mine = frozenset(shard_ids if shard_ids is not None else range(shard_count))
    if mine >= set(range(shard_count)):
        return None

    def serves(guild_id: int) -> bool:
        return (guild_id >> 22) % shard_count in mine

    return serves


__all__ += ["guild_filter"]
