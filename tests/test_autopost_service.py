"""AutopostService: posting rules, who is followed, channel problems, the loop and shutdown.

Discord is an in-memory :class:`FakeDiscordSide` (the ``DiscordSide`` protocol), storage is a real
SQLite file, Spotify is a dict of answers. End-to-end behaviour against the fake Discord and
fake Spotify servers lives in ``tests/e2e/test_autopost.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.autopost.config import AutopostConfig, SchedulerConfig
from bot.autopost.ports import (
    ChannelCheck,
    ChannelState,
    ChannelUnusable,
    DiscordUnavailable,
    MemberView,
)
from bot.autopost.scheduler import PollScheduler
from bot.autopost.service import AutopostService
from bot.errors import LinkBroken, SpotifyRateLimited
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.spotify.models import (
    CurrentlyPlaying,
    NothingPlaying,
    Playback,
    Track,
)
from bot.storage import LastPost, Storage
from tests.fakes.daily_budget import RollingAllowance, reserve_for
from tests.fakes.discord_side import FakeDiscordSide
from tests.helpers import ManualClock, eventually, linked_account
from tests.peek import global_autopost_opt_in, polls_in_flight

GUILD = 1001
OTHER_GUILD = 1002
MUSIC = 2001
OTHER_MUSIC = 2002
ALICE = 3001
BOB = 3002
CAROL = 3003  # never linked: known only through presence

FAST = SchedulerConfig(
    skip_check_interval=0.3,
    end_margin=0.05,
    end_jitter=0.0,
    recheck_after_stale=0.1,
    paused_backoff=(0.2,),
    idle_backoff=(0.2,),
    error_backoff=(0.2,),
    initial_spread=0.0,
    budget_per_window=3000,
)


def track(track_id: str, *, playing: bool = True, progress_ms: int = 10_000) -> Playback:
    item = Track(
        name=f"Song {track_id}", uri=f"spotify:track:{track_id}", duration_ms=200_000, id=track_id
    )
    return Playback(
        kind="track",
        item=item,
        is_playing=playing,
        progress_ms=progress_ms,
        received_at=time.time(),
    )


def local_file(name: str) -> Playback:
    uri = f"spotify:local:Artist:Album:{name}:200"
    item = Track(name=name, uri=uri, duration_ms=200_000, is_local=True)
    return Playback(kind="track", item=item, is_playing=True, progress_ms=0, received_at=0.0)


def side_with_members() -> FakeDiscordSide:
    """Alice, Bob and Carol in GUILD, nobody in OTHER_GUILD; every call yields once."""
    return FakeDiscordSide(members={GUILD: {ALICE, BOB, CAROL}, OTHER_GUILD: set()}, delay=0.0)


class Spotify:
    """What each member plays; counts the polls."""

    def __init__(self) -> None:
        self.playing: dict[int, CurrentlyPlaying | Exception] = {}
        self.calls: dict[int, int] = {}

    async def fetch(self, member_id: int) -> CurrentlyPlaying:
        self.calls[member_id] = self.calls.get(member_id, 0) + 1
        await asyncio.sleep(0)
        answer = self.playing.get(member_id, NothingPlaying())
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class World:
    storage: Storage
    side: FakeDiscordSide
    spotify: Spotify
    wall: ManualClock
    service: AutopostService
    posted: list[tuple[str, float]]

    async def restart(self, **config: object) -> AutopostService:
        await self.service.stop()
        self.side.posts.clear()
        self.service = make_service(self, **config)
        await self.service.start()
        await self.service.settle()
        return self.service


def make_service(world: World, **config: object) -> AutopostService:
    options: dict[str, object] = {"scheduler": FAST, **config}
    return AutopostService(
        world.storage,
        world.spotify.fetch,
        world.side,
        config=AutopostConfig(**options),  # type: ignore[arg-type]
        wall_clock=world.wall,
        on_post=lambda action, lag: world.posted.append((action, lag)),
        renderer=NowPlayingRenderer(None),
    )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    storage = await Storage.open(tmp_path / "bot.db")
    await storage.links.save_link(linked_account(ALICE))
    await storage.links.save_link(linked_account(BOB))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    spotify = Spotify()
    built = World(storage, side_with_members(), spotify, ManualClock(1_750_000_000.0), None, [])  # type: ignore[arg-type]
    built.service = make_service(built)
    await built.service.start()
    await built.service.settle()
    try:
        yield built
    finally:
        await built.service.stop()
        await storage.close()


async def polls_settled(service: AutopostService) -> None:
    """Until no poll is in flight: a poll started before a change has been counted."""
    await eventually(lambda: polls_in_flight(service) == 0)


async def others_polled(world: World, member_id: int = BOB, times: int = 3) -> None:
    """Until ``member_id`` was polled ``times`` more times: the loop went on meanwhile (a
    progress to wait for, instead of a stretch of wall-clock time)."""
    start = world.spotify.calls.get(member_id, 0)
    await eventually(lambda: world.spotify.calls.get(member_id, 0) >= start + times)


async def loop_turns(service: AutopostService) -> None:
    """Wake the loop and let it run its turn (and the tasks it starts) before going on."""
    service.parts.loop._wake.set()
    for _ in range(20):
        await asyncio.sleep(0)


# --- posting rules -------------------------------------------------------------------------


async def test_a_new_item_is_posted_once(world: World) -> None:
    service = world.service
    await service.observe(ALICE, track("t1"), source="presence")
    await service.observe(ALICE, track("t1", progress_ms=50_000), source="spotify")
    assert world.side.titles() == ["Song t1"]
    stored = await world.storage.last_posts.get_last_post(ALICE, MUSIC)
    assert stored is not None
    assert stored.item_key == "t1"
    assert stored.message_id == world.side.posts[0].message_id
    assert [action for action, _ in world.posted] == ["posted"]


async def test_pause_resume_and_seek_are_not_new_items(world: World) -> None:
    service = world.service
    await service.observe(ALICE, track("t1"))
    await service.observe(ALICE, track("t1", playing=False))
    await service.observe(ALICE, track("t1", progress_ms=5_000))
    await service.observe(ALICE, track("t1", progress_ms=150_000))
    assert world.side.titles() == ["Song t1"]


async def test_a_new_item_first_seen_paused_is_posted_at_once_and_not_again_on_resume(
    world: World,
) -> None:
    # It may be left for the next track without playing again: it was current, so it counts.
    await world.service.observe(ALICE, track("t1", playing=False))
    assert world.side.titles() == ["Song t1"]
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1"]


async def test_nothing_playing_and_ads_post_nothing(world: World) -> None:
    await world.service.observe(ALICE, NothingPlaying())
    ad = Playback(kind="ad", item=None, is_playing=True, progress_ms=0)
    await world.service.observe(ALICE, ad)
    assert world.side.posts == []


async def test_a_replay_after_another_item_is_new(world: World) -> None:
    service = world.service
    await service.observe(ALICE, track("t1"))
    world.side.someone_else_posts(MUSIC)
    await service.observe(ALICE, track("t2"))
    world.side.someone_else_posts(MUSIC)
    await service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1", "Song t2", "Song t1"]


async def test_local_files_are_told_apart_by_uri(world: World) -> None:
    service = world.service
    await service.observe(ALICE, local_file("one"))
    world.side.someone_else_posts(MUSIC)
    await service.observe(ALICE, local_file("one"))
    await service.observe(ALICE, local_file("two"))
    assert world.side.titles() == ["one", "two"]


async def test_concurrent_sources_post_an_item_once(world: World) -> None:
    """The same presence update from three guilds and a poll, all at once."""
    service = world.service
    await asyncio.gather(
        *(service.observe(ALICE, track("t1"), source="presence") for _ in range(3)),
        service.observe(ALICE, track("t1"), source="spotify"),
    )
    assert world.side.titles() == ["Song t1"]


async def test_rapid_skips_edit_the_previous_post(world: World) -> None:
    service = world.service
    await service.observe(ALICE, track("t1"))
    world.wall.now += 10
    await service.observe(ALICE, track("t2"))
    world.wall.now += 10
    await service.observe(ALICE, track("t3"))
    assert len(world.side.posts) == 1
    assert world.side.titles() == ["Song t3"]
    assert len(world.side.posts[0].edits) == 2
    assert [action for action, _ in world.posted] == ["posted", "edited", "edited"]
    stored = await world.storage.last_posts.get_last_post(ALICE, MUSIC)
    assert stored is not None
    assert stored.item_key == "t3"


async def test_a_post_after_ours_means_a_new_post(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    world.side.someone_else_posts(MUSIC)
    world.wall.now += 10
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1", "Song t2"]
    assert world.side.posts[0].edits == []


async def test_another_members_post_after_ours_means_a_new_post(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    await world.service.observe(BOB, track("b1"))
    world.wall.now += 5
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1", "Song b1", "Song t2"]


async def test_an_old_post_is_not_edited(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    world.wall.now += 30
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1", "Song t2"]


async def test_a_deleted_previous_post_means_a_new_post(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    world.side.messages.clear()  # someone deleted it; Discord keeps last_message_id
    world.wall.now += 5
    await world.service.observe(ALICE, track("t2"))
    assert len(world.side.posts) == 2


async def test_an_edit_window_of_zero_never_edits(world: World) -> None:
    service = await world.restart(edit_window=0.0)
    await service.observe(ALICE, track("t1"))
    await service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1", "Song t2"]


async def test_a_restart_does_not_repost_what_is_playing(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    service = await world.restart()
    await service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    world.wall.now += 60
    await service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t2"]


async def test_every_music_channel_gets_the_post_once(world: World) -> None:
    world.side.members[OTHER_GUILD] = {ALICE}
    await world.service.set_channel(OTHER_GUILD, OTHER_MUSIC)
    await world.service.observe(ALICE, track("t1"))
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles(MUSIC) == ["Song t1"]
    assert world.side.titles(OTHER_MUSIC) == ["Song t1"]


async def test_the_embed_is_the_np_embed_with_the_guild_display_name(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    embed = world.side.posts[0].message.embed
    assert embed is not None
    assert embed.author.name is not None
    assert f"member{ALICE}" in embed.author.name


async def test_the_hook_gets_the_lag_from_the_item_start(world: World) -> None:
    playback = track("t1", progress_ms=2_000)
    world.wall.now = playback.received_at + 1.0
    await world.service.observe(ALICE, playback)
    assert world.posted == [("posted", pytest.approx(3.0))]


async def test_a_failing_hook_does_not_stop_posting(world: World) -> None:
    def broken(action: str, lag: float) -> None:
        raise RuntimeError("metrics bug")

    world.service.parts.poster.on_post = broken
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1"]


# --- who may be posted ---------------------------------------------------------------------


async def test_a_member_who_left_the_guild_is_not_posted(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    world.side.members[GUILD].discard(ALICE)
    world.side.someone_else_posts(MUSIC)
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1"]
    await world.service.settle()
    assert not world.service.is_followed(ALICE)


async def test_an_opted_out_member_is_not_posted(world: World) -> None:
    await world.service.set_opt_in(ALICE, False)
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    assert await global_autopost_opt_in(world.storage, ALICE) is False
    await world.service.set_opt_in(ALICE, True)
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1"]


async def test_an_opt_out_during_a_post_stops_it(world: World) -> None:
    gate = asyncio.Event()
    looking_up = asyncio.Event()
    original = world.side.fetch_member

    async def slow_lookup(guild_id: int, user_id: int) -> MemberView | None:
        looking_up.set()
        await gate.wait()
        return await original(guild_id, user_id)

    world.side.fetch_member = slow_lookup  # type: ignore[method-assign]
    posting = asyncio.create_task(world.service.observe(ALICE, track("t1")))
    await asyncio.wait_for(looking_up.wait(), 5)
    await world.service.set_opt_in(ALICE, False)
    gate.set()
    await posting
    assert world.side.posts == []


async def test_presence_only_members_are_out_until_they_opt_in(world: World) -> None:
    await world.service.observe(CAROL, track("c1"), source="presence")
    assert world.side.posts == []
    await world.service.set_opt_in(CAROL, True)
    await world.service.observe(CAROL, track("c1"), source="presence")
    assert world.side.titles() == ["Song c1"]
    assert not world.service.is_followed(CAROL)  # not linked: nothing to poll


async def test_unlinking_forgets_the_member(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    await world.storage.links.delete_member(ALICE)
    world.service.member_unlinked(ALICE)
    assert world.service.last_post(ALICE, MUSIC) is None
    assert not world.service.is_followed(ALICE)
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles() == ["Song t1"]


async def test_a_failed_post_is_tried_again_on_the_next_observation(world: World) -> None:
    world.side.send_error = DiscordUnavailable("503")
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    assert world.service.last_post(ALICE, MUSIC) is None
    world.side.send_error = None
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1"]


async def test_a_failed_member_lookup_is_tried_again(world: World) -> None:
    world.side.lookup_error = DiscordUnavailable("timeout")
    await world.service.observe(ALICE, track("t1"))
    world.side.lookup_error = None
    await world.service.observe(ALICE, track("t1"))
    assert world.side.titles() == ["Song t1"]


# --- channels that stop working ------------------------------------------------------------


async def test_a_deleted_channel_turns_auto_post_off_with_a_notice(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.service.channel_deleted(GUILD, MUSIC, name="music")
    assert world.service.music_channel(GUILD) is None
    settings = await world.storage.settings.get_guild_settings(GUILD)
    assert settings is not None
    assert settings.music_channel_id is None
    assert "auto-post turned off in guild" in caplog.text
    notice = await world.service.take_notice(GUILD)
    assert notice is not None
    assert "#music was deleted" in notice
    assert await world.service.take_notice(GUILD) is None
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []


async def test_a_deleted_other_channel_changes_nothing(world: World) -> None:
    await world.service.channel_deleted(GUILD, 9999, name="random")
    assert world.service.music_channel(GUILD) == MUSIC
    assert await world.service.take_notice(GUILD) is None


async def test_a_channel_gone_from_the_cache_is_found_at_post_time(world: World) -> None:
    world.side.checks[MUSIC] = ChannelCheck(ChannelState.DELETED)
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    assert world.service.music_channel(GUILD) is None
    notice = await world.service.take_notice(GUILD)
    assert notice is not None
    assert "was deleted" in notice


async def test_a_lost_permission_turns_auto_post_off_and_names_it(world: World) -> None:
    world.side.checks[MUSIC] = ChannelCheck(
        ChannelState.MISSING_PERMISSIONS, "music", ("Send Messages", "Embed Links")
    )
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    notice = await world.service.take_notice(GUILD)
    assert notice is not None
    assert "Send Messages, Embed Links" in notice
    assert "#music" in notice


@pytest.mark.parametrize("reason", ["deleted", "forbidden"])
async def test_discord_refusing_a_post_turns_auto_post_off(world: World, reason: str) -> None:
    world.side.send_error = ChannelUnusable(reason)  # type: ignore[arg-type]
    await world.service.observe(ALICE, track("t1"))
    assert world.service.music_channel(GUILD) is None
    assert await world.service.take_notice(GUILD) is not None
    assert world.service.last_post(ALICE, MUSIC) is None


async def test_a_guild_not_in_the_cache_is_skipped_quietly(world: World) -> None:
    world.side.checks[MUSIC] = ChannelCheck(ChannelState.UNAVAILABLE)
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []
    assert world.service.music_channel(GUILD) == MUSIC


async def test_a_new_channel_forgets_the_last_posts_of_the_old_one(world: World) -> None:
    await world.service.observe(ALICE, track("t1"))
    await world.service.set_channel(GUILD, OTHER_MUSIC)
    assert world.service.last_post(ALICE, MUSIC) is None
    assert await world.storage.last_posts.get_last_post(ALICE, MUSIC) is None
    world.side.posts.clear()
    await world.service.observe(ALICE, track("t2"))
    assert world.side.titles(OTHER_MUSIC) == ["Song t2"]


async def test_turn_off_stops_posts_and_says_whether_it_was_on(world: World) -> None:
    assert await world.service.turn_off(GUILD) is True
    assert await world.service.turn_off(GUILD) is False
    await world.service.observe(ALICE, track("t1"))
    assert world.side.posts == []


# --- following and polling -----------------------------------------------------------------


async def test_linked_members_in_a_music_guild_are_polled_and_posted(world: World) -> None:
    world.spotify.playing[ALICE] = track("t1")
    await eventually(lambda: world.side.titles() == ["Song t1"])
    assert world.service.is_followed(ALICE)
    assert world.service.is_followed(BOB)


async def test_members_in_no_music_guild_are_not_polled(world: World) -> None:
    world.side.members[GUILD] = {BOB}
    service = await world.restart()
    assert not service.is_followed(ALICE)
    assert service.is_followed(BOB)
    world.spotify.calls.clear()
    await others_polled(world, BOB)
    assert world.spotify.calls.get(ALICE, 0) == 0


async def test_no_music_channel_means_no_polling(world: World) -> None:
    await world.service.turn_off(GUILD)
    await world.service.settle()
    await polls_settled(world.service)
    world.spotify.calls.clear()
    assert len(world.service.scheduler) == 0  # nobody left to poll
    await loop_turns(world.service)
    assert world.spotify.calls == {}
    await world.service.set_channel(GUILD, MUSIC)
    await eventually(lambda: world.spotify.calls.get(ALICE, 0) > 0)


async def test_opting_out_stops_polling_at_once(world: World) -> None:
    await eventually(lambda: world.spotify.calls.get(ALICE, 0) > 0)
    await world.service.set_opt_in(ALICE, False)
    await polls_settled(world.service)  # a poll already in flight may still land
    calls = world.spotify.calls.get(ALICE, 0)
    await others_polled(world, BOB)
    assert world.spotify.calls.get(ALICE, 0) == calls
    assert not world.service.is_followed(ALICE)


async def test_unlinking_stops_polling(world: World) -> None:
    await eventually(lambda: world.spotify.calls.get(ALICE, 0) > 0)
    world.service.member_unlinked(ALICE)
    await polls_settled(world.service)
    calls = world.spotify.calls.get(ALICE, 0)
    await others_polled(world, BOB)
    assert world.spotify.calls.get(ALICE, 0) == calls


async def test_a_broken_link_stops_polling(world: World) -> None:
    world.spotify.playing[ALICE] = LinkBroken("invalid_grant")
    await eventually(lambda: not world.service.is_followed(ALICE))
    await polls_settled(world.service)
    calls = world.spotify.calls[ALICE]
    await others_polled(world, BOB)
    assert world.spotify.calls[ALICE] == calls
    assert world.service.is_followed(BOB)


async def test_a_newly_linked_member_is_followed(world: World) -> None:
    await world.storage.links.save_link(linked_account(CAROL))
    await world.service.member_linked(CAROL)
    await world.service.settle()
    assert world.service.is_followed(CAROL)


async def test_a_429_holds_every_poll(world: World) -> None:
    await eventually(lambda: world.spotify.calls.get(BOB, 0) > 0)
    before = world.spotify.calls.get(ALICE, 0)
    hold_until = time.monotonic() + 0.6
    world.spotify.playing[ALICE] = SpotifyRateLimited(0.6, hold_until)
    await eventually(lambda: world.spotify.calls.get(ALICE, 0) > before)
    await polls_settled(world.service)  # polls started before the answer still land
    counts = dict(world.spotify.calls)
    while time.monotonic() < hold_until - 0.05:
        assert world.spotify.calls == counts
        await asyncio.sleep(0.02)
    world.spotify.playing[ALICE] = NothingPlaying()
    await eventually(lambda: world.spotify.calls.get(BOB, 0) > counts.get(BOB, 0))


@dataclass
class Hold:
    """The sender's hold, as the loop reads it."""

    hold_until: float = 0.0
    hold_quota_exceeded: bool = False

    def hold_remaining(self) -> float:
        return max(0.0, self.hold_until - time.monotonic())


async def test_the_senders_hold_from_an_interactive_429_holds_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = await Storage.open(tmp_path / "bot.db")
    await storage.links.save_link(linked_account(ALICE))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    spotify = Spotify()
    hold = Hold()
    service = AutopostService(
        storage,
        spotify.fetch,
        side_with_members(),
        config=AutopostConfig(scheduler=FAST),
        hold=hold,
        renderer=NowPlayingRenderer(None),
    )
    try:
        await service.start()
        await eventually(lambda: spotify.calls.get(ALICE, 0) > 0)
        hold.hold_until = time.monotonic() + 0.5
        scheduler = service.scheduler
        assert isinstance(scheduler, PollScheduler)
        await loop_turns(service)  # the loop reads the sender's hold at its next turn
        await eventually(lambda: scheduler.held_until == hold.hold_until)
        await polls_settled(service)
        calls = spotify.calls[ALICE]
        while time.monotonic() < hold.hold_until - 0.05:
            assert spotify.calls[ALICE] == calls
            await asyncio.sleep(0.02)
        await eventually(lambda: spotify.calls[ALICE] > calls)
        assert "polling paused for 0 s: Spotify rate-limited us" in caplog.text
    finally:
        await service.stop()
        await storage.close()


async def test_an_answer_after_an_unobserved_stretch_reports_the_gap(tmp_path: Path) -> None:
    # A play counts from ``min_counted_play``; idle checks 0.2 s apart leave such gaps.
    config = dataclasses.replace(FAST, min_counted_play=0.1)
    storage = await Storage.open(tmp_path / "bot.db")
    await storage.links.save_link(linked_account(ALICE))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    spotify = Spotify()
    gaps: list[tuple[int, float]] = []
    service = AutopostService(
        storage,
        spotify.fetch,
        side_with_members(),
        config=AutopostConfig(scheduler=config),
        on_gap=lambda member_id, since: gaps.append((member_id, since)),
        renderer=NowPlayingRenderer(None),
    )
    try:
        started = time.time()
        await service.start()
        await eventually(lambda: spotify.calls.get(ALICE, 0) > 0)  # idle
        assert gaps == []
        spotify.playing[ALICE] = track("t1", progress_ms=0)
        await eventually(lambda: gaps)
        member_id, since = gaps[0]
        assert member_id == ALICE
        assert started - 0.01 <= since <= time.time() - 0.1  # Unix time
    finally:
        await service.stop()
        await storage.close()


async def test_the_daily_allowance_reaches_the_scheduler(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "bot.db")
    await storage.links.save_link(linked_account(ALICE))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    spotify = Spotify()
    allowance = RollingAllowance(600, time.time)
    allowance.count("poll", 600 - reserve_for(600))  # the day is spent: nothing for polling
    service = AutopostService(
        storage,
        spotify.fetch,
        side_with_members(),
        config=AutopostConfig(scheduler=FAST),
        renderer=NowPlayingRenderer(None),
        daily_allowance=allowance,
    )
    try:
        await service.start()
        await service.settle()
        assert service.is_followed(ALICE)
        await loop_turns(service)
        assert spotify.calls == {}  # followed, due, and not polled: no call the sender refuses
        assert "listening profile" in service.per_member_state()
        service.member_unlinked(ALICE)
        assert not any(service.per_member_state().values())
    finally:
        await service.stop()
        await storage.close()


async def test_polls_stay_under_the_concurrency_limit(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "bot.db")
    members = list(range(5000, 5040))
    for member_id in members:
        await storage.links.save_link(linked_account(member_id))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    side = side_with_members()
    side.members[GUILD] = set(members)
    gate = asyncio.Event()
    running = {"now": 0, "most": 0}

    async def slow_fetch(member_id: int) -> CurrentlyPlaying:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        try:
            await gate.wait()
        finally:
            running["now"] -= 1
        return NothingPlaying()

    service = AutopostService(
        storage,
        slow_fetch,
        side,
        config=AutopostConfig(scheduler=FAST, max_concurrent_polls=3),
        renderer=NowPlayingRenderer(None),
    )
    try:
        await service.start()
        await eventually(lambda: running["now"] == 3)
        await loop_turns(service)  # a turn with everyone due and no slot free
        assert running["most"] == 3
        assert polls_in_flight(service) == 3
    finally:
        gate.set()
        await service.stop()
        await storage.close()


async def test_stop_leaves_no_task_behind(world: World) -> None:
    world.spotify.playing[ALICE] = track("t1")
    await eventually(lambda: world.side.posts)
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert any((t.get_name() or "").startswith("autopost") for t in before)
    await world.service.stop()
    after = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert not [t for t in after if (t.get_name() or "").startswith("autopost")]


async def test_the_loop_waits_for_discord(tmp_path: Path) -> None:
    storage = await Storage.open(tmp_path / "bot.db")
    await storage.links.save_link(linked_account(ALICE))
    await storage.settings.set_music_channel(GUILD, MUSIC)
    side = side_with_members()
    side.ready.clear()
    spotify = Spotify()
    service = AutopostService(
        storage,
        spotify.fetch,
        side,
        config=AutopostConfig(scheduler=FAST),
        renderer=NowPlayingRenderer(None),
    )
    try:
        await service.start()
        await loop_turns(service)
        assert spotify.calls == {}
        side.ready.set()
        await eventually(lambda: spotify.calls.get(ALICE, 0) > 0)
    finally:
        await service.stop()
        await storage.close()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_concurrent_polls"):
        AutopostConfig(max_concurrent_polls=0)
    with pytest.raises(ValueError, match="membership_ttl"):
        AutopostConfig(membership_ttl=0)


async def test_stored_last_posts_survive_in_storage(world: World) -> None:
    post = LastPost(ALICE, MUSIC, "t9", 123, world.wall.now)
    await world.storage.last_posts.record_post(post)
    service = await world.restart()
    assert service.last_post(ALICE, MUSIC) == post


async def test_the_scheduler_handed_in_is_used_even_while_empty(world: World) -> None:
    scheduler = PollScheduler(FAST)
    assert len(scheduler) == 0  # falsy: must not be replaced by a default one
    service = AutopostService(
        world.storage,
        world.spotify.fetch,
        world.side,
        scheduler=scheduler,
        renderer=NowPlayingRenderer(None),
    )
    assert service.scheduler is scheduler


async def test_suspended_members_are_not_polled_until_resumed(world: World) -> None:
    await eventually(lambda: world.spotify.calls.get(ALICE, 0) > 0)
    world.service.suspend_polling(ALICE)  # e.g. their presence shows Spotify
    await polls_settled(world.service)
    calls = world.spotify.calls[ALICE]
    await others_polled(world, BOB)
    assert world.spotify.calls[ALICE] == calls
    assert world.service.is_followed(ALICE)
    world.service.resume_polling(ALICE)
    await eventually(lambda: world.spotify.calls[ALICE] > calls)


async def test_the_loop_survives_a_failing_turn(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = world.service.scheduler
    original = scheduler.pop_due
    failures = {"left": 1}

    def pop_due(now: float, limit: int | None = None) -> list[int]:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("scheduler bug")
        return original(now, limit)

    scheduler.pop_due = pop_due  # type: ignore[method-assign]
    world.service.parts.loop._wake.set()
    await eventually(lambda: failures["left"] == 0)
    calls = world.spotify.calls.get(BOB, 0)
    await eventually(lambda: world.spotify.calls.get(BOB, 0) > calls, timeout=3)
    assert "the polling loop failed" in caplog.text
