"""``Storage``, the opened database: the engine plumbing every part of the bot shares (health,
locks and notifications across processes, the WAL checkpoint, closing) and one store per
concern as an attribute (``storage.links``, ``storage.privacy``...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from bot.storage.base import Handle
from bot.storage.colours import ColoursStore
from bot.storage.engines import Database, Dialect
from bot.storage.last_posts import LastPostsStore
from bot.storage.link_states import LinkStatesStore
from bot.storage.links import LinksStore
from bot.storage.listening import ListeningStore
from bot.storage.migrate import open_migrated
from bot.storage.outbox import OutboxStore
from bot.storage.privacy import PrivacyStore
from bot.storage.sealed import SealedStore
from bot.storage.settings import SettingsStore
from bot.storage.spotify_budget import SpotifyBudgetStore


class Notifications(Protocol):
    """Waking the other processes that share the database (``Storage.notify``/``listen``)."""

    async def notify(self, channel: str, payload: str) -> None: ...

    def listen(
        self, channel: str, callback: Callable[[str], None]
    ) -> AbstractAsyncContextManager[None]: ...


# One Protocol per store that consumers needing more than one thing (several stores, or a
# store and the plumbing) combine into the narrow view they take; ``Storage`` satisfies each.


class HasLinks(Protocol):
    @property
    def links(self) -> LinksStore: ...


class HasLinkStates(Protocol):
    @property
    def link_states(self) -> LinkStatesStore: ...


class HasSettings(Protocol):
    @property
    def settings(self) -> SettingsStore: ...


class HasPrivacy(Protocol):
    @property
    def privacy(self) -> PrivacyStore: ...


class HasLastPosts(Protocol):
    @property
    def last_posts(self) -> LastPostsStore: ...


class HasOutbox(Protocol):
    @property
    def outbox(self) -> OutboxStore: ...


class HasListening(Protocol):
    @property
    def listening(self) -> ListeningStore: ...


class HasSpotifyBudget(Protocol):
    @property
    def spotify_budget(self) -> SpotifyBudgetStore: ...


@dataclass(frozen=True, eq=False, repr=False)
class Storage:
    """The bot's database. Open with ``await Storage.open(path_or_url)`` or ``async with``.

    ``path_or_url``: an SQLite file (or ``":memory:"``), or a ``postgresql://`` URL. A frozen
    record: the engine, one store per concern over it (:meth:`over` builds them), and the
    migrations that opening applied (none when the database was current).
    """

    database: Database
    links: LinksStore
    link_states: LinkStatesStore
    settings: SettingsStore
    privacy: PrivacyStore
    last_posts: LastPostsStore
    outbox: OutboxStore
    colours: ColoursStore
    listening: ListeningStore
    sealed: SealedStore
    spotify_budget: SpotifyBudgetStore
    applied_migrations: tuple[int, ...] = ()

    @classmethod
    def over(cls, database: Database, *, applied_migrations: tuple[int, ...] = ()) -> Self:
        """Every store over one engine (already migrated, or only read by ``check``)."""
        db = Handle(database)
        return cls(
            database,
            LinksStore(db),
            LinkStatesStore(db),
            SettingsStore(db),
            PrivacyStore(db),
            LastPostsStore(db),
            OutboxStore(db),
            ColoursStore(db),
            ListeningStore(db),
            SealedStore(db),
            SpotifyBudgetStore(db),
            applied_migrations=applied_migrations,
        )

    @classmethod
    async def open(cls, path_or_url: Path | str) -> Self:
        """Open (creating the SQLite folder and file when missing) and migrate to the latest."""
        database, applied = await open_migrated(path_or_url)
        return cls.over(database, applied_migrations=applied)

    @property
    def dialect(self) -> Dialect:
        return self.database.dialect

    async def close(self) -> None:
        """Close the connection after any running transaction finishes. Idempotent."""
        await self.database.close()

    @property
    def closed(self) -> bool:
        return self.database.closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Storage {self.dialect} {'closed' if self.closed else 'open'}>"

    # --- health --------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self.database.schema_version()

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when a trivial query answers within ``timeout`` seconds (for /healthz)."""
        return await self.database.ping(timeout)

    @asynccontextmanager
    async def secure_delete(self) -> AsyncIterator[None]:
        """Within the block, content that statements free or overwrite is zeroed in the file
        (SQLite's ``PRAGMA secure_delete``), so replaced secrets leave no copy in free space."""
        async with self.database.scrub_freed_content():
            yield

    def member_lock(self, user_id: int) -> AbstractAsyncContextManager[None]:
        """Held while a member's refresh token is read, refreshed and stored: across every
        process sharing the database, so a rotated refresh token is never lost to a race."""
        return self.database.lock(f"member:{int(user_id)}")

    def named_lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """A lock across every process sharing the database (e.g. IDENTIFY turns)."""
        return self.database.lock(name)

    def try_named_lock(self, name: str) -> AbstractAsyncContextManager[asyncio.Event | None]:
        """Take a lock across every process sharing the database only if it is free: yields
        None when another process holds it, else an event set when it may have been lost
        (the database connection holding it went away). SQLite: always taken, never lost."""
        return self.database.try_lock(name)

    async def notify(self, channel: str, payload: str) -> None:
        """Wake the other processes sharing the database (nothing to do on SQLite)."""
        await self.database.notify(channel, payload)

    def listen(
        self, channel: str, callback: Callable[[str], None]
    ) -> AbstractAsyncContextManager[None]:
        return self.database.listen(channel, callback)

    async def checkpoint_truncate(self) -> bool:
        """SQLite: copy the WAL into the database and truncate it to zero bytes, so no old page
        image survives in the ``-wal`` file. False when another connection kept it busy."""
        return await self.database.checkpoint_truncate()
