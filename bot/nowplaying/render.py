"""The now-playing message: playback -> what /np and the auto-poster send.

Everything here is a pure function of its arguments (the clock is passed in as ``now``, the
colour picked from the album art too), so it runs without an event loop and is tested with
plain asserts. Text is fitted to Discord's limits with ``bot.messages.text``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import discord

from bot.messages.message import BotMessage, LinkButton
from bot.messages.text import (
    ELLIPSIS,
    EMBED_AUTHOR_NAME_LIMIT,
    EMBED_DESCRIPTION_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_TITLE_LIMIT,
    LINK_TEXT_LIMIT,
    SPOTIFY_GREEN,
    clean_line,
    fit_markdown,
    join_limited,
    markdown_link,
    safe_url,
    truncate,
)
from bot.spotify.models import Artist, Episode, Image, NothingPlaying, Playback, Track

PROGRESS_BAR_WIDTH = 18
BAR_FILLED = "█"
BAR_EMPTY = "░"

# Visible text of a single linked or plain value (album, show, publisher).
VALUE_TEXT_LIMIT = 256

PAUSED_MARKER = "⏸ Paused"
LOCAL_FILE_MARKER = "📁 Local file"
FOOTER_SPOTIFY = "Spotify"
FOOTER_PRESENCE = "Spotify · from Discord status"
FOOTER_LOCAL = "Spotify · local file"
OPEN_IN_SPOTIFY = "Open in Spotify"


# --- small pure helpers ---------------------------------------------------------------------


def format_duration(ms: int, *, force_hours: bool = False) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on (or always, with ``force_hours``).

    Seconds are floored, as Spotify's own clients do: 151933 ms is ``2:31``.
    """
    total_seconds = max(0, int(ms)) // 1000
    hours, rest = divmod(total_seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours or force_hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def progress_bar(progress_ms: int, duration_ms: int, width: int = PROGRESS_BAR_WIDTH) -> str:
    """A fixed-width bar of ``width`` cells, filled in proportion to progress (clamped)."""
    if width <= 0:
        return ""
    if duration_ms <= 0:
        filled = 0
    else:
        ratio = min(1.0, max(0.0, progress_ms / duration_ms))
        filled = round(ratio * width)
    return BAR_FILLED * filled + BAR_EMPTY * (width - filled)


def _image_size(image: Image) -> int | None:
    sizes = [size for size in (image.width, image.height) if size is not None]
    return max(sizes) if sizes else None


def pick_image(images: Sequence[Image], max_size: int = 640) -> Image | None:
    """The largest image whose width and height are at most ``max_size``.

    When none fits: the first image of unknown size (Spotify lists the largest first), else the
    smallest oversized one. ``None`` only when there are no images.
    """
    if not images:
        return None
    sized = [(size, image) for image in images if (size := _image_size(image)) is not None]
    fitting = [(size, image) for size, image in sized if size <= max_size]
    if fitting:
        return max(fitting, key=lambda pair: pair[0])[1]
    unsized = [image for image in images if _image_size(image) is None]
    if unsized:
        return unsized[0]
    return min(sized, key=lambda pair: pair[0])[1]


# --- rendering -----------------------------------------------------------------------------


def _current_progress(playback: Playback, duration_ms: int, now: float) -> int | None:
    """Progress at ``now``: extrapolated while playing, clamped to ``[0, duration]``."""
    if playback.progress_ms is None:
        return None
    progress = playback.progress_ms
    if _is_playing(playback):
        # Never run backwards when the local clock stepped back.
        progress += max(0, round((now - playback.received_at) * 1000))
    progress = max(0, progress)
    if duration_ms > 0:
        progress = min(progress, duration_ms)
    return progress


def _is_playing(playback: Playback) -> bool:
    # A Discord status has no paused state: Discord drops the activity on pause.
    return playback.is_playing or playback.source == "presence"


def _progress_line(playback: Playback, duration_ms: int, now: float) -> str | None:
    if duration_ms <= 0:
        return None
    force_hours = duration_ms >= 3_600_000
    duration = format_duration(duration_ms, force_hours=force_hours)
    progress = _current_progress(playback, duration_ms, now)
    if progress is None:
        return f"Length {duration}"
    position = format_duration(progress, force_hours=force_hours)
    return f"`{progress_bar(progress, duration_ms)}` {position} / {duration}"


def _author_name(member_name: str, suffix: str) -> str:
    """``"<member> <suffix>"`` within the author limit; the member name is shortened first."""
    name = clean_line(member_name) or "Someone"
    room = EMBED_AUTHOR_NAME_LIMIT - len(suffix) - 1
    return truncate(f"{truncate(name, room)} {suffix}", EMBED_AUTHOR_NAME_LIMIT)


def _footer(playback: Playback | NothingPlaying, *, local: bool = False) -> str:
    if playback.source == "presence":
        return FOOTER_PRESENCE
    return FOOTER_LOCAL if local else FOOTER_SPOTIFY


def _new_embed(
    *,
    member_name: str,
    member_avatar_url: str | None,
    author_suffix: str,
    footer: str,
) -> discord.Embed:
    embed = discord.Embed(colour=SPOTIFY_GREEN)
    embed.set_author(
        name=_author_name(member_name, author_suffix),
        icon_url=safe_url(member_avatar_url),
    )
    embed.set_footer(text=footer)
    return embed


def _set_title(embed: discord.Embed, name: str, url: str | None) -> None:
    embed.title = fit_markdown(name, EMBED_TITLE_LIMIT) or ELLIPSIS
    embed.url = safe_url(url)


def _add_field(embed: discord.Embed, name: str, value: str | None) -> None:
    if value:
        embed.add_field(name=name, value=value, inline=True)


def _description(*lines: str | None) -> str | None:
    text = "\n".join(line for line in lines if line)
    return truncate(text, EMBED_DESCRIPTION_LIMIT) if text else None


def _artists_value(artists: Iterable[Artist], *, linked: bool) -> str | None:
    pieces = [
        markdown_link(artist.name, artist.url if linked else None, text_limit=LINK_TEXT_LIMIT)
        for artist in artists
    ]
    return join_limited(pieces, EMBED_FIELD_VALUE_LIMIT) if pieces else None


def _open_button(url: str | None) -> tuple[LinkButton, ...]:
    safe = safe_url(url)
    return (LinkButton(label=OPEN_IN_SPOTIFY, url=safe),) if safe else ()


def _listening_suffix(playback: Playback) -> str:
    return "is listening to" if _is_playing(playback) else "was listening to"


def _paused_line(playback: Playback) -> str | None:
    return None if _is_playing(playback) else PAUSED_MARKER


def _render_track(
    playback: Playback, track: Track, member_name: str, avatar: str | None, now: float
) -> BotMessage:
    local = track.is_local
    embed = _new_embed(
        member_name=member_name,
        member_avatar_url=avatar,
        author_suffix=_listening_suffix(playback),
        footer=_footer(playback, local=local),
    )
    _set_title(embed, track.name, None if local else track.url)
    embed.description = _description(
        LOCAL_FILE_MARKER if local else None,
        _paused_line(playback),
        _progress_line(playback, track.duration_ms, now),
    )
    artists = _artists_value(track.artists, linked=not local)
    _add_field(embed, "Artist" if len(track.artists) == 1 else "Artists", artists)
    if track.album_name:
        album_url = None if local else track.album_url
        _add_field(
            embed, "Album", markdown_link(track.album_name, album_url, text_limit=VALUE_TEXT_LIMIT)
        )
    if not local:
        image = pick_image(track.images)
        thumbnail = safe_url(image.url) if image else None
        if thumbnail:
            embed.set_thumbnail(url=thumbnail)
    buttons = () if local else _open_button(track.url)
    return BotMessage(embed=embed, content=None, buttons=buttons)


def _render_episode(
    playback: Playback, episode: Episode, member_name: str, avatar: str | None, now: float
) -> BotMessage:
    embed = _new_embed(
        member_name=member_name,
        member_avatar_url=avatar,
        author_suffix=_listening_suffix(playback),
        footer=_footer(playback),
    )
    _set_title(embed, episode.name, episode.url)
    embed.description = _description(
        _paused_line(playback), _progress_line(playback, episode.duration_ms, now)
    )
    if episode.show_name:
        show = markdown_link(episode.show_name, episode.show_url, text_limit=VALUE_TEXT_LIMIT)
        _add_field(embed, "Podcast", show)
    if episode.publisher:
        _add_field(embed, "Publisher", fit_markdown(episode.publisher, VALUE_TEXT_LIMIT))
    image = pick_image(episode.images)
    thumbnail = safe_url(image.url) if image else None
    if thumbnail:
        embed.set_thumbnail(url=thumbnail)
    return BotMessage(embed=embed, content=None, buttons=_open_button(episode.url))


def _render_without_item(playback: Playback, member_name: str, avatar: str | None) -> BotMessage:
    embed = _new_embed(
        member_name=member_name,
        member_avatar_url=avatar,
        author_suffix=(
            "is listening to Spotify" if _is_playing(playback) else "was listening to Spotify"
        ),
        footer=_footer(playback),
    )
    if playback.kind == "ad":
        embed.title = "Advertisement"
        message = "An advertisement is playing. The music will be back after the break."
    else:
        embed.title = "Something Spotify does not describe"
        message = (
            "Spotify is playing something that is neither a track nor a podcast episode, "
            "so there are no details to show."
        )
    embed.description = _description(_paused_line(playback), message)
    return BotMessage(embed=embed, content=None, buttons=())


def _render_nothing(nothing: NothingPlaying, member_name: str, avatar: str | None) -> BotMessage:
    # An embed rather than plain content, so an auto-posted message edited from "playing" to
    # "nothing" (and back) keeps the same shape.
    embed = discord.Embed(colour=SPOTIFY_GREEN)
    name = clean_line(member_name) or "Someone"
    embed.set_author(name=truncate(name, EMBED_AUTHOR_NAME_LIMIT), icon_url=safe_url(avatar))
    embed.description = (
        f"{fit_markdown(name, EMBED_AUTHOR_NAME_LIMIT)} is not playing anything on Spotify "
        "right now."
    )
    embed.set_footer(text=_footer(nothing))
    return BotMessage(embed=embed, content=None, buttons=())


def render_now_playing(
    playback: Playback | NothingPlaying,
    *,
    member_name: str,
    member_avatar_url: str | None = None,
    now: float,
    colour: int | None = None,
) -> BotMessage:
    """The message for ``playback`` of the member called ``member_name`` at time ``now``.

    ``now`` is on the same clock as ``playback.received_at`` (``time.time()``); progress is
    extrapolated from it while playing. ``colour`` is the one picked from the album art
    (``bot.colours``); None, or an item without art, keeps Spotify green. Pure: no I/O, no
    event loop needed.
    """
    if isinstance(playback, NothingPlaying):
        return _render_nothing(playback, member_name, member_avatar_url)
    item = playback.item
    if isinstance(item, Track):
        message = _render_track(playback, item, member_name, member_avatar_url, now)
    elif isinstance(item, Episode):
        message = _render_episode(playback, item, member_name, member_avatar_url, now)
    else:
        return _render_without_item(playback, member_name, member_avatar_url)
    embed = message.embed
    if colour is not None and embed is not None and embed.thumbnail.url:
        embed.colour = discord.Colour(colour & 0xFFFFFF)
    return message
