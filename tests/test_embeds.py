"""bot.nowplaying.render: real Spotify answers (the fixtures and edited copies) -> embeds."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

# discord.py 2.7.1 imports the stdlib ``audioop`` (voice support), which warns on Python 3.11+,
# and the suite turns warnings into errors. Swallow that one warning for the import only.
# (A project-wide ``filterwarnings`` entry in pyproject.toml would be the better home.)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord

from bot.messages.message import BotMessage, LinkButton, edit_arguments, make_view, send_arguments
from bot.messages.text import (
    EMBED_AUTHOR_NAME_LIMIT,
    EMBED_FIELD_VALUE_LIMIT,
    EMBED_TITLE_LIMIT,
    EMBED_TOTAL_LIMIT,
    SPOTIFY_GREEN,
    embed_limit_problems,
    embed_total_length,
    escape_markdown,
    truncate,
)
from bot.nowplaying.render import (
    PROGRESS_BAR_WIDTH,
    format_duration,
    pick_image,
    progress_bar,
    render_now_playing,
)
from bot.spotify.models import (
    Image,
    NothingPlaying,
    Playback,
    Track,
    parse_currently_playing,
)

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED_AT = 1_677_716_564.187
AVATAR = "https://cdn.discordapp.com/avatars/80351110224678912/a_1f2e3d.png"

TRACK_URL = "https://open.spotify.com/track/0MzEpCmK8RYpsQPkz4mzKy"
ALBUM_URL = "https://open.spotify.com/album/4aOerKfjwm9zjkNJHC3iS5"
ARTIST_URL = "https://open.spotify.com/artist/0SiPm71q3iqjIKTwOq2guQ"
COVER_640 = "https://i.scdn.co/image/ab67616d0000b273fce712500a4be6eaf874c20e"
EPISODE_URL = "https://open.spotify.com/episode/512ojhOuo1ktJprKbVcKyQ"
SHOW_URL = "https://open.spotify.com/show/5CfCWKI5pZ28U0uOzXkDHe"
EPISODE_ART_640 = "https://i.scdn.co/image/ab6765630000ba8a81f07e1ead0317ee3c285bfa"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def parse(payload: dict[str, Any]) -> Playback | NothingPlaying:
    return parse_currently_playing(payload, received_at=RECEIVED_AT)


def track_payload() -> dict[str, Any]:
    return load("currently_playing_track.json")


def render(
    playback: Playback | NothingPlaying,
    *,
    member_name: str = "Ann",
    seconds_later: float = 0.0,
) -> BotMessage:
    return render_now_playing(
        playback,
        member_name=member_name,
        member_avatar_url=AVATAR,
        now=RECEIVED_AT + seconds_later,
    )


def embed_of(message: BotMessage) -> discord.Embed:
    assert message.embed is not None
    return message.embed


def field(embed: discord.Embed, name: str) -> str:
    values = [f.value for f in embed.fields if f.name == name]
    assert len(values) == 1, f"expected one field {name!r}, got {[f.name for f in embed.fields]}"
    assert values[0] is not None
    return values[0]


def field_names(embed: discord.Embed) -> list[str | None]:
    return [f.name for f in embed.fields]


def markdown_links(text: str) -> list[tuple[str, str]]:
    """Every ``[text](url)`` in ``text``; fails on a ``[`` or ``]`` that is not part of one.

    Escaped brackets (``\\[``) are plain text. A link's text may hold escaped brackets, but no
    raw ones, and its URL must be http(s) with no whitespace or parentheses.
    """
    links: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        assert char != "]", f"stray ']' at {index} in {text!r}"
        if char != "[":
            index += 1
            continue
        end = index + 1
        while end < len(text) and text[end] != "]":
            assert text[end] != "[", f"nested '[' at {end} in {text!r}"
            end += 2 if text[end] == "\\" else 1
        assert end < len(text), f"unclosed '[' at {index} in {text!r}"
        assert text[end + 1 : end + 2] == "(", f"'[...]' without a URL in {text!r}"
        close = text.index(")", end + 2)
        url = text[end + 2 : close]
        assert re.fullmatch(r"https?://[^\s()<>\[\]]+", url), f"bad link URL {url!r}"
        links.append((text[index + 1 : end], url))
        index = close + 1
    return links


def assert_valid(message: BotMessage) -> discord.Embed:
    """Within every Discord limit, counted two independent ways, with whole markdown links."""
    embed = embed_of(message)
    assert embed_limit_problems(embed) == []
    assert embed_total_length(embed) == len(embed) <= EMBED_TOTAL_LIMIT
    data = embed.to_dict()
    assert len(data.get("title", "")) <= 256
    assert len(data.get("description", "")) <= 4096
    assert len(data.get("footer", {}).get("text", "")) <= 2048
    assert len(data.get("author", {}).get("name", "")) <= 256
    assert len(data.get("fields", [])) <= 25
    for f in data.get("fields", []):
        assert 0 < len(f["name"]) <= 256
        assert 0 < len(f["value"]) <= 1024
        markdown_links(f["value"])
    markdown_links(data.get("description", ""))
    assert embed.colour is not None
    assert embed.colour.value == SPOTIFY_GREEN
    for button in message.buttons:
        assert button.url.startswith("https://open.spotify.com/")
        assert 0 < len(button.label) <= 80
    return embed


# --- the fixture as Spotify sent it --------------------------------------------------------


def test_fixture_track_at_receive_time() -> None:
    message = render(parse(track_payload()))
    embed = assert_valid(message)

    assert message.content is None
    assert embed.title == "Yume no Naka e"
    assert embed.url == TRACK_URL
    assert embed.author.name == "Ann is listening to"
    assert embed.author.icon_url == AVATAR
    assert field(embed, "Artist") == f"[Cherish]({ARTIST_URL})"
    assert field(embed, "Album") == f"[Best Collection '75]({ALBUM_URL})"
    assert embed.thumbnail.url == COVER_640
    assert embed.footer.text == "Spotify"
    assert embed.description == "`█████░░░░░░░░░░░░░` 0:46 / 2:31"
    assert "Paused" not in (embed.description or "")
    assert message.buttons == (LinkButton(label="Open in Spotify", url=TRACK_URL),)


def test_progress_is_extrapolated_while_playing() -> None:
    embed = embed_of(render(parse(track_payload()), seconds_later=10.5))
    assert (embed.description or "").endswith(" 0:56 / 2:31")


def test_progress_never_runs_backwards_when_the_clock_steps_back() -> None:
    embed = embed_of(render(parse(track_payload()), seconds_later=-30))
    assert (embed.description or "").endswith(" 0:46 / 2:31")


def test_progress_is_clamped_to_duration_when_extrapolated_past_the_end() -> None:
    embed = assert_valid(render(parse(track_payload()), seconds_later=600))
    assert embed.description == f"`{'█' * PROGRESS_BAR_WIDTH}` 2:31 / 2:31"


def test_progress_beyond_duration_in_the_answer_is_clamped() -> None:
    payload = track_payload()
    payload["progress_ms"] = 999_999
    embed = assert_valid(render(parse(payload)))
    assert (embed.description or "").endswith(" 2:31 / 2:31")


def test_paused_track_shows_marker_and_does_not_advance() -> None:
    payload = track_payload()
    payload["is_playing"] = False
    embed = assert_valid(render(parse(payload), seconds_later=120))
    assert embed.author.name == "Ann was listening to"
    assert embed.description == "⏸ Paused\n`█████░░░░░░░░░░░░░` 0:46 / 2:31"
    assert embed.url == TRACK_URL


def test_unknown_progress_shows_length_only() -> None:
    payload = track_payload()
    del payload["progress_ms"]
    embed = assert_valid(render(parse(payload)))
    assert embed.description == "Length 2:31"


def test_several_artists_are_all_linked_in_order() -> None:
    payload = track_payload()
    first = payload["item"]["artists"][0]
    second = copy.deepcopy(first)
    second["name"] = "Yuki_[feat] *Kana*"
    second["external_urls"]["spotify"] = "https://open.spotify.com/artist/1abcdefghij"
    payload["item"]["artists"].append(second)
    embed = assert_valid(render(parse(payload)))
    value = field(embed, "Artists")
    assert value == (
        f"[Cherish]({ARTIST_URL}), "
        r"[Yuki\_\[feat\] \*Kana\*](https://open.spotify.com/artist/1abcdefghij)"
    )
    assert markdown_links(value) == [
        ("Cherish", ARTIST_URL),
        (r"Yuki\_\[feat\] \*Kana\*", "https://open.spotify.com/artist/1abcdefghij"),
    ]


def test_twelve_short_artists_all_fit() -> None:
    payload = track_payload()
    template = payload["item"]["artists"][0]
    payload["item"]["artists"] = []
    for number in range(12):
        artist = copy.deepcopy(template)
        artist["name"] = f"Artist {number}"
        artist["external_urls"]["spotify"] = f"https://open.spotify.com/artist/id{number:02d}"
        payload["item"]["artists"].append(artist)
    embed = assert_valid(render(parse(payload)))
    links = markdown_links(field(embed, "Artists"))
    assert [text for text, _ in links] == [f"Artist {n}" for n in range(12)]
    assert "more" not in field(embed, "Artists")


def test_twelve_long_artists_drop_the_tail_and_say_how_many() -> None:
    payload = track_payload()
    template = payload["item"]["artists"][0]
    payload["item"]["artists"] = []
    for number in range(12):
        artist = copy.deepcopy(template)
        artist["name"] = f"{number:02d} " + "Long Artist Name " * 20
        artist["external_urls"]["spotify"] = f"https://open.spotify.com/artist/id{number:02d}"
        payload["item"]["artists"].append(artist)
    embed = assert_valid(render(parse(payload)))
    value = field(embed, "Artists")
    links = markdown_links(value)
    shown = len(links)
    assert 1 <= shown < 12
    assert value.endswith(f" and {12 - shown} more")
    assert len(value) <= EMBED_FIELD_VALUE_LIMIT
    for number, (text, url) in enumerate(links):
        assert url == f"https://open.spotify.com/artist/id{number:02d}"
        assert text.startswith(f"{number:02d} Long Artist Name")
        assert text.endswith("…")


def test_300_character_names_are_cut_cleanly_and_keep_their_links() -> None:
    payload = track_payload()
    item = payload["item"]
    item["name"] = "T" * 299 + "!"
    item["album"]["name"] = "Album [" + "a" * 293
    item["artists"][0]["name"] = "R" * 300
    embed = assert_valid(render(parse(payload)))

    assert embed.title is not None
    assert len(embed.title) <= EMBED_TITLE_LIMIT
    assert embed.title == "T" * (EMBED_TITLE_LIMIT - 1) + "…"
    assert embed.url == TRACK_URL

    [(album_text, album_url)] = markdown_links(field(embed, "Album"))
    assert album_url == ALBUM_URL
    assert album_text.startswith(r"Album \[aaa")
    assert album_text.endswith("a…")

    [(artist_text, artist_url)] = markdown_links(field(embed, "Artist"))
    assert artist_url == ARTIST_URL
    assert artist_text.startswith("RRRR")
    assert artist_text.endswith("…")
    assert len(artist_text) < 300


def test_long_member_name_keeps_the_author_verb() -> None:
    embed = assert_valid(render(parse(track_payload()), member_name="M" * 300))
    assert embed.author.name is not None
    assert len(embed.author.name) <= EMBED_AUTHOR_NAME_LIMIT
    assert embed.author.name.endswith("… is listening to")


def test_name_that_breaks_markdown_is_escaped_everywhere() -> None:
    payload = track_payload()
    payload["item"]["name"] = "**Bold** ~~strike~~ ||spoiler|| `code` [x](https://evil.example)"
    payload["item"]["album"]["name"] = "# Not a heading"
    embed = assert_valid(render(parse(payload)))
    assert embed.title == (
        r"\*\*Bold\*\* \~\~strike\~\~ \|\|spoiler\|\| \`code\` "
        r"\[x\](https\://evil.example)"
    )
    assert field(embed, "Album") == rf"[\# Not a heading]({ALBUM_URL})"


def test_presence_source_is_marked_and_never_paused() -> None:
    playback = parse(track_payload())
    assert isinstance(playback, Playback)
    presence = dataclasses.replace(playback, source="presence", is_playing=False)
    embed = assert_valid(render(presence, seconds_later=10))
    assert embed.footer.text == "Spotify · from Discord status"
    assert embed.author.name == "Ann is listening to"
    assert "Paused" not in (embed.description or "")
    assert (embed.description or "").endswith(" 0:56 / 2:31")


def test_presence_with_only_a_cover_url_of_unknown_size() -> None:
    track = Track(
        name="Yume no Naka e",
        uri="spotify:track:0MzEpCmK8RYpsQPkz4mzKy",
        duration_ms=151933,
        artists=(),
        album_name="Best Collection '75",
        images=(Image(url=COVER_640),),
        id="0MzEpCmK8RYpsQPkz4mzKy",
        url=TRACK_URL,
    )
    playback = Playback(
        kind="track",
        item=track,
        is_playing=True,
        progress_ms=46170,
        received_at=RECEIVED_AT,
        source="presence",
    )
    message = render(playback)
    embed = assert_valid(message)
    assert embed.thumbnail.url == COVER_640
    assert field_names(embed) == ["Album"]
    assert field(embed, "Album") == "Best Collection '75"
    assert message.buttons == (LinkButton(label="Open in Spotify", url=TRACK_URL),)


# --- episodes, local files, ads, unknown ---------------------------------------------------


def test_three_hour_episode() -> None:
    message = render(parse(load("currently_playing_episode.json")))
    embed = assert_valid(message)
    assert embed.title == r"Three Hours of Songs\_That\_Stay \[Live\]"
    assert embed.url == EPISODE_URL
    assert field(embed, "Podcast") == f"[Songs That Stay]({SHOW_URL})"
    assert field(embed, "Publisher") == "Long Form Audio Ltd"
    assert embed.thumbnail.url == EPISODE_ART_640
    assert embed.description == f"`{'░' * PROGRESS_BAR_WIDTH}` 0:02:05 / 3:00:12"
    assert message.buttons == (LinkButton(label="Open in Spotify", url=EPISODE_URL),)


def test_episode_without_own_images_uses_show_art() -> None:
    payload = load("currently_playing_episode.json")
    payload["item"]["images"] = []
    payload["item"]["show"]["images"] = payload["item"]["show"]["images"][1:]
    embed = assert_valid(render(parse(payload)))
    assert embed.thumbnail.url == "https://i.scdn.co/image/ab67656300005f1f81f07e1ead0317ee3c285bfa"


def test_local_file() -> None:
    message = render(parse(load("currently_playing_local.json")))
    embed = assert_valid(message)
    assert embed.title == r"Demo\_Take\_3"
    assert embed.url is None
    assert field(embed, "Artist") == r"The \*Local\* Band"
    assert field(embed, "Album") == "Basement Tapes"
    assert not embed.thumbnail
    assert embed.description == "📁 Local file\n`████░░░░░░░░░░░░░░` 1:01 / 4:05"
    assert embed.footer.text == "Spotify · local file"
    assert message.buttons == ()
    assert make_view(message.buttons) is None


def test_advertisement() -> None:
    message = render(parse(load("currently_playing_ad.json")))
    embed = assert_valid(message)
    assert embed.title == "Advertisement"
    assert embed.author.name == "Ann is listening to Spotify"
    assert embed.description == (
        "An advertisement is playing. The music will be back after the break."
    )
    assert embed.url is None
    assert message.buttons == ()


def test_unknown_item() -> None:
    payload = load("currently_playing_ad.json")
    payload["currently_playing_type"] = "unknown"
    payload["is_playing"] = False
    message = render(parse(payload))
    embed = assert_valid(message)
    assert embed.title == "Something Spotify does not describe"
    assert embed.author.name == "Ann was listening to Spotify"
    assert embed.description is not None
    assert embed.description.startswith("⏸ Paused\nSpotify is playing something that is neither")
    assert message.buttons == ()


def test_nothing_playing_is_a_friendly_answer() -> None:
    message = render(NothingPlaying(received_at=RECEIVED_AT), member_name="Ann_Lee")
    embed = assert_valid(message)
    assert message.content is None
    assert embed.author.name == "Ann_Lee"
    assert embed.author.icon_url == AVATAR
    assert embed.description == r"Ann\_Lee is not playing anything on Spotify right now."
    assert embed.footer.text == "Spotify"
    assert message.buttons == ()


def test_nothing_playing_from_presence() -> None:
    embed = assert_valid(render(NothingPlaying(source="presence")))
    assert embed.footer.text == "Spotify · from Discord status"


def test_track_type_with_null_item_is_nothing_playing() -> None:
    payload = track_payload()
    payload["item"] = None
    embed = assert_valid(render(parse(payload)))
    assert embed.description == "Ann is not playing anything on Spotify right now."


def test_render_without_avatar() -> None:
    message = render_now_playing(parse(track_payload()), member_name="Ann", now=RECEIVED_AT)
    embed = assert_valid(message)
    assert embed.author.icon_url is None


VARIANTS = [
    "currently_playing_track.json",
    "currently_playing_episode.json",
    "currently_playing_local.json",
    "currently_playing_ad.json",
]


@pytest.mark.parametrize("fixture", VARIANTS)
@pytest.mark.parametrize("is_playing", [True, False])
@pytest.mark.parametrize("long_names", [False, True])
def test_every_variant_respects_discord_limits(
    fixture: str, is_playing: bool, long_names: bool
) -> None:
    payload = load(fixture)
    payload["is_playing"] = is_playing
    item = payload["item"]
    if long_names and item is not None:
        item["name"] = "[Name] " * 60
        if "album" in item:
            item["album"]["name"] = "](x) " * 80
        for artist in item.get("artists", []):
            artist["name"] = "_Artist_ " * 50
        if "show" in item:
            item["show"]["name"] = "\\Show\\ " * 60
            item["show"]["publisher"] = "|Pub| " * 60
    message = render(parse(payload), member_name="N" * 200, seconds_later=5)
    assert_valid(message)


# --- helpers -------------------------------------------------------------------------------


def test_format_duration() -> None:
    assert format_duration(46170) == "0:46"
    assert format_duration(151933) == "2:31"
    assert format_duration(0) == "0:00"
    assert format_duration(59_999) == "0:59"
    assert format_duration(600_000) == "10:00"
    assert format_duration(3_599_999) == "59:59"
    assert format_duration(3_600_000) == "1:00:00"
    assert format_duration(10_812_345) == "3:00:12"
    assert format_duration(46170, force_hours=True) == "0:00:46"
    assert format_duration(-5) == "0:00"


def test_progress_bar() -> None:
    assert progress_bar(0, 100, width=10) == "░" * 10
    assert progress_bar(50, 100, width=10) == "█" * 5 + "░" * 5
    assert progress_bar(100, 100, width=10) == "█" * 10
    assert progress_bar(500, 100, width=10) == "█" * 10
    assert progress_bar(-5, 100, width=10) == "░" * 10
    assert progress_bar(10, 0, width=10) == "░" * 10
    assert progress_bar(46170, 151933) == "█████" + "░" * 13
    assert len(progress_bar(46170, 151933)) == PROGRESS_BAR_WIDTH
    assert progress_bar(1, 2, width=0) == ""


def test_pick_image_prefers_the_largest_within_640() -> None:
    playback = parse(track_payload())
    assert isinstance(playback, Playback)
    assert playback.item is not None
    image = pick_image(playback.item.images)
    assert image is not None
    assert image.url == COVER_640
    small = pick_image(playback.item.images, max_size=300)
    assert small is not None
    assert small.width == 300


def test_pick_image_fallbacks() -> None:
    huge = Image(url="https://i.scdn.co/image/huge", width=2000, height=2000)
    big = Image(url="https://i.scdn.co/image/big", width=1000, height=1000)
    unsized = Image(url="https://i.scdn.co/image/unsized")
    tall = Image(url="https://i.scdn.co/image/tall", width=None, height=600)
    assert pick_image([]) is None
    assert pick_image([huge, big]) == big
    assert pick_image([huge, unsized]) == unsized
    assert pick_image([huge, tall, unsized]) == tall
    assert pick_image([Image(url="https://i.scdn.co/image/wide", width=641, height=100)]) == (
        Image(url="https://i.scdn.co/image/wide", width=641, height=100)
    )


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("exactly10!", 10) == "exactly10!"
    assert truncate("0123456789ab", 10) == "012345678…"
    assert truncate("words and  spaces", 12) == "words and…"
    assert truncate("abc", 1) == "…"
    assert truncate("abc", 0) == ""
    for limit in range(1, 40):
        assert len(truncate("x" * 50, limit)) == limit


def test_truncate_never_splits_a_character() -> None:
    # "e" + combining acute accent is one character on screen.
    assert truncate("cafe\u0301 au lait", 5) == "caf…"
    # A family emoji is one grapheme of seven code points joined by ZWJ.
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
    assert truncate("ab" + family + "cdef", 6) == "ab…"
    # Flags are pairs of regional indicators.
    flags = "\U0001f1ef\U0001f1f5\U0001f1e9\U0001f1ea"  # JP DE
    assert truncate(flags + "xyz", 4) == "\U0001f1ef\U0001f1f5…"
    # A skin tone modifier stays with its hand.
    assert truncate("a\U0001f44b\U0001f3fdbcd", 3) == "a…"


def test_escape_markdown_leaves_ordinary_names_alone() -> None:
    assert escape_markdown("Jay-Z (Live): Remix") == "Jay-Z (Live): Remix"
    assert escape_markdown("Best Collection '75") == "Best Collection '75"
    assert escape_markdown("1. Intro") == r"1\. Intro"
    assert escape_markdown("- dash") == r"\- dash"
    assert escape_markdown("a\\b") == r"a\\b"
    assert escape_markdown("<@123>") == r"\<@123>"


# --- the view (needs the event loop: tests are async) --------------------------------------


async def test_make_view_builds_link_buttons() -> None:
    message = render(parse(track_payload()))
    view = make_view(message.buttons)
    assert view is not None
    assert view.timeout is None
    [button] = view.children
    assert isinstance(button, discord.ui.Button)
    assert button.style is discord.ButtonStyle.link
    assert button.label == "Open in Spotify"
    assert button.url == TRACK_URL
    assert view.to_components() == [
        {
            "type": 1,
            "components": [
                {
                    "type": 2,
                    "style": 5,
                    "disabled": False,
                    "label": "Open in Spotify",
                    "url": TRACK_URL,
                }
            ],
        }
    ]


async def test_make_view_without_buttons_is_none() -> None:
    assert make_view(()) is None


async def test_send_arguments_are_what_np_and_auto_posts_send() -> None:
    message = render(parse(track_payload()))
    arguments = send_arguments(message)
    assert set(arguments) == {"embed", "view", "allowed_mentions"}  # no content: left out
    assert arguments["embed"] is message.embed
    assert arguments["allowed_mentions"].to_dict() == discord.AllowedMentions.none().to_dict()
    assert isinstance(arguments["view"], discord.ui.View)


async def test_edit_arguments_clear_what_the_message_lacks() -> None:
    message = BotMessage(embed=None, content="Nothing playing right now.")
    arguments = edit_arguments(message)
    assert arguments["content"] == "Nothing playing right now."
    assert arguments["embed"] is None  # an edit drops the old embed
    assert arguments["view"] is None  # and the old buttons
    assert set(send_arguments(message)) == {"content", "allowed_mentions"}


# --- the colour picked from the album art ----------------------------------------------------


def test_colour_from_the_album_art_replaces_green() -> None:
    playback = parse(track_payload())
    message = render_now_playing(playback, member_name="Ann", now=RECEIVED_AT, colour=0x8E2DE2)
    assert message.embed is not None
    assert message.embed.colour == discord.Colour(0x8E2DE2)
    assert message.embed.to_dict()["color"] == 0x8E2DE2
    plain = render_now_playing(playback, member_name="Ann", now=RECEIVED_AT, colour=None)
    assert plain.embed is not None
    assert plain.embed.colour == discord.Colour(SPOTIFY_GREEN)


@pytest.mark.parametrize(
    "fixture",
    ["currently_playing_local.json", "currently_playing_ad.json"],
)
def test_items_without_art_stay_green_whatever_colour_is_given(fixture: str) -> None:
    message = render_now_playing(
        parse(load(fixture)), member_name="Ann", now=RECEIVED_AT, colour=0x8E2DE2
    )
    assert message.embed is not None
    assert message.embed.colour == discord.Colour(SPOTIFY_GREEN)


def test_nothing_playing_stays_green() -> None:
    message = render_now_playing(
        NothingPlaying(received_at=RECEIVED_AT), member_name="Ann", now=RECEIVED_AT, colour=0x123456
    )
    assert message.embed is not None
    assert message.embed.colour == discord.Colour(SPOTIFY_GREEN)


def test_bidirectional_controls_never_reach_an_embed() -> None:
    """A right-to-left override in a name ("Ann\u202egpj.exe" shows as "Annexe.jpg") would
    reorder the rest of the line after it: every embedding, override and isolate is dropped."""
    controls = "".join(map(chr, (*range(0x202A, 0x202F), *range(0x2066, 0x206A))))
    payload = track_payload()
    payload["item"]["name"] = f"Song{controls}\u202egpj.exe"
    payload["item"]["artists"][0]["name"] = f"\u2067Band{controls}"
    payload["item"]["album"]["name"] = f"Album\u202d{controls}"
    parsed = parse(payload)
    assert isinstance(parsed, Playback)
    text = json.dumps(
        embed_of(render(parsed, member_name=f"Ann\u202e{controls}")).to_dict(), ensure_ascii=False
    )
    assert not set(controls) & set(text)
    assert "Songgpj.exe" in text
    assert "Ann" in text
