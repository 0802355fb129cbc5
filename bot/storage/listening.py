"""The listening log: plays, the guilds a member listens in, and the recap."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bot.storage.base import Store
from bot.storage.engines import Row


@dataclass(frozen=True, slots=True)
class Play:
    """One play in the listening log. ``artists`` in Spotify's order (the first is the one
    /recap counts); ``started_at`` is Unix time."""

    discord_user_id: int
    track_id: str
    started_at: float
    track_name: str
    artists: tuple[str, ...]
    duration_ms: int
    source: str
    album_id: str | None = None
    album_name: str | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class RecapEntry:
    """A track (``key`` is its id) or an artist (``key`` is the name) and its play count."""

    key: str
    name: str
    plays: int
    artists: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecapAlbum:
    """An album of a recap: plays of its tracks, names and cover from its latest play."""

    album_id: str
    name: str
    artist: str
    image_url: str | None
    plays: int


@dataclass(frozen=True, slots=True)
class Recap:
    tracks: tuple[RecapEntry, ...]
    artists: tuple[RecapEntry, ...]
    listeners: int
    plays: int
    albums: tuple[RecapAlbum, ...] = ()


ARTIST_SEPARATOR: Final = "; "


_PLAY_COLUMNS: Final = (
    "discord_user_id, track_id, started_at, track_name, artist, artists, album_id, album_name, "
    "image_url, duration_ms, source"
)


PRUNE_BATCH: Final = 5000


def _play_from_row(row: Row) -> Play:
    return Play(
        discord_user_id=int(row[0]),
        track_id=str(row[1]),
        started_at=float(row[2]),
        track_name=str(row[3]),
        artists=tuple(name for name in str(row[5]).split(ARTIST_SEPARATOR) if name),
        album_id=str(row[6]) if row[6] is not None else None,
        album_name=str(row[7]) if row[7] is not None else None,
        image_url=str(row[8]) if row[8] is not None else None,
        duration_ms=int(row[9]),
        source=str(row[10]),
    )


def _play_values(play: Play) -> tuple[Any, ...]:
    """The values of ``_PLAY_COLUMNS`` for a play."""
    artists = ARTIST_SEPARATOR.join(name.replace(ARTIST_SEPARATOR, ";") for name in play.artists)
    return (
        play.discord_user_id,
        play.track_id,
        play.started_at,
        play.track_name,
        play.artists[0] if play.artists else "",
        artists,
        play.album_id,
        play.album_name,
        play.image_url,
        play.duration_ms,
        play.source,
    )


class ListeningStore(Store):
    """The listening log: plays, the guilds a member listens in, and the recap."""

    # --- listening log -------------------------------------------------------------------------

    async def record_play(self, play: Play, *, match_from: float, match_to: float) -> bool:
        """Insert ``play`` unless the member already has a play of that track that started
        between ``match_from`` and ``match_to`` (the caller's rule for "the same play").

        The check and the insert share one transaction, so two sources (or two processes)
        recording the same play at once leave one row. True when a row was inserted.
        """
        async with self._db.transaction() as tx:
            existing = await tx.fetchone(
                "SELECT 1 FROM plays WHERE discord_user_id = ? AND started_at BETWEEN ? AND ? "
                "AND track_id = ? LIMIT 1",
                (play.discord_user_id, match_from, match_to, play.track_id),
            )
            if existing is not None:
                return False
            await tx.execute(
                f"INSERT INTO plays ({_PLAY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                _play_values(play),
            )
        return True

    async def record_plays(self, batch: Sequence[tuple[Play, float, float]]) -> int:
        """:meth:`record_play` for many plays in one transaction: each ``(play, match_from,
        match_to)`` is inserted unless a matching play exists (earlier rows of the batch
        included). SQLite does the whole batch in one round trip. Returns how many were
        inserted."""
        if not batch:
            return 0
        async with self._db.transaction() as tx:
            if self._db.dialect == "sqlite":
                rows = [
                    (*_play_values(play), play.discord_user_id, low, high, play.track_id)
                    for play, low, high in batch
                ]
                return await tx.executemany(
                    f"INSERT INTO plays ({_PLAY_COLUMNS}) "  # noqa: S608
                    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM "
                    "plays WHERE discord_user_id = ? AND started_at BETWEEN ? AND ? "
                    "AND track_id = ?)",
                    rows,
                )
            inserted = 0
            for play, low, high in batch:
                existing = await tx.fetchone(
                    "SELECT 1 FROM plays WHERE discord_user_id = ? AND started_at BETWEEN ? "
                    "AND ? AND track_id = ? LIMIT 1",
                    (play.discord_user_id, low, high, play.track_id),
                )
                if existing is None:
                    inserted += await tx.execute(
                        f"INSERT INTO plays ({_PLAY_COLUMNS}) "  # noqa: S608
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        _play_values(play),
                    )
            return inserted

    async def recent_plays(self, user_id: int, *, limit: int = 10) -> list[Play]:
        """The member's latest plays, newest first."""
        rows = await self._db.fetchall(
            f"SELECT {_PLAY_COLUMNS} FROM plays WHERE discord_user_id = ? "  # noqa: S608
            "ORDER BY started_at DESC LIMIT ?",
            (user_id, limit),
        )
        return [_play_from_row(row) for row in rows]

    async def latest_play_at(self, user_id: int) -> float | None:
        row = await self._db.fetchone(
            "SELECT max(started_at) FROM plays WHERE discord_user_id = ?", (user_id,)
        )
        return float(row[0]) if row is not None and row[0] is not None else None

    async def delete_plays(self, user_id: int) -> int:
        """Forget the member's listening log (and where they were seen); return the plays."""
        async with self._db.transaction() as tx:
            removed = await tx.execute("DELETE FROM plays WHERE discord_user_id = ?", (user_id,))
            await tx.execute("DELETE FROM listening_guilds WHERE discord_user_id = ?", (user_id,))
        return removed

    async def prune_plays(self, *, before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete plays that started before ``before``, ``batch`` rows per transaction so a
        large prune never holds the write lock for long. Returns how many were deleted."""
        total = 0
        while True:
            removed = await self._db.write(
                "DELETE FROM plays WHERE id IN (SELECT id FROM plays WHERE started_at < ? LIMIT ?)",
                (before, batch),
            )
            total += removed
            if removed < batch:
                return total
            await asyncio.sleep(0)  # let other queries in between batches

    async def note_listening_guild(self, guild_id: int, user_id: int, *, now: float) -> None:
        """Remember that the member was seen in the server (their plays count there)."""
        await self._db.write(
            """
            INSERT INTO listening_guilds (guild_id, discord_user_id, seen_at) VALUES (?, ?, ?)
            ON CONFLICT (guild_id, discord_user_id) DO UPDATE SET seen_at = excluded.seen_at
            """,
            (guild_id, user_id, now),
        )

    async def forget_listening_guild(self, guild_id: int, user_id: int) -> None:
        await self._db.write(
            "DELETE FROM listening_guilds WHERE guild_id = ? AND discord_user_id = ?",
            (guild_id, user_id),
        )

    async def list_listening_guilds(self) -> list[tuple[int, int, float]]:
        """Every (guild id, member id, last seen there) the log knows."""
        rows = await self._db.fetchall(
            "SELECT guild_id, discord_user_id, seen_at FROM listening_guilds"
        )
        return [(int(row[0]), int(row[1]), float(row[2])) for row in rows]

    async def prune_listening_guilds(self, *, before: float) -> int:
        """Forget where members were seen when they were last seen there before ``before``."""
        return await self._db.write("DELETE FROM listening_guilds WHERE seen_at < ?", (before,))

    async def listeners_since(self, member_ids: Iterable[int], *, since: float) -> set[int]:
        """Which of these members have a play that started at ``since`` or later (one seek
        per member in the per-member index)."""
        members = sorted(set(member_ids))
        if not members:
            return set()
        marks = ", ".join("?" for _ in members)
        hint = "INDEXED BY plays_member_cover " if self._db.dialect == "sqlite" else ""
        rows = await self._db.read_heavy(
            f"SELECT DISTINCT discord_user_id FROM plays {hint}"  # noqa: S608
            f"WHERE discord_user_id IN ({marks}) AND started_at >= ?",
            (*members, since),
        )
        return {int(row[0]) for row in rows}

    async def recap(
        self, member_ids: Iterable[int], *, since: float, limit: int = 10, albums: int = 9
    ) -> Recap:
        """The most-played tracks and artists of these members since ``since``, with how many
        of them listened.

        One pass over the per-member covering index (each visible member's range of start
        times) counts plays per track; the artists' totals are summed from those counts.
        """
        members = sorted(set(member_ids))
        if not members:
            return Recap(tracks=(), artists=(), listeners=0, plays=0)
        marks = ", ".join("?" for _ in members)
        # SQLite: name the per-member covering index (its planner may pick the time index).
        hint = "INDEXED BY plays_member_cover " if self._db.dialect == "sqlite" else ""
        where = f"discord_user_id IN ({marks}) AND started_at >= ?"
        # One seek per member in the per-member index: far cheaper than a DISTINCT pass.
        listeners = await self._db.read_heavy(
            f"SELECT count(DISTINCT discord_user_id) FROM plays {hint}WHERE {where}",  # noqa: S608
            (*members, since),
        )
        per_track = await self._db.read_heavy(
            "SELECT track_id, max(artist), count(*), max(id), max(album_id) FROM plays "  # noqa: S608
            f"{hint}WHERE {where} GROUP BY track_id",
            (*members, since),
        )
        per_track.sort(key=lambda row: (-int(row[2]), str(row[0])))
        top = per_track[:limit]
        by_album: dict[str, list[int]] = {}  # album id -> [plays, latest play id]
        for row in per_track:
            if row[4] is not None:
                entry = by_album.setdefault(str(row[4]), [0, 0])
                entry[0] += int(row[2])
                entry[1] = max(entry[1], int(row[3]))
        top_albums = sorted(by_album.items(), key=lambda item: (-item[1][0], item[0]))
        top_albums = top_albums[:albums]
        names: dict[int, Row] = {}
        wanted = [int(row[3]) for row in top] + [entry[1] for _, entry in top_albums]
        if wanted:
            rows = await self._db.read_heavy(
                "SELECT id, track_name, artists, album_name, image_url FROM plays "  # noqa: S608
                f"WHERE id IN ({', '.join('?' for _ in wanted)})",
                wanted,
            )
            names = {int(row[0]): row for row in rows}
        by_artist: dict[str, int] = {}
        for row in per_track:
            artist = str(row[1])
            if artist:
                by_artist[artist] = by_artist.get(artist, 0) + int(row[2])
        tracks = []
        for row in top:
            named = names.get(int(row[3]))
            name, artists = (str(named[1]), str(named[2])) if named else (str(row[0]), "")
            tracks.append(
                RecapEntry(
                    key=str(row[0]),
                    name=name,
                    plays=int(row[2]),
                    artists=tuple(a for a in artists.split(ARTIST_SEPARATOR) if a),
                )
            )
        top_artists = sorted(by_artist.items(), key=lambda item: (-item[1], item[0]))[:limit]
        album_entries = []
        for album_id, (plays, play_id) in top_albums:
            named = names.get(play_id)
            if named is None:
                continue
            album_entries.append(
                RecapAlbum(
                    album_id=album_id,
                    name=str(named[3]) if named[3] is not None else str(named[1]),
                    artist=str(named[2]).split(ARTIST_SEPARATOR)[0],
                    image_url=str(named[4]) if named[4] is not None else None,
                    plays=plays,
                )
            )
        return Recap(
            tracks=tuple(tracks),
            artists=tuple(RecapEntry(key=a, name=a, plays=n) for a, n in top_artists),
            listeners=int(listeners[0][0]) if listeners else 0,
            plays=sum(int(row[2]) for row in per_track),
            albums=tuple(album_entries),
        )
