"""The daily Spotify budget: what it costs per call, what it counts, what members see.

Run: ``.venv/bin/python bench/daily_budget.py``. Everything on 127.0.0.1 against the fakes.

1. The cost of asking: ``DailyBudget`` with a full window (a call in each of 1,440 minutes, six
   purposes and services a minute): microseconds per ``admit`` + ``count`` (what the sender
   does before each attempt), per ``polling_left`` and ``freed_within`` (what the poller may
   ask every turn), and per database read-back (``load``, every 2 s).
2. The count against what Spotify saw: the real bot (``tests/harness.py``'s Stack) with three
   linked members polled by the auto-poster, one of them showing a Discord status, and a
   handful of commands; then the calls the budget counted by purpose (after the 2 s write to
   the database and the read-back) next to the Web API calls the fake Spotify received.
3. What a member sees once the daily budget is spent by commands, and 4. once Spotify answered
   QUOTA_EXCEEDED: the answers to /np (with a status, without one), /recent and /top, as sent.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.shards.budget import read_daily_budget
from bot.spotify.budget import DailyBudget
from bot.spotify.fair_use import FairUseLimits
from bot.spotify.http import PURPOSES
from bot.storage import Storage
from tests.fakes.discord import UserArg
from tests.fakes.discord_payloads import make_spotify_activity
from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import (
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    Stack,
    fast_autopost,
    set_autopost_channel,
)

WEB_API = ("me", "currently_playing", "recently_played", "top_tracks", "top_artists")


async def read_back(tmp: Path, rows: list[Any], now: float) -> tuple[float, float]:
    """Seconds for one read from SQLite (query and load), the mean of 20: of the whole day
    (once a minute), and of the last minutes (every 2 s)."""
    async with await Storage.open(tmp / "bot.db") as storage:
        await storage.spotify_budget.add_calls("bench", rows, counting_since=now - 86_400)
        budget = DailyBudget(600, clock=lambda: now)
        timings = []
        for since in (None, int(now // 60) - 2):
            started = time.perf_counter()
            for _ in range(20):
                await read_daily_budget(storage.spotify_budget, "bench", budget, now, since=since)
            timings.append((time.perf_counter() - started) / 20)
        return timings[0], timings[1]


def micro(tmp: Path) -> None:
    now = time.time()
    budget = DailyBudget(10_000_000, clock=lambda: now)
    rows = [
        (int(now // 60) - minute, service, purpose, 1)
        for minute in range(1, 1440)
        for service in ("api", "accounts")
        for purpose in PURPOSES[:3]
    ]
    started = time.perf_counter()
    for _ in range(100):
        budget.load(rows, budget.quota)
    load = (time.perf_counter() - started) / 100
    recent = [row for row in rows if row[0] >= int(now // 60) - 2]
    started = time.perf_counter()
    for _ in range(1000):
        budget.load(recent, budget.quota, since=int(now // 60) - 2)
    load_recent = (time.perf_counter() - started) / 1000
    rounds = 100_000
    started = time.perf_counter()
    for _ in range(rounds):
        budget.admit("poll")
        budget.count("api", "poll")
    per_call = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for _ in range(rounds):
        budget.polling_left()
    left = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for _ in range(1000):
        budget.freed_within(3600)
    freed = (time.perf_counter() - started) / 1000
    print("1. asking the budget (a full window: 1,439 minutes, 8,634 rows)")
    print(f"   admit + count, per Web API attempt   {per_call * 1e6:6.2f} µs")
    print(f"   polling_left                         {left * 1e6:6.2f} µs")
    print(f"   freed_within(3600)                   {freed * 1e6:6.2f} µs")
    print(f"   load, the whole day (once a minute)  {load * 1e3:6.2f} ms")
    print(f"   load, the last minutes (every 2 s)   {load_recent * 1e3:6.2f} ms")
    whole, last = asyncio.run(read_back(tmp, rows, now))
    print(f"   the same from SQLite, query + load   {whole * 1e3:6.2f} ms / {last * 1e3:.2f} ms")


def status(title: str) -> list[dict[str, Any]]:
    return [
        make_spotify_activity(
            title=title,
            artists=("Status Artist",),
            album="Status Album",
            track_id="4uLU6hMCjMI75M1A2tKUQC",
            start_ms=int(time.time() * 1000) - 30_000,
            duration_ms=180_000,
        )
    ]


async def counted(tmp: Path) -> None:
    config = {"autopost_config": fast_autopost(skip_check=2.0, backoff=2.0)}
    async with Stack.running(tmp, app_options=config) as stack:
        for user_id, name in ((ALICE_ID, "alice"), (BOB_ID, "bob"), (CAROL_ID, "carol")):
            await stack.link(user_id, name)
            stack.spotify.set_playing(name, track_payload(f"t-{name}", "Song", 600_000, 1_000))
        await stack.discord.update_user_presence(CAROL_ID, status("Carol's Status"))
        await set_autopost_channel(stack)
        for user_id in (ALICE_ID, BOB_ID, CAROL_ID):
            await (await stack.np(user_id)).wait_for_reply()
        for command in ("recent", "top"):
            sent = await stack.discord.send_slash_command(command, {}, user_id=str(ALICE_ID))
            await sent.wait_for_reply()
        await asyncio.sleep(20)  # the auto-poster polls alice and bob, never carol
        await asyncio.sleep(2.5)  # one more write to the database and read-back
        budget = stack.app.services.budget
        by_purpose = budget.calls_by_purpose()
        tokens = budget.calls_by_purpose("accounts")
        fake = stack.spotify
        seen = {endpoint: fake.call_count(endpoint) for endpoint in WEB_API}
        print("\n2. counted by the budget vs received by the fake Spotify (20 s of polling)")
        print(f"   budget, Web API calls by purpose     {dict(by_purpose)}")
        print(f"   budget, token requests by purpose    {dict(tokens)}")
        print(f"   fake, Web API calls by endpoint      {seen} = {sum(seen.values())}")
        tokens_seen = fake.call_count("token") + fake.call_count("token.client_credentials")
        print(f"   fake, token requests                 {tokens_seen} (with the start-up check)")
        carol = {e: fake.call_count(e, "carol") for e in ("currently_playing", "token")}
        print(f"   carol (status shows Spotify)         {carol} after linking")
        assert sum(by_purpose.values()) == sum(seen.values())


async def reply_text(stack: Stack, name: str, user_id: int, member: int | None = None) -> str:
    options: dict[str, Any] = {} if member is None else {"member": UserArg(str(member))}
    reply = await (
        await stack.discord.send_slash_command(name, options, user_id=str(user_id))
    ).wait_for_reply()
    if reply.embeds:
        embed = reply.embeds[0]
        return f"embed {embed['title']!r}, footer {embed['footer']['text']!r}"
    return repr(reply.content)


async def budget_spent(tmp: Path) -> None:
    print("\n3. what a member sees: SPOTIFY_DAILY_BUDGET=52 spent by commands")
    # One member spends the whole budget here: their own limits (5 a minute, a tenth of the
    # day) are lifted, so that what shows is the bot-wide answer.
    lifted = {"fair_use": FairUseLimits(per_minute=1_000_000, daily_share=1.0)}
    async with Stack.running(tmp, env={"SPOTIFY_DAILY_BUDGET": "52"}, app_options=lifted) as stack:
        await stack.link(ALICE_ID, "alice")  # 1 call (linking)
        stack.spotify.set_playing("alice", track_payload("a1", "From The API", 200_000, 60_000))
        for _ in range(51):
            await (await stack.np(ALICE_ID)).wait_for_reply()
        before = stack.spotify.call_count("currently_playing")
        print(f"   /np, budget spent, no status         {await reply_text(stack, 'np', ALICE_ID)}")
        print(f"   /healthz spotify                     {stack.app.services.budget.state()!r}")
        after = stack.spotify.call_count("currently_playing") - before
        print(f"   calls after it was spent             {after}")


async def member_sees(tmp: Path) -> None:
    print("\n4. what a member sees: Spotify answered QUOTA_EXCEEDED (its quota: 3 calls)")
    async with (
        FakeSpotify.running(redirect_uris=[], daily_quota=3) as spotify,
        Stack.running(tmp, spotify=spotify) as stack,
    ):
        await stack.link(ALICE_ID, "alice")
        await stack.link(BOB_ID, "bob")
        spotify.set_playing("alice", track_payload("a1", "From The API", 200_000, 60_000))
        await stack.discord.update_user_presence(BOB_ID, status("From The Status"))
        await asyncio.sleep(0.3)
        cases = (
            ("/np, linked, status shows Spotify", "np", BOB_ID, None),
            ("/np, linked, no status", "np", ALICE_ID, None),
            ("/np, QUOTA_EXCEEDED, no status", "np", ALICE_ID, None),
            ("/np bob, QUOTA_EXCEEDED, status", "np", ALICE_ID, BOB_ID),
            ("/np carol (never linked, no status)", "np", ALICE_ID, CAROL_ID),
            ("/recent, QUOTA_EXCEEDED", "recent", ALICE_ID, None),
            ("/top, QUOTA_EXCEEDED", "top", ALICE_ID, None),
        )
        for what, name, user_id, member in cases:
            print(f"   {what:<36} {await reply_text(stack, name, user_id, member)}")
        print(f"   {'/healthz spotify':<36} {stack.app.services.budget.state()!r}")
        refusals = spotify.quota.refusals if spotify.quota else 0
        print(f"   {'Spotify refused (calls)':<36} {refusals}")


async def main(tmp: Path) -> None:
    await counted(tmp / "counted")
    await budget_spent(tmp / "spent")
    await member_sees(tmp / "quota")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        micro(Path(folder))
        asyncio.run(main(Path(folder)))
