"""Every query of the bot, written once for SQLite and PostgreSQL (``bot.backends``).

``Storage`` is the one object the app opens: ``base`` holds the plumbing (engine, transactions,
health, locks, notifications) and each other module one concern's queries and records, as a
mixin on that base.

Queries use ``?`` placeholders and the SQL both engines share. Every change runs in a write
transaction of the backend (rolled back on any error) that serialises writers across every
process sharing the database, so a read-then-write inside one never races; reads are single
statements.

Timestamps are floats of Unix time (``time.time()``). Refresh tokens arrive and leave here
already encrypted (``bot.crypto.TokenCipher``); this module never sees plaintext.
"""

from __future__ import annotations

from bot.storage.base import StorageBase
from bot.storage.colours import ColoursStore
from bot.storage.last_posts import LastPost, LastPostsStore
from bot.storage.link_states import (
    LinkResultView,
    LinkStateResult,
    LinkStatesStore,
    PendingLink,
    RecentLinkState,
    hash_link_state,
)
from bot.storage.links import LinkedAccount, LinksStore, LinkStatus, SpotifyAccountTaken
from bot.storage.listening import ListeningStore, Play, Recap, RecapAlbum, RecapEntry
from bot.storage.outbox import OutboxPost, OutboxStore
from bot.storage.privacy import PrivacyStore, Visibility
from bot.storage.settings import GuildSettings, SettingsStore


class Storage(
    LinksStore,
    LinkStatesStore,
    SettingsStore,
    PrivacyStore,
    LastPostsStore,
    OutboxStore,
    ColoursStore,
    ListeningStore,
    StorageBase,
):
    """The bot's database. Open with ``await Storage.open(path_or_url)`` or ``async with``.

    ``path_or_url``: an SQLite file (or ``":memory:"``), or a ``postgresql://`` URL.
    """


__all__ = [
    "GuildSettings",
    "LastPost",
    "LinkResultView",
    "LinkStateResult",
    "LinkStatus",
    "LinkedAccount",
    "OutboxPost",
    "PendingLink",
    "Play",
    "Recap",
    "RecapAlbum",
    "RecapEntry",
    "RecentLinkState",
    "SpotifyAccountTaken",
    "Storage",
    "Visibility",
    "hash_link_state",
]
