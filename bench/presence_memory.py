"""What 50,000 presence-only listeners cost us: memory of our per-member caches and database reads.

Presence mode hands every Discord status that shows Spotify to the auto-poster. Members known
only through presence who neither linked nor opted in must leave nothing behind: no cache
entry, no database read. This feeds ``--listeners`` such members (plus a few linked, opted-in
and private ones, as a real server has) through the real code path: ``cogs.presence``'s
``PresenceCog.observe_member`` -> ``AutopostService`` -> ``Storage`` (SQLite on disk) and
``PrivacyService``, with real ``discord.Spotify`` activities, ``--rounds`` track changes each,
seen once per shared guild, as Discord sends them. Discord itself is a stand-in that answers at
once (the member objects stand for discord.py's own member cache, which is not ours to count).

Printed figures:

* the entries and bytes (deep size) of each of our per-member caches, before and after the
  feed, against the bound: entries only for linked, opted-in and private members;
* memory still allocated by ``bot/`` and ``cogs/`` code after the feed (tracemalloc), apart
  from discord.py's member cache and the activities;
* SQL statements run during the feed (reads and writes).

Run: ``python bench/presence_memory.py`` (about a minute on a small machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import discord

from bot.autopost.service import AutopostService
from bot.members.events import MemberEvents
from bot.members.privacy import PrivacyService
from bot.nowplaying.renderer import NowPlayingRenderer
from bot.spotify.models import CurrentlyPlaying, NothingPlaying
from bot.storage import LinkedAccount, Storage
from cogs.presence import PresenceCog
from tests.fakes.discord_side import FakeDiscordSide

FIRST_GUILD = 900_000_000_000_000_000
FIRST_LISTENER = 810_000_000_000_000_000
FIRST_LINKED = 820_000_000_000_000_000
FIRST_OPTED_IN = 830_000_000_000_000_000
FIRST_PRIVATE = 840_000_000_000_000_000


async def nothing_playing(member_id: int) -> CurrentlyPlaying:
    return NothingPlaying(received_at=time.time())


def spotify_activity(member_id: int, round_number: int) -> discord.Spotify:
    start = int(time.time() * 1000)
    return discord.Spotify(
        type=2,
        name="Spotify",
        sync_id=f"t{round_number}x{member_id % 1_000_000:06d}",
        session_id="f9c3e4a1b2d34e5f9a0b1c2d3e4f5a6b",
        details=f"Track {round_number}",
        state="Artist A; Artist B",
        assets={"large_text": "Album", "large_image": "spotify:ab67616d0000b273e8b0"},
        timestamps={"start": start, "end": start + 200_000},
        party={"id": "spotify:1"},
        created_at=start,
    )


def deep_size(root: object) -> int:
    """Bytes of ``root`` and everything it holds (containers, __slots__, __dict__), each
    object counted once. Interned small values (None, bools, small ints) are shared anyway."""
    seen: set[int] = set()
    total = 0
    stack: list[object] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, bool | type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        else:
            for name in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__") and not isinstance(obj, discord.Spotify):
                stack.append(vars(obj))
    return total


def caches(service: AutopostService, privacy: PrivacyService) -> dict[str, object]:
    """Every per-member structure of ours on this path (docs/self-hosting.md, "Memory per
    member")."""
    structures: dict[str, object] = {
        f"autopost {name}": value for name, value in service.per_member_state().items()
    }
    scheduler: Any = service.scheduler
    structures["poll scheduler members"] = scheduler._queue._members
    structures["privacy: private members"] = privacy._private
    return structures


PER_GUILD = {"autopost guild membership", "autopost last posts"}  # keyed by (member, guild)


def member_ids(value: object) -> set[int]:
    """The member ids a cache holds (keys, or the member half of (member, guild) keys)."""
    keys = value.keys() if isinstance(value, dict) else value
    found: set[int] = set()
    for key in keys:  # type: ignore[attr-defined]
        if isinstance(key, tuple):
            found.update(part for part in key if isinstance(part, int))
        elif isinstance(key, int):
            found.add(key)
    return found


def sizes(named: dict[str, object]) -> dict[str, tuple[int, int]]:
    return {
        name: (len(value) if hasattr(value, "__len__") else 0, deep_size(value))  # type: ignore[arg-type]
        for name, value in named.items()
    }


async def seed(storage: Storage, args: argparse.Namespace, guilds: list[int]) -> None:
    for index, guild_id in enumerate(guilds):
        await storage.settings.set_music_channel(guild_id, guild_id + 1 + index)
    for index in range(args.linked):
        member_id = FIRST_LINKED + index
        await storage.links.save_link(
            LinkedAccount(
                discord_user_id=member_id,
                spotify_account_id=f"acct-{index}",
                spotify_user_id=f"user-{index}",
                display_name=f"User {index}",
                refresh_token=b"\x01" * 60,
                scopes="user-read-currently-playing",
                linked_at=time.time(),
            )
        )
    for index in range(args.opted_in):
        await storage.settings.set_guild_autopost_opt_in(FIRST_OPTED_IN + index, guilds[0], True)
    for index in range(args.private):
        member_id = FIRST_PRIVATE + index
        await storage.settings.set_guild_autopost_opt_in(member_id, guilds[0], True)
        await storage.privacy.set_visibility(member_id, "private")


def members_of(args: argparse.Namespace) -> list[SimpleNamespace]:
    """discord.py's member cache, as far as the presence listener reads it."""
    ids: Iterable[int] = (
        *(FIRST_LISTENER + i for i in range(args.listeners)),
        *(FIRST_LINKED + i for i in range(args.linked)),
        *(FIRST_OPTED_IN + i for i in range(args.opted_in)),
        *(FIRST_PRIVATE + i for i in range(args.private)),
    )
    return [SimpleNamespace(id=member_id, bot=False, activities=()) for member_id in ids]


async def run(args: argparse.Namespace) -> None:
    guilds = [FIRST_GUILD + 1000 * i for i in range(args.guilds)]
    with tempfile.TemporaryDirectory() as folder:
        storage = await Storage.open(Path(folder) / "bot.db")
        try:
            await seed(storage, args, guilds)
            statements: list[str] = []
            connection = storage._connection  # counting statements is the point
            assert connection is not None
            await connection.set_trace_callback(statements.append)

            privacy = PrivacyService(storage.privacy, MemberEvents())
            await privacy.start()
            # Answers at once, no network; keeps no post, so the memory figure is the bot's alone.
            side = FakeDiscordSide(first_message_id=1_000_001, keep_posts=False)
            service = AutopostService(
                storage,
                nothing_playing,
                side,
                is_private=privacy.is_private_now,
                renderer=NowPlayingRenderer(None),
            )
            await service.start()
            await service.settle()
            cog = PresenceCog(service)
            members = members_of(args)
            before = sizes(caches(service, privacy))
            statements.clear()

            gc.collect()
            tracemalloc.start(1)
            baseline = tracemalloc.take_snapshot()
            started = time.perf_counter()
            observations = 0
            for round_number in range(args.rounds):
                for member in members:
                    # discord.py updates its cached member, then calls the listener once per
                    # guild that shares the member (the same update from each).
                    member.activities = (spotify_activity(member.id, round_number),)
                    for _ in guilds:
                        await cog.on_presence_update(member, member)  # type: ignore[arg-type]
                        observations += 1
                await asyncio.sleep(0)
            elapsed = time.perf_counter() - started
            await service.settle()
            for member in members:
                member.activities = ()  # what remains is ours, not the activities'
            gc.collect()
            after_snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            after = sizes(caches(service, privacy))
            listener_ids = range(FIRST_LISTENER, FIRST_LISTENER + args.listeners)
            listeners_kept = sum(
                1
                for value in caches(service, privacy).values()
                for member_id in member_ids(value)
                if member_id in listener_ids
            )
            listener_sql = sum(
                1
                for statement in statements
                if any(str(FIRST_LISTENER // 10**9) in word for word in statement.split())
            )
            reads = sum(1 for s in statements if s.lstrip().upper().startswith("SELECT"))
            writes = len(statements) - reads
            await service.stop()
        finally:
            await storage.close()

    ours = [tracemalloc.Filter(True, f"*{sep}bot{sep}*") for sep in ("/", "\\")]
    ours += [tracemalloc.Filter(True, f"*{sep}cogs{sep}*") for sep in ("/", "\\")]
    retained = sum(
        stat.size_diff
        for stat in after_snapshot.filter_traces(ours).compare_to(
            baseline.filter_traces(ours), "filename"
        )
    )

    known = args.linked + args.opted_in + args.private
    print(
        f"{args.listeners:,} presence-only listeners (neither linked nor opted in), "
        f"{args.linked} linked, {args.opted_in} opted in, {args.private} private (and opted "
        f"in); {args.guilds} guilds with a music channel; {args.rounds} track changes each"
    )
    print(
        f"{observations:,} presence observations in {elapsed:.1f} s "
        f"({observations / elapsed:,.0f}/s); {side.post_count} auto-posts sent"
    )
    print()
    print(f"{'cache':40} {'entries':>15} {'bound':>6} {'bytes before':>13} {'bytes after':>12}")
    total_before = total_after = 0
    over = []
    for name, (entries, size) in after.items():
        entries_before, size_before = before[name]
        bound = known * args.guilds if name in PER_GUILD else known
        if entries > bound:
            over.append(name)
        total_before += size_before
        total_after += size
        print(
            f"{name:40} {entries_before:>6} -> {entries:<6} {bound:>6} "
            f"{size_before:>13,} {size:>12,}"
        )
    print(f"{'total':40} {'':>15} {'':>6} {total_before:>13,} {total_after:>12,}")
    print()
    print(
        f"bound: entries only for linked, opted-in and private members ({known} here; "
        f"x {args.guilds} guilds where keyed per guild): "
        + ("every cache within it" if not over else f"OVER in {', '.join(over)}")
    )
    print(
        f"entries about the {args.listeners:,} presence-only listeners: {listeners_kept}; "
        f"SQL statements about them: {listener_sql}"
    )
    print(
        f"memory still allocated by bot/ and cogs/ after the feed (tracemalloc): {retained:,} bytes"
    )
    print(f"SQL during the feed: {reads} reads, {writes} writes")
    print(f"finished {datetime.now(UTC):%H:%M:%S} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=50_000)
    parser.add_argument("--linked", type=int, default=100)
    parser.add_argument("--opted-in", type=int, default=100)
    parser.add_argument("--private", type=int, default=10)
    parser.add_argument("--guilds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
