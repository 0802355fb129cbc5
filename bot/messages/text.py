"""Discord message text: the limits Discord enforces, and text that fits them safely.

Pure functions. Every piece of text is cut on a character boundary with "…" before it is placed
(a cut never splits a grapheme), bidirectional controls are dropped so a name cannot reorder the
line around it, markdown is escaped so a name cannot format, mention or link,
masked links are never cut in half (the visible text is shortened, the link stays; a list of
links drops trailing entries and says "and N more"), and :func:`embed_limit_problems` checks a
finished embed the way Discord counts it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from urllib.parse import quote

import discord

# The embed colour when no album art gives one (Spotify's brand green).
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
ELLIPSIS = "…"
# Visible text of one masked link in a list; long names are shortened, the link is kept.
LINK_TEXT_LIMIT = 100


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


# Bidirectional embeddings, overrides and isolates: a name holding one reorders the text
# after it (an override can make "…rab.exe" read as "…exe.bar"), beyond the name itself.
BIDI_CONTROLS = frozenset(map(chr, (*range(0x202A, 0x202F), *range(0x2066, 0x206A))))


def without_bidi_controls(text: str) -> str:
    """``text`` without the characters that reorder what follows them (``BIDI_CONTROLS``)."""
    if BIDI_CONTROLS.isdisjoint(text):
        return text
    return "".join(char for char in text if char not in BIDI_CONTROLS)


def clean_line(text: str) -> str:
    """One line of printable text: newlines, tabs and other control characters become spaces;
    bidirectional controls are dropped."""
    cleaned = "".join(
        " " if unicodedata.category(char) == "Cc" else char for char in without_bidi_controls(text)
    )
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


def fit_markdown(text: str, limit: int) -> str:
    """The escaped form of ``text``, shortened (before escaping) until it fits in ``limit``."""
    cleaned = clean_line(text)
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


def safe_url(url: str | None) -> str | None:
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


def markdown_link(text: str, url: str | None, *, text_limit: int = LINK_TEXT_LIMIT) -> str:
    """``[text](url)`` with escaped, shortened visible text; a URL that cannot break the link
    (plain escaped text when the URL is unusable)."""
    visible = fit_markdown(text, text_limit) or escape_markdown(ELLIPSIS)
    safe = safe_url(url)
    return f"[{visible}]({safe})" if safe else visible


def join_limited(pieces: Sequence[str], limit: int, *, separator: str = ", ") -> str:
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
