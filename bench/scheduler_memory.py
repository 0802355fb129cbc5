"""Memory and CPU of the poll scheduler with 10,000 followed members over a simulated hour.

No network and no asyncio: a fake clock drives ``PollScheduler`` the way the auto-post loop
does (wake, pop what is due, answer each check ``--round-trip`` seconds later), against
synthetic listeners: tracks of 2-5 minutes back to back, a share skipped at a random point,
a share of members idle throughout. Listeners generate their timeline as the clock moves, so
the memory measured is the scheduler's, not the simulation's.

Prints peak RSS (``ru_maxrss``), the time per ``pop_due`` / ``record``, and, since the run has
the data anyway, detection latency and calls per listener-hour as the scheduler delivers them
(the real benchmark measures those end to end against the fake Spotify).

    .venv/bin/python bench/scheduler_memory.py [--members 10000] [--hours 1] [--budget N]

``--budget`` defaults to what the members need without stretching (about 0.037 polls/s per
playing member); pass a smaller one to see the budget stretch intervals instead.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import math
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Run as a script from anywhere: the project root goes on the path first.
from bot.autopost.config import SchedulerConfig
from bot.autopost.observations import Idle, Observation, Playing
from bot.autopost.scheduler import PollScheduler


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class World:
    """What every listener shares: the randomness, the skip share and the tallies."""

    def __init__(self, rng: random.Random, skip_share: float, warm_up: float) -> None:
        self.rng = rng
        self.skip_share = skip_share
        self.warm_up = warm_up
        self.natural: list[float] = []
        self.skips: list[float] = []
        self.missed = 0
        self.counted_plays = 0


class Listener:
    """One member's playback, generated segment by segment as the clock moves forward."""

    __slots__ = (
        "calls",
        "duration",
        "end",
        "idle",
        "index",
        "previous_skipped",
        "seen",
        "skipped",
        "start",
    )

    def __init__(self, world: World, *, idle: bool) -> None:
        self.idle = idle
        self.calls = 0
        self.index = 0
        self.previous_skipped = False
        self.seen = False
        self.start = self.end = self.duration = 0.0
        self.skipped = False
        if not idle:
            self._next_track(world, -world.rng.uniform(0.0, 120.0))

    def _next_track(self, world: World, start: float) -> None:
        rng = world.rng
        self.start = start
        self.duration = rng.uniform(120.0, 300.0)
        self.skipped = rng.random() < world.skip_share
        self.end = start + (rng.uniform(0.0, self.duration) if self.skipped else self.duration)
        self.seen = False

    def observe(self, now: float, world: World) -> Observation:
        if self.idle:
            return Idle()
        while now >= self.end:
            counted = self.end - self.start >= 30.0 and self.index > 0
            if counted and self.start >= world.warm_up:
                world.counted_plays += 1
                if not self.seen:
                    world.missed += 1
            self.previous_skipped = self.skipped
            self.index += 1
            self._next_track(world, self.end)
        if not self.seen:
            self.seen = True
            if self.index > 0 and self.start >= world.warm_up:
                latency = now - self.start
                (world.skips if self.previous_skipped else world.natural).append(latency)
        return Playing(
            f"track-{self.index}",
            int((now - self.start) * 1000),
            int(self.duration * 1000),
        )


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--budget", type=int, default=None, help="requests per 30 s window")
    parser.add_argument("--idle-share", type=float, default=0.2)
    parser.add_argument("--skip-share", type=float, default=0.25)
    parser.add_argument("--round-trip", type=float, default=0.15, help="seconds per request")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    gc.collect()
    baseline = rss_mb()
    horizon = args.hours * 3600.0
    stats = World(random.Random(args.seed), args.skip_share, warm_up=min(300.0, horizon / 4))
    members = args.members
    idle_count = round(members * args.idle_share)
    if args.budget is None:
        # Playing members need ~1/27 polls/s, idle ones ~1/105; leave room for the
        # interactive reserve (15 %) and the utilisation target (85 %).
        need = (members - idle_count) / 27 + idle_count / 105
        budget = math.ceil(need * 30 / 0.85 / 0.85 * 1.1)
    else:
        budget = args.budget
    config = SchedulerConfig(budget_per_window=budget)
    listeners = [Listener(stats, idle=index < idle_count) for index in range(members)]
    after_listeners = rss_mb()

    scheduler = PollScheduler(config, rng=random.Random(args.seed + 1))
    started = time.perf_counter()
    for member_id in range(members):
        scheduler.add(member_id, 0.0)
    add_seconds = time.perf_counter() - started
    after_add = rss_mb()

    answers: list[tuple[float, int, Observation]] = []
    pop_seconds = record_seconds = 0.0
    pop_calls = popped_total = records = 0
    max_stretch = 1.0
    now = 0.0
    wall = time.perf_counter()
    while True:
        wake = scheduler.next_wakeup(now)
        next_answer = answers[0][0] if answers else math.inf
        now = max(now, min(wake if wake is not None else math.inf, next_answer))
        if now > horizon:
            break
        started = time.perf_counter()
        while answers and answers[0][0] <= now:
            answered_at, member_id, observation = heapq.heappop(answers)
            scheduler.record(member_id, observation, answered_at)
            records += 1
        record_seconds += time.perf_counter() - started
        started = time.perf_counter()
        popped = scheduler.pop_due(now)
        pop_seconds += time.perf_counter() - started
        pop_calls += 1
        popped_total += len(popped)
        for member_id in popped:
            listener = listeners[member_id]
            listener.calls += 1
            observation = listener.observe(now + args.round_trip / 2, stats)
            heapq.heappush(answers, (now + args.round_trip, member_id, observation))
        if pop_calls % 1000 == 0:
            max_stretch = max(max_stretch, scheduler.stretch(now))
    wall = time.perf_counter() - wall

    active = [listener.calls for listener in listeners if not listener.idle]
    idle = [listener.calls for listener in listeners if listener.idle]
    hours = args.hours
    print(f"members            {members} ({idle_count} idle), {hours:g} simulated h")
    print(
        f"budget             {budget} per {config.window:g} s "
        f"(polls use at most {config.poll_budget}; max stretch seen {max_stretch:.2f})"
    )
    print(f"RSS peak           {rss_mb():.1f} MB")
    print(
        f"  baseline {baseline:.1f} MB, + listeners {after_listeners:.1f} MB, "
        f"+ {members} members added {after_add:.1f} MB"
    )
    print(f"add                {add_seconds / members * 1e6:.2f} us per member")
    print(
        f"pop_due            {pop_seconds / max(1, popped_total) * 1e6:.2f} us per member popped "
        f"({pop_calls} calls, {pop_seconds / max(1, pop_calls) * 1e6:.2f} us per call)"
    )
    print(f"record             {record_seconds / max(1, records) * 1e6:.2f} us per answer")
    print(f"simulation         {wall:.1f} s wall for {popped_total} checks")
    print(
        f"calls per hour     playing {sum(active) / max(1, len(active)) / hours:.1f} "
        f"(target <= 144), idle {max(idle, default=0) / hours:.1f} max (target <= 40)"
    )
    print(
        f"natural change     p95 {percentile(stats.natural, 0.95):.2f} s "
        f"max {max(stats.natural, default=math.nan):.2f} s (n={len(stats.natural)})"
    )
    print(
        f"after a skip       p95 {percentile(stats.skips, 0.95):.2f} s "
        f"max {max(stats.skips, default=math.nan):.2f} s (n={len(stats.skips)})"
    )
    print(f"missed plays >=30s {stats.missed} of {stats.counted_plays}")


if __name__ == "__main__":
    main()
