"""The auto-post bench's listeners replayed through the scheduler alone, in virtual time.

Run: ``.venv/bin/python bench/autopost_replay.py`` (40 seeds of 100 listeners in about 20 s).

``bench/autopost.py`` runs the real bot for 7.5 minutes per size and seed; one run is one draw
of where the 429 lands among the track ends. This replays the same workload (the same
``make_plays`` timelines, 20% idle, one app-wide 429 with Retry-After 10 halfway) through
``PollScheduler`` alone on a virtual clock: every check gets its answer 30 ms later, a post
takes 50 ms. No network, no Discord: it shows what the scheduling policy does, over many seeds,
in seconds. Figures per seed: natural and after-skip p95 (change -> post), how late routine
checks started against their planned time, and Spotify calls per playing / idle listener-hour.
``--skip-interval`` and ``--budget`` try other settings.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.autopost import (
    HOLD_SECONDS,
    MIN_COUNTED_PLAY,
    NATURAL_TARGET,
    SETTLE_MARGIN,
    TRACKS_FROM,
    Play,
    make_plays,
    percentile,
)
from bot.autopost.check_queue import CheckKind
from bot.autopost.config import SchedulerConfig
from bot.autopost.observations import Idle, Observation, Playing, RateLimited
from bot.autopost.scheduler import PollScheduler
from tests.peek import next_check_kind

ANSWER_AFTER = 0.03  # a check's answer arrives this long after it left
POST_TAKES = 0.05  # from the answer to the post arriving at Discord
CONCURRENCY = 8  # polls in flight, as the bot's default
ROUTINE = {CheckKind.SKIP, CheckKind.IDLE, CheckKind.PAUSED, CheckKind.FIRST, CheckKind.ERROR}


@dataclass
class CheckOutcome:
    natural: list[float] = field(default_factory=list)
    after_skip: list[float] = field(default_factory=list)
    routine_late: list[float] = field(default_factory=list)  # started - planned, seconds
    calls_playing_hour: float = math.nan
    calls_idle_hour: float = math.nan
    missed: int = 0


def answer(play: Play | None, at: float) -> Observation:
    """What the fake Spotify of the bench would answer at ``at``."""
    if play is None:
        return Idle()
    progress, paused = play.position(at)
    return Playing(
        play.track_id, int(progress * 1000), int(play.duration * 1000), is_playing=not paused
    )


def replay(seed: int, config: SchedulerConfig, listeners: int, minutes: float) -> CheckOutcome:
    rng = random.Random(seed)  # the same draws as bench/autopost.py: the same timelines
    idle = set(rng.sample(range(listeners), round(listeners * 0.2)))
    begin, warmup, total = 20.0, 30.0, minutes * 60.0
    timelines = {
        index: make_plays(rng, index, begin, begin + warmup + total + 120.0)
        for index in range(listeners)
        if index not in idle
    }
    starts = {index: [play.start for play in plays] for index, plays in timelines.items()}
    scheduler = PollScheduler(config, rng=random.Random(seed))
    for index in range(listeners):
        scheduler.add(index, begin)
    warm, end = begin + warmup, begin + warmup + total
    hold_from = warm + total / 2
    held = False
    seen: dict[int, dict[str, float]] = {index: {} for index in timelines}
    calls = dict.fromkeys(range(listeners), 0)
    answers: list[tuple[float, int, Observation]] = []  # (arrives, member, observation)
    outcome = CheckOutcome()
    now = begin
    while now < end + 5.0:
        answers.sort(key=lambda item: item[0])
        while answers and answers[0][0] <= now:
            at, member, observation = answers.pop(0)
            scheduler.record(member, observation, at)
        planned = {
            member: (scheduler.next_check_at(member), next_check_kind(scheduler, member))
            for member in range(listeners)
        }
        popped = scheduler.pop_due(now, limit=CONCURRENCY - len(answers))
        for member in popped:
            due, kind = planned[member]
            if due is not None and kind in ROUTINE and now > warm:
                outcome.routine_late.append(now - due)
            asked = now + ANSWER_AFTER / 2
            plays = timelines.get(member)
            if not held and asked >= hold_from and plays is not None:
                held = True  # one app-wide 429 for a playing listener's check
                retry_at = asked + HOLD_SECONDS
                answers.append((now + ANSWER_AFTER, member, RateLimited(retry_at, False)))
                continue
            if warm <= asked < end:
                calls[member] += 1
            play = None
            if plays is not None:
                play = plays[max(0, bisect.bisect_right(starts[member], asked) - 1)]
                seen[member].setdefault(play.track_id, asked)
            answers.append((now + ANSWER_AFTER, member, answer(play, asked)))
        wake = scheduler.next_wakeup(now)
        candidates = [t for t in (wake, answers[0][0] if answers else None) if t is not None]
        now = max(now + 1e-3, min(candidates)) if candidates else now + 1.0
    for member, plays in timelines.items():
        first = min(seen[member].values(), default=math.inf)
        for play in plays:
            if (
                play.first
                or not max(begin + TRACKS_FROM, first) <= play.start <= end - SETTLE_MARGIN
            ):
                continue
            seen_at = seen[member].get(play.track_id)
            if seen_at is None:
                outcome.missed += play.current_for >= MIN_COUNTED_PLAY
                continue
            latency = seen_at - play.start + ANSWER_AFTER / 2 + POST_TAKES
            (outcome.after_skip if play.after_skip else outcome.natural).append(latency)
    hours = total / 3600.0
    outcome.calls_playing_hour = sum(calls[m] for m in timelines) / (len(timelines) * hours)
    outcome.calls_idle_hour = sum(calls[m] for m in idle) / (max(1, len(idle)) * hours)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1-40", help="a range, e.g. 1-40")
    parser.add_argument("--listeners", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--budget", type=int, default=120, help="requests per 30 s")
    parser.add_argument("--skip-interval", type=float, default=None)
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    options: dict[str, float] = {"budget_per_window": args.budget}
    if args.skip_interval is not None:
        options["skip_check_interval"] = args.skip_interval
    config = SchedulerConfig(**options)  # type: ignore[arg-type]
    print(
        f"{args.listeners} listeners, {args.minutes:.0f} min, budget {args.budget} / 30 s, "
        f"skip checks at most {config.skip_check_interval:.0f} s apart"
    )
    print(
        f"{'seed':>4} {'natural p95':>12} {'skip p95':>9} {'routine late p50/p90':>21} "
        f"{'calls playing/idle h':>21} {'missed':>6}"
    )
    outcomes = []
    for seed in seeds:
        o = replay(seed, config, args.listeners, args.minutes)
        outcomes.append(o)
        late = sorted(o.routine_late) or [math.nan]
        print(
            f"{seed:>4} {percentile(o.natural, 0.95):>12.2f} {percentile(o.after_skip, 0.95):>9.2f}"
            f" {late[len(late) // 2]:>10.2f}/{late[int(len(late) * 0.9)]:<10.2f}"
            f" {o.calls_playing_hour:>10.1f}/{o.calls_idle_hour:<10.1f} {o.missed:>6}"
        )
    natural_over = sum(percentile(o.natural, 0.95) > NATURAL_TARGET for o in outcomes)
    skip_over = sum(percentile(o.after_skip, 0.95) > 30.0 for o in outcomes)
    mean_calls = sum(o.calls_playing_hour for o in outcomes) / len(outcomes)
    print(
        f"seeds with natural p95 > {NATURAL_TARGET:.0f} s: {natural_over} of {len(outcomes)}; "
        f"with skip p95 > 30 s: {skip_over}; calls per playing hour, mean: {mean_calls:.1f}"
    )


if __name__ == "__main__":
    main()
