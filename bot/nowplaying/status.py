"""A member's Discord status as a second source of "now playing" (ENABLE_PRESENCE).

Discord shows Spotify in a member's status as a ``discord.Spotify`` activity: track id,
title, artists, album, art and start/end times, at no Spotify quota cost. It has no paused
flag (Discord drops the activity on pause) and no exact progress: progress is computed from
the start timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable

import discord

from bot.spotify.models import Artist, Image, Playback, Track


def spotify_activity(activities: Iterable[object]) -> discord.Spotify | None:
    """The Spotify activity among a member's activities (``member.activity`` is only the
    first, often a custom status)."""
    for activity in activities:
        if isinstance(activity, discord.Spotify) and activity.track_id:
            return activity
    return None


def playback_from_activity(activity: discord.Spotify, *, now: float) -> Playback:
    """A Playback marked ``source="presence"``; progress is extrapolated from ``start``."""
    start: float | None
    end: float | None
    try:
        start = activity.start.timestamp()
        end = activity.end.timestamp()
    except (KeyError, TypeError, ValueError):
        start = end = None
    duration_ms = max(0, round((end - start) * 1000)) if start is not None and end else 0
    progress_ms = None
    if start is not None:
        progress_ms = max(0, round((now - start) * 1000))
        if duration_ms:
            progress_ms = min(progress_ms, duration_ms)
    artists = tuple(Artist(name=name) for name in activity.artists if name)
    cover = activity.album_cover_url
    track = Track(
        name=activity.title or "Unknown track",
        uri=f"spotify:track:{activity.track_id}",
        duration_ms=duration_ms,
        artists=artists,
        album_name=activity.album or None,
        images=(Image(url=cover),) if cover else (),
        id=activity.track_id,
        url=activity.track_url,
    )
    return Playback(
        kind="track",
        item=track,
        is_playing=True,
        progress_ms=progress_ms,
        received_at=now,
        source="presence",
    )


def member_playback(member: discord.Member | None, *, now: float) -> Playback | None:
    """What a cached member's status shows, or None (not cached, not listening)."""
    if member is None:
        return None
    activity = spotify_activity(member.activities)
    return playback_from_activity(activity, now=now) if activity is not None else None
