"""bot.listening.chart's pure parts: album dedupe, the cover picked, the answer's embed."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from bot.listening import chart as top_chart
from bot.listening.chart import (
    CHART_PICTURE_NAME,
    ChartEntry,
    album_entries,
    chart_heading,
    cover_url,
    render_chart_answer,
    render_empty_chart,
    tracks_to_ask,
)
from bot.listening.spotify import SpotifyListening
from bot.pictures.charts import ChartRenderer
from bot.pictures.images import ImageFetcher
from bot.spotify.models import Artist, Image, Track

IMAGES = (
    Image("https://i.scdn.co/image/a-640", 640, 640),
    Image("https://i.scdn.co/image/a-300", 300, 300),
    Image("https://i.scdn.co/image/a-64", 64, 64),
)


def track(
    track_id: str, album_id: str | None, *, album_url: str | None = None, images: bool = True
) -> Track:
    return Track(
        name=f"Track {track_id}",
        uri=f"spotify:track:{track_id}",
        duration_ms=1000,
        artists=(Artist("One"), Artist("Two")),
        album_name=f"Album {album_id}",
        album_url=album_url,
        images=tuple(
            Image(f"https://i.scdn.co/image/{album_id}-{px}", px, px) for px in (640, 300, 64)
        )
        if images
        else (),
        id=track_id,
        url=f"https://open.spotify.com/track/{track_id}",
        album_id=album_id,
    )


def test_tracks_to_ask_is_size_squared_at_most_50() -> None:
    assert [tracks_to_ask(size) for size in (3, 4, 5)] == [9, 16, 25]
    with pytest.raises(ValueError, match="chart size"):
        tracks_to_ask(6)


def test_cover_url_prefers_300_px_then_the_smallest_wider_then_the_largest() -> None:
    assert cover_url(IMAGES) == "https://i.scdn.co/image/a-300"
    assert cover_url((IMAGES[0], IMAGES[2])) == "https://i.scdn.co/image/a-640"
    assert cover_url((IMAGES[2],)) == "https://i.scdn.co/image/a-64"
    unsized = (Image("https://i.scdn.co/image/x"),)
    assert cover_url(unsized) == "https://i.scdn.co/image/x"
    assert cover_url(()) is None


def test_one_entry_per_album_in_order_of_first_appearance() -> None:
    tracks = [track("t1", "A"), track("t2", "B"), track("t3", "A"), track("t4", "C")]
    entries = album_entries(tracks, 3)
    assert [e.track for e in entries] == ["Track t1", "Track t2", "Track t4"]
    assert [e.cover_url for e in entries] == [
        "https://i.scdn.co/image/A-300",
        "https://i.scdn.co/image/B-300",
        "https://i.scdn.co/image/C-300",
    ]
    assert entries[0].artist_line == "One, Two"
    assert entries[0].track_url == "https://open.spotify.com/track/t1"


def test_entries_stop_at_size_squared() -> None:
    tracks = [track(f"t{n}", f"album{n}") for n in range(30)]
    assert len(album_entries(tracks, 3)) == 9
    assert len(album_entries(tracks, 4)) == 16
    entries = album_entries(tracks, 5)
    assert len(entries) == 25
    assert entries[-1].track == "Track t24"


def test_tracks_without_album_id_are_never_merged_by_mistake() -> None:
    tracks = [
        track("t1", None, images=False),
        track("t2", None, images=False),
        track("t3", None, album_url="https://open.spotify.com/album/x"),
        track("t4", None, album_url="https://open.spotify.com/album/x"),
    ]
    entries = album_entries(tracks, 3)
    assert [e.track for e in entries] == ["Track t1", "Track t2", "Track t3"]
    assert entries[0].cover_url is None


def test_no_tracks_no_entries() -> None:
    assert album_entries([], 5) == []


def test_answer_embed_shows_the_attachment_and_credits_spotify() -> None:
    entries = [
        ChartEntry("Song *one*", ("Band",), "Album", None, "https://open.spotify.com/track/1"),
        ChartEntry("Ünïcødé 東京", (), None, None, None),
    ]
    rendered = render_chart_answer(
        entries, member_name="Alice", period="half-year", size=4, png=b"\x89PNG..."
    )
    assert rendered.picture == (CHART_PICTURE_NAME, b"\x89PNG...")
    embed = rendered.embed
    assert embed is not None
    assert embed.image.url == "attachment://chart.png"
    assert embed.title == "Chart of Alice · the last six months"
    assert embed.footer.text is not None
    assert "Spotify" in embed.footer.text
    assert "4x4 · 2 albums" in embed.footer.text
    description = embed.description or ""
    lines = description.splitlines()
    assert lines[0] == r"1. [Song \*one\*](https://open.spotify.com/track/1) · Band"
    assert lines[1] == "2. Ünïcødé 東京"  # the text keeps what the picture's font lacks


def test_empty_answer_is_plain_words() -> None:
    mine = render_empty_chart(member_name="Alice", period="month", is_self=True)
    assert mine.embed is None
    assert mine.picture is None
    assert mine.content is not None
    assert "no top tracks of you for the last month" in mine.content
    theirs = render_empty_chart(member_name="Bob", period="all-time", is_self=False)
    assert theirs.content is not None
    assert "of Bob for all time" in theirs.content


def test_heading_names_member_and_period() -> None:
    assert chart_heading("Alice", "all-time") == "Alice · top tracks · all time"


class _SlowImages:
    """Stands in for ImageFetcher: one URL never answers, one fails (None), others answer."""

    fetch_many = ImageFetcher.fetch_many  # the real concurrency and deadline, over this fetch

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.hang = asyncio.Event()

    async def fetch(self, url: str) -> bytes | None:
        self.asked.append(url)
        if url.endswith("slow"):
            await self.hang.wait()
        if url.endswith("broken"):
            return None
        return url.encode()


async def test_covers_are_fetched_once_each_and_late_ones_are_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(top_chart, "COVER_WAIT_SECONDS", 0.05)
    images = _SlowImages()
    renderer = ChartRenderer()
    service = top_chart.TopChart(
        cast(SpotifyListening, object()), cast(ImageFetcher, images), renderer
    )
    entries = [
        ChartEntry("a", (), None, "https://i.scdn.co/image/ok", None),
        ChartEntry("b", (), None, "https://i.scdn.co/image/slow", None),
        ChartEntry("c", (), None, None, None),
        ChartEntry("d", (), None, "https://i.scdn.co/image/ok", None),
        ChartEntry("e", (), None, "https://i.scdn.co/image/broken", None),
    ]
    try:
        covers = await asyncio.wait_for(service.covers(entries), 5)
    finally:
        renderer.close()
    assert covers == [
        b"https://i.scdn.co/image/ok",
        None,
        None,
        b"https://i.scdn.co/image/ok",
        None,
    ]
    assert sorted(images.asked) == sorted(
        [
            "https://i.scdn.co/image/ok",
            "https://i.scdn.co/image/slow",
            "https://i.scdn.co/image/broken",
        ]
    )
