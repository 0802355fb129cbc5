"""Auto-post benchmark: the poll scheduler at the bot's default budget, as a user runs it.

Run: ``.venv/bin/python bench/autopost.py`` (two sizes, 100 and 300 listeners, each about 7.5
minutes; ``--duration`` is the measured minutes per size, 6 by default; ``--sizes 100`` for one).

One process serves the fake Spotify and the fake Discord on loopback and plays the listeners;
the poller runs in its own process, as the real bot would: a discord.py client connected to
the fake gateway, the real token manager, Spotify sender and client, and ``AutopostService``
with our ``PollScheduler`` at ``--budget`` (default 120 requests per 30 s, the bot's default
``SPOTIFY_REQUEST_BUDGET``). ``--baseline`` adds a second process that asks about every member
every 10 s (its own guild and Spotify accounts, so every call and post is attributable).

Listeners (per size): 80% play real-length tracks (2 to 5 minutes) back to back, a quarter of
them skipped at a random point; 15% of tracks are paused once for 10 to 90 s, and a third of
those are left for the next track while paused (so some tracks are first seen paused); 20% of
listeners are idle (Spotify answers 204). Halfway through the measured time one
currently-playing answer is an app-wide 429 with Retry-After 10.

Figures: detection latency from a track's start on the fake to the first post or edit showing
it arriving at the fake Discord (both on this process's monotonic clock), split into natural
changes and changes after a skip; Spotify calls per playing and per idle listener-hour after a
warm-up (``--warmup``, 30 s: first checks and token refreshes); missed tracks (current for 30 s
or more, paused time included, and never shown); duplicate posts; calls that arrived inside
the 429 hold (from 0.25 s after the 429 was answered: requests already on the wire when it was
sent do not count); and the skip-check stretch the scheduler reported (1.0: none). Tracks are
judged from 30 s after the start and from the member's first check (the start-up ramp spreads
first checks at the budget's rate: it is printed), except those starting in the last 35 s.

``--presence`` runs the presence benchmark instead (``bench/autopost_presence.py``): the real
bot in presence mode, PRESENCE_UPDATE -> post latency and Spotify calls for covered members.

``--scale 10000`` instead schedules 10,000 linked members (no Spotify, no posting: stub
sources) in this process for ``--scale-seconds`` and prints the peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import heapq
import json
import logging
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.autopost_presence import add_arguments as add_presence_arguments
from bench.autopost_presence import run_presence
from bot.autopost.config import AutopostConfig, SchedulerConfig
from bot.autopost.discord_side import DiscordPySide
from bot.autopost.observations import Gone, Observation, RateLimited, RecordResult
from bot.autopost.ports import ChannelCheck, ChannelState, PollScheduling
from bot.autopost.scheduler import PollScheduler
from bot.autopost.service import AutopostService
from bot.client import intents_for
from bot.crypto import TokenCipher
from bot.gateway.connection import DiscordConnection
from bot.members.tokens import TokenManager
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.spotify.api import SpotifyApi
from bot.spotify.http import SpotifySender
from bot.spotify.models import CurrentlyPlaying, NothingPlaying, parse_currently_playing
from bot.storage import Storage
from tests.fakes.discord import FakeDiscord, make_channel, make_guild, make_member, make_user
from tests.fakes.discord import run_client as run_discord_client
from tests.fakes.discord_side import FakeDiscordSide
from tests.fakes.spotify import (
    FakeSpotify,
    track_payload,
)
from tests.helpers import fake_spotify_auth, link_fake_user, linked_account

ALL_POLLERS = ("ours", "baseline")
GUILD_IDS = {"ours": 710_000_000_000_000_001, "baseline": 720_000_000_000_000_001}
CHANNEL_IDS = {"ours": 710_000_000_000_000_011, "baseline": 720_000_000_000_000_011}
MEMBER_BASE = {"ours": 810_000_000_000_000_000, "baseline": 820_000_000_000_000_000}
SPOTIFY_PREFIX = {"ours": "o", "baseline": "b"}
KEY = base64.urlsafe_b64encode(b"bench-autopost-key-0123456789abc"[:32]).decode()
SETTLE_MARGIN = 35.0  # tracks starting this close to the end are not judged
TRACKS_FROM = 30.0  # tracks are judged from this long after the start (first checks done)
MIN_COUNTED_PLAY = 30.0
NATURAL_TARGET = 2.0  # natural change -> post, p95 target (s)
HOLD_REACH = 1.5  # a track ending this long before a 429 has its end check inside the hold
HOLD_SECONDS = 10  # Retry-After of the app-wide 429 in the middle of the run
ON_THE_WIRE = 0.25  # requests arriving this soon after the 429 left before it was seen
PAUSED_SHARE = 0.15  # tracks paused once
LEFT_WHILE_PAUSED = 1 / 3  # of the paused tracks: the next track starts after the pause


# --- the baseline ----------------------------------------------------------------------------


class FixedIntervalScheduler:
    """What other bots do: ask about every member every ``interval`` seconds, whatever they
    play. First checks are spread over one interval; a 429 holds everyone."""

    def __init__(self, interval: float = 10.0, rng: random.Random | None = None) -> None:
        self.interval = interval
        self._rng = rng or random.Random()
        self._due: dict[int, float] = {}  # math.inf while in flight
        self._heap: list[tuple[float, int]] = []
        self._hold = -math.inf

    def add(self, member_id: int, now: float) -> float:
        if member_id in self._due:
            return self._due[member_id]
        return self._plan(member_id, now + self._rng.uniform(0.0, self.interval))

    def remove(self, member_id: int) -> bool:
        return self._due.pop(member_id, None) is not None

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._due

    def __len__(self) -> int:
        return len(self._due)

    def _plan(self, member_id: int, due: float) -> float:
        self._due[member_id] = due
        heapq.heappush(self._heap, (due, member_id))
        return due

    def _peek(self) -> tuple[float, int] | None:
        while self._heap:
            due, member_id = self._heap[0]
            if self._due.get(member_id) == due:
                return due, member_id
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float, limit: int | None = None) -> list[int]:
        popped: list[int] = []
        if now < self._hold:
            return popped
        while limit is None or len(popped) < limit:
            top = self._peek()
            if top is None or top[0] > now:
                break
            heapq.heappop(self._heap)
            self._due[top[1]] = math.inf
            popped.append(top[1])
        return popped

    def next_wakeup(self, now: float) -> float | None:
        top = self._peek()
        return None if top is None else max(top[0], self._hold)

    def record(self, member_id: int, observation: Observation, now: float) -> RecordResult:
        if member_id not in self._due:
            return RecordResult(None)
        if isinstance(observation, Gone):
            self.remove(member_id)
            return RecordResult(None)
        if isinstance(observation, RateLimited):
            self.hold_all_until(observation.retry_at)
        return RecordResult(self._plan(member_id, max(now, self._hold) + self.interval))

    def hold_all_until(self, until: float) -> None:
        self._hold = max(self._hold, until)

    def stretch(self, now: float) -> float:
        return 1.0  # it never stretches: it polls everyone, whatever the budget


# --- simulated listeners ---------------------------------------------------------------------


@dataclass(slots=True)
class Play:
    track_id: str
    start: float
    duration: float
    played: float  # seconds actually played
    skipped: bool  # left before its end (skipped, or left while paused)
    after_skip: bool  # the previous track was skipped
    first: bool
    pause_at: float = math.inf  # progress at which it was paused
    pause_for: float = 0.0

    @property
    def current_for(self) -> float:
        """How long it was Spotify's current item, paused time included."""
        return self.played + self.pause_for

    def position(self, now: float) -> tuple[float, bool]:
        """Progress (seconds) and whether it is paused at ``now``."""
        elapsed = max(0.0, now - self.start)
        paused = self.pause_at <= elapsed < self.pause_at + self.pause_for
        if paused:
            progress = self.pause_at
        elif elapsed >= self.pause_at:
            progress = elapsed - self.pause_for
        else:
            progress = elapsed
        return min(self.duration, progress), paused


def make_plays(rng: random.Random, index: int, begin: float, until: float) -> list[Play]:
    plays: list[Play] = []
    at = begin
    previous_skipped = False
    number = 0
    while at < until:
        duration = rng.uniform(120.0, 300.0)
        skipped = rng.random() < 0.25
        played = rng.uniform(3.0, duration - 3.0) if skipped else duration
        pause_at, pause_for = math.inf, 0.0
        if rng.random() < PAUSED_SHARE:
            pause_for = rng.uniform(10.0, 90.0)
            if rng.random() < LEFT_WHILE_PAUSED:  # paused, then the next track
                pause_at = played = rng.uniform(3.0, played - 1.0)
                skipped = True
            else:
                pause_at = rng.uniform(3.0, played - 3.0)
        if number == 0:
            at = begin - rng.uniform(0.0, played)  # already playing when the bench starts
        play = Play(
            f"L{index:04d}N{number:03d}",
            at,
            duration,
            played,
            skipped,
            previous_skipped,
            number == 0,
            pause_at,
            pause_for,
        )
        plays.append(play)
        at += play.current_for
        previous_skipped = skipped
        number += 1
    return plays


class Timeline:
    """The fake Spotify's answer for one listener, computed from real time at each call."""

    def __init__(self, plays: list[Play]) -> None:
        self.plays = plays
        self.starts = [play.start for play in plays]

    def __call__(self) -> dict[str, Any]:
        now = time.monotonic()
        play = self.plays[max(0, bisect.bisect_right(self.starts, now) - 1)]
        progress, paused = play.position(now)
        return track_payload(
            play.track_id,
            f"Track {play.track_id}",
            int(play.duration * 1000),
            int(progress * 1000),
            is_playing=not paused,
        )


# --- a poller process ------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def worker(config: dict[str, Any]) -> None:
    """One poller: discord.py client + storage + tokens + AutopostService, until SIGTERM."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    scheduler: PollScheduling
    if config["poller"] == "ours":
        scheduler = PollScheduler(SchedulerConfig(budget_per_window=config["budget"]))
    else:
        scheduler = FixedIntervalScheduler(config["baseline_interval"])
    client = discord.Client(intents=intents_for(False), guild_ready_timeout=0.05)
    connection = DiscordConnection()
    connection.attach(client)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        storage = await Storage.open(config["database"])
        sender = SpotifySender(session)
        auth = fake_spotify_auth(sender, config["spotify_base"])
        api = SpotifyApi(sender, api_base=f"{config['spotify_base']}/v1")
        tokens = TokenManager(storage, TokenCipher([base64.urlsafe_b64decode(KEY)]), auth)

        async def poll(member_id: int) -> CurrentlyPlaying:
            return await tokens.call(member_id, api.currently_playing)

        service = AutopostService(
            storage,
            poll,
            DiscordPySide(connection),
            scheduler=scheduler,
            config=AutopostConfig(max_concurrent_polls=config["concurrency"]),
            hold=sender,
            renderer=NowPlayingRenderer(None),
        )
        fake = SimpleNamespace(token=config["discord_token"], base_url=config["discord_base"])
        stretches: list[float] = []

        async def sample_stretch() -> None:
            while True:
                stretches.append(service.skip_check_stretch())
                await asyncio.sleep(1.0)

        async with run_discord_client(client, fake, ready_timeout=60.0):  # type: ignore[arg-type]
            await service.start()
            await service.settle()
            sampler = asyncio.create_task(sample_stretch())
            print(f"READY {service.followed_count}", flush=True)
            await stop.wait()
            sampler.cancel()
            await service.stop()
        await storage.close()
    result = {
        "peak_rss_mb": peak_rss_mb(),
        "stretch_mean": sum(stretches) / len(stretches) if stretches else 1.0,
        "stretch_max": max(stretches, default=1.0),
        "stretched_share": sum(x > 1.0 for x in stretches) / len(stretches) if stretches else 0.0,
    }
    print("RESULT " + json.dumps(result), flush=True)


# --- the driver ------------------------------------------------------------------------------


@dataclass
class PollerProcess:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    result: dict[str, Any] | None = None


async def start_poller(name: str, config: dict[str, Any], folder: Path) -> PollerProcess:
    log_path = folder / f"{name}.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--worker",
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=log_path.open("wb"),
    )
    poller = PollerProcess(name, process, log_path)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    if not line.startswith(b"READY"):
        raise RuntimeError(f"{name} did not start: {line!r}; see {log_path}")
    print(f"  {name}: following {line.split()[1].decode()} members", flush=True)
    return poller


async def stop_poller(poller: PollerProcess) -> None:
    poller.process.send_signal(signal.SIGTERM)
    assert poller.process.stdout is not None
    async with asyncio.timeout(60):
        async for line in poller.process.stdout:
            if line.startswith(b"RESULT "):
                poller.result = json.loads(line[len(b"RESULT ") :])
        await poller.process.wait()
    if poller.result is None:
        raise RuntimeError(f"{poller.name} gave no result; see {poller.log_path}")


async def prepare_database(
    path: Path, poller: str, listeners: int, spotify: FakeSpotify, cipher: TokenCipher
) -> None:
    async with await Storage.open(path) as storage:
        for index in range(listeners):
            member_id = MEMBER_BASE[poller] + index
            user = f"{SPOTIFY_PREFIX[poller]}{index}"
            spotify.add_user(user)
            await link_fake_user(storage, spotify, cipher, member_id, user)
        await storage.settings.set_music_channel(GUILD_IDS[poller], CHANNEL_IDS[poller])


def bench_guild(poller: str, listeners: int) -> dict[str, Any]:
    members = [
        make_member(make_user(MEMBER_BASE[poller] + index, f"{poller}{index}"))
        for index in range(listeners)
    ]
    return make_guild(
        GUILD_IDS[poller],
        f"{poller} guild",
        channels=[make_channel(CHANNEL_IDS[poller], "music")],
        members=members,
    )


@dataclass
class Figures:
    listeners: int
    ramp: float  # seconds from the first member's first check to the last one's
    calls_active_hour: float
    calls_idle_hour: float
    calls_active_hour_whole: float
    calls_idle_hour_whole: float
    natural: list[float]
    after_skip: list[float]
    missed: int
    judged: int
    first_seen_paused: int
    duplicates: int
    calls_in_hold: int
    slow_natural: list[tuple[float, str]] = field(default_factory=list)  # (latency, why)
    natural_outside_hold: list[float] = field(default_factory=list)
    posts: int = 0
    edits: int = 0
    peak_rss_mb: float = math.nan
    stretch_mean: float = math.nan
    stretch_max: float = math.nan
    stretched_share: float = math.nan


def display_events(discord_fake: FakeDiscord, channel_id: int) -> list[tuple[float, str]]:
    """(arrival, track id) of every post and edit that reached the channel, in order."""
    prefix = f"/channels/{channel_id}/messages"
    events = []
    for request in discord_fake.requests:
        if request.status != 200 or not request.path.startswith(prefix):
            continue
        if request.method not in ("POST", "PATCH") or not isinstance(request.json, dict):
            continue
        embeds = request.json.get("embeds") or []
        url = embeds[0].get("url") if embeds else None
        if isinstance(url, str):
            events.append((request.received_at, url.rsplit("/", 1)[-1]))
    return sorted(events)


def poll_counts(spotify: FakeSpotify) -> Counter[str]:
    """currently-playing calls so far, per Spotify user."""
    return Counter(
        {
            user: count
            for (endpoint, user), count in spotify.calls.items()
            if endpoint == "currently_playing" and user
        }
    )


def hold_window(spotify: FakeSpotify, prefix: str) -> tuple[float, float] | None:
    """When one poller's 429 was answered and when its hold ended."""
    for r in spotify.requests:
        if (
            r.endpoint == "currently_playing"
            and r.status == 429
            and (r.user or "").startswith(prefix)
        ):
            return r.at, r.at + HOLD_SECONDS
    return None


def calls_in_hold(spotify: FakeSpotify, prefix: str) -> int:
    """currently-playing calls of one poller that arrived inside its 429 hold."""
    requests = [
        r for r in spotify.requests if r.endpoint == "currently_playing" and r.user is not None
    ]
    hold = hold_window(spotify, prefix)
    if hold is None:
        return 0
    hold_from, hold_until = hold[0] + ON_THE_WIRE, hold[1]
    return sum(
        1
        for r in requests
        if r.user is not None and r.user.startswith(prefix) and hold_from <= r.at < hold_until
    )


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def first_sighting_paused(play: Play, calls: list[float]) -> bool:
    """Whether the first check made while ``play`` was current found it paused."""
    for at in calls:
        if at < play.start:
            continue
        elapsed = at - play.start
        if elapsed >= play.current_for:
            return False
        return play.pause_at <= elapsed < play.pause_at + play.pause_for
    return False


def judge(
    poller: str,
    timelines: dict[int, list[Play]],
    idle: list[int],
    calls: tuple[Counter[str], float],
    whole_run: tuple[Counter[str], float],
    events: list[tuple[float, str]],
    window: tuple[float, float],
    check_times: dict[str, list[float]],
    hold: tuple[float, float] | None,
) -> Figures:
    """``calls``: polls per Spotify user since a time; ``window``: tracks starting in it;
    ``hold``: when the 429 hold began and ended (None: no 429 was answered)."""
    begin, end = window
    prefix = SPOTIFY_PREFIX[poller]

    def rate(counted: tuple[Counter[str], float], members: Iterable[int]) -> float:
        counts, since = counted
        indexes = list(members)
        hours = (end - since) / 3600.0
        total = sum(counts[f"{prefix}{index}"] for index in indexes)
        return total / (len(indexes) * hours) if indexes else math.nan

    first_seen: dict[str, float] = {}
    shown = Counter(track_id for _, track_id in events)
    for at, track_id in events:
        first_seen.setdefault(track_id, at)
    natural: list[float] = []
    after_skip: list[float] = []
    slow: list[tuple[float, str]] = []
    outside_hold: list[float] = []
    missed = judged = seen_paused = 0
    for index, plays in timelines.items():
        checks = check_times.get(f"{prefix}{index}", [])
        followed_from = checks[0] if checks else math.inf  # the member's first check
        for previous, play in zip([None, *plays], plays, strict=False):
            if play.first or not max(begin, followed_from) <= play.start <= end - SETTLE_MARGIN:
                continue
            seen = first_seen.get(play.track_id)
            if play.current_for >= MIN_COUNTED_PLAY:
                judged += 1
                seen_paused += first_sighting_paused(play, checks)
                if seen is None:
                    missed += 1
            if seen is not None:
                (after_skip if play.after_skip else natural).append(seen - play.start)
                if not play.after_skip and not ended_in_hold(play, hold):
                    outside_hold.append(seen - play.start)
                if not play.after_skip and seen - play.start > NATURAL_TARGET:
                    why = slow_reason(play, previous, checks, hold)
                    slow.append((seen - play.start, f"L{index:04d} {why}"))
    first_checks = [
        times[0]
        for user, times in check_times.items()
        if user.startswith(prefix) and user[len(prefix) :].isdigit()
    ]
    return Figures(
        listeners=len(timelines) + len(idle),
        ramp=max(first_checks) - min(first_checks) if first_checks else math.nan,
        calls_active_hour=rate(calls, timelines),
        calls_idle_hour=rate(calls, idle),
        calls_active_hour_whole=rate(whole_run, timelines),
        calls_idle_hour_whole=rate(whole_run, idle),
        natural=natural,
        after_skip=after_skip,
        missed=missed,
        judged=judged,
        first_seen_paused=seen_paused,
        duplicates=sum(count - 1 for count in shown.values() if count > 1),
        calls_in_hold=0,
        slow_natural=sorted(slow, reverse=True),
        natural_outside_hold=outside_hold,
    )


def ended_in_hold(play: Play, hold: tuple[float, float] | None) -> bool:
    """Whether the check that would see ``play`` start (1-1.5 s after the previous track's
    end) fell inside the 429 hold: nothing can see it before the hold ends."""
    return hold is not None and hold[0] - HOLD_REACH <= play.start <= hold[1]


def slow_reason(
    play: Play, previous: Play | None, checks: list[float], hold: tuple[float, float] | None
) -> str:
    """Why a natural change took long to post: what the poller could have known."""
    if hold is not None and ended_in_hold(play, hold):
        return f"ended inside the 429 hold ({play.start - hold[0]:+.1f} s from its start)"
    if previous is not None and previous.pause_for and previous.pause_at < math.inf:
        return "the previous track was paused and resumed (its end known only after a check)"
    before = [at - play.start for at in checks if play.start - 40 <= at < play.start + 10]
    where = f"; {play.start - hold[0]:+.0f} s from the 429" if hold is not None else ""
    return "checks around it at " + ", ".join(f"{at:+.1f}" for at in before) + " s" + where


def lat(values: list[float]) -> str:
    return (
        f"{percentile(values, 0.5):5.2f} / {percentile(values, 0.95):5.2f}"
        f" / {max(values, default=math.nan):5.1f}"
    )


ROWS = [
    ("Spotify calls per playing listener-hour", lambda f: f"{f.calls_active_hour:.1f}"),
    ("Spotify calls per idle listener-hour", lambda f: f"{f.calls_idle_hour:.1f}"),
    (
        "  the same from the start (playing/idle)",
        lambda f: f"{f.calls_active_hour_whole:.1f} / {f.calls_idle_hour_whole:.1f}",
    ),
    ("latency natural p50 / p95 / max (s)", lambda f: lat(f.natural)),
    (
        "  natural p95 outside the hold (inside: n)",
        lambda f: (
            f"{percentile(f.natural_outside_hold, 0.95):.2f} "
            f"({len(f.natural) - len(f.natural_outside_hold)})"
        ),
    ),
    ("latency after a skip p50 / p95 / max (s)", lambda f: lat(f.after_skip)),
    ("tracks timed (natural / after skip)", lambda f: f"{len(f.natural)} / {len(f.after_skip)}"),
    ("missed tracks current >= 30 s", lambda f: f"{f.missed} of {f.judged}"),
    ("  of those judged: first seen paused", lambda f: f"{f.first_seen_paused}"),
    ("duplicate posts", lambda f: f"{f.duplicates}"),
    ("calls inside the 429 hold", lambda f: f"{f.calls_in_hold}"),
    ("posts / edits", lambda f: f"{f.posts} / {f.edits}"),
    (
        "skip-check stretch mean / max (share > 1)",
        lambda f: f"{f.stretch_mean:.2f} / {f.stretch_max:.2f} ({f.stretched_share:.0%})",
    ),
    ("start-up: first checks of all spread over (s)", lambda f: f"{f.ramp:.0f}"),
    ("peak RSS of the poller process (MB)", lambda f: f"{f.peak_rss_mb:.1f}"),
]


def report(runs: list[dict[str, Figures]], args: argparse.Namespace) -> bool:
    columns: list[tuple[str, Figures]] = []
    for figures in runs:
        for poller, result in figures.items():
            name = "ours" if poller == "ours" else f"{args.baseline_interval:g} s poller"
            columns.append((f"{name}, {result.listeners}", result))
    print()
    print(f"budget {args.budget} requests / 30 s")
    print(f"{'':42}" + "".join(f"{title:>24}" for title, _ in columns))
    for label, cell in ROWS:
        print(f"{label:42}" + "".join(f"{cell(result):>24}" for _, result in columns))
    print()
    all_ok = True
    for figures in runs:
        ours = figures["ours"]
        natural_p95 = percentile(ours.natural, 0.95)
        skip_p95 = percentile(ours.after_skip, 0.95)
        checks = [(f"natural p95 <= 2 s: {natural_p95:.2f}", natural_p95 <= 2)]
        if ours.listeners <= 100:
            checks += [
                (f"after-skip p95 <= 30 s: {skip_p95:.2f}", skip_p95 <= 30),
                (
                    f"calls <= 144 per playing hour: {ours.calls_active_hour:.1f}",
                    ours.calls_active_hour <= 144,
                ),
                (
                    f"calls <= 40 per idle hour: {ours.calls_idle_hour:.1f}",
                    ours.calls_idle_hour <= 40,
                ),
                (f"missed == 0: {ours.missed}", ours.missed == 0),
            ]
        checks += [
            (f"duplicates == 0: {ours.duplicates}", ours.duplicates == 0),
            (f"calls inside the hold == 0: {ours.calls_in_hold}", ours.calls_in_hold == 0),
        ]
        if ours.slow_natural:
            print(f"natural changes posted after > {NATURAL_TARGET:.0f} s ({ours.listeners}):")
            for latency, why in ours.slow_natural[: args.explain]:
                print(f"  {latency:5.1f} s  {why}")
            if len(ours.slow_natural) > args.explain:
                print(f"  ... {len(ours.slow_natural) - args.explain} more (--explain N)")
        print(f"targets for {ours.listeners} listeners:")
        for text, ok in checks:
            all_ok = all_ok and ok
            print(f"  [{'ok' if ok else 'MISSED'}] {text}")
    return all_ok


async def run_bench(args: argparse.Namespace, listeners: int) -> dict[str, Figures]:
    rng = random.Random(args.seed)
    pollers = ALL_POLLERS if args.baseline else ALL_POLLERS[:1]
    idle = sorted(rng.sample(range(listeners), round(listeners * args.idle_share)))
    idle_set = set(idle)
    total = args.duration * 60.0
    print(
        f"{listeners} listeners ({listeners - len(idle)} playing, {len(idle)} idle), "
        f"{total / 60:.1f} min after a {args.warmup:.0f} s warm-up, seed {args.seed}, "
        f"budget {args.budget} requests / 30 s",
        flush=True,
    )
    guilds = [bench_guild(poller, listeners) for poller in pollers]
    cipher = TokenCipher([base64.urlsafe_b64decode(KEY)])
    async with (
        FakeSpotify.running(users=(), record_requests=True) as spotify,
        FakeDiscord.running(guilds=guilds) as discord_fake,
    ):
        begin = time.monotonic() + 20.0  # the pollers are up by then
        until = begin + args.warmup + total + 120.0
        timelines = {
            index: make_plays(rng, index, begin, until)
            for index in range(listeners)
            if index not in idle_set
        }
        with tempfile.TemporaryDirectory(prefix="bench-autopost-") as folder_name:
            folder = Path(folder_name)
            for poller in pollers:
                await prepare_database(folder / f"{poller}.db", poller, listeners, spotify, cipher)
            for index in range(listeners):
                timeline = Timeline(timelines[index]) if index in timelines else None
                for poller in pollers:
                    spotify.set_playing(f"{SPOTIFY_PREFIX[poller]}{index}", timeline)
            print("starting the poller" + ("s" if len(pollers) > 1 else ""), flush=True)
            processes = []
            for poller in pollers:
                config = {
                    "poller": poller,
                    "database": str(folder / f"{poller}.db"),
                    "spotify_base": spotify.base_url,
                    "discord_base": discord_fake.base_url,
                    "discord_token": discord_fake.token,
                    "budget": args.budget,
                    "baseline_interval": args.baseline_interval,
                    "concurrency": args.concurrency,
                }
                processes.append(await start_poller(poller, config, folder))
            try:
                started = max(begin, time.monotonic())
                await asyncio.sleep(max(0.0, started - time.monotonic()))
                calls_at_start = poll_counts(spotify)
                warm = started + args.warmup
                await asyncio.sleep(warm - time.monotonic())
                calls_before = poll_counts(spotify)
                print(f"warm-up done; measuring for {total / 60:.1f} min", flush=True)
                end = warm + total
                limited = False
                while (left := end - time.monotonic()) > 0:
                    if not limited and left <= total / 2:
                        limited = True
                        # One app-wide 429 for each poller, on a playing listener's next check.
                        first_playing = min(timelines)
                        for poller in pollers:
                            spotify.fail_next(
                                "currently_playing",
                                429,
                                retry_after=HOLD_SECONDS,
                                user=f"{SPOTIFY_PREFIX[poller]}{first_playing}",
                            )
                    await asyncio.sleep(min(30.0, left, max(0.1, left - total / 2)))
                calls_after = poll_counts(spotify)
                await asyncio.sleep(1.0)  # posts of checks made just before the end land
            finally:
                for process in processes:
                    await stop_poller(process)
        calls = calls_after - calls_before
        whole_run = calls_after - calls_at_start
        check_times: dict[str, list[float]] = {}
        for request in spotify.requests:
            if request.endpoint == "currently_playing" and request.user and request.status == 200:
                check_times.setdefault(request.user, []).append(request.at)
        figures = {}
        for poller, process in zip(pollers, processes, strict=True):
            events = display_events(discord_fake, CHANNEL_IDS[poller])
            result = judge(
                poller,
                timelines,
                idle,
                (calls, warm),
                (whole_run, started),
                events,
                (started + TRACKS_FROM, end),
                check_times,
                hold_window(spotify, SPOTIFY_PREFIX[poller]),
            )
            result.calls_in_hold = calls_in_hold(spotify, SPOTIFY_PREFIX[poller])
            outcome = process.result or {}
            result.peak_rss_mb = float(outcome.get("peak_rss_mb", math.nan))
            if poller == "ours":
                result.stretch_mean = float(outcome.get("stretch_mean", math.nan))
                result.stretch_max = float(outcome.get("stretch_max", math.nan))
                result.stretched_share = float(outcome.get("stretched_share", math.nan))
            prefix = f"/channels/{CHANNEL_IDS[poller]}/messages"
            ours_requests = [
                r for r in discord_fake.requests if r.status == 200 and r.path.startswith(prefix)
            ]
            result.posts = sum(r.method == "POST" for r in ours_requests)
            result.edits = sum(r.method == "PATCH" for r in ours_requests)
            figures[poller] = result
    return figures


async def run_sizes(args: argparse.Namespace) -> bool:
    runs = []
    for listeners in args.sizes:
        runs.append(await run_bench(args, listeners))
    return report(runs, args)


# --- 10,000 members, scheduled --------------------------------------------------------------


async def run_scale(args: argparse.Namespace) -> None:
    members = args.scale
    rng = random.Random(args.seed)
    before = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-autopost-scale-") as folder:
        async with await Storage.open(Path(folder) / "scale.db") as storage:
            for index in range(members):
                await storage.links.save_link(linked_account(900_000 + index, os.urandom(120)))
            await storage.settings.set_music_channel(1, 2)
            idle = {900_000 + index for index in rng.sample(range(members), members // 5)}
            polls = Counter[str]()

            async def fetch(member_id: int) -> CurrentlyPlaying:
                polls["calls"] += 1
                if member_id in idle:
                    return NothingPlaying(received_at=time.time())
                payload = track_payload(
                    f"m{member_id}t{int(time.time() // 200)}", "Song", 200_000, 50_000
                )
                return parse_currently_playing(payload, received_at=time.time())

            service = AutopostService(
                storage,
                fetch,
                # Everyone is a member, and nothing is ever posted: every channel is unavailable.
                FakeDiscordSide(
                    channel=ChannelCheck(ChannelState.UNAVAILABLE),
                    send_error=AssertionError("the scale run never posts"),
                ),
                config=AutopostConfig(
                    scheduler=SchedulerConfig(budget_per_window=args.budget), membership_lookups=8
                ),
                renderer=NowPlayingRenderer(None),
            )
            started = time.monotonic()
            await service.start()
            await service.settle()
            scheduled = len(service.scheduler)
            await asyncio.sleep(max(0.0, args.scale_seconds - (time.monotonic() - started)))
            await service.stop()
    print(f"linked members: {members}; scheduled: {scheduled}; followed: {service.followed_count}")
    print(
        f"polls made in {args.scale_seconds:.0f} s (budget {args.budget} / 30 s): {polls['calls']}"
    )
    print(
        f"peak RSS: {peak_rss_mb():.1f} MB (at start of the run: {before:.1f} MB); target <= 150 MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100, 300],
        help="listener counts, one run each (comma-separated)",
    )
    parser.add_argument("--idle-share", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=6.0, help="measured minutes per size")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds before calls are counted (first checks, token refreshes)",
    )
    parser.add_argument(
        "--budget", type=int, default=120, help="requests per 30 s (SPOTIFY_REQUEST_BUDGET)"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also run a poll-everyone-every-10-s poller"
    )
    parser.add_argument("--baseline-interval", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8, help="polls in flight per poller")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--explain", type=int, default=8, help="slow natural changes listed with their cause"
    )
    parser.add_argument("--scale", type=int, default=0, help="members for the memory run")
    parser.add_argument("--scale-seconds", type=float, default=60.0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--presence",
        action="store_true",
        help="the presence run instead: PRESENCE_UPDATE -> post latency, Spotify calls",
    )
    add_presence_arguments(parser)
    args = parser.parse_args()
    if args.presence:
        if not asyncio.run(run_presence(args)):
            raise SystemExit(1)
    elif args.worker:
        asyncio.run(worker(json.loads(args.worker)))
    elif args.scale:
        asyncio.run(run_scale(args))
    elif not asyncio.run(run_sizes(args)):
        raise SystemExit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
