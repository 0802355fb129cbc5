"""OAuth link states, links waiting for Spotify's Web API hold to end, and link results."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Literal

from bot.storage.base import Store, upsert_by_member

LinkStateStatus = Literal["ok", "unknown", "expired", "used"]


DEFAULT_LINK_STATE_TTL: Final = 600.0


DEFAULT_KEEP_USED_STATES_FOR: Final = 86400.0


@dataclass(frozen=True, slots=True)
class LinkStateResult:
    """``ok``: consumed now. ``used``: consumed before. ``expired``/``unknown``: refuse.

    ``discord_user_id`` is the member who asked for the link (None only for ``unknown``).
    """

    status: LinkStateStatus
    discord_user_id: int | None
    # What the callback that used the state made of it (None while it still works, or never
    # finished), and the member's Discord name as /link saw it.
    outcome: str | None = None
    discord_name: str | None = None


@dataclass(frozen=True, slots=True)
class RecentLinkState:
    """A member's newest state that still works (for /link's cooldown)."""

    sealed_state: bytes | None = field(repr=False)
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LinkResultView:
    """A result page. The names are there on the first view only (``first_view``)."""

    discord_user_id: int
    outcome: str
    first_view: bool
    spotify_name: str | None
    discord_name: str | None


@dataclass(frozen=True, slots=True)
class PendingLink:
    """A code exchanged while Spotify held the Web API; the grant is encrypted for the member."""

    discord_user_id: int
    state_hash: bytes
    sealed_grant: bytes = field(repr=False)
    discord_name: str | None
    created_at: float


def hash_link_state(state: str) -> bytes:
    """Only this digest is stored: a leaked database cannot complete someone's link."""
    return hashlib.sha256(state.encode("utf-8")).digest()


_PENDING_COLUMNS: Final = "discord_user_id, state_hash, sealed_grant, discord_name, created_at"


class LinkStatesStore(Store):
    """OAuth link states, links waiting for Spotify's Web API hold to end, and link results."""

    # --- OAuth link states ---------------------------------------------------------------------

    async def create_link_state(
        self,
        state: str,
        user_id: int,
        *,
        now: float,
        ttl: float = DEFAULT_LINK_STATE_TTL,
        discord_name: str | None = None,
        sealed_state: bytes | None = None,
        keep_per_member: int | None = None,
    ) -> None:
        """Remember an OAuth ``state`` (only its SHA-256) for ``user_id`` until ``now + ttl``.

        With ``keep_per_member``, the member's older states beyond that many are deleted in
        the same transaction (they stop working).
        """
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO link_states (state_hash, discord_user_id, created_at, expires_at, "
                "discord_name, sealed_state) VALUES (?, ?, ?, ?, ?, ?)",
                (hash_link_state(state), user_id, now, now + ttl, discord_name, sealed_state),
            )
            if keep_per_member is not None:
                await tx.execute(
                    "DELETE FROM link_states WHERE discord_user_id = ? AND state_hash NOT IN "
                    "(SELECT state_hash FROM link_states WHERE discord_user_id = ? "
                    "ORDER BY created_at DESC, state_hash LIMIT ?)",
                    (user_id, user_id, max(keep_per_member, 1)),
                )

    async def recent_link_state(
        self, user_id: int, *, created_since: float, now: float
    ) -> RecentLinkState | None:
        """The member's newest unused, unexpired state created at ``created_since`` or later."""
        row = await self._db.fetchone(
            "SELECT sealed_state, created_at, expires_at FROM link_states "
            "WHERE discord_user_id = ? AND used_at IS NULL AND created_at >= ? AND expires_at > ? "
            "ORDER BY created_at DESC LIMIT 1",
            (user_id, created_since, now),
        )
        if row is None:
            return None
        return RecentLinkState(
            sealed_state=bytes(row[0]) if row[0] is not None else None,
            created_at=float(row[1]),
            expires_at=float(row[2]),
        )

    async def consume_link_state(self, state: str, *, now: float) -> LinkStateResult:
        """Atomically use a state once.

        ``ok`` (marked used now) or ``used`` (consumed before, e.g. a page reload) carry the
        member; ``expired`` carries the member too; ``unknown`` carries None. A used state
        reports ``used`` even after it expired, as long as it is kept (see purge_link_states).
        """
        digest = hash_link_state(state)
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT discord_user_id, expires_at, used_at, outcome, discord_name "
                "FROM link_states WHERE state_hash = ?",
                (digest,),
            )
            if row is None:
                return LinkStateResult("unknown", None)
            owner = int(row[0])
            outcome = str(row[3]) if row[3] is not None else None
            name = str(row[4]) if row[4] is not None else None
            if row[2] is not None:
                return LinkStateResult("used", owner, outcome)
            if now >= float(row[1]):
                return LinkStateResult("expired", owner)
            await tx.execute(
                "UPDATE link_states SET used_at = ? WHERE state_hash = ?", (now, digest)
            )
        return LinkStateResult("ok", owner, discord_name=name)

    async def peek_link_state(self, state: str, *, now: float) -> LinkStateResult:
        """What ``consume_link_state`` would answer, without consuming anything."""
        row = await self._db.fetchone(
            "SELECT discord_user_id, expires_at, used_at, outcome FROM link_states "
            "WHERE state_hash = ?",
            (hash_link_state(state),),
        )
        if row is None:
            return LinkStateResult("unknown", None)
        owner = int(row[0])
        if row[2] is not None:
            return LinkStateResult("used", owner, str(row[3]) if row[3] is not None else None)
        if now >= float(row[1]):
            return LinkStateResult("expired", owner)
        return LinkStateResult("ok", owner)

    async def release_link_state(self, state: str) -> None:
        """Make a consumed state usable again (Spotify refused to do anything with it yet)."""
        await self._db.write(
            "UPDATE link_states SET used_at = NULL, outcome = NULL WHERE state_hash = ?",
            (hash_link_state(state),),
        )

    async def finish_link_state(
        self,
        state_hash: bytes,
        outcome: str,
        *,
        result_token: str | None = None,
        spotify_name: str | None = None,
    ) -> None:
        """Record what a used state came to; with ``result_token``, its one-time result page.

        Without one, the member's name is erased: nothing will show it.
        """
        await self._db.write(
            "UPDATE link_states SET outcome = ?, result_hash = ?, spotify_name = ?, "
            "discord_name = CASE WHEN ? THEN discord_name END "
            "WHERE state_hash = ?",
            (
                outcome,
                hash_link_state(result_token) if result_token is not None else None,
                spotify_name,
                result_token is not None,
                state_hash,
            ),
        )

    async def link_state_outcome(self, state: str) -> str | None:
        row = await self._db.fetchone(
            "SELECT outcome FROM link_states WHERE state_hash = ?", (hash_link_state(state),)
        )
        return str(row[0]) if row is not None and row[0] is not None else None

    async def open_link_result(
        self, token: str, *, now: float, names_for: float
    ) -> LinkResultView | None:
        """A result page by its token. The names come with the first view only, and only
        within ``names_for`` seconds of the link; they are erased once shown."""
        digest = hash_link_state(token)
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT discord_user_id, outcome, result_shown_at, spotify_name, discord_name, "
                "used_at FROM link_states WHERE result_hash = ?",
                (digest,),
            )
            if row is None or row[1] is None:
                return None
            first_view = row[2] is None and now - float(row[5] or 0.0) <= names_for
            if row[2] is None:
                await tx.execute(
                    "UPDATE link_states SET result_shown_at = ?, spotify_name = NULL, "
                    "discord_name = NULL WHERE result_hash = ?",
                    (now, digest),
                )
        return LinkResultView(
            discord_user_id=int(row[0]),
            outcome=str(row[1]),
            first_view=first_view,
            spotify_name=str(row[3]) if first_view and row[3] is not None else None,
            discord_name=str(row[4]) if first_view and row[4] is not None else None,
        )

    # --- links waiting for Spotify's Web API hold to end ----------------------------------------

    async def save_pending_link(self, pending: PendingLink) -> None:
        """Keep a member's exchanged grant (one per member: the newest wins)."""
        await self._db.write(
            upsert_by_member("pending_links", _PENDING_COLUMNS),
            (
                pending.discord_user_id,
                pending.state_hash,
                pending.sealed_grant,
                pending.discord_name,
                pending.created_at,
            ),
        )

    async def list_pending_links(self) -> list[PendingLink]:
        rows = await self._db.fetchall(
            "SELECT discord_user_id, state_hash, sealed_grant, discord_name, created_at "
            "FROM pending_links ORDER BY created_at"
        )
        return [
            PendingLink(
                discord_user_id=int(row[0]),
                state_hash=bytes(row[1]),
                sealed_grant=bytes(row[2]),
                discord_name=str(row[3]) if row[3] is not None else None,
                created_at=float(row[4]),
            )
            for row in rows
        ]

    async def delete_pending_link(self, user_id: int, state_hash: bytes | None = None) -> bool:
        """Forget a member's pending link; with ``state_hash``, only that one (not a newer one
        that replaced it meanwhile)."""
        if state_hash is None:
            removed = await self._db.write(
                "DELETE FROM pending_links WHERE discord_user_id = ?", (user_id,)
            )
        else:
            removed = await self._db.write(
                "DELETE FROM pending_links WHERE discord_user_id = ? AND state_hash = ?",
                (user_id, state_hash),
            )
        return removed > 0

    async def purge_link_states(
        self, *, now: float, keep_used_for: float = DEFAULT_KEEP_USED_STATES_FOR
    ) -> int:
        """Delete states that finished (were used, or expired unused) ``keep_used_for`` ago.

        Finished states are kept a while so that a reloaded or late callback page can say
        "already used" or "expired" instead of "unknown link". Returns how many were deleted.
        """
        return await self._db.write(
            "DELETE FROM link_states WHERE coalesce(used_at, expires_at) <= ?",
            (now - keep_used_for,),
        )
