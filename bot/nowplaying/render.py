"""Pure rendering: playback -> the Discord message that /np and the auto-poster send.

Everything here is a pure function of its arguments (the clock is passed in as ``now``), so it
runs without an event loop and is tested with plain asserts. The one exception is
:func:`make_view`, which builds a ``discord.ui.View`` and belongs inside the event loop; that is
why the rendered message carries plain :class:`LinkButton` values instead of a view.

Discord's embed limits are enforced by construction: every piece of text is cut on a character
boundary with "…" before it is placed, markdown links are never cut in half (the visible text is
shortened, the link stays; a list of links drops trailing entries and says "and N more"), and
:func:`embed_limit_problems` checks the result the way Discord counts it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import discord

from bot.spotify.models import (
    Artist,
    Episode,
    Image,
    NothingPlaying,
    Playback,
    Track,
)

__all__ = [
    "EMBED_AUTHOR_NAME_LIMIT",
    "EMBED_DESCRIPTION_LIMIT",
    "EMBED_FIELD_LIMIT",
    "EMBED_FIELD_NAME_LIMIT",
    "EMBED_FIELD_VALUE_LIMIT",
    "EMBED_FOOTER_LIMIT",
    "EMBED_TITLE_LIMIT",
    "EMBED_TOTAL_LIMIT",
    "PROGRESS_BAR_WIDTH",
    "SPOTIFY_GREEN",
    "LinkButton",
    "NowPlayingMessage",
    "edit_arguments",
    "embed_limit_problems",
    "embed_total_length",
    "escape_markdown",
    "fit_markdown",
    "format_duration",
    "make_view",
    "markdown_link",
    "pick_image",
    "progress_bar",
    "render_now_playing",
    "send_arguments",
    "truncate",
]

SPOTIFY_GREEN = 0x1DB954

# Discord's documented embed limits.
EMBED_TITLE_LIMIT = 256
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_NAME_LIMIT = 256
EMBED_FIELD_VALUE_LIMIT = 1024
EMBED_FOOTER_LIMIT = 2048
EMBED_AUTHOR_NAME_LIMIT = 256
EMBED_TOTAL_LIMIT = 6000
EMBED_FIELD_LIMIT = 25
# Components: a button label holds 80 characters, a link button's URL 512.
BUTTON_LABEL_LIMIT = 80
BUTTON_URL_LIMIT = 512
BUTTONS_PER_VIEW = 25

PROGRESS_BAR_WIDTH = 18
BAR_FILLED = "█"
BAR_EMPTY = "░"
ELLIPSIS = "…"

# Visible text of one masked link in a list; long names are shortened, the link is kept.
LINK_TEXT_LIMIT = 100
# Visible text of a single linked or plain value (album, show, publisher).
VALUE_TEXT_LIMIT = 256

PAUSED_MARKER = "⏸ Paused"
LOCAL_FILE_MARKER = "📁 Local file"
FOOTER_SPOTIFY = "Spotify"
FOOTER_PRESENCE = "Spotify · from Discord status"
FOOTER_LOCAL = "Spotify · local file"
OPEN_IN_SPOTIFY = "Open in Spotify"


@dataclass(frozen=True, slots=True)
class LinkButton:
    """A URL button; :func:`make_view` turns these into ``discord.ui.Button`` objects."""

    label: str
    url: str


@dataclass(frozen=True, slots=True)
class NowPlayingMessage:
    """What to send: ``embed`` and/or ``content``, plus link buttons for :func:`make_view`."""

    embed: discord.Embed | None
    content: str | None = None
    buttons: tuple[LinkButton, ...] = ()


# --- small pure helpers --------------------------------------------------------------------


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


def _is_extender(char: str) -> bool:
    """Characters that belong to the grapheme before them (cutting before one splits it)."""
    code = ord(char)
    return (
        unicodedata.combining(char) != 0
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
        or code == 0x200D  # zero-width joiner
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _grapheme_safe_cut(text: str, cut: int) -> int:
    """Move ``cut`` back until ``text[:cut]`` does not end inside a grapheme cluster."""
    while 0 < cut < len(text) and (_is_extender(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    # Flags are pairs of regional indicators: never keep an odd one of a run.
    if 0 < cut < len(text) and _is_regional_indicator(text[cut]):
        start = cut
        while start > 0 and _is_regional_indicator(text[start - 1]):
            start -= 1
        if (cut - start) % 2:
            cut -= 1
    return cut


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut cleanly and ended with "…".

    The cut never splits a grapheme (combining marks, emoji sequences, flags) and trailing
    whitespace before the "…" is dropped. The result is at most ``limit`` characters long.
    """
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    cut = _grapheme_safe_cut(text, limit - len(ELLIPSIS))
    return text[:cut].rstrip() + ELLIPSIS


# Inline markdown (and "<" of mentions, timestamps and <url>) acts anywhere in a line.
_MARKDOWN_INLINE = re.compile(r"([\\*_~|`\[\]<])")
# A name that looks like a URL would be autolinked (and a masked link with a URL as its text
# is refused by Discord): escaping the colon stops both.
_URL_COLON = re.compile(r":(?=//)")
# Block markdown only acts at the start of a line: headings, subtext, quotes, lists.
_LINE_START = re.compile(r"^(#|-|>|\+|\d+\.)")


def _clean(text: str) -> str:
    """One line of printable text: newlines, tabs and other control characters become spaces."""
    cleaned = "".join(" " if unicodedata.category(char) == "Cc" else char for char in text)
    return " ".join(cleaned.split())


def escape_markdown(text: str) -> str:
    """Escape what Discord's markdown could act on in one line of text, ``[`` and ``]`` too.

    Safe inside masked-link text and anywhere in a title, description or field (the text is
    one line: see ``_clean``). Discord drops a backslash before any punctuation, so an escape
    never shows; common characters that are harmless mid-line (``-``, ``(``, ``:``) are left
    alone to keep names readable and short.
    """
    escaped = _MARKDOWN_INLINE.sub(r"\\\1", text)
    escaped = _URL_COLON.sub(r"\\:", escaped)
    return _LINE_START.sub(lambda match: _escape_line_start(match.group(1)), escaped)


def _escape_line_start(marker: str) -> str:
    # "1. Foo" becomes "1\. Foo"; "# Foo" becomes "\# Foo".
    return marker[:-1] + "\\" + marker[-1]


def _fit_markdown(text: str, limit: int) -> str:
    """The escaped form of ``text``, shortened (before escaping) until it fits in ``limit``."""
    cleaned = _clean(text)
    escaped = escape_markdown(cleaned)
    if len(escaped) <= limit:
        return escaped
    # Escaping only grows text and a longer cut never escapes shorter: binary search the cut.
    low, high = 0, len(cleaned) - 1
    best = ""
    while low <= high:
        middle = (low + high) // 2
        candidate = escape_markdown(truncate(cleaned, middle))
        if len(candidate) <= limit:
            best = candidate
            low = middle + 1
        else:
            high = middle - 1
    return best


def _safe_url(url: str | None) -> str | None:
    """An http(s) URL that cannot break a markdown link, or None when unusable."""
    if not url:
        return None
    url = url.strip()
    if not url.lower().startswith(("https://", "http://")):
        return None
    # Percent-encode what would end or confuse "[text](url)"; keep everything URL-legal.
    url = quote(url, safe="/:?#&=%+@!$',;~*-._")
    if len(url) > BUTTON_URL_LIMIT:
        return None
    return url


def _link(text: str, url: str | None, *, text_limit: int) -> str:
    """``[text](url)`` with escaped, shortened visible text; plain escaped text without a URL."""
    visible = _fit_markdown(text, text_limit) or escape_markdown(ELLIPSIS)
    safe = _safe_url(url)
    return f"[{visible}]({safe})" if safe else visible


def _join_limited(pieces: Sequence[str], limit: int, *, separator: str = ", ") -> str:
    """Join whole pieces, dropping trailing ones (with "and N more") until the text fits."""
    for kept in range(len(pieces), 0, -1):
        dropped = len(pieces) - kept
        text = separator.join(pieces[:kept])
        if dropped:
            text += f" and {dropped} more"
        if len(text) <= limit:
            return text
    # Not even one piece fits: only possible with a tiny limit; count them instead.
    return truncate(f"{len(pieces)} artists", limit)


def embed_total_length(embed: discord.Embed) -> int:
    """Characters Discord counts against the 6000 total, from the payload that would be sent.

    Title, description, field names and values, footer text and author name; the same sum as
    discord.py's ``len(embed)``.
    """
    data = embed.to_dict()
    total = len(data.get("title", "")) + len(data.get("description", ""))
    for field in data.get("fields", []):
        total += len(field.get("name", "")) + len(field.get("value", ""))
    total += len(data.get("footer", {}).get("text", ""))
    total += len(data.get("author", {}).get("name", ""))
    return total


def embed_limit_problems(embed: discord.Embed) -> list[str]:
    """Every way ``embed`` breaks Discord's limits, as readable lines (empty when valid)."""
    data = embed.to_dict()
    problems: list[str] = []

    def check(what: str, value: str, limit: int) -> None:
        if len(value) > limit:
            problems.append(f"{what} is {len(value)} characters (limit {limit})")

    check("title", data.get("title", ""), EMBED_TITLE_LIMIT)
    check("description", data.get("description", ""), EMBED_DESCRIPTION_LIMIT)
    check("footer", data.get("footer", {}).get("text", ""), EMBED_FOOTER_LIMIT)
    check("author name", data.get("author", {}).get("name", ""), EMBED_AUTHOR_NAME_LIMIT)
    fields = data.get("fields", [])
    if len(fields) > EMBED_FIELD_LIMIT:
        problems.append(f"{len(fields)} fields (limit {EMBED_FIELD_LIMIT})")
    for index, field in enumerate(fields):
        name, value = field.get("name", ""), field.get("value", "")
        check(f"field {index} name", name, EMBED_FIELD_NAME_LIMIT)
        check(f"field {index} value", value, EMBED_FIELD_VALUE_LIMIT)
        if not name.strip() or not value.strip():
            problems.append(f"field {index} has an empty name or value")
    total = embed_total_length(embed)
    if total > EMBED_TOTAL_LIMIT:
        problems.append(f"total is {total} characters (limit {EMBED_TOTAL_LIMIT})")
    return problems


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
    name = _clean(member_name) or "Someone"
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
        icon_url=_safe_url(member_avatar_url),
    )
    embed.set_footer(text=footer)
    return embed


def _set_title(embed: discord.Embed, name: str, url: str | None) -> None:
    embed.title = _fit_markdown(name, EMBED_TITLE_LIMIT) or ELLIPSIS
    embed.url = _safe_url(url)


def _add_field(embed: discord.Embed, name: str, value: str | None) -> None:
    if value:
        embed.add_field(name=name, value=value, inline=True)


def _description(*lines: str | None) -> str | None:
    text = "\n".join(line for line in lines if line)
    return truncate(text, EMBED_DESCRIPTION_LIMIT) if text else None


def _artists_value(artists: Iterable[Artist], *, linked: bool) -> str | None:
    pieces = [
        _link(artist.name, artist.url if linked else None, text_limit=LINK_TEXT_LIMIT)
        for artist in artists
    ]
    return _join_limited(pieces, EMBED_FIELD_VALUE_LIMIT) if pieces else None


def _open_button(url: str | None) -> tuple[LinkButton, ...]:
    safe = _safe_url(url)
    return (LinkButton(label=OPEN_IN_SPOTIFY, url=safe),) if safe else ()


def _listening_suffix(playback: Playback) -> str:
    return "is listening to" if _is_playing(playback) else "was listening to"


def _paused_line(playback: Playback) -> str | None:
    return None if _is_playing(playback) else PAUSED_MARKER


def _render_track(
    playback: Playback, track: Track, member_name: str, avatar: str | None, now: float
) -> NowPlayingMessage:
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
        _add_field(embed, "Album", _link(track.album_name, album_url, text_limit=VALUE_TEXT_LIMIT))
    if not local:
        image = pick_image(track.images)
        thumbnail = _safe_url(image.url) if image else None
        if thumbnail:
            embed.set_thumbnail(url=thumbnail)
    buttons = () if local else _open_button(track.url)
    return NowPlayingMessage(embed=embed, content=None, buttons=buttons)


def _render_episode(
    playback: Playback, episode: Episode, member_name: str, avatar: str | None, now: float
) -> NowPlayingMessage:
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
        show = _link(episode.show_name, episode.show_url, text_limit=VALUE_TEXT_LIMIT)
        _add_field(embed, "Podcast", show)
    if episode.publisher:
        _add_field(embed, "Publisher", _fit_markdown(episode.publisher, VALUE_TEXT_LIMIT))
    image = pick_image(episode.images)
    thumbnail = _safe_url(image.url) if image else None
    if thumbnail:
        embed.set_thumbnail(url=thumbnail)
    return NowPlayingMessage(embed=embed, content=None, buttons=_open_button(episode.url))


def _render_without_item(
    playback: Playback, member_name: str, avatar: str | None
) -> NowPlayingMessage:
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
    return NowPlayingMessage(embed=embed, content=None, buttons=())


def _render_nothing(
    nothing: NothingPlaying, member_name: str, avatar: str | None
) -> NowPlayingMessage:
    # An embed rather than plain content, so an auto-posted message edited from "playing" to
    # "nothing" (and back) keeps the same shape.
    embed = discord.Embed(colour=SPOTIFY_GREEN)
    name = _clean(member_name) or "Someone"
    embed.set_author(name=truncate(name, EMBED_AUTHOR_NAME_LIMIT), icon_url=_safe_url(avatar))
    embed.description = (
        f"{_fit_markdown(name, EMBED_AUTHOR_NAME_LIMIT)} is not playing anything on Spotify "
        "right now."
    )
    embed.set_footer(text=_footer(nothing))
    return NowPlayingMessage(embed=embed, content=None, buttons=())


def render_now_playing(
    playback: Playback | NothingPlaying,
    *,
    member_name: str,
    member_avatar_url: str | None = None,
    now: float,
    colour: int | None = None,
) -> NowPlayingMessage:
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


def make_view(buttons: Sequence[LinkButton]) -> discord.ui.View | None:
    """A view of link buttons, or None when there are none (send no ``view=`` then).

    Call it inside the running event loop (in a command or task, as the cogs do): a
    ``discord.ui.View`` looks up the running loop in ``__init__`` for its stop future (2.7.1
    falls back to creating it lazily; older discord.py versions raised without a loop).
    The view has no timeout: link buttons need no callbacks, so nothing should expire.
    """
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:BUTTONS_PER_VIEW]:
        view.add_item(
            discord.ui.Button(
                style=discord.ButtonStyle.link,
                label=truncate(button.label, BUTTON_LABEL_LIMIT),
                url=button.url,
            )
        )
    return view


def send_arguments(message: NowPlayingMessage) -> dict[str, Any]:
    """The keyword arguments that send ``message``, the same for ``/np`` (``send_message``,
    ``followup.send``) and auto-posts (``channel.send``): no mentions ever ping, and what the
    message lacks is left out. Builds the view: call it inside the event loop."""
    arguments = edit_arguments(message)
    return {name: value for name, value in arguments.items() if value is not None}


def edit_arguments(message: NowPlayingMessage) -> dict[str, Any]:
    """Like :func:`send_arguments` for ``Message.edit``: what the message lacks is cleared."""
    return {
        "content": message.content,
        "embed": message.embed,
        "view": make_view(message.buttons),
        "allowed_mentions": discord.AllowedMentions.none(),
    }


def markdown_link(text: str, url: str | None, *, text_limit: int = LINK_TEXT_LIMIT) -> str:
    """``[text](url)`` for other pure builders: escaped, shortened text; a URL that cannot
    break the link (plain escaped text when the URL is unusable)."""
    return _link(text, url, text_limit=text_limit)


def fit_markdown(text: str, limit: int) -> str:
    """One line of escaped text, shortened to fit ``limit`` characters once escaped."""
    return _fit_markdown(text, limit)
