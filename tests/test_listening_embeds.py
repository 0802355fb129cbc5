"""Pure builders of /listening, /recent, /top and /recap: limits, cuts and empty answers."""

from __future__ import annotations

from bot.listening.embeds import (
    fit_lines,
    render_listening,
    render_recap,
    render_recent,
    render_top,
)
from bot.listening.now import NowEntry
from bot.listening.spotify import RecentAnswer, RecentTrack
from bot.messages.message import with_picture
from bot.messages.text import embed_limit_problems
from bot.spotify.models import TopArtist, TopItems
from bot.storage import Recap, RecapEntry

LONG = "Ünïcødé " * 200


def entry(n: int, name: str = "Song") -> NowEntry:
    url = f"https://open.spotify.com/track/{n}"
    return NowEntry(n, f"{name} {n}", ("Band", "Other"), url, 1_700_000_000.0 + n, None, "presence")


def test_listening_shows_25_and_counts_the_rest() -> None:
    rendered = render_listening([entry(n) for n in range(500)], guild_name="Club")
    assert rendered.embed is not None
    lines = (rendered.embed.description or "").splitlines()
    assert len(lines) == 26
    assert lines[-1] == "…and 475 more"
    assert lines[0].startswith("<@0> · [Song 0](https://open.spotify.com/track/0) · Band, Other")
    assert "<t:1700000000:R>" in lines[0]
    assert embed_limit_problems(rendered.embed) == []


def test_listening_long_names_stay_within_limits() -> None:
    rendered = render_listening([entry(n, LONG) for n in range(25)], guild_name=LONG)
    assert rendered.embed is not None
    assert embed_limit_problems(rendered.embed) == []
    assert "…" in (rendered.embed.description or "")


def test_listening_empty_is_a_sentence() -> None:
    rendered = render_listening([], guild_name="Club")
    assert rendered.embed is None
    assert rendered.content
    assert "Nobody" in rendered.content


def test_fit_lines_drops_whole_lines() -> None:
    text = fit_lines(["x" * 50] * 10, 200)
    assert text.splitlines()[-1].startswith("…and ")
    assert len(text) <= 200
    assert all(line in ("x" * 50,) for line in text.splitlines()[:-1])


def test_recent_marks_the_log_and_keeps_the_note() -> None:
    tracks = tuple(RecentTrack(LONG, (LONG,), None, 1_700_000_000.0) for _ in range(10))
    rendered = render_recent(
        RecentAnswer(tracks, "log", "Spotify is busy."), member_name=LONG, is_self=True
    )
    assert rendered.embed is not None
    assert embed_limit_problems(rendered.embed) == []
    assert (rendered.embed.description or "").endswith("Spotify is busy.")
    assert rendered.embed.footer.text == "From the bot's listening log"
    empty = render_recent(RecentAnswer((), "log", None), member_name="Bob", is_self=False)
    assert empty.content == "Bob has no recent tracks I know of yet."


def test_top_artists_are_linked() -> None:
    top = TopItems(
        "artists", "long_term", artists=(TopArtist("A*B", "https://open.spotify.com/artist/1"),)
    )
    rendered = render_top(top, member_name="Alice", period="all-time")
    assert rendered.embed is not None
    assert rendered.embed.description == "1. [A\\*B](https://open.spotify.com/artist/1)"
    assert rendered.embed.title == "Top artists of Alice · all time"


def test_recap_fields_fit_and_name_no_member() -> None:
    recap = Recap(
        tracks=tuple(RecapEntry(f"id{n}", LONG, 100 - n, (LONG,)) for n in range(10)),
        artists=tuple(RecapEntry(LONG, LONG, 50 - n) for n in range(10)),
        listeners=7,
        plays=1234,
    )
    rendered = render_recap(recap, guild_name="Club", period="week")
    assert rendered.embed is not None
    assert embed_limit_problems(rendered.embed) == []
    assert "1234 plays from 7 members" in (rendered.embed.description or "")
    assert [f.name for f in rendered.embed.fields] == ["Top tracks", "Top artists"]


def test_a_picture_is_shown_in_the_embed() -> None:
    recap = Recap(
        tracks=(RecapEntry("id1", "Song", 3, ("Band",)),),
        artists=(RecapEntry("Band", "Band", 3),),
        listeners=3,
        plays=3,
    )
    rendered = with_picture(render_recap(recap, guild_name="Club", period="month"), "r.png", b"x")
    assert rendered.embed is not None
    assert rendered.embed.image.url == "attachment://r.png"
    assert rendered.picture == ("r.png", b"x")
    empty = render_recap(Recap((), (), 0, 0), guild_name="Club", period="week")
    assert with_picture(empty, "r.png", b"x").picture is None  # a sentence has no picture


def test_a_recap_of_fewer_than_three_listeners_says_so_and_nothing_else() -> None:
    few = render_recap(Recap((), (), 2, 0), guild_name="Club", period="week")
    assert few.embed is None
    assert few.content is not None
    assert "Fewer than 3 members of Club" in few.content
    assert "No plays" not in few.content
