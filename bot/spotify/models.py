"""Typed models for what Spotify (or a member's Discord presence) tells us.

Parsing is defensive: Spotify omits or nulls fields in practice (local files, episodes, ads),
so every accessor tolerates missing data instead of raising ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bot.errors import SpotifyBadResponse

PlaybackKind = Literal["track", "episode", "ad", "unknown"]
PlaybackSource = Literal["spotify", "presence"]


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Artist:
    name: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Track:
    """A music track. Local files have ``is_local`` set, no id, no url and no images."""

    name: str
    uri: str
    duration_ms: int
    artists: tuple[Artist, ...] = ()
    album_name: str | None = None
    album_url: str | None = None
    images: tuple[Image, ...] = ()
    id: str | None = None
    url: str | None = None
    is_local: bool = False
    album_id: str | None = None

    @property
    def key(self) -> str:
        """What identifies this item for "is it a new item?": the id, or the URI when local."""
        return self.id or self.uri


@dataclass(frozen=True, slots=True)
class Episode:
    """A podcast episode (only returned with ``additional_types=episode``)."""

    name: str
    uri: str
    duration_ms: int
    show_name: str | None = None
    show_url: str | None = None
    publisher: str | None = None
    images: tuple[Image, ...] = ()
    id: str | None = None
    url: str | None = None

    @property
    def key(self) -> str:
        return self.id or self.uri


PlayableItem = Track | Episode


@dataclass(frozen=True, slots=True)
class Playback:
    """Something is (or was) playing. ``item`` is None for ads and unknown items.

    ``received_at`` is the local ``time.time()`` when the answer arrived, so progress can be
    extrapolated. ``source`` says whether it came from the Spotify API or the Discord status.
    """

    kind: PlaybackKind
    item: PlayableItem | None
    is_playing: bool
    progress_ms: int | None
    received_at: float = 0.0
    source: PlaybackSource = "spotify"

    @property
    def item_key(self) -> str | None:
        return self.item.key if self.item is not None else None


@dataclass(frozen=True, slots=True)
class NothingPlaying:
    """Spotify answered 204 (or ``item`` is null with nothing to show)."""

    received_at: float = 0.0
    source: PlaybackSource = "spotify"
    item_key: None = field(default=None, init=False)


CurrentlyPlaying = Playback | NothingPlaying


@dataclass(frozen=True, slots=True)
class PlayedTrack:
    """One entry of ``/me/player/recently-played``: ``played_at`` is Unix time."""

    track: Track
    played_at: float


@dataclass(frozen=True, slots=True)
class TopArtist:
    name: str
    url: str | None = None
    images: tuple[Image, ...] = ()
    genres: tuple[str, ...] = ()


TopKind = Literal["tracks", "artists"]
TimeRange = Literal["short_term", "medium_term", "long_term"]


@dataclass(frozen=True, slots=True)
class TopItems:
    kind: TopKind
    time_range: TimeRange
    tracks: tuple[Track, ...] = ()
    artists: tuple[TopArtist, ...] = ()

    def __len__(self) -> int:
        return len(self.tracks) if self.kind == "tracks" else len(self.artists)


@dataclass(frozen=True, slots=True)
class SpotifyUser:
    """``GET /me``. Links are keyed on ``account_id`` (immutable); id/name are for show."""

    account_id: str
    id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token endpoint answer. ``refresh_token`` is None when Spotify did not rotate it."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None
    received_at: float  # time.monotonic() when the answer arrived


# --- parsing -------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _spotify_url(obj: Mapping[str, Any] | None) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    urls = obj.get("external_urls")
    return _str(urls.get("spotify")) if isinstance(urls, Mapping) else None


def parse_images(raw: Any) -> tuple[Image, ...]:
    if not isinstance(raw, list):
        return ()
    images = []
    for entry in raw:
        if isinstance(entry, Mapping) and _str(entry.get("url")):
            width = entry.get("width")
            height = entry.get("height")
            images.append(
                Image(
                    url=entry["url"],
                    width=width if isinstance(width, int) else None,
                    height=height if isinstance(height, int) else None,
                )
            )
    return tuple(images)


def parse_track(raw: Mapping[str, Any]) -> Track:
    album = raw.get("album") if isinstance(raw.get("album"), Mapping) else None
    artists = tuple(
        Artist(name=a.get("name") or "Unknown artist", url=_spotify_url(a))
        for a in raw.get("artists") or ()
        if isinstance(a, Mapping)
    )
    is_local = bool(raw.get("is_local"))
    return Track(
        name=_str(raw.get("name")) or "Unknown track",
        uri=_str(raw.get("uri")) or "",
        duration_ms=_int(raw.get("duration_ms")),
        artists=artists,
        album_name=_str(album.get("name")) if album else None,
        album_url=None if is_local else _spotify_url(album),
        images=parse_images(album.get("images")) if album else (),
        id=None if is_local else _str(raw.get("id")),
        url=None if is_local else _spotify_url(raw),
        is_local=is_local,
        album_id=None if is_local or album is None else _str(album.get("id")),
    )


def parse_episode(raw: Mapping[str, Any]) -> Episode:
    show = raw.get("show") if isinstance(raw.get("show"), Mapping) else None
    images = parse_images(raw.get("images")) or (parse_images(show.get("images")) if show else ())
    return Episode(
        name=_str(raw.get("name")) or "Unknown episode",
        uri=_str(raw.get("uri")) or "",
        duration_ms=_int(raw.get("duration_ms")),
        show_name=_str(show.get("name")) if show else None,
        show_url=_spotify_url(show),
        publisher=_str(show.get("publisher")) if show else None,
        images=images,
        id=_str(raw.get("id")),
        url=_spotify_url(raw),
    )


def parse_currently_playing(payload: Any, *, received_at: float) -> CurrentlyPlaying:
    """Parse a 200 answer of ``/me/player/currently-playing`` (204 never gets here)."""
    if not isinstance(payload, Mapping):
        raise SpotifyBadResponse("currently-playing answer is not a JSON object")
    kind_raw = payload.get("currently_playing_type")
    kind: PlaybackKind = (
        kind_raw if kind_raw in ("track", "episode", "ad", "unknown") else "unknown"
    )
    raw_item = payload.get("item")
    item: PlayableItem | None = None
    if isinstance(raw_item, Mapping):
        item_type = raw_item.get("type")
        if item_type == "episode" or (kind == "episode" and item_type != "track"):
            item = parse_episode(raw_item)
            kind = "episode"
        else:
            item = parse_track(raw_item)
            kind = "track"
    elif kind in ("track", "episode"):
        # A track/episode type with a null item: nothing we can show.
        return NothingPlaying(received_at=received_at)
    progress = payload.get("progress_ms")
    return Playback(
        kind=kind,
        item=item,
        is_playing=bool(payload.get("is_playing")),
        progress_ms=progress if isinstance(progress, int) else None,
        received_at=received_at,
    )


def parse_user(payload: Any) -> SpotifyUser:
    if not isinstance(payload, Mapping) or not _str(payload.get("id")):
        raise SpotifyBadResponse("/me answer has no user id")
    user_id = payload["id"]
    return SpotifyUser(
        account_id=_str(payload.get("account_id")) or user_id,
        id=user_id,
        display_name=_str(payload.get("display_name")) or user_id,
    )


def parse_timestamp(text: Any) -> float | None:
    """An ISO 8601 time such as ``2026-11-28T21:04:00.123Z`` as Unix time (None if unreadable)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_recently_played(payload: Any) -> tuple[PlayedTrack, ...]:
    """``/me/player/recently-played``, newest first; entries without a track or time are
    skipped (Spotify lists tracks only)."""
    if not isinstance(payload, Mapping):
        raise SpotifyBadResponse("recently-played answer is not a JSON object")
    items = payload.get("items")
    played: list[PlayedTrack] = []
    for entry in items if isinstance(items, list) else ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("track"), Mapping):
            continue
        at = parse_timestamp(entry.get("played_at"))
        if at is None:
            continue
        played.append(PlayedTrack(track=parse_track(entry["track"]), played_at=at))
    played.sort(key=lambda item: item.played_at, reverse=True)
    return tuple(played)


def parse_top_items(payload: Any, kind: TopKind, time_range: TimeRange) -> TopItems:
    if not isinstance(payload, Mapping):
        raise SpotifyBadResponse("top items answer is not a JSON object")
    raw_items = payload.get("items")
    entries = (
        [e for e in raw_items if isinstance(e, Mapping)] if isinstance(raw_items, list) else []
    )
    if kind == "tracks":
        return TopItems(kind, time_range, tracks=tuple(parse_track(e) for e in entries))
    artists = tuple(
        TopArtist(
            name=_str(e.get("name")) or "Unknown artist",
            url=_spotify_url(e),
            images=parse_images(e.get("images")),
            genres=tuple(g for g in e.get("genres") or () if isinstance(g, str)),
        )
        for e in entries
    )
    return TopItems(kind, time_range, artists=artists)
