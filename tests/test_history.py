"""The listening log against a real SQLite file: one row per play, who is kept, gap filling,
retention, deletion, and what /listening and /recap read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.errors import SpotifyMissingScope, SpotifyRateLimited
from bot.gateway.members import Membership
from bot.listening.log import ListeningLog
from bot.listening.server import ScanBusy, ServerListening
from bot.spotify.models import Artist, NothingPlaying, Playback, PlayedTrack, Track
from bot.storage import Play, Recap, Storage
from tests.helpers import ManualClock, linked_account
from tests.peek import count_plays, log_idle

NOW = 1_800_000_000.0
ALICE = 11
BOB = 12
PRESENCE_ONLY = 13
CAROL = 14
GUILD = 100
OTHER_GUILD = 200


class Privacy:
    def __init__(self) -> None:
        self.private: set[int] = set()

    def is_private_now(self, user_id: int) -> bool:
        return user_id in self.private


class Recent:
    """A stand-in for the Spotify call: the entries, or an error to raise."""

    def __init__(self) -> None:
        self.items: list[PlayedTrack] = []
        self.error: Exception | None = None
        self.calls: list[tuple[int, int | None]] = []

    async def __call__(self, member_id: int, after_ms: int | None) -> Sequence[PlayedTrack]:
        self.calls.append((member_id, after_ms))
        if self.error is not None:
            raise self.error
        return [i for i in self.items if after_ms is None or i.played_at * 1000 > after_ms]


def track(track_id: str = "t1", seconds: int = 200, *artists: str) -> Track:
    return Track(
        name=f"Song {track_id}",
        uri=f"spotify:track:{track_id}",
        duration_ms=seconds * 1000,
        artists=tuple(Artist(a) for a in (artists or ("Band",))),
        id=track_id,
        url=f"https://open.spotify.com/track/{track_id}",
    )


def playing(item: Track, progress: float, at: float, *, is_playing: bool = True) -> Playback:
    return Playback("track", item, is_playing, int(progress * 1000), received_at=at)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with await Storage.open(tmp_path / "bot.db") as opened:
        await opened.links.save_link(linked_account(ALICE))
        await opened.links.save_link(linked_account(BOB))
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def privacy() -> Privacy:
    return Privacy()


@pytest.fixture
def recent() -> Recent:
    return Recent()


@pytest.fixture
async def history(
    storage: Storage, privacy: Privacy, recent: Recent, clock: ManualClock
) -> AsyncIterator[ListeningLog]:
    log = ListeningLog(storage, privacy, keep_days=90, recently_played=recent, clock=clock)
    await log.start()
    yield log
    await log.stop()


async def plays_of(storage: Storage, member: int) -> list[tuple[str, float, str]]:
    return [
        (p.track_id, p.started_at, p.source) for p in await storage.listening.recent_plays(member)
    ]


# --- one play, one row -------------------------------------------------------------------


async def test_two_sources_a_few_seconds_apart_are_one_play(
    history: ListeningLog, storage: Storage
) -> None:
    assert await history.observe(ALICE, playing(track(), 30, NOW), source="spotify")
    # The Discord status says it started 3 s later; a later poll sees it 60 s on.
    assert not await history.observe(ALICE, playing(track(), 27, NOW), source="presence")
    assert not await history.observe(ALICE, playing(track(), 90, NOW + 60), source="spotify")
    assert await plays_of(storage, ALICE) == [("t1", NOW - 30, "spotify")]


async def test_pause_is_the_same_play_and_a_repeat_is_a_new_one(
    history: ListeningLog, storage: Storage
) -> None:
    await history.observe(ALICE, playing(track(seconds=200), 10, NOW), source="spotify")
    # Paused for two minutes at 60 s: the computed start moves 120 s later.
    assert not await history.observe(
        ALICE, playing(track(seconds=200), 70, NOW + 180), source="spotify"
    )
    # Repeat one: the same track starts again a full duration later.
    assert await history.observe(ALICE, playing(track(seconds=200), 5, NOW + 315), source="spotify")
    assert [p[1] for p in await plays_of(storage, ALICE)] == [NOW + 310, NOW - 10]


async def test_a_restart_does_not_duplicate(
    storage: Storage, privacy: Privacy, clock: ManualClock
) -> None:
    first = ListeningLog(storage, privacy, keep_days=90, clock=clock)
    await first.start()
    assert await first.observe(ALICE, playing(track(), 30, NOW), source="spotify")
    await first.stop()
    again = ListeningLog(storage, privacy, keep_days=90, clock=clock)  # no memory of the first
    await again.start()
    assert not await again.observe(ALICE, playing(track(), 33, NOW + 2), source="presence")
    await again.stop()
    assert len(await plays_of(storage, ALICE)) == 1


async def test_paused_nothing_playing_and_local_files_are_not_plays(
    history: ListeningLog, storage: Storage
) -> None:
    await history.observe(ALICE, playing(track(), 30, NOW, is_playing=False), source="spotify")
    await history.observe(ALICE, NothingPlaying(received_at=NOW), source="spotify")
    local = Track(name="Mine", uri="spotify:local:a:b:c:1", duration_ms=1000, is_local=True)
    await history.observe(ALICE, playing(local, 0, NOW), source="spotify")
    assert await plays_of(storage, ALICE) == []


async def test_batched_recording_writes_once(history: ListeningLog, storage: Storage) -> None:
    for offset in range(5):  # five observations of one play, two of another member
        history.observe_soon(ALICE, playing(track(), 30 + offset, NOW + offset), source="presence")
    history.observe_soon(BOB, playing(track("b"), 1, NOW), source="spotify")
    history.observe_soon(BOB, playing(track("b"), 2, NOW + 1), source="spotify")
    await log_idle(history)
    assert len(await plays_of(storage, ALICE)) == 1
    assert len(await plays_of(storage, BOB)) == 1


# --- whose plays ---------------------------------------------------------------------------


async def test_presence_only_members_only_when_opted_in(
    history: ListeningLog, storage: Storage
) -> None:
    assert not await history.observe(PRESENCE_ONLY, playing(track(), 5, NOW), source="presence")
    await storage.settings.set_guild_autopost_opt_in(PRESENCE_ONLY, GUILD, True)
    await history.refresh_member(PRESENCE_ONLY)  # what the cog does after /autopost me
    assert await history.observe(PRESENCE_ONLY, playing(track(), 5, NOW), source="presence")
    # Loaded at start too, as is an explicit /privacy visibility:server.
    await storage.privacy.set_visibility(BOB + 100, "server")
    fresh = ListeningLog(storage, Privacy(), keep_days=90)
    await fresh.start()
    try:
        assert fresh.keeps_plays_of(PRESENCE_ONLY)
        assert fresh.keeps_plays_of(BOB + 100)
        assert not fresh.keeps_plays_of(BOB + 200)
    finally:
        await fresh.stop()


async def test_unlink_forgets_an_explicit_server_choice(storage: Storage) -> None:
    await storage.privacy.set_visibility(ALICE, "server")
    await storage.privacy.set_visibility(BOB, "private")
    await storage.links.delete_member(ALICE)
    await storage.links.delete_member(BOB)
    assert await storage.privacy.get_visibility_choice(ALICE) is None
    assert await storage.privacy.get_visibility_choice(BOB) == "private"  # private stays


async def test_private_members_are_never_logged_and_their_log_is_deleted(
    history: ListeningLog, storage: Storage, privacy: Privacy
) -> None:
    await history.observe(ALICE, playing(track(), 5, NOW), source="spotify")
    await history.note_member(GUILD, ALICE)
    privacy.private.add(ALICE)
    await history.member_went_private(ALICE)
    assert await plays_of(storage, ALICE) == []
    assert await storage.listening.list_listening_guilds() == []
    assert not await history.observe(ALICE, playing(track("t2"), 5, NOW + 300), source="np")
    assert history.listening_in(GUILD, lambda _: True) == []
    assert await plays_of(storage, ALICE) == []


async def test_retention_zero_keeps_nothing(storage: Storage, privacy: Privacy) -> None:
    await storage.listening.record_play(
        Play(ALICE, "old", NOW - 10, "Old", ("A",), 1000, "spotify"), match_from=0, match_to=0
    )
    log = ListeningLog(storage, privacy, keep_days=0)
    await log.start()
    try:
        assert await count_plays(storage) == 0
        assert not await log.observe(ALICE, playing(track(), 5, NOW), source="spotify")
    finally:
        await log.stop()


async def test_prune_removes_only_what_is_older_than_the_retention(
    history: ListeningLog, storage: Storage, clock: ManualClock
) -> None:
    for days in (100, 91, 89, 1):
        await storage.listening.record_play(
            Play(ALICE, f"d{days}", NOW - days * 86400, "x", ("A",), 1000, "spotify"),
            match_from=0,
            match_to=0,
        )
    assert await history.prune() == 2
    assert sorted(p[0] for p in await plays_of(storage, ALICE)) == ["d1", "d89"]


async def test_prune_works_in_batches(storage: Storage) -> None:
    for n in range(25):
        await storage.listening.record_play(
            Play(ALICE, f"t{n}", NOW - 1000 - n, "x", ("A",), 1000, "spotify"),
            match_from=0,
            match_to=0,
        )
    assert await storage.listening.prune_plays(before=NOW, batch=10) == 25


# --- gaps ----------------------------------------------------------------------------------


async def test_gap_fill_matches_played_at_to_logged_plays(
    history: ListeningLog, storage: Storage, recent: Recent
) -> None:
    # Logged live: started at NOW - 230 (a 200 s track), so Spotify says played_at ~NOW - 30.
    await history.observe(ALICE, playing(track("live"), 30, NOW - 200), source="spotify")
    recent.items = [
        PlayedTrack(track("live"), NOW - 30 + 1.5),
        PlayedTrack(track("missed", 180), NOW - 400),
        PlayedTrack(track("before", 180), NOW - 5000),
    ]
    assert await history.gaps.fill(ALICE, NOW - 1000) == 1
    assert recent.calls == [(ALICE, int((NOW - 1000) * 1000))]
    assert ("missed", NOW - 580, "recently_played") in await plays_of(storage, ALICE)
    assert await history.gaps.fill(ALICE, NOW - 1000) == 0  # idempotent


async def test_gap_fill_gives_up_quietly_without_scope_or_on_429(
    history: ListeningLog, recent: Recent
) -> None:
    recent.error = SpotifyMissingScope("no scope")
    assert await history.gaps.fill(ALICE, NOW - 100) == 0
    recent.error = SpotifyRateLimited(5, 10)
    assert await history.gaps.fill(ALICE, NOW - 100) == 0
    assert await history.gaps.fill(PRESENCE_ONLY, NOW - 100) == 0  # not kept: not asked
    assert [call[0] for call in recent.calls] == [ALICE, ALICE]


async def test_restart_catch_up_starts_at_the_latest_logged_play(
    history: ListeningLog, storage: Storage, recent: Recent, clock: ManualClock
) -> None:
    await history.observe(ALICE, playing(track("a"), 10, NOW - 600), source="spotify")
    recent.items = [PlayedTrack(track("while-down", 100), NOW - 200)]
    history.observe_soon(ALICE, playing(track("b"), 1, NOW), source="spotify", catch_up=True)
    await log_idle(history)
    assert recent.calls == [(ALICE, int((NOW - 610) * 1000))]
    assert [p[0] for p in await plays_of(storage, ALICE)] == ["b", "while-down", "a"]


# --- what the commands read ----------------------------------------------------------------


async def test_listening_in_a_server_only_shows_members_seen_there(
    history: ListeningLog, privacy: Privacy, clock: ManualClock
) -> None:
    await history.note_member(GUILD, ALICE)
    await history.note_member(OTHER_GUILD, BOB)
    await history.observe(ALICE, playing(track("a"), 10, NOW), source="spotify")
    await history.observe(BOB, playing(track("b"), 10, NOW), source="spotify")
    assert [e.member_id for e in history.listening_in(GUILD)] == [ALICE]
    assert [e.member_id for e in history.listening_in(OTHER_GUILD)] == [BOB]
    clock.advance(200)  # Alice's track (200 s, started 10 s ago) has ended
    assert history.listening_in(GUILD) == []
    privacy.private.add(BOB)
    assert history.listening_in(OTHER_GUILD) == []


class Members:
    """Everyone is in every server, except ``gone``, whom Discord says left."""

    def __init__(self) -> None:
        self.gone: set[int] = set()
        self.asked: list[set[int]] = []

    def cached(self, guild_id: int) -> Callable[[int], bool] | None:
        return None

    async def check(self, guild_id: int, member_ids: Collection[int]) -> Membership:
        self.asked.append(set(member_ids))
        ids = set(member_ids)
        return Membership(frozenset(ids - self.gone), frozenset(ids & self.gone))


async def test_recap_counts_members_of_the_server_and_first_artists(
    history: ListeningLog, privacy: Privacy, storage: Storage, clock: ManualClock
) -> None:
    members = Members()
    server = ServerListening(history, storage.listening, privacy, members, clock=clock)
    await storage.links.save_link(linked_account(CAROL))
    await history.member_linked(CAROL)
    for member in (ALICE, BOB, CAROL):
        await history.note_member(GUILD, member)
    await history.note_member(OTHER_GUILD, PRESENCE_ONLY)
    for n in range(3):
        await history.observe(
            ALICE, playing(track("hit", 100, "Star", "Guest"), 1, NOW - 1000 * n), source="np"
        )
    await history.observe(BOB, playing(track("hit", 100, "Star"), 1, NOW), source="np")
    await history.observe(BOB, playing(track("b2", 100, "Other"), 1, NOW - 500), source="np")
    await history.observe(CAROL, playing(track("c", 100, "Other"), 1, NOW - 600), source="np")
    await storage.listening.record_play(
        Play(PRESENCE_ONLY, "else", NOW, "Elsewhere", ("Far",), 1000, "presence"),
        match_from=0,
        match_to=0,
    )
    await storage.listening.record_play(
        Play(ALICE, "old", NOW - 9 * 86400, "Old", ("Past",), 1000, "np"), match_from=0, match_to=0
    )
    recap = await server.recap(GUILD, "week", asker=ALICE)
    assert [(t.key, t.plays, t.artists) for t in recap.tracks] == [
        ("hit", 4, ("Star",)),  # named as in its latest play
        ("b2", 1, ("Other",)),
        ("c", 1, ("Other",)),
    ]
    assert [(a.name, a.plays) for a in recap.artists] == [("Star", 4), ("Other", 2)]
    assert (recap.listeners, recap.plays) == (3, 6)
    assert members.asked[-1] == {ALICE, BOB, CAROL}  # only who played in the period
    assert (await server.recap(GUILD, "month", asker=ALICE)).plays == 7
    # Bob chose private, Carol left: one listener is no recap, and nothing of theirs shows
    # (the privacy listener and the member-remove event drop the cached recaps).
    privacy.private.add(BOB)
    server.forget_member(BOB)
    members.gone.add(CAROL)
    assert await server.recap(GUILD, "week", asker=ALICE) == Recap((), (), 1, 0)
    assert not history.roster.knows(GUILD, CAROL)  # dropped until seen there again


class CountingListening:
    """The listening store, counting the recap reads and able to hold them."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def listeners_since(self, member_ids: Collection[int], *, since: float) -> set[int]:
        self.reads += 1
        await self.gate.wait()
        return await self._store.listeners_since(member_ids, since=since)

    async def recap(self, member_ids: Collection[int], *, since: float) -> Recap:
        return await self._store.recap(member_ids, since=since)


async def test_a_recap_is_read_once_per_minute_and_dropped_when_a_member_changes(
    history: ListeningLog, privacy: Privacy, storage: Storage, clock: ManualClock
) -> None:
    members = Members()
    counting = CountingListening(storage.listening)
    minute = ManualClock(1000.0)
    server = ServerListening(
        history,
        counting,
        privacy,
        members,
        clock=clock,
        monotonic=minute,  # type: ignore[arg-type]
    )
    for member in (ALICE, BOB, CAROL):
        await history.note_member(GUILD, member, only_if_logged=False)
        await storage.listening.record_play(
            Play(member, f"t{member}", NOW - 60, "Song", ("Artist",), 1000, "np"),
            match_from=0,
            match_to=0,
        )
    # Twenty at once (all from one member): one read, one answer for all.
    counting.gate.clear()
    asked = [asyncio.create_task(server.recap(GUILD, "week", asker=ALICE)) for _ in range(20)]
    await asyncio.sleep(0.05)
    # Meanwhile the same member asks for another period: one scan at a time each.
    with pytest.raises(ScanBusy) as busy:
        await server.recap(GUILD, "month", asker=ALICE)
    assert "still reading" in busy.value.user_message
    counting.gate.set()
    recaps = await asyncio.gather(*asked)
    assert counting.reads == 1
    assert all(r == recaps[0] for r in recaps)
    assert recaps[0].listeners == 3
    # Within the minute, from anyone: the same recap, no read.
    await server.recap(GUILD, "week", asker=BOB)
    assert counting.reads == 1
    # A member it counted goes private (or unlinks, or changes an opt-in): read again.
    privacy.private.add(BOB)
    server.forget_member(BOB)
    assert (await server.recap(GUILD, "week", asker=ALICE)).listeners == 2
    assert counting.reads == 2
    # A member who is not in it changes nothing.
    server.forget_member(PRESENCE_ONLY)
    server.forget_member(ALICE, guild_id=OTHER_GUILD)
    await server.recap(GUILD, "week", asker=ALICE)
    assert counting.reads == 2
    # Leaving the server drops it too; and after a minute it is read again anyway.
    server.forget_member(CAROL, guild_id=GUILD)
    await server.recap(GUILD, "week", asker=ALICE)
    assert counting.reads == 3
    minute.advance(61)
    await server.recap(GUILD, "week", asker=ALICE)
    assert counting.reads == 4


async def test_recap_albums_sum_their_tracks(storage: Storage) -> None:
    def play(track_id: str, album: str, at: float) -> Play:
        return Play(
            ALICE,
            track_id,
            at,
            f"Song {track_id}",
            ("Star", "Guest"),
            1000,
            "np",
            album_id=album,
            album_name=f"Album {album}",
            image_url=f"https://i.scdn.co/image/{album}",
        )

    for n, (track_id, album) in enumerate([("a1", "A"), ("a2", "A"), ("b1", "B"), ("a1", "A")]):
        await storage.listening.record_play(
            play(track_id, album, NOW - 1000 * n), match_from=0, match_to=0
        )
    recap = await storage.listening.recap([ALICE], since=NOW - 86400)
    assert [(a.album_id, a.name, a.artist, a.plays, a.image_url) for a in recap.albums] == [
        ("A", "Album A", "Star", 3, "https://i.scdn.co/image/A"),
        ("B", "Album B", "Star", 1, "https://i.scdn.co/image/B"),
    ]


async def test_where_members_were_seen_is_forgotten_with_the_retention(
    history: ListeningLog, storage: Storage, clock: ManualClock
) -> None:
    """A server a member was last seen in longer ago than LISTENING_LOG_DAYS (90 here) is
    forgotten with the plays of that age; a member seen again is kept (the sighting is
    written again, at most hourly)."""
    await history.note_member(GUILD, ALICE)
    await history.note_member(GUILD, BOB)
    clock.advance(2 * 3600)
    await history.note_member(GUILD, BOB)  # seen again: stored again
    await history.note_member(OTHER_GUILD, ALICE)
    clock.advance(90 * 86400 - 3600)  # Alice's first sighting is now over 90 days old
    await history.prune()
    rows = await storage.listening.list_listening_guilds()
    assert sorted((row[0], row[1]) for row in rows) == [(GUILD, BOB), (OTHER_GUILD, ALICE)]
    assert not history.roster.knows(GUILD, ALICE)
    assert history.roster.knows(OTHER_GUILD, ALICE)
    clock.advance(2 * 3600)
    await history.prune()
    assert await storage.listening.list_listening_guilds() == []
    assert history.roster.members_of(GUILD) == frozenset()
