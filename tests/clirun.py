"""Run the bot's command line as a self-hoster does: ``python -m bot ...`` or the installed
console script ``nowplaying-bot ...``, in a clean environment, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import KEY, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The console script pip installed next to this interpreter (scripts/test installs the project).
CONSOLE_SCRIPT = Path(sys.executable).parent / "nowplaying-bot"
PYTHON_M_BOT = (sys.executable, "-m", "bot")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any bot setting, so only ``extra`` configures it."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISCORD_", "SPOTIFY_", "NOWPLAYING_", "TOKEN_ENCRYPTION"))
        and key not in {"DATABASE_PATH", "WEB_HOST", "WEB_PORT", "DEV_GUILD_ID", "LOG_LEVEL"}
    }
    return {**clean, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def bot_env(
    tmp_path: Path,
    *,
    discord_api: str,
    token: str,
    spotify: FakeSpotify,
    web_port: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """Every required setting, pointing at the fakes."""
    port = web_port or free_port()
    return {
        "DISCORD_TOKEN": token,
        "SPOTIFY_CLIENT_ID": spotify.client_id,
        "SPOTIFY_CLIENT_SECRET": spotify.client_secret,
        "SPOTIFY_REDIRECT_URI": f"http://127.0.0.1:{port}/callback",
        "TOKEN_ENCRYPTION_KEY": KEY,
        "DATABASE_PATH": str(tmp_path / "data" / "bot.db"),
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(port),
        "DISCORD_API_BASE": discord_api,
        "SPOTIFY_ACCOUNTS_BASE": spotify.accounts_base,
        "SPOTIFY_API_BASE": spotify.api_base,
        "SPOTIFY_IMAGE_BASE": spotify.image_base,  # album art from the fake CDN
        **extra,
    }


def env_for_fakes(tmp_path: Path, discord: FakeDiscord, spotify: FakeSpotify, **extra: str) -> dict:
    return bot_env(
        tmp_path, discord_api=discord.api_url, token=discord.token, spotify=spotify, **extra
    )


async def _spawn(
    command: Sequence[str], env: dict[str, str], cwd: Path
) -> asyncio.subprocess.Process:
    """``command`` in ``cwd`` with only ``env`` configuring the bot; output and errors on one
    pipe, no input."""
    return await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=clean_environment(**env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def run_command(
    command: Sequence[str], env: dict[str, str], cwd: Path, *, timeout: float = 60
) -> tuple[int, str]:
    """Run to completion; return (exit status, stdout and stderr together)."""
    process = await _spawn(command, env, cwd)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode()


async def run_cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """``python -m bot <args>``."""
    return await run_command([*PYTHON_M_BOT, *args], env, cwd)


class BotProcess:
    """A running bot process whose output is read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="bot-process-reader")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(
        self, pattern: str | Callable[[str], bool], *, timeout: float = 15, after: int = 0
    ) -> str:
        """The first line (from index ``after``) that matches; fails after ``timeout``."""
        matches = pattern if callable(pattern) else re.compile(pattern).search

        async def find() -> str:
            while True:
                for line in self.lines[after:]:
                    if matches(line):
                        return line
                if self._reader.done():
                    raise AssertionError(f"the bot exited; output:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}") from None

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM, as Docker and systemd stop it; the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 15) -> int:
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        await asyncio.wait_for(self._reader, timeout)
        assert self.process.returncode is not None
        return self.process.returncode


@contextlib.asynccontextmanager
async def bot_process(
    command: Sequence[str], env: dict[str, str], cwd: Path
) -> AsyncIterator[BotProcess]:
    process = await _spawn(command, env, cwd)
    running = BotProcess(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running._reader, 5)
