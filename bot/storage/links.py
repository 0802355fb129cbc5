"""Linked Spotify accounts and their encrypted refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from bot.storage.base import Store, upsert_by_member
from bot.storage.engines import Row
from bot.storage.outbox import UNSENT_OF_MEMBER

LinkStatus = Literal["active", "broken"]


LINK_STATUSES: Final[tuple[LinkStatus, ...]] = ("active", "broken")


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    discord_user_id: int
    spotify_account_id: str
    spotify_user_id: str
    display_name: str
    refresh_token: bytes | None = field(repr=False)  # encrypted; None once the link broke
    scopes: str
    linked_at: float
    status: LinkStatus = "active"


class SpotifyAccountTaken(Exception):
    """The Spotify account is linked to another member; nothing was written."""


_ACCOUNT_COLUMNS: Final = (
    "discord_user_id, spotify_account_id, spotify_user_id, display_name, "
    "refresh_token, scopes, linked_at, status"
)


def _account_from_row(row: Row) -> LinkedAccount:
    status = str(row[7])
    if status not in LINK_STATUSES:  # the CHECK constraint makes this unreachable
        raise ValueError(f"unexpected link status {status!r}")
    token = row[4]
    return LinkedAccount(
        discord_user_id=int(row[0]),
        spotify_account_id=str(row[1]),
        spotify_user_id=str(row[2]),
        display_name=str(row[3]),
        refresh_token=bytes(token) if token is not None else None,
        scopes=str(row[5]),
        linked_at=float(row[6]),
        status=status,
    )


class LinksStore(Store):
    """Linked Spotify accounts and their encrypted refresh tokens."""

    # --- linked accounts -----------------------------------------------------------------------

    async def get_link(self, user_id: int) -> LinkedAccount | None:
        row = await self._db.fetchone(
            f"SELECT {_ACCOUNT_COLUMNS} FROM linked_accounts WHERE discord_user_id = ?",  # noqa: S608
            (user_id,),
        )
        return _account_from_row(row) if row is not None else None

    async def save_link(self, account: LinkedAccount) -> Literal["linked", "renewed"]:
        """Insert or replace the member's link; "renewed" when it was already this account.

        A Spotify account belongs to one member at most and is never moved: when it is linked
        to another member, nothing is written and SpotifyAccountTaken is raised.
        """
        if account.status not in LINK_STATUSES:
            raise ValueError(f"status must be one of {LINK_STATUSES}")
        async with self._db.transaction() as tx:
            owner = await tx.fetchone(
                "SELECT discord_user_id, status FROM linked_accounts WHERE spotify_account_id = ?",
                (account.spotify_account_id,),
            )
            if owner is not None and int(owner[0]) != account.discord_user_id:
                raise SpotifyAccountTaken("the Spotify account is linked to another member")
            await tx.execute(
                upsert_by_member("linked_accounts", _ACCOUNT_COLUMNS),
                (
                    account.discord_user_id,
                    account.spotify_account_id,
                    account.spotify_user_id,
                    account.display_name,
                    account.refresh_token,
                    account.scopes,
                    account.linked_at,
                    account.status,
                ),
            )
        # Renewed: the same working link again. A broken one coming back is linked anew.
        return "renewed" if owner is not None and owner[1] == "active" else "linked"

    async def update_refresh_token(self, user_id: int, encrypted: bytes) -> None:
        """Store a rotated refresh token. Does nothing when the member is no longer linked."""
        await self._db.write(
            "UPDATE linked_accounts SET refresh_token = ? WHERE discord_user_id = ?",
            (encrypted, user_id),
        )

    async def mark_link_broken(self, user_id: int) -> None:
        """Forget the refresh token and flag the link, keeping who it was for the member."""
        await self._db.write(
            "UPDATE linked_accounts SET refresh_token = NULL, status = 'broken' "
            "WHERE discord_user_id = ?",
            (user_id,),
        )

    async def delete_member(self, user_id: int) -> bool:
        """Forget everything about a member (link, settings, last posts, posts not sent yet,
        pending link states).

        The privacy choice (``member_privacy``) stays: a private member who unlinks must not
        become visible through their Discord status. Returns True when anything was stored.
        """
        async with self._db.transaction() as tx:
            removed = 0
            for table in (
                "linked_accounts",
                "member_settings",
                "member_guild_settings",
                "last_posts",
                "link_states",
                "pending_links",
            ):
                removed += await tx.execute(
                    f"DELETE FROM {table} WHERE discord_user_id = ?",  # noqa: S608
                    (user_id,),
                )
            # The listening log goes too; it alone is not "anything to unlink". So does an
            # explicit "server" choice (the default anyway): it would keep logging their
            # Discord status. A "private" choice stays.
            for table in ("plays", "listening_guilds"):
                await tx.execute(
                    f"DELETE FROM {table} WHERE discord_user_id = ?",  # noqa: S608
                    (user_id,),
                )
            await tx.execute(
                "DELETE FROM member_privacy WHERE discord_user_id = ? AND visibility = 'server'",
                (user_id,),
            )
            await tx.execute(UNSENT_OF_MEMBER, (user_id,))  # no post of theirs goes out later
        return removed > 0

    async def count_links(self, status: str = "active") -> int:
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM linked_accounts WHERE status = ?", (status,)
        )
        return int(row[0]) if row is not None else 0

    async def list_active_user_ids(self) -> list[int]:
        rows = await self._db.fetchall(
            "SELECT discord_user_id FROM linked_accounts WHERE status = 'active' "
            "ORDER BY discord_user_id"
        )
        return [int(row[0]) for row in rows]
