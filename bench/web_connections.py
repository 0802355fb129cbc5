"""The web port under one client holding connections: the real bot under systemd's default limit.

Run: ``.venv/bin/python bench/web_connections.py``. The bot runs as its own process, the
command line a self-hoster runs (``python -m bot``), under ``prlimit --nofile=1024`` (the
soft and hard limit a systemd service gets by default is soft 1,024; here the hard limit is
1,024 too, so the bot cannot raise it), against the fake Discord and fake Spotify of this
process on 127.0.0.1. Then one client (this process) opens ``--connections`` connections to the
bot's web port, half idle and half sending headers that never end, and:

1. counts how many of them the bot still holds open once all are opened (the rest it closed:
   each new connection beyond its limit replaced the oldest idle one);
2. while it holds them, asks ``/healthz`` ``--requests`` times on fresh connections, and runs
   ``/np`` through the fake Discord (the bot's own sockets: REST to Discord, Spotify);
3. does 2 again while the client re-opens every connection the bot closes (an attacker
   that keeps trying), and prints the same figures;
4. waits for the idle timeout and counts what the client still holds.

Every figure is printed; nothing is asserted. A request without an answer within 5 s is
counted as unanswered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.clirun import PYTHON_M_BOT, bot_process, env_for_fakes
from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import ALICE_ID, default_guild, free_port

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
ANSWER_WITHIN = 5.0


class Client:
    """One client holding many connections to the bot's web port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []
        self.reads: list[asyncio.Task[bytes]] = []
        self.failed_opens = 0

    async def open(self, count: int) -> None:
        for index in range(count):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), ANSWER_WITHIN
                )
            except (OSError, TimeoutError):
                self.failed_opens += 1
                continue
            if index % 2:
                writer.write(HALF_SENT)
            self.writers.append(writer)
            self.reads.append(asyncio.ensure_future(reader.read()))  # b"" once the bot closes

    def holding(self) -> int:
        return sum(not task.done() for task in self.reads)

    async def keep_reopening(self, target: int) -> None:
        """Re-open whatever the bot closed, so ``target`` connections are always tried."""
        while True:
            missing = target - self.holding()
            if missing > 0:
                await self.open(missing)
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.reads:
            task.cancel()
        await asyncio.gather(*self.reads, return_exceptions=True)


async def healthz_latencies(port: int, count: int) -> tuple[list[float], int]:
    """Milliseconds per answered /healthz (each on a new connection), and how many went
    unanswered."""
    latencies: list[float] = []
    unanswered = 0
    timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN)
    for _ in range(count):
        started = time.perf_counter()
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"http://127.0.0.1:{port}/healthz") as response,
            ):
                await response.read()
                if response.status != 200:
                    raise aiohttp.ClientError(f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError):
            unanswered += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, unanswered


async def np_answers(fake: FakeDiscord, count: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    unanswered = 0
    for _ in range(count):
        started = time.perf_counter()
        sent = await fake.send_slash_command("np", {}, user_id=str(ALICE_ID))
        try:
            await sent.wait_for_reply(timeout=ANSWER_WITHIN)
        except (AssertionError, TimeoutError):
            unanswered += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, unanswered


def describe(name: str, latencies: list[float], unanswered: int) -> str:
    if not latencies:
        return f"  {name}: none answered ({unanswered} unanswered within {ANSWER_WITHIN:.0f} s)"
    ordered = sorted(latencies)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        f"  {name}: {len(latencies)} answered, {unanswered} unanswered; "
        f"p50 {statistics.median(ordered):.1f} ms, p95 {p95:.1f} ms, max {ordered[-1]:.1f} ms"
    )


async def run(connections: int, requests: int, nofile: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        async with (
            FakeSpotify.running(redirect_uris=[f"http://127.0.0.1:{port}/callback"]) as spotify,
            FakeDiscord.running(guilds=[default_guild()]) as fake,
        ):
            env = env_for_fakes(Path(folder), fake, spotify, WEB_PORT=str(port))
            command = ["prlimit", f"--nofile={nofile}", "--", *PYTHON_M_BOT]
            async with bot_process(command, env, Path(folder)) as bot:
                await bot.wait_for_line("Connected to Discord", timeout=60)
                print(f"bot under prlimit --nofile={nofile}; {connections} connections, half idle")
                client = Client(port)
                try:
                    started = time.perf_counter()
                    await client.open(connections)
                    opened = time.perf_counter() - started
                    await asyncio.sleep(1.0)  # let the closes the bot sent arrive
                    print(
                        f"  opened {connections - client.failed_opens} of {connections} in "
                        f"{opened:.1f} s; the bot still holds {client.holding()} of them"
                    )
                    print(describe("/healthz while held", *await healthz_latencies(port, requests)))
                    print(describe("/np while held", *await np_answers(fake, 20)))
                    reopening = asyncio.create_task(client.keep_reopening(connections))
                    try:
                        print(
                            describe(
                                "/healthz while the client re-opens what the bot closes",
                                *await healthz_latencies(port, requests),
                            )
                        )
                        print(describe("/np meanwhile", *await np_answers(fake, 20)))
                        print(
                            f"  the client holds {client.holding()} connections "
                            f"({len(client.reads)} opened in all)"
                        )
                    finally:
                        reopening.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reopening
                    await asyncio.sleep(12)
                    print(f"  12 s later the client still holds {client.holding()} connections")
                    refused = [line for line in bot.lines if "Too many open files" in line]
                    print(f"  'Too many open files' lines in the bot's log: {len(refused)}")
                finally:
                    await client.close()
                await bot.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--nofile", type=int, default=1024)
    args = parser.parse_args()
    if shutil.which("prlimit") is None:
        sys.exit("prlimit (util-linux) is needed to run the bot under a descriptor limit")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 200:  # this client needs a descriptor per connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run(args.connections, args.requests, args.nofile))


if __name__ == "__main__":
    main()
