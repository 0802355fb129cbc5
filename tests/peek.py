"""What tests and benchmarks read of the bot's state that the bot itself never needs: row
counts straight from the database, and the sizes of in-memory caches (read through private
attributes on purpose: the production classes offer no such accessors)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.autopost.check_queue import CheckKind
from bot.autopost.coverage import PresenceCoverage
from bot.autopost.scheduler import PollScheduler
from bot.autopost.service import AutopostService
from bot.listening.log import ListeningLog
from bot.logs import SecretMasker
from bot.members.tokens import TokenManager
from bot.pictures.images import ByteBoundedLru
from bot.storage import Storage
from bot.storage.migrate import open_migrated
from bot.web.connections import WebListener


async def _count(storage: Storage, sql: str, parameters: tuple[object, ...] = ()) -> int:
    rows = await storage.database.fetchall(sql, parameters)
    return int(rows[0][0])


async def count_link_states(storage: Storage, member_id: int | None = None) -> int:
    if member_id is None:
        return await _count(storage, "SELECT COUNT(*) FROM link_states")
    return await _count(
        storage, "SELECT COUNT(*) FROM link_states WHERE discord_user_id = ?", (member_id,)
    )


async def count_plays(storage: Storage) -> int:
    return await _count(storage, "SELECT COUNT(*) FROM plays")


async def spotify_account_owner(storage: Storage, spotify_account_id: str) -> int | None:
    rows = await storage.database.fetchall(
        "SELECT discord_user_id FROM linked_accounts WHERE spotify_account_id = ?",
        (spotify_account_id,),
    )
    return int(rows[0][0]) if rows else None


async def global_autopost_opt_in(storage: Storage, member_id: int) -> bool | None:
    """The opt-in a member chose before it was per server (None: never chose)."""
    rows = await storage.database.fetchall(
        "SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?", (member_id,)
    )
    return None if not rows or rows[0][0] is None else bool(rows[0][0])


async def database_at_version(path: Path, version: int) -> None:
    """Create (or migrate) an SQLite file up to exactly ``version`` and close it."""
    database, _ = await open_migrated(path, version)
    await database.close()


async def log_idle(history: ListeningLog, timeout: float = 5.0) -> None:
    """Until every recording the log started in the background has finished."""
    forever = ("listening-log-prune", "listening-log-fills")
    pending = [t for t in history._tasks if t.get_name() not in forever]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


def is_covered(coverage: PresenceCoverage, member_id: int) -> bool:
    return member_id in coverage._covers


def cached_token_count(tokens: TokenManager) -> int:
    return len(tokens._cache)


def member_lock_count(tokens: TokenManager) -> int:
    return len(tokens._locks)


def secret_count(masker: SecretMasker) -> int:
    return len(masker._pinned) + len(masker._runtime)


def cached_bytes(cache: ByteBoundedLru) -> int:
    return cache._bytes


def next_check_kind(scheduler: PollScheduler, member_id: int) -> CheckKind | None:
    """What the member's next check is planned as."""
    state = scheduler._queue.get(member_id)
    return None if state is None else state.kind


def check_purpose(scheduler: PollScheduler, member_id: int) -> CheckKind | None:
    """What the member's check in flight was planned as (None: none in flight)."""
    state = scheduler._queue.get(member_id)
    return state.purpose if state is not None and state.in_flight else None


def is_paused(scheduler: PollScheduler, member_id: int) -> bool:
    state = scheduler._queue.get(member_id)
    return state is not None and state.paused


def is_in_flight(scheduler: PollScheduler, member_id: int) -> bool:
    state = scheduler._queue.get(member_id)
    return state is not None and state.in_flight


def polls_in_flight(service: AutopostService) -> int:
    return service.parts.loop.in_flight


def open_connections(listener: WebListener) -> int:
    server = listener._runner.server
    return 0 if server is None else sum(c.transport is not None for c in server.connections)
