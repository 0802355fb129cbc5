from __future__ import annotations

import discord

from bot.nowplaying.render import render_now_playing
from bot.nowplaying.status import playback_from_activity, spotify_activity

START_MS = 1_700_000_000_000


def spotify(**overrides: object) -> discord.Spotify:
    data: dict[str, object] = {
        "type": 2,
        "name": "Spotify",
        "sync_id": "4uLU6hMCjMI75M1A2tKUQC",
        "session_id": "session-1",
        "details": "Never Gonna Give You Up",
        "state": "Rick Astley; Someone Else",
        "timestamps": {"start": START_MS, "end": START_MS + 213_000},
        "assets": {
            "large_image": "spotify:ab67616d0000b273baf89eb11ec7c657805d2da0",
            "large_text": "Whenever You Need Somebody",
        },
        "party": {"id": "spotify:1"},
    }
    data.update(overrides)
    return discord.Spotify(**data)


def test_playback_from_activity_computes_progress_from_start() -> None:
    playback = playback_from_activity(spotify(), now=START_MS / 1000 + 61.5)
    assert playback.source == "presence"
    assert playback.is_playing
    assert playback.progress_ms == 61_500
    track = playback.item
    assert track is not None
    assert track.name == "Never Gonna Give You Up"
    assert [a.name for a in track.artists] == ["Rick Astley", "Someone Else"]  # type: ignore[union-attr]
    assert track.album_name == "Whenever You Need Somebody"  # type: ignore[union-attr]
    assert track.duration_ms == 213_000
    assert track.url == "https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC"
    assert track.images[0].url == (
        "https://i.scdn.co/image/ab67616d0000b273baf89eb11ec7c657805d2da0"
    )
    assert playback.item_key == "4uLU6hMCjMI75M1A2tKUQC"


def test_progress_clamped_to_duration_and_never_negative() -> None:
    assert playback_from_activity(spotify(), now=START_MS / 1000 + 999).progress_ms == 213_000
    assert playback_from_activity(spotify(), now=START_MS / 1000 - 5).progress_ms == 0


def test_missing_timestamps_and_art_are_tolerated() -> None:
    playback = playback_from_activity(spotify(timestamps={}, assets={}), now=1.0)
    assert playback.progress_ms is None
    assert playback.item is not None
    assert playback.item.duration_ms == 0
    assert playback.item.images == ()


def test_spotify_activity_is_found_among_others() -> None:
    custom = discord.CustomActivity(name="busy")
    game = discord.Game(name="chess")
    found = spotify_activity([custom, game, spotify()])
    assert found is not None
    assert found.track_id == "4uLU6hMCjMI75M1A2tKUQC"
    assert spotify_activity([custom, game]) is None


def test_presence_embed_is_marked_as_discord_status() -> None:
    playback = playback_from_activity(spotify(), now=START_MS / 1000 + 46)
    message = render_now_playing(playback, member_name="Ann", now=START_MS / 1000 + 46)
    assert message.embed is not None
    assert message.embed.title == "Never Gonna Give You Up"
    assert "Discord status" in (message.embed.footer.text or "")
    assert "0:46 / 3:33" in (message.embed.description or "")
