"""Two bot processes sharing one bot on PostgreSQL, and /np on PostgreSQL next to SQLite.

Run: ``.venv/bin/python bench/shards.py [--seconds 300] [--database-url URL]``. Without a URL
it starts a throwaway PostgreSQL cluster (``scripts/postgres-for-tests``, Debian's package).
Everything talks to fakes on 127.0.0.1 served by this process.

1. Shards: 1,000 guilds (each with a music channel), 100 linked listeners (each a member of 10
   guilds, so of both shards), every listener playing 45 s tracks; two real bot processes
   (``python -m bot``, SHARD_COUNT=2) auto-post for ``--seconds``; one of them (the leader)
   polls Spotify for every guild. Halfway, the leader is killed with SIGKILL and started again
   a second later, as a supervisor would; the other process takes over. Spotify rotates
   refresh tokens and access tokens last 40 s, so refreshes happen all along.
   Printed: posts, duplicates (a track posted twice in one channel), tracks missed (lost
   posts) outside and around the takeover, how long after the kill the other process led and
   posted, links and music channels left, refresh tokens lost (the stored one no longer
   valid at Spotify).
2. /np: 300 sequential /np from one linked member (warm token) with the whole bot in this
   process: p50 and p99 on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.crypto import TokenCipher  # noqa: E402
from bot.spotify.fair_use import FairUseLimits  # noqa: E402
from bot.storage import Storage  # noqa: E402
from tests import harness  # noqa: E402
from tests.fakes.discord import FakeDiscord, shard_of  # noqa: E402
from tests.fakes.discord_payloads import (  # noqa: E402
    make_channel,
    make_guild,
    make_member,
    make_user,
)
from tests.fakes.spotify import FakeSpotify, track_payload  # noqa: E402
from tests.helpers import link_fake_user  # noqa: E402

GUILDS = 1000
LISTENERS = 100
GUILDS_PER_LISTENER = 10
# Longer than the auto-poster's edit window (30 s): every track is a post of its own.
TRACK_SECONDS = 45.0
FIRST_GUILD = 720_000_000_000_000_000
FIRST_LISTENER = 830_000_000_000_000_000
ADMIN = 830_000_000_000_009_999


def guild_id(index: int) -> int:
    return FIRST_GUILD + (index << 22)  # consecutive indexes alternate between two shards


def music_id(index: int) -> int:
    return FIRST_GUILD + 500_000_000 + index


def listener_guilds(listener: int) -> list[int]:
    return [listener * GUILDS_PER_LISTENER + n for n in range(GUILDS_PER_LISTENER)]


def build_guilds() -> list[dict[str, Any]]:
    members_of: dict[int, list[int]] = {i: [] for i in range(GUILDS)}
    for listener in range(LISTENERS):
        for index in listener_guilds(listener):
            members_of[index].append(FIRST_LISTENER + listener)
    return [
        make_guild(
            id=guild_id(index),
            name=f"Guild {index}",
            channels=[
                make_channel(id=FIRST_GUILD + 900_000_000 + index, name="general"),
                make_channel(id=music_id(index), name="music", position=1),
            ],
            members=[make_member(make_user(m, f"l{m % 1000}")) for m in members_of[index]],
            owner_id=ADMIN,
        )
        for index in range(GUILDS)
    ]


class Timeline:
    """Listener ``i`` plays tracks of TRACK_SECONDS back to back from its own start."""

    def __init__(self, started: float) -> None:
        self.started = started

    def start_of(self, listener: int) -> float:
        return self.started + listener * (TRACK_SECONDS / LISTENERS)

    def index_at(self, listener: int, moment: float) -> int:
        return int((moment - self.start_of(listener)) // TRACK_SECONDS)

    def state(self, listener: int) -> Any:
        def current() -> dict[str, Any]:
            elapsed = time.time() - self.start_of(listener)
            track = max(0, int(elapsed // TRACK_SECONDS))
            progress = int((elapsed - track * TRACK_SECONDS) * 1000)
            return track_payload(
                f"l{listener}t{track}",
                f"L{listener} T{track}",
                int(TRACK_SECONDS * 1000),
                max(0, progress),
            )

        return current


@contextlib.asynccontextmanager
async def postgres(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="np-bench-pg-")
    script = str(ROOT / "scripts" / "postgres-for-tests")
    started = await asyncio.to_thread(
        subprocess.run,
        ["bash", script, "start", folder],
        capture_output=True,
        text=True,
        check=True,
    )
    try:
        yield started.stdout.strip()
    finally:
        await asyncio.to_thread(subprocess.run, ["bash", script, "stop", folder], check=False)


async def fresh_database(admin_url: str, name: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def spawn(shard: int, env: dict[str, str], log_folder: Path) -> subprocess.Popen[bytes]:
    values = {**env, "SHARD_IDS": str(shard), "WEB_PORT": str(harness.free_port())}
    log = (log_folder / f"shard{shard}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=log_folder,
        env=values,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def bench_shards(admin_url: str, seconds: float) -> None:
    url = await fresh_database(admin_url, "bench_shards")
    key = TokenCipher([base64.urlsafe_b64decode(harness.KEY)])
    redirect = f"http://127.0.0.1:{harness.free_port()}/callback"
    async with (
        FakeSpotify.running(
            redirect_uris=[redirect],
            users=(),
            rotate_refresh_tokens=True,
            expires_in=40,
            record_requests=False,
        ) as spotify,
        FakeDiscord.running(guilds=build_guilds(), recommended_shards=2) as fake_discord,
    ):
        timeline = Timeline(time.time() + 5.0)
        async with await Storage.open(url) as storage:
            for listener in range(LISTENERS):
                user_id = f"listener{listener}"
                spotify.add_user(user_id)
                spotify.set_playing(user_id, timeline.state(listener))
                await link_fake_user(storage, spotify, key, FIRST_LISTENER + listener, user_id)
            for index in range(GUILDS):
                await storage.settings.set_music_channel(guild_id(index), music_id(index))
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "DISCORD_TOKEN": fake_discord.token,
            "SPOTIFY_CLIENT_ID": spotify.client_id,
            "SPOTIFY_CLIENT_SECRET": spotify.client_secret,
            "SPOTIFY_REDIRECT_URI": redirect,
            "TOKEN_ENCRYPTION_KEY": harness.KEY,
            "DATABASE_URL": url,
            "SHARD_COUNT": "2",
            "DISCORD_API_BASE": fake_discord.api_url,
            "SPOTIFY_ACCOUNTS_BASE": spotify.accounts_base,
            "SPOTIFY_API_BASE": spotify.api_base,
            "SPOTIFY_REQUEST_BUDGET": "2000",
            "LOG_LEVEL": "WARNING",
        }
        folder = Path(tempfile.mkdtemp(prefix="np-bench-shards-"))
        processes = {shard: spawn(shard, env, folder) for shard in (0, 1)}
        killed_at = 0.0
        killed_shard = -1
        leader_pid: int | None = None
        posts_before_kill = 0
        first_post_after_kill: float | None = None
        takeover_at: float | None = None
        try:
            run_until = time.time() + seconds
            half = time.time() + seconds / 2
            while time.time() < run_until:
                await asyncio.sleep(0.2)
                if not killed_at and time.time() >= half:
                    leader_pid = await leader_os_pid(url)
                    killed_shard = next(
                        shard for shard, p in processes.items() if p.pid == leader_pid
                    )
                    processes[killed_shard].send_signal(signal.SIGKILL)
                    processes[killed_shard].wait()
                    killed_at = time.time()
                    posts_before_kill = len(fake_discord.channel_posts)
                    await asyncio.sleep(1.0)
                    processes[killed_shard] = spawn(killed_shard, env, folder)
                if killed_at and takeover_at is None:
                    pid = await leader_os_pid(url)
                    if pid is not None and pid != leader_pid:
                        takeover_at = time.time()
                posted_since = len(fake_discord.channel_posts) > posts_before_kill
                if killed_at and first_post_after_kill is None and posted_since:
                    first_post_after_kill = time.time()
        finally:
            ended = time.time()  # posting stops with the processes
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        report_shards(fake_discord, spotify, timeline, killed_at, takeover_at or ended, ended)
        print(f"  killed the leader (shard {killed_shard}'s process); restarted 1 s later")
        print(f"  another process led {fmt(takeover_at, killed_at)}")
        print(f"  first post after the kill {fmt(first_post_after_kill, killed_at)}")
        async with await Storage.open(url) as storage:
            links = await storage.links.count_links()
            channels = len(await storage.settings.list_music_channels())
            lost = 0
            for listener in range(LISTENERS):
                member = FIRST_LISTENER + listener
                link = await storage.links.get_link(member)
                if link is None or link.refresh_token is None:
                    lost += 1
                    continue
                stored = key.decrypt(member, link.refresh_token)
                if stored not in spotify.refresh_tokens_of(f"listener{listener}"):
                    lost += 1
        print(f"  links left: {links}/{LISTENERS}; music channels left: {channels}/{GUILDS}")
        print(f"  rotated refresh tokens lost: {lost}")
        print(f"  (process logs: {folder})")


async def leader_os_pid(url: str) -> int | None:
    """The OS pid of the process holding the auto-post leader lock (its connection names it
    in pg_stat_activity), or None while nobody leads."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        name = await connection.fetchval(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE application_name LIKE 'nowplaying autopost:leader pid %' LIMIT 1"
        )
    finally:
        await connection.close()
    return int(str(name).rsplit(" ", 1)[1]) if name else None


def guild_of_channel(channel_id: int) -> int:
    return guild_id(channel_id - FIRST_GUILD - 500_000_000)


def fmt(moment: float | None, since: float) -> str:
    return "never" if moment is None else f"{moment - since:.1f} s after the kill"


def report_shards(
    fake_discord: FakeDiscord,
    spotify: FakeSpotify,
    timeline: Timeline,
    killed_at: float,
    took_over_at: float,
    ended: float,
) -> None:
    posted: Counter[tuple[int, str]] = Counter()
    wall = time.time() - time.monotonic()  # the fake stamps posts with the monotonic clock
    ready = {0: ended, 1: ended}  # each process's first post: it is up and following
    for message in fake_discord.channel_posts:
        channel = int(message.channel_id)
        # A quick change may edit the member's last post instead: count every title it showed.
        bodies = [{"embeds": message.embeds}, *message.edits]
        shown = {str(b["embeds"][0].get("title")) for b in bodies if b.get("embeds")}
        for title in shown:
            posted[(channel, title)] += 1
        shard = shard_of(guild_of_channel(channel), 2)
        ready[shard] = min(ready[shard], message.created_at + wall)
    duplicates = sum(count - 1 for count in posted.values() if count > 1)
    missed = missed_in_outage = 0
    missed_where: Counter[str] = Counter()
    expected = 0
    for listener in range(LISTENERS):
        for index in listener_guilds(listener):
            shard = shard_of(guild_id(index), 2)
            first = timeline.index_at(listener, ready[shard])  # playing when it came up
            last = timeline.index_at(listener, ended - 5.0)  # changed 5 s before the end
            for track in range(max(first, 0), last + 1):
                begins = timeline.start_of(listener) + track * TRACK_SECONDS
                ends = begins + TRACK_SECONDS
                expected += 1
                if (music_id(index), f"L{listener} T{track}") in posted:
                    continue
                if begins < took_over_at + 15 and ends > killed_at:
                    missed_in_outage += 1
                else:
                    missed += 1
                    where = "first" if track == first else "last" if track == last else "middle"
                    missed_where[where] += 1
    print(
        f"  processes up (first post): shard 0 {ready[0] - timeline.started:.1f} s, "
        f"shard 1 {ready[1] - timeline.started:.1f} s after the tracks started"
    )
    print(
        f"Shards: {GUILDS} guilds, {LISTENERS} listeners, two processes, "
        f"{ended - timeline.started:.0f} s"
    )
    print(f"  posts: {sum(posted.values())}; track changes to post once each: {expected}")
    print(f"  duplicates: {duplicates}")
    print(
        f"  tracks missed outside the outage: {missed} (the track playing when the process "
        f"came up: {missed_where['first']}, the last change: {missed_where['last']}, "
        f"others: {missed_where['middle']})"
    )
    print(
        "  tracks missed around the takeover (began before it was 15 s old, ended after the "
        f"kill): {missed_in_outage}"
    )
    print(f"  Spotify requests: {spotify.call_count('currently_playing')} currently-playing")


async def bench_np(database: str | None, count: int) -> list[float]:
    harness.database_url = database
    try:
        with tempfile.TemporaryDirectory() as folder:
            # One member's /np in a loop: the per-member limits are lifted (bench/fair_use.py).
            lifted = FairUseLimits(per_minute=1_000_000, daily_share=1.0)
            async with harness.Stack.running(
                Path(folder), app_options={"fair_use": lifted}
            ) as stack:
                await stack.link(harness.ALICE_ID, "alice")
                stack.spotify.set_playing("alice", track_payload("t1", "Song", 200_000, 10_000))
                await (await stack.np(harness.ALICE_ID)).wait_for_reply()  # warm the token
                latencies = []
                for _ in range(count):
                    sent = await stack.np(harness.ALICE_ID)
                    await sent.wait_for_callback()
                    latencies.append(sent.callback_latency * 1000)
                return sorted(latencies)
    finally:
        harness.database_url = None


def percentile(values: list[float], fraction: float) -> float:
    return values[max(0, min(len(values) - 1, round(fraction * len(values)) - 1))]


async def main_async(args: argparse.Namespace) -> None:
    async with postgres(args.database_url) as admin_url:
        for label, target in (
            ("SQLite", None),
            ("PostgreSQL", await fresh_database(admin_url, "bench_np")),
        ):
            values = await bench_np(target, args.np)
            print(
                f"/np on {label}: p50 {percentile(values, 0.5):.1f} ms, "
                f"p99 {percentile(values, 0.99):.1f} ms, mean {statistics.mean(values):.1f} ms "
                f"({len(values)} sequential, warm token)"
            )
        if args.seconds > 0:
            await bench_shards(admin_url, args.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the shard run")
    parser.add_argument("--np", type=int, default=300, help="sequential /np per backend")
    parser.add_argument("--database-url", help="an administrator's URL of a PostgreSQL to use")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
