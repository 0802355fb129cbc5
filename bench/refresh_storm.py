"""Refresh storm: 1,000 concurrent token requests for 100 members whose tokens just expired.

Run: ``.venv/bin/python bench/refresh_storm.py``. Starts the fake Spotify on loopback and a
real Storage on a temporary file; prints how many refreshes reached the fake (one per member
is the only right answer) and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.crypto import TokenCipher
from bot.members.tokens import TokenManager
from bot.spotify.http import SpotifySender
from bot.spotify.models import SpotifyUser, TokenGrant
from bot.storage import Storage
from tests.fakes.spotify import (
    FakeSpotify,
)
from tests.helpers import fake_spotify_auth
from tests.peek import member_lock_count


async def run(members: int, requests: int, rotate: bool) -> int:
    async with (
        FakeSpotify.running(users=(), rotate_refresh_tokens=rotate, record_requests=False) as fake,
        aiohttp.ClientSession() as session,
    ):
        with tempfile.TemporaryDirectory() as folder:
            async with await Storage.open(Path(folder) / "bench.db") as storage:
                sender = SpotifySender(session)
                auth = fake_spotify_auth(sender, fake)
                tokens = TokenManager(storage, TokenCipher([os.urandom(32)]), auth)

                # Link every member with an access token that expired just now.
                for index in range(members):
                    spotify_id = f"member{index}"
                    fake.add_user(spotify_id)
                    access, refresh = fake.grant_tokens(spotify_id)
                    grant = TokenGrant(
                        access_token=access,
                        expires_in=3600,
                        scope="user-read-currently-playing user-read-playback-state",
                        refresh_token=refresh,
                        received_at=time.monotonic() - 3600,
                    )
                    user = SpotifyUser(f"acct-{spotify_id}", spotify_id, spotify_id)
                    await tokens.store_new_link(1_000 + index, user, grant)
                fake.expire_access_tokens()
                fake.reset_calls()

                discord_ids = [1_000 + i % members for i in range(requests)]
                random.Random(1).shuffle(discord_ids)
                started = time.perf_counter()
                results = await asyncio.gather(*(tokens.access_token(d) for d in discord_ids))
                elapsed = time.perf_counter() - started

                refreshes = fake.call_count("token")
                distinct = len(set(results))
                print(f"members: {members}, concurrent access_token requests: {requests}")
                print(f"refresh calls at the fake: {refreshes} (expected {members})")
                print(f"distinct access tokens handed out: {distinct}")
                print(f"member locks left: {member_lock_count(tokens)}")
                print(f"wall time: {elapsed * 1000:.1f} ms")
                ok = refreshes == members and distinct == members and member_lock_count(tokens) == 0
                print("OK" if ok else "FAILED")
                return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--rotate", action="store_true", help="the fake rotates refresh tokens")
    args = parser.parse_args()
    return asyncio.run(run(args.members, args.requests, args.rotate))


if __name__ == "__main__":
    raise SystemExit(main())
