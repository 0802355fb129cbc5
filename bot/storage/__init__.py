"""Everything about the database: the stores, the engines, the migrations.

``Storage`` (``storage.py``) is the opened database: the engine plumbing every part of the bot
shares (health, locks and notifications across processes, the WAL checkpoint) and one store per
concern as an attribute. Each store is a class owning its concern's SQL and records, built on
the ``Handle`` every store shares (``base.py``: the engine, transactions, reads):

* ``storage.links``: linked accounts and their encrypted refresh tokens (``links.py``)
* ``storage.link_states``: OAuth link states, pending links, link results (``link_states.py``)
* ``storage.settings``: guild settings and members' auto-post opt-in (``settings.py``)
* ``storage.privacy``: members' visibility (``privacy.py``)
* ``storage.last_posts``: the auto-post's last messages (``last_posts.py``)
* ``storage.outbox``: the auto-post outbox (``outbox.py``)
* ``storage.colours``: embed colours picked from album art (``colours.py``)
* ``storage.listening``: the listening log and the recap (``listening.py``)
* ``storage.sealed``: every encrypted value, whichever table holds it (``sealed.py``: key
  rotation and ``check``)
* ``storage.spotify_budget``: Spotify calls per minute, the quota hold (``spotify_budget.py``)

A consumer takes the store it uses, or a narrow Protocol of the stores and plumbing it calls,
which ``Storage`` satisfies. Under the stores, ``engines`` runs the SQL (SQLite or PostgreSQL);
``migrations`` holds the schema's history as data files and ``migrate`` the one runner.

Queries use ``?`` placeholders and the SQL both engines share. Every change runs in a write
transaction of the engine (rolled back on any error) that serialises writers across every
process sharing the database, so a read-then-write inside one never races; reads are single
statements.

Timestamps are floats of Unix time (``time.time()``). Refresh tokens arrive and leave here
already encrypted (``bot.crypto.TokenCipher``); this package never sees plaintext.
"""

from __future__ import annotations

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
from bot.storage.sealed import SealedStore, SealedValue
from bot.storage.settings import GuildSettings, SettingsStore
from bot.storage.spotify_budget import CallCountRow, SpotifyBudgetStore, SpotifyQuota
from bot.storage.storage import (
    HasLastPosts,
    HasLinks,
    HasLinkStates,
    HasListening,
    HasOutbox,
    HasPrivacy,
    HasSettings,
    HasSpotifyBudget,
    Notifications,
    Storage,
)

__all__ = [
    "CallCountRow",
    "ColoursStore",
    "GuildSettings",
    "HasLastPosts",
    "HasLinkStates",
    "HasLinks",
    "HasListening",
    "HasOutbox",
    "HasPrivacy",
    "HasSettings",
    "HasSpotifyBudget",
    "LastPost",
    "LastPostsStore",
    "LinkResultView",
    "LinkStateResult",
    "LinkStatesStore",
    "LinkStatus",
    "LinkedAccount",
    "LinksStore",
    "ListeningStore",
    "Notifications",
    "OutboxPost",
    "OutboxStore",
    "PendingLink",
    "Play",
    "PrivacyStore",
    "Recap",
    "RecapAlbum",
    "RecapEntry",
    "RecentLinkState",
    "SealedStore",
    "SealedValue",
    "SettingsStore",
    "SpotifyAccountTaken",
    "SpotifyBudgetStore",
    "SpotifyQuota",
    "Storage",
    "Visibility",
    "hash_link_state",
]
