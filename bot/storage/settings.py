"""Guild settings (the music channel) and members' auto-post opt-in, globally and per server."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.storage.base import Store, upsert_by_member
from bot.storage.outbox import UNSENT_OF_MEMBER


@dataclass(frozen=True, slots=True)
class GuildSettings:
    guild_id: int
    music_channel_id: int | None
    autopost_notice: str | None


class SettingsStore(Store):
    """Guild settings (the music channel) and members' auto-post opt-in, globally and per server."""

    # --- guild settings ------------------------------------------------------------------------

    async def get_guild_settings(self, guild_id: int) -> GuildSettings | None:
        row = await self._db.fetchone(
            "SELECT guild_id, music_channel_id, autopost_notice FROM guild_settings "
            "WHERE guild_id = ?",
            (guild_id,),
        )
        if row is None:
            return None
        return GuildSettings(
            guild_id=int(row[0]),
            music_channel_id=int(row[1]) if row[1] is not None else None,
            autopost_notice=str(row[2]) if row[2] is not None else None,
        )

    async def _set_channel(
        self, guild_id: int, channel_id: int | None, notice: str | None, now: float
    ) -> None:
        async with self._db.transaction() as tx:
            previous = await tx.fetchone(
                "SELECT music_channel_id FROM guild_settings WHERE guild_id = ?", (guild_id,)
            )
            await tx.execute(
                """
                INSERT INTO guild_settings (guild_id, music_channel_id, autopost_notice, updated_at)
                VALUES (?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET
                    music_channel_id = excluded.music_channel_id,
                    autopost_notice = excluded.autopost_notice,
                    updated_at = excluded.updated_at
                """,
                (guild_id, channel_id, notice, now),
            )
            # Posts in a channel the guild no longer uses must not suppress future posts there.
            if previous is not None and previous[0] is not None and previous[0] != channel_id:
                await tx.execute("DELETE FROM last_posts WHERE channel_id = ?", (previous[0],))

    async def set_music_channel(
        self, guild_id: int, channel_id: int | None, *, now: float | None = None
    ) -> None:
        """Set (or with None, unset) the guild's auto-post channel; clears any notice.

        When the channel changes, the last-post records of the previous channel are dropped.
        """
        await self._set_channel(guild_id, channel_id, None, time.time() if now is None else now)

    async def disable_autopost(
        self, guild_id: int, notice: str, *, now: float | None = None
    ) -> None:
        """Stop auto-posting in the guild and keep ``notice`` for the admin to read."""
        await self._set_channel(guild_id, None, notice, time.time() if now is None else now)

    async def clear_autopost_notice(self, guild_id: int) -> None:
        await self._db.write(
            "UPDATE guild_settings SET autopost_notice = NULL WHERE guild_id = ?", (guild_id,)
        )

    async def list_music_channels(self) -> dict[int, int]:
        """guild id -> auto-post channel id, for every guild that has one."""
        rows = await self._db.fetchall(
            "SELECT guild_id, music_channel_id FROM guild_settings "
            "WHERE music_channel_id IS NOT NULL ORDER BY guild_id"
        )
        return {int(row[0]): int(row[1]) for row in rows}

    # --- member settings -----------------------------------------------------------------------

    async def set_autopost_opt_in(
        self, user_id: int, enabled: bool, *, now: float | None = None
    ) -> None:
        """The choice for every server without one of its own. Opting out drops the member's
        posts not sent yet in those servers, in the same transaction."""
        async with self._db.transaction() as tx:
            await tx.execute(
                upsert_by_member("member_settings", "discord_user_id, autopost_opt_in, updated_at"),
                (user_id, int(bool(enabled)), time.time() if now is None else now),
            )
            if not enabled:
                await tx.execute(
                    f"{UNSENT_OF_MEMBER} AND guild_id NOT IN (SELECT guild_id FROM "  # noqa: S608
                    "member_guild_settings WHERE discord_user_id = ? AND autopost_opt_in = 1)",
                    (user_id, user_id),
                )

    async def get_guild_autopost_opt_in(self, user_id: int, guild_id: int) -> bool | None:
        """The member's auto-post choice in one server: the choice made there, else the choice
        made before it was per server (it applies everywhere until changed), else None."""
        row = await self._db.fetchone(
            """
            SELECT coalesce(
                (SELECT autopost_opt_in FROM member_guild_settings
                 WHERE discord_user_id = ? AND guild_id = ?),
                (SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?)
            )
            """,
            (user_id, guild_id, user_id),
        )
        if row is None or row[0] is None:
            return None
        return bool(row[0])

    async def set_guild_autopost_opt_in(
        self, user_id: int, guild_id: int, enabled: bool, *, now: float | None = None
    ) -> None:
        """``/autopost me`` in one server; other servers keep their own (or the old) choice.
        Opting out drops the member's posts not sent yet in that server, in the same
        transaction."""
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO member_guild_settings (discord_user_id, guild_id, autopost_opt_in,
                                                   updated_at)
                VALUES (?, ?, ?, ?)
                ON CONFLICT (discord_user_id, guild_id) DO UPDATE SET
                    autopost_opt_in = excluded.autopost_opt_in,
                    updated_at = excluded.updated_at
                """,
                (user_id, guild_id, int(bool(enabled)), time.time() if now is None else now),
            )
            if not enabled:
                await tx.execute(f"{UNSENT_OF_MEMBER} AND guild_id = ?", (user_id, guild_id))

    async def get_autopost_opt_in_anywhere(self, user_id: int) -> bool | None:
        """Summary over every server: True when the member opted in somewhere (here or before
        it was per server), False when they opted out before it was per server and in
        nowhere since, None otherwise (the default of each server applies)."""
        row = await self._db.fetchone(
            """
            SELECT
                (SELECT max(autopost_opt_in) FROM member_guild_settings
                 WHERE discord_user_id = ?),
                (SELECT autopost_opt_in FROM member_settings WHERE discord_user_id = ?)
            """,
            (user_id, user_id),
        )
        per_guild = row[0] if row is not None else None
        fallback = row[1] if row is not None else None
        if per_guild == 1 or fallback == 1:
            return True
        if fallback == 0:
            return False
        return None

    async def list_autopost_opt_in_summaries(self) -> dict[int, bool]:
        """``get_autopost_opt_in_anywhere`` for every member with a choice, in one query
        (members absent from the result: None)."""
        rows = await self._db.fetchall(
            """
            SELECT discord_user_id, max(per_guild), max(fallback) FROM (
                SELECT discord_user_id, autopost_opt_in AS per_guild, NULL AS fallback
                FROM member_guild_settings
                UNION ALL
                SELECT discord_user_id, NULL AS per_guild, autopost_opt_in AS fallback
                FROM member_settings
            ) AS choices
            GROUP BY discord_user_id
            """
        )
        summaries: dict[int, bool] = {}
        for row in rows:
            per_guild, fallback = row[1], row[2]
            if per_guild == 1 or fallback == 1:
                summaries[int(row[0])] = True
            elif fallback == 0:
                summaries[int(row[0])] = False
        return summaries

    async def list_autopost_opted_in_user_ids(self) -> set[int]:
        """Every member who opted in somewhere (per server, or before it was per server)."""
        rows = await self._db.fetchall(
            "SELECT discord_user_id FROM member_guild_settings WHERE autopost_opt_in = 1 "
            "UNION SELECT discord_user_id FROM member_settings WHERE autopost_opt_in = 1"
        )
        return {int(row[0]) for row in rows}
