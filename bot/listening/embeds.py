"""Pure rendering for /listening, /recent, /top and /recap.

Functions of their arguments only (the clock comes in as ``now``). Every list is cut to fit
Discord's limits: names shortened with "…", whole lines dropped with "and N more", never a
failed send. An empty list is a plain sentence, not an empty embed.
"""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.listening.now import NowEntry
from bot.listening.server import MIN_RECAP_LISTENERS
from bot.listening.spotify import RecentAnswer
from bot.messages.message import BotMessage
from bot.messages.text import (
    EMBED_DESCRIPTION_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_FOOTER_LIMIT,
    EMBED_TITLE_LIMIT,
    SPOTIFY_GREEN,
    fit_markdown,
    markdown_link,
    truncate,
)
from bot.spotify.models import TopItems
from bot.storage import Recap

MAX_LISTENING_LINES = 25
NAME_LIMIT = 60
ARTISTS_LIMIT = 60
PERIOD_WORDS = {
    "month": "the last month",
    "half-year": "the last six months",
    "all-time": "all time",
    "week": "this week",
}
RECAP_PERIOD_WORDS = {"week": "the last 7 days", "month": "the last 30 days"}


RECAP_PICTURE_NAME = "recap.png"


def _artists(names: Sequence[str]) -> str:
    return fit_markdown(", ".join(names), ARTISTS_LIMIT) if names else ""


def _when(at: float) -> str:
    return f"<t:{int(at)}:R>"


def fit_lines(
    lines: Sequence[str],
    limit: int,
    *,
    max_lines: int | None = None,
    total: int | None = None,
) -> str:
    """Whole lines joined by newlines, as many as fit in ``limit`` characters (and at most
    ``max_lines``); the rest counted in a last line "…and N more". ``total`` counts lines
    that were not even rendered (the default: ``len(lines)``)."""
    total = len(lines) if total is None else max(total, len(lines))
    cap = len(lines) if max_lines is None else min(max_lines, len(lines))
    kept: list[str] = []
    used = 0
    for line in lines[:cap]:
        extra = len(line) + (1 if kept else 0)
        # Keep room for the "and N more" line whenever something could be left out.
        reserve = len(f"\n…and {total} more") if total > len(kept) + 1 else 0
        if used + extra + reserve > limit:
            break
        kept.append(line)
        used += extra
    left = total - len(kept)
    if left:
        kept.append(f"…and {left} more")
    return truncate("\n".join(kept), limit)


def _embed(title: str, description: str | None, footer: str) -> discord.Embed:
    embed = discord.Embed(
        title=truncate(title, EMBED_TITLE_LIMIT), description=description, colour=SPOTIFY_GREEN
    )
    embed.set_footer(text=truncate(footer, EMBED_FOOTER_LIMIT))
    return embed


def render_listening(entries: Sequence[NowEntry], *, guild_name: str) -> BotMessage:
    """``entries`` newest first, already filtered (this server, not private, not ended)."""
    guild_name = fit_markdown(guild_name, NAME_LIMIT)
    if not entries:
        return BotMessage(
            content="Nobody here is listening to Spotify right now, as far as I can see. "
            "Members show up here while the bot sees them play (linked with /link, or with "
            "Spotify in their Discord status)."
        )
    lines = []
    for entry in entries[:MAX_LISTENING_LINES]:  # the rest is only counted
        track = markdown_link(entry.track_name, entry.url, text_limit=NAME_LIMIT)
        artists = _artists(entry.artists)
        parts = [f"<@{entry.member_id}>", track, *([artists] if artists else [])]
        lines.append(" · ".join(parts) + f" · started {_when(entry.started_at)}")
    description = fit_lines(
        lines, EMBED_DESCRIPTION_LIMIT, max_lines=MAX_LISTENING_LINES, total=len(entries)
    )
    count = len(entries)
    who = "1 member is" if count == 1 else f"{count} members are"
    return BotMessage(
        embed=_embed(f"Listening now in {guild_name}", description, f"{who} listening · Spotify")
    )


def render_recent(answer: RecentAnswer, *, member_name: str, is_self: bool) -> BotMessage:
    member_name = fit_markdown(member_name, NAME_LIMIT)
    note = f" {answer.note}" if answer.note else ""
    if not answer.tracks:
        who = "You have" if is_self else f"{member_name} has"
        return BotMessage(content=f"{who} no recent tracks I know of yet.{note}")
    lines = []
    for number, track in enumerate(answer.tracks, start=1):
        link = markdown_link(track.name, track.url, text_limit=NAME_LIMIT)
        artists = _artists(track.artists)
        lines.append(
            f"{number}. {link}" + (f" · {artists}" if artists else "") + f" · {_when(track.at)}"
        )
    room = EMBED_DESCRIPTION_LIMIT - (len(answer.note) + 2 if answer.note else 0)
    description = fit_lines(lines, room)
    if answer.note:
        description += f"\n\n{answer.note}"
    footer = "Spotify" if answer.source == "spotify" else "From the bot's listening log"
    return BotMessage(embed=_embed(f"Recently played by {member_name}", description, footer))


def render_top(top: TopItems, *, member_name: str, period: str) -> BotMessage:
    member_name = fit_markdown(member_name, NAME_LIMIT)
    when = PERIOD_WORDS.get(period, period)
    what = "tracks" if top.kind == "tracks" else "artists"
    if len(top) == 0:
        return BotMessage(
            content=f"Spotify has no top {what} of {member_name} for {when} yet: "
            "it needs a little more listening."
        )
    lines = []
    if top.kind == "tracks":
        for number, track in enumerate(top.tracks, start=1):
            link = markdown_link(track.name, track.url, text_limit=NAME_LIMIT)
            artists = _artists([a.name for a in track.artists])
            lines.append(f"{number}. {link}" + (f" · {artists}" if artists else ""))
    else:
        for number, artist in enumerate(top.artists, start=1):
            lines.append(f"{number}. {markdown_link(artist.name, artist.url)}")
    return BotMessage(
        embed=_embed(
            f"Top {what} of {member_name} · {when}",
            fit_lines(lines, EMBED_DESCRIPTION_LIMIT),
            "Spotify",
        )
    )


def render_recap(recap: Recap, *, guild_name: str, period: str) -> BotMessage:
    guild_name = fit_markdown(guild_name, NAME_LIMIT)
    when = RECAP_PERIOD_WORDS.get(period, period)
    if recap.listeners == 0:
        return BotMessage(
            content=f"No plays logged in {guild_name} in {when} yet. The recap counts what "
            "linked members (and members who opted in) play while the bot is running."
        )
    if recap.listeners < MIN_RECAP_LISTENERS or not recap.tracks:
        return BotMessage(
            content=f"Fewer than {MIN_RECAP_LISTENERS} members of {guild_name} who share their "
            f"listening here played something in {when}. A recap needs at least "
            f"{MIN_RECAP_LISTENERS}, so that it never shows one person's listening."
        )
    track_lines = []
    for number, entry in enumerate(recap.tracks, start=1):
        link = markdown_link(
            entry.name, f"https://open.spotify.com/track/{entry.key}", text_limit=NAME_LIMIT
        )
        artists = _artists(entry.artists)
        track_lines.append(
            f"{number}. {link}" + (f" · {artists}" if artists else "") + f" · {_plays(entry.plays)}"
        )
    artist_lines = [
        f"{number}. {fit_markdown(entry.name, NAME_LIMIT)} · {_plays(entry.plays)}"
        for number, entry in enumerate(recap.artists, start=1)
    ]
    listeners = "1 member" if recap.listeners == 1 else f"{recap.listeners} members"
    embed = _embed(
        f"What {guild_name} played in {when}",
        f"{_plays(recap.plays)} from {listeners} who share their listening here.",
        "The server's own listening log · Spotify",
    )
    embed.add_field(
        name="Top tracks", value=fit_lines(track_lines, EMBED_FIELD_VALUE_LIMIT), inline=False
    )
    if artist_lines:
        embed.add_field(
            name="Top artists", value=fit_lines(artist_lines, EMBED_FIELD_VALUE_LIMIT), inline=False
        )
    return BotMessage(embed=embed)


def _plays(count: int) -> str:
    return "1 play" if count == 1 else f"{count} plays"
