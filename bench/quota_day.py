"""Simulated days under a daily Web API budget: the real scheduler and log on a virtual clock.

Run: ``.venv/bin/python bench/quota_day.py`` (3 days at the defaults, the fake quota at 1,100;
``--quota 500`` for a Spotify that refuses sooner, ``--hours 10-20`` for heavy listeners,
``--budget 0`` for no daily budget, ``--days``, ``--seed``; ``--seeds 1-10`` prints one line
per seed). A few seconds a day.

Like ``bench/autopost_replay.py`` it needs no network: the real ``PollScheduler`` with its
daily pace and the real listening log (``ListeningLog`` on a SQLite file, its fill plan and
recently-played matching) run on a virtual clock (Unix seconds from a midnight UTC), and this
script plays Spotify, the sender and Discord. Every check gets its answer 30 ms later, a post
takes 50 ms, at most 8 checks are in flight.

Members: 5 linked members without statuses (polled), each with three habitual moments of the
day (morning, midday, evening) and 2-6 hours of listening a day (``--hours``) in 1-3 sessions
that start near some of them (20 minutes either way, one in twenty at any other hour);
within a session tracks of 2-5 minutes play back to back and are skipped as the published
figures say (24 % within 5 s, 35 % within 30 s, 49 % before the end: Lamere, "The Skip", 2014).
200 more members show Spotify in their Discord status: followed, covered, never polled. Each
linked member runs /np four times a day while listening (a command: it may use the reserve).

The daily budget is ``tests/fakes/daily_budget.py`` (the ``DailyAllowance`` contract, counted
per minute, with the learned budget and hold of ``SPOTIFY_DAILY_BUDGET``), counting since a day
before the run (the bot was running). The sender refuses what the budget refuses. Spotify's
quota: over ``--quota`` calls in 24 hours it answers 429 QUOTA_EXCEEDED with Retry-After
``--retry-after`` (13.6 hours), and nothing answers until then.

Figures per day (by the start of each play or session): the Web API calls of the worst rolling
24 hours ending that day, by purpose; QUOTA_EXCEEDED answers; natural change -> post and skip ->
post (p50/p95, plays posted while current); a session's first play -> the session's first
post; plays of 30 s or more never posted while current; and the listening log against the
truth: plays of 30 s or more logged exactly once (of the sessions that ended within the days
measured: the run goes on three hours more, time for the log's last calls).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import itertools
import math
import random
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.autopost.check_queue import CheckKind
from bot.autopost.config import SchedulerConfig
from bot.autopost.coverage import PresenceCoverage
from bot.autopost.observations import Idle, Observation, Playing, RateLimited
from bot.autopost.roster import Roster
from bot.autopost.scheduler import PollScheduler
from bot.errors import SpotifyRateLimited
from bot.listening.log import ListeningLog
from bot.listening.recorder import FILL_TICK
from bot.spotify.models import (
    Artist,
    CurrentlyPlaying,
    NothingPlaying,
    Playback,
    PlayedTrack,
    Track,
)
from bot.storage import Storage
from tests.fakes.daily_budget import RollingAllowance
from tests.helpers import linked_account
from tests.peek import check_purpose, log_idle

DAY = 86_400.0
HOUR = 3600.0
START = 20_602 * DAY  # a midnight UTC (2026-05-29)
ANSWER_AFTER = 0.03
POST_TAKES = 0.05
CONCURRENCY = 8
LINKED = tuple(range(1, 6))
STATUS_MEMBERS = tuple(range(1001, 1201))
HABITS = ((7.0, 9.5), (12.0, 14.0), (18.5, 22.5))  # hours of the day a session may start near
NP_PER_DAY = 4
COUNTED = 30.0  # Spotify counts a play from 30 s: recently-played lists it
SETTLING = 3 * HOUR  # the run goes on this long after the days measured: the log settles
PURPOSES = ("end", "skip", "idle", "first/error", "recently_played", "command")
KIND_PURPOSE = {
    CheckKind.END: "end",
    CheckKind.STALE: "end",
    CheckKind.RESUME: "end",
    CheckKind.HOLD: "end",
    CheckKind.SKIP: "skip",
    CheckKind.IDLE: "idle",
    CheckKind.PAUSED: "idle",
}


# --- the simulated truth ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TruePlay:
    member: int
    track_id: str
    start: float
    duration: float
    played: float  # seconds until the end or the skip
    session: int
    first: bool  # the session's first play
    after_skip: bool  # the play before it (same session) was skipped

    @property
    def end(self) -> float:
        return self.start + self.played

    @property
    def track(self) -> Track:
        return Track(
            name=f"Song {self.track_id}",
            uri=f"spotify:track:{self.track_id}",
            duration_ms=int(self.duration * 1000),
            artists=(Artist("Band"),),
            id=self.track_id,
        )


def skip_after(rng: random.Random, duration: float) -> float:
    """When a play of ``duration`` seconds stops: the published skip figures."""
    draw = rng.random()
    if draw < 0.24:
        return rng.uniform(0.5, 5.0)
    if draw < 0.35:
        return rng.uniform(5.0, 30.0)
    if draw < 0.49:
        return rng.uniform(30.0, duration)
    return duration


@dataclass
class Listener:
    member: int
    plays: list[TruePlay] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    sessions: list[tuple[float, float]] = field(default_factory=list)

    def playing_at(self, at: float) -> TruePlay | None:
        index = bisect.bisect_right(self.starts, at) - 1
        if index < 0:
            return None
        play = self.plays[index]
        return play if at < play.end else None


def make_listener(
    rng: random.Random, member: int, days: int, hours: tuple[float, float]
) -> Listener:
    listener = Listener(member)
    habits = [rng.uniform(*window) for window in HABITS]
    ids = itertools.count()
    not_before = START
    for day in range(days + 1):
        total = rng.uniform(*hours) * HOUR
        count = 1 if total < 3 * HOUR else 2 if total < 5 * HOUR else 3
        anchors = sorted(rng.sample(habits, count))
        for anchor in anchors:
            hour = anchor if rng.random() >= 0.05 else rng.uniform(0.0, 24.0)
            start = START + day * DAY + hour * HOUR + rng.gauss(0.0, 20 * 60.0)
            start = max(start, not_before + rng.uniform(5, 30) * 60.0)
            length = total / count * rng.uniform(0.7, 1.3)
            at, first, skipped = start, True, False
            while at < start + length:
                duration = rng.uniform(120.0, 300.0)
                played = skip_after(rng, duration)
                play = TruePlay(
                    member,
                    f"m{member}t{next(ids)}",
                    at,
                    duration,
                    played,
                    len(listener.sessions),
                    first,
                    skipped,
                )
                listener.plays.append(play)
                skipped, first = played < duration, False
                at += played
            listener.sessions.append((start, at))
            not_before = at
    listener.starts = [play.start for play in listener.plays]
    return listener


def command_times(rng: random.Random, listener: Listener, days: int) -> list[tuple[float, int]]:
    """When the member runs /np: ``NP_PER_DAY`` times a day, while listening."""
    times = []
    for day in range(days):
        spans = [
            s for s in listener.sessions if START + day * DAY <= s[0] < START + (day + 1) * DAY
        ]
        for _ in range(NP_PER_DAY if spans else 0):
            begin, finish = rng.choice(spans)
            times.append((rng.uniform(begin, finish), listener.member))
    return times


# --- Spotify, its quota and the sender ---------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SpotifyQuota:
    """Spotify's side: over ``limit`` calls in 24 hours answers QUOTA_EXCEEDED, then
    nothing answers for ``retry_after`` seconds."""

    def __init__(self, limit: int, retry_after: float, clock: Clock) -> None:
        self._limit = limit
        self._retry_after = retry_after
        self._clock = clock
        self._calls: deque[float] = deque()
        self.locked_until = -math.inf
        self.refusals: list[float] = []

    def refuses(self) -> float | None:
        """Retry-After when this call is refused (and not counted)."""
        now = self._clock()
        while self._calls and self._calls[0] + DAY <= now:
            self._calls.popleft()
        if now < self.locked_until:
            return self.locked_until - now
        if len(self._calls) >= self._limit:
            self.locked_until = now + self._retry_after
            self.refusals.append(now)
            return self._retry_after
        self._calls.append(now)
        return None


class Sender:
    """What the bot's sender does with the daily budget: refuse what it refuses, count every
    attempt, and hold on QUOTA_EXCEEDED."""

    def __init__(
        self, allowance: RollingAllowance, quota: SpotifyQuota, scheduler: PollScheduler
    ) -> None:
        self.allowance = allowance
        self.quota = quota
        self.scheduler = scheduler
        self.calls: list[tuple[float, str]] = []  # every attempt sent: (time, purpose)
        self.refused: Counter[str] = Counter()  # refused by the budget, by purpose

    def send(self, purpose: str, label: str) -> float | None:
        """None: Spotify answers; else the time the caller is held until."""
        until = self.allowance.refused_until(purpose)
        if until is not None:
            self.refused[label] += 1
            return until
        self.allowance.count(purpose)
        self.calls.append((self.quota._clock(), label))
        retry_after = self.quota.refuses()
        if retry_after is None:
            return None
        hold_end = self.allowance.quota_exceeded(retry_after)
        self.scheduler.hold_all_until(hold_end)  # the poll loop's hold, from the sender's
        return hold_end


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    listeners: dict[int, Listener]
    sender: Sender
    posted: dict[str, float] = field(default_factory=dict)  # track -> first post (while current)
    logged: Counter[str] = field(default_factory=Counter)
    prices: list[tuple[float, float, float]] = field(default_factory=list)  # (at, price, gap)
    polled: set[int] = field(default_factory=set)
    end: float = START


class Privacy:
    def is_private_now(self, user_id: int) -> bool:
        return False


def observation_of(play: TruePlay | None, at: float) -> tuple[Observation, CurrentlyPlaying]:
    if play is None:
        return Idle(), NothingPlaying(received_at=at)
    progress = at - play.start
    playback = Playback("track", play.track, True, int(progress * 1000), received_at=at)
    return Playing(play.track_id, int(progress * 1000), int(play.duration * 1000)), playback


async def simulate(args: argparse.Namespace, storage: Storage) -> Run:
    rng = random.Random(args.seed)
    clock = Clock(START)
    listeners = {m: make_listener(rng, m, args.days, args.hours) for m in LINKED}
    allowance = RollingAllowance(args.budget, clock, counting_since=START - DAY)
    quota = SpotifyQuota(args.quota, args.retry_after, clock)
    scheduler = PollScheduler(SchedulerConfig(), rng=random.Random(args.seed), allowance=allowance)
    sender = Sender(allowance, quota, scheduler)
    run = Run(listeners, sender)

    async def recently_played(member: int, after_ms: int | None) -> tuple[PlayedTrack, ...]:
        until = sender.send("recently_played", "recently_played")
        if until is not None:
            raise SpotifyRateLimited(until - clock.now, until, quota_exceeded=True)
        after = -math.inf if after_ms is None else after_ms / 1000.0
        plays = [
            p for p in listeners[member].plays if p.played >= COUNTED and after < p.end <= clock.now
        ]
        return tuple(PlayedTrack(p.track, p.end) for p in reversed(plays[-50:]))

    for member in LINKED:
        await storage.links.save_link(linked_account(member))
    history = ListeningLog(
        storage, Privacy(), keep_days=90, recently_played=recently_played, clock=clock
    )
    await history.start()
    roster = Roster(scheduler, asyncio.Event(), membership_ttl=600.0, clock=clock)
    coverage = PresenceCoverage(roster, clock=clock)
    for member in (*LINKED, *STATUS_MEMBERS):
        roster.follow(member)
    for member in STATUS_MEMBERS:  # their statuses show Spotify: never polled
        coverage.cover(member)
    commands = sorted(
        at for listener in listeners.values() for at in command_times(rng, listener, args.days)
    )
    answers: list[tuple[float, int, int, Observation, CurrentlyPlaying | None]] = []
    sequence = itertools.count()
    last_posted: dict[int, str] = {}
    end = START + args.days * DAY + SETTLING
    now = next_tick = START
    try:
        while now < end:
            clock.now = now
            while answers and answers[0][0] <= now:
                at, _, member, observation, playback = heapq.heappop(answers)
                scheduler.record(member, observation, at)
                if playback is None:
                    continue
                if isinstance(playback, Playback) and playback.item is not None:
                    key = playback.item.key
                    if last_posted.get(member) != key:
                        last_posted[member] = key
                        run.posted.setdefault(key, at + POST_TAKES)
                await history.observe(member, playback, source="spotify")
                history.gaps.polled(member, playback)
                await log_idle(history)
            if now >= next_tick:  # the log's timer: recently-played whatever the poller sees
                history.gaps.tick()
                await log_idle(history)
                next_tick += FILL_TICK
            while commands and commands[0][0] <= now:
                sender.send("command", "command")
                commands.pop(0)
            popped = scheduler.pop_due(now, limit=CONCURRENCY - len(answers))
            run.polled.update(popped)
            for member in popped:
                purpose = KIND_PURPOSE.get(check_purpose(scheduler, member), "first/error")
                until = sender.send("poll", purpose)
                if until is not None:
                    observation: Observation = RateLimited(until, quota_exceeded=True)
                    item = (now + ANSWER_AFTER, next(sequence), member, observation, None)
                    heapq.heappush(answers, item)
                    continue
                asked = now + ANSWER_AFTER / 2
                observation, playback = observation_of(listeners[member].playing_at(asked), asked)
                item2 = (now + ANSWER_AFTER, next(sequence), member, observation, playback)
                heapq.heappush(answers, item2)
            if scheduler.pace is not None and scheduler.pace.limited:
                plan = scheduler.pace.plan(now)
                if not run.prices or run.prices[-1][0] != plan.at:
                    run.prices.append((plan.at, plan.price, plan.end_gap))
            wake = scheduler.next_wakeup(now)
            candidates = [
                t
                for t in (
                    wake,
                    answers[0][0] if answers else None,
                    commands[0][0] if commands else None,
                    next_tick,
                )
                if t is not None
            ]
            now = max(now + 1e-3, min(candidates)) if candidates else end
    finally:
        await history.stop()
    for member in LINKED:
        for play in await storage.listening.recent_plays(member, limit=100_000):
            run.logged[play.track_id] += 1
    run.end = end - SETTLING
    return run


# --- figures -----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def worst_window(calls: list[tuple[float, str]], day_start: float) -> Counter[str]:
    """The purposes of the calls in the rolling 24 hours, ending during that day, that held
    the most calls."""
    times = [at for at, _ in calls]
    best: tuple[int, int, int] = (-1, 0, 0)
    for index, at in enumerate(times):
        if not day_start <= at < day_start + DAY:
            continue
        first = bisect.bisect_right(times, at - DAY)
        best = max(best, (index + 1 - first, first, index + 1))
    _, first, last = best
    return Counter(purpose for _, purpose in calls[first:last])


@dataclass
class Figures:
    """The posting and log figures of the sessions that began in some stretch."""

    natural: list[float] = field(default_factory=list)
    # ... of those, after a track the bot saw (its predicted end was checked): what the end
    # checks alone are responsible for; the rest followed a track no check ever saw.
    natural_seen: list[float] = field(default_factory=list)
    skipped: list[float] = field(default_factory=list)
    sessions: list[float] = field(default_factory=list)
    counted: int = 0  # plays of 30 s or more
    not_posted: int = 0
    judged: int = 0  # ... of sessions that ended an hour before the end (the log)
    once: int = 0
    twice: int = 0
    listened: float = 0.0

    def row(self, label: str) -> str:
        def pair(values: list[float], scale: float = 1.0) -> str:
            return f"{percentile(values, 0.5) / scale:.1f}/{percentile(values, 0.95) / scale:.1f}"

        return (
            f"{label:>4} {pair(self.natural):>15} {pair(self.skipped):>13}"
            f" {pair(self.sessions, 60.0):>11} min {self.not_posted:>5}/{self.counted:<5}"
            f" {self.once / max(1, self.judged):>7.1%} of {self.judged:<5} {self.twice:>3}"
            f" {self.listened / HOUR:>7.1f} h"
        )


def figures(run: Run, begin: float, end: float) -> Figures:
    found = Figures()
    for listener in run.listeners.values():
        for index, (start, finish) in enumerate(listener.sessions):
            if not begin <= start < min(end, run.end):
                continue
            found.listened += finish - start
            plays = [p for p in listener.plays if p.session == index]
            posts = [run.posted[p.track_id] for p in plays if p.track_id in run.posted]
            if posts:
                found.sessions.append(min(posts) - start)
            elif finish < run.end:
                found.sessions.append(finish - start)  # never posted: the whole session
            settled = finish <= run.end
            previous_seen = False
            for play in plays:
                post = run.posted.get(play.track_id)
                current = post is not None and post < play.end
                if play.played >= COUNTED:
                    found.counted += 1
                    found.not_posted += not current
                    if settled:
                        found.judged += 1
                        found.once += run.logged[play.track_id] == 1
                        found.twice += run.logged[play.track_id] > 1
                if current and post is not None and not play.first:
                    (found.skipped if play.after_skip else found.natural).append(post - play.start)
                    if previous_seen and not play.after_skip:
                        found.natural_seen.append(post - play.start)
                previous_seen = current
    return found


def report(run: Run, args: argparse.Namespace) -> None:
    print(
        f"{len(LINKED)} linked members without statuses ({args.hours[0]:g}-{args.hours[1]:g} h "
        f"a day), {len(STATUS_MEMBERS)} with statuses; SPOTIFY_DAILY_BUDGET={args.budget}, "
        f"fake quota {args.quota} / 24 h (Retry-After {args.retry_after / HOUR:.1f} h), "
        f"seed {args.seed}"
    )
    widths = [max(5, len(p)) for p in PURPOSES]
    print(
        f"{'day':>4} {'worst 24 h':>10}  "
        + " ".join(f"{p:>{w}}" for p, w in zip(PURPOSES, widths, strict=True))
        + "  QUOTA_EXCEEDED"
    )
    for day in range(args.days):
        window = worst_window(run.sender.calls, START + day * DAY)
        refusals = sum(
            START + day * DAY <= t < START + (day + 1) * DAY for t in run.sender.quota.refusals
        )
        print(
            f"{day + 1:>4} {sum(window.values()):>10}  "
            + " ".join(f"{window[p]:>{w}}" for p, w in zip(PURPOSES, widths, strict=True))
            + f"  {refusals:>14}"
        )
    print(
        f"{'day':>4} {'natural p50/95':>15} {'skip p50/95':>13} {'session p50/95':>15}"
        f" {'not posted':>11} {'logged once':>17} {'dup':>3} {'listened':>9}"
    )
    for day in range(args.days):
        print(figures(run, START + day * DAY, START + (day + 1) * DAY).row(str(day + 1)))
    every = figures(run, START, run.end)
    print(every.row("all"))
    seen = every.natural_seen
    print(
        f"natural changes after a track a check had seen (its end predicted): {len(seen)} of "
        f"{len(every.natural)}, p50/p95 {percentile(seen, 0.5):.1f}/{percentile(seen, 0.95):.1f} s;"
        " the rest followed a track no check saw (a skip went unseen)"
    )
    if run.prices:
        prices = [price for _, price, _ in run.prices]
        gaps = [gap for _, _, gap in run.prices if gap > 0]
        thinned = f" (gap p50 {percentile(gaps, 0.5):.0f} s)" if gaps else ""
        print(
            f"pace: price p5/p50/p95 {percentile(prices, 0.05):.0f}/"
            f"{percentile(prices, 0.5):.0f}/{percentile(prices, 0.95):.3g} s of delay a call"
            f" must save; end checks thinned in {len(gaps)} of {len(prices)} plans{thinned}"
        )
    print(
        f"refused by the budget (never sent): {dict(run.sender.refused) or 'none'}; members with"
        f" statuses polled: {len(run.polled & set(STATUS_MEMBERS))} of {len(STATUS_MEMBERS)}"
    )


def hours_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def summary(run: Run, args: argparse.Namespace) -> str:
    """One line for a seed of ``--seeds``: the whole run."""
    worst = max(
        sum(worst_window(run.sender.calls, START + d * DAY).values()) for d in range(args.days)
    )
    every = figures(run, START, run.end)
    on_time = sum(x <= 3.0 for x in every.natural) / max(1, len(every.natural))
    return (
        f"{args.seed:>4} {worst:>10} {len(run.sender.quota.refusals):>5} "
        f"{every.row('')[5:]}  {on_time:>6.1%}"
    )


async def one_run(args: argparse.Namespace) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        async with await Storage.open(Path(folder) / "bench.db") as storage:
            return await simulate(args, storage)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--budget", type=int, default=600, help="SPOTIFY_DAILY_BUDGET")
    parser.add_argument("--quota", type=int, default=1100, help="Spotify's calls per 24 h")
    parser.add_argument("--retry-after", type=float, default=13.6 * HOUR)
    parser.add_argument("--hours", type=hours_range, default=(2.0, 6.0))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default=None, help="a range, e.g. 1-10: one line per seed")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.seeds is None:
        report(await one_run(args), args)
    else:
        first, _, last = args.seeds.partition("-")
        print(
            f"{'seed':>4} {'worst 24 h':>10} {'quota':>5} {'natural p50/95':>15}"
            f" {'skip p50/95':>13} {'session p50/95':>15} {'not posted':>11}"
            f" {'logged once':>17} {'dup':>3} {'listened':>9}  {'natural <= 3 s':>6}"
        )
        for seed in range(int(first), int(last or first) + 1):
            args.seed = seed
            print(summary(await one_run(args), args))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    asyncio.run(main())
