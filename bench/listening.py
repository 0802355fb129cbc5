"""Listening-log figures: the real bot (``bot.app.Application``) against the fakes on loopback.

Run: ``.venv/bin/python bench/listening.py`` (about 7 minutes on 2 cores; ``--seconds 20``
shortens the /np phases, ``--quick`` runs everything small).

1. /listening in a server of 10,000 members of whom 500 show Spotify in their status
   (presence mode): p50 / p99 from INTERACTION_CREATE written to the callback arriving at the
   fake Discord, and the bot's own share (building the list and the embed, in process).
   Targets: p50 <= 5 ms, p99 <= 20 ms of bot overhead.
2. /np p99 while the log records 100 new plays per second, against /np with no recording:
   median of 3 runs each. Target: at most +10 %.
3. /recap over 90 days of 200 members' plays (about 1,000,000 rows): the query and the whole
   command. Target: <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.listening.embeds import render_listening
from bot.listening.log import ListeningLog
from bot.spotify.fair_use import FairUseLimits
from bot.spotify.models import Artist, Playback, Track
from bot.storage import LinkedAccount
from tests.fakes.discord import FakeMessage
from tests.fakes.discord_payloads import (
    make_channel,
    make_guild,
    make_member,
    make_presence,
    make_spotify_activity,
    make_user,
)
from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, GENERAL_ID, GUILD_ID, Stack
from tests.peek import count_plays, log_idle

FIRST_ID = 820_000_000_000_000_000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[index]


def history_of(stack: Stack) -> ListeningLog:
    log = stack.app.services.history
    assert log is not None
    return log


def big_guild(members: int, listening: int) -> dict[str, Any]:
    users = [make_member(make_user(ALICE_ID, "alice", global_name="Alice"))]
    users += [make_member(make_user(FIRST_ID + n, f"member{n}")) for n in range(members - 1)]
    guild = make_guild(
        id=GUILD_ID,
        name="Big Server",
        channels=[make_channel(id=GENERAL_ID, name="general")],
        members=users,
    )
    start = int(time.time() * 1000) - 10_000
    guild["presences"] = [
        make_presence(
            FIRST_ID + n,
            GUILD_ID,
            activities=[
                make_spotify_activity(
                    title=f"Song {n}",
                    track_id=f"track{n:018d}",
                    start_ms=start,
                    duration_ms=3_600_000,
                )
            ],
        )
        for n in range(listening)
    ]
    return guild


async def command_latency(stack: Stack, name: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        sent = await stack.discord.send_slash_command(name, {}, user_id=str(ALICE_ID))
        await sent.wait_for_reply(timeout=10)
        latencies.append(sent.callback_latency * 1000)
    return latencies


async def bench_listening(members: int, listening: int, count: int) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        async with Stack.running(
            Path(folder),
            guilds=[big_guild(members, listening)],
            env={"ENABLE_PRESENCE": "true"},
            spotify_options={"record_requests": False},
        ) as stack:
            log = history_of(stack)
            guild = stack.app.bot.get_guild(GUILD_ID)
            assert guild is not None
            deadline = time.monotonic() + 30
            while len(log.now_listening) < listening and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            seen = len(log.listening_in(GUILD_ID, lambda m: guild.get_member(m) is not None))
            await command_latency(stack, "listening", 20)  # warm-up
            latencies = await command_latency(stack, "listening", count)
            own = []
            for _ in range(count):
                started = time.perf_counter()
                entries = log.listening_in(GUILD_ID, lambda m: guild.get_member(m) is not None)
                render_listening(entries, guild_name=guild.name)
                own.append((time.perf_counter() - started) * 1000)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    o50, o99 = percentile(own, 0.5), percentile(own, 0.99)
    print(f"/listening, {members} members, {seen} listening (presence mode), {count} runs")
    print(f"  INTERACTION_CREATE -> callback: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"  bot's own work (list + embed): p50 {o50:.2f} ms, p99 {o99:.2f} ms")
    return p50 <= 5 and p99 <= 20


async def link_members(stack: Stack, count: int) -> list[int]:
    """Linked members stored directly, then announced to the log as a finished /link is."""
    storage = stack.app.services.storage
    log = history_of(stack)
    ids = [FIRST_ID + n for n in range(count)]
    for member_id in ids:
        await storage.links.save_link(
            LinkedAccount(member_id, f"acct-{member_id}", f"u{member_id}", "x", b"x", "", 0.0)
        )
        await log.member_linked(member_id)
    return ids


async def record_load(
    log: ListeningLog, members: list[int], per_second: int, first: int = 0
) -> int:
    """New plays at ``per_second``, spread over the members, until cancelled; track ids start
    at ``first`` so every run's plays are new."""
    sent = first
    interval = 1.0 / per_second
    next_at = time.monotonic()
    try:
        while True:
            member = members[sent % len(members)]
            track = Track(
                name=f"Load {sent}",
                uri=f"spotify:track:load{sent}",
                duration_ms=180_000,
                artists=(Artist("Load Band"),),
                id=f"load{sent:020d}",
            )
            playback = Playback("track", track, True, 1_000, received_at=time.time())
            log.observe_soon(member, playback, source="spotify")
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    except asyncio.CancelledError:
        return sent - first


async def np_latencies(stack: Stack, seconds: float) -> list[float]:
    """Sequential /np for ``seconds``; their callback latencies (ms). A /np that ends in an
    error answer is reported and left out (it is not a latency)."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = await stack.np(ALICE_ID)
        try:
            reply = await sent.wait_for_reply(timeout=10)
        except AssertionError:
            texts = [m.content for m in sent.followups]
            print(f"  a /np did not answer with its embed: {texts!r}")
            continue
        if not reply.embeds:
            print(f"  a /np answered without an embed: {reply.content!r}")
            continue
        latencies.append(sent.callback_latency * 1000)
    return latencies


SEGMENTS = 6  # a run alternates this many quiet and recording stretches


async def bench_np_with_recording(seconds: float, runs: int) -> bool:
    """Each run alternates stretches of /np without and with the recording load (``SEGMENTS``
    of each, ``seconds`` of each in all), so a change in the machine's other load falls on
    both sides alike; the p99 of each side per run, the median over the runs."""
    stretch = seconds / SEGMENTS
    with tempfile.TemporaryDirectory() as folder:
        # One member's /np in a loop: the per-member limits are lifted (bench/fair_use.py).
        lifted = FairUseLimits(per_minute=1_000_000, daily_share=1.0)
        async with Stack.running(
            Path(folder),
            spotify_options={"record_requests": False},
            app_options={"fair_use": lifted},
        ) as stack:
            await stack.link(ALICE_ID, "alice")
            stack.spotify.set_playing("alice", track_payload("t1", "Bench Song", 200_000, 65_000))
            members = await link_members(stack, 100)
            log = history_of(stack)
            await np_latencies(stack, 1.0)  # warm-up
            quiet: list[float] = []
            loaded: list[float] = []
            plays_before = await count_plays(stack.app.services.storage)
            recorded = 0
            for _ in range(runs):
                without: list[float] = []
                with_load: list[float] = []
                for _ in range(SEGMENTS):
                    without += await np_latencies(stack, stretch)
                    load = asyncio.create_task(record_load(log, members, 100, first=recorded))
                    with_load += await np_latencies(stack, stretch)
                    load.cancel()
                    recorded += await load
                    await log_idle(log, 10)
                quiet.append(percentile(without, 0.99))
                loaded.append(percentile(with_load, 0.99))
            plays = await count_plays(stack.app.services.storage) - plays_before
    base, busy = statistics.median(quiet), statistics.median(loaded)
    rise = (busy - base) / base * 100
    print(
        f"/np p99 while recording 100 plays/s (median of {runs} runs; each {seconds:.0f} s "
        f"with and {seconds:.0f} s without, alternating every {stretch:g} s)"
    )
    print(f"  runs without: {', '.join(f'{v:.2f}' for v in quiet)} ms")
    print(f"  runs with:    {', '.join(f'{v:.2f}' for v in loaded)} ms")
    print(f"  median without {base:.2f} ms, with {busy:.2f} ms ({rise:+.1f} %)")
    print(f"  plays offered {recorded}, logged {plays}")
    return rise <= 10 and plays >= recorded


def attachments_of(message: FakeMessage) -> list[Any] | None:
    return message.attachments or None


def fill_plays(path: Path, members: int, rows: int, days: int) -> None:
    rnd = random.Random(12)
    now = time.time()
    catalogue = 30_000
    with sqlite3.connect(path) as raw:
        batch = []
        for n in range(rows):
            track = min(int(rnd.paretovariate(0.8)), catalogue)
            batch.append(
                (
                    FIRST_ID + rnd.randrange(members),
                    f"track{track:018d}",
                    now - rnd.random() * days * 86400,
                    f"Track {track}",
                    f"Artist {track % 4000}",
                    f"Artist {track % 4000}",
                    f"album{track % 6000:018d}",
                    f"Album {track % 6000}",
                    f"https://i.scdn.co/image/ab67616d0000b273{track % 6000:024x}",
                    200_000,
                    "spotify",
                )
            )
            if len(batch) == 50_000 or n == rows - 1:
                raw.executemany(
                    "INSERT INTO plays (discord_user_id, track_id, started_at, track_name, "
                    "artist, artists, album_id, album_name, image_url, duration_ms, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    batch,
                )
                batch.clear()
        raw.executemany(
            "INSERT INTO listening_guilds (guild_id, discord_user_id, seen_at) VALUES (?, ?, ?)",
            [(GUILD_ID, FIRST_ID + m, now) for m in range(members)],
        )
        raw.execute("ANALYZE")
    raw.close()


async def bench_recap(rows: int, count: int) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        async with Stack.running(Path(folder)) as stack:
            pass  # creates and migrates the database
        path = Path(folder) / "data" / "bot.db"
        started = time.monotonic()
        fill_plays(path, 200, rows, 90)
        print(
            f"/recap over {rows} plays of 200 members in 90 days (filled in "
            f"{time.monotonic() - started:.0f} s)"
        )
        # The 200 are members of the server: /recap checks who is still there (over REST,
        # remembered for a minute, as without the members intent).
        async with Stack.running(Path(folder), guilds=[big_guild(201, 0)]) as stack:
            server = stack.app.services.server_listening
            ok = True
            for period in ("week", "month"):
                queries = []
                for _ in range(count):
                    t0 = time.perf_counter()
                    recap = await server.recap(GUILD_ID, period)
                    queries.append((time.perf_counter() - t0) * 1000)
                commands = []
                pictures = []
                for _ in range(count):
                    started = time.perf_counter()
                    sent = await stack.discord.send_slash_command(
                        "recap", {"period": period}, user_id=str(ALICE_ID)
                    )
                    await sent.wait_for_reply(timeout=10)
                    reply = sent.original
                    assert reply is not None
                    assert reply.embeds, "no recap embed"
                    commands.append(sent.callback_latency * 1000)
                    await stack.discord.wait_for(
                        functools.partial(attachments_of, reply), timeout=10
                    )
                    pictures.append((time.perf_counter() - started) * 1000)
                q50, q_max = statistics.median(queries), max(queries)
                c50, c_max = statistics.median(commands), max(commands)
                print(
                    f"  {period}: {recap.plays} plays, {recap.listeners} listeners; query "
                    f"median {q50:.0f} ms (max {q_max:.0f}); /recap answered median "
                    f"{c50:.0f} ms (max {c_max:.0f}); its 3x3 album picture attached after "
                    f"median {statistics.median(pictures):.0f} ms (max {max(pictures):.0f})"
                )
                ok = ok and c_max <= 200
    return ok


async def run(args: argparse.Namespace) -> int:
    phases = set(args.phases.split(","))
    ok = True
    if "listening" in phases:
        ok = await bench_listening(args.members, args.listening, args.count) and ok
    if "np" in phases:
        ok = await bench_np_with_recording(args.seconds, args.runs) and ok
    if "recap" in phases:
        ok = await bench_recap(args.rows, 5) and ok
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--listening", type=int, default=500)
    parser.add_argument("--count", type=int, default=300, help="/listening runs")
    parser.add_argument("--seconds", type=float, default=60.0, help="/np phase length")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke run")
    parser.add_argument(
        "--phases", default="listening,np,recap", help="which figures, comma-separated"
    )
    args = parser.parse_args()
    if args.quick:
        args.members, args.listening, args.count = 1000, 100, 50
        args.seconds, args.runs, args.rows = 3.0, 1, 50_000
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
