"""The presence run of the auto-post benchmark (``bench/autopost.py --presence``).

The real bot (``bot.app.Application`` with ENABLE_PRESENCE=true) against the fake Discord and
the fake Spotify on loopback. Members whose Discord status shows Spotify: 200 known only
through presence (opted in with ``/autopost me``) and 50 linked ones (their Spotify account
plays too, so any poll would be visible). Each round changes every member's track with a
PRESENCE_UPDATE, paced over a few seconds; rounds are 31 s apart so each track is a new post
(not an edit). Figures:

* detection latency: PRESENCE_UPDATE sent by the fake gateway -> the post (POST or PATCH
  showing that track) arriving at the fake Discord, both on this process's monotonic clock;
* Spotify calls for presence-covered members while covered (target: zero);
* missed and duplicate posts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.spotify.models import SpotifyUser, TokenGrant
from tests.fakes.discord import ChannelArg
from tests.fakes.discord_payloads import (
    make_channel,
    make_guild,
    make_member,
    make_spotify_activity,
    make_user,
)
from tests.fakes.spotify import track_payload
from tests.harness import ADMIN_ID, GUILD_ID, MUSIC_ID, Stack

FIRST_MEMBER_ID = 810000000000000000


def guild(members: int) -> dict[str, Any]:
    return make_guild(
        id=GUILD_ID,
        name="Presence Bench",
        channels=[make_channel(id=MUSIC_ID, name="music")],
        members=[
            make_member(make_user(ADMIN_ID, "admin")),
            *(make_member(make_user(FIRST_MEMBER_ID + i, f"member{i}")) for i in range(members)),
        ],
        owner_id=ADMIN_ID,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


async def link(stack: Stack, member_id: int, spotify_id: str) -> None:
    stack.spotify.add_user(spotify_id)
    stack.spotify.set_playing(spotify_id, track_payload(f"api-{spotify_id}", "API", 200_000, 1))
    access, refresh = stack.spotify.grant_tokens(spotify_id)
    grant = TokenGrant(access, 3600, "user-read-currently-playing", refresh, time.monotonic())
    user = SpotifyUser(f"acct-{spotify_id}", spotify_id, spotify_id)
    await stack.app.services.tokens.store_new_link(member_id, user, grant)
    autopost = stack.app.services.autopost
    assert autopost is not None
    await autopost.member_linked(member_id)


async def run_presence(args: argparse.Namespace) -> bool:
    total = args.presence_only + args.presence_linked
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        async with Stack.running(
            Path(folder),
            guilds=[guild(total)],
            env={"ENABLE_PRESENCE": "true"},
            spotify_options={"record_requests": False},
        ) as stack:
            autopost = stack.app.services.autopost
            assert autopost is not None
            sent = await stack.discord.send_slash_command(
                "autopost",
                {"channel": ChannelArg(str(MUSIC_ID))},
                subcommand="channel",
                user_id=str(ADMIN_ID),
                guild_id=str(GUILD_ID),
            )
            await sent.wait_for_reply()
            members = [FIRST_MEMBER_ID + i for i in range(total)]
            linked = members[: args.presence_linked]
            for index, member_id in enumerate(linked):
                await link(stack, member_id, f"linked{index}")
            for member_id in members[args.presence_linked :]:
                await autopost.set_opt_in(member_id, True)

            sent_at: dict[str, float] = {}  # track id -> PRESENCE_UPDATE sent
            spotify_ids = {m: f"linked{i}" for i, m in enumerate(linked)}
            calls_while_covered = 0
            for round_number in range(args.rounds):
                if round_number:
                    await asyncio.sleep(31.0)  # the next track is a new post, not an edit
                before = Counter(
                    {
                        s: stack.spotify.call_count("currently_playing", s)
                        for s in spotify_ids.values()
                    }
                )
                order = members[:]
                rng.shuffle(order)
                gap = args.spread / len(order)
                for member_id in order:
                    track_id = f"r{round_number}m{member_id}"
                    activity = make_spotify_activity(
                        title=f"Track {track_id}",
                        track_id=track_id,
                        start_ms=int(time.time() * 1000),
                        duration_ms=rng.randint(120_000, 300_000),
                    )
                    sent_at[track_id] = time.monotonic()
                    await stack.discord.update_presence(GUILD_ID, member_id, [activity])
                    await asyncio.sleep(gap)
                await asyncio.sleep(3.0)
                if round_number:  # round 0 is when polling hands over to presence
                    calls_while_covered += sum(
                        stack.spotify.call_count("currently_playing", s) - before[s]
                        for s in spotify_ids.values()
                    )
            await asyncio.sleep(2.0)

            arrivals: dict[str, list[float]] = {}
            for request in stack.discord.requests:
                if request.method not in ("POST", "PATCH") or f"/channels/{MUSIC_ID}/" not in (
                    request.path + "/"
                ):
                    continue
                body = request.json if isinstance(request.json, dict) else {}
                for embed in body.get("embeds") or []:
                    title = str(embed.get("title", ""))
                    if title.startswith("Track "):
                        arrivals.setdefault(title[len("Track ") :], []).append(request.received_at)
            latencies = [
                arrivals[track][0] - sent for track, sent in sent_at.items() if track in arrivals
            ]
            missed = sum(1 for track in sent_at if track not in arrivals)
            duplicates = sum(len(times) - 1 for times in arrivals.values())

    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(
        f"presence run: {args.presence_only} presence-only + {args.presence_linked} linked "
        f"members, {args.rounds} rounds of track changes over {args.spread:.0f} s each"
    )
    print(
        f"  PRESENCE_UPDATE -> post: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms ({len(latencies)} posts)"
    )
    print(f"  Spotify calls for presence-covered members while covered: {calls_while_covered}")
    print(f"  missed posts: {missed}, duplicate posts: {duplicates}")
    ok = p95 <= 0.5 and calls_while_covered == 0 and missed == 0 and duplicates == 0
    print(f"  [{'ok' if p95 <= 0.5 else 'MISSED'}] p95 <= 0.5 s: {p95:.3f}")
    print(f"  [{'ok' if calls_while_covered == 0 else 'MISSED'}] zero Spotify calls")
    return ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presence-only", type=int, default=200)
    parser.add_argument("--presence-linked", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds per round")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=4)
    add_arguments(parser)
    raise SystemExit(0 if asyncio.run(run_presence(parser.parse_args())) else 1)
