"""Run a command on a pseudo-terminal, as a person at a keyboard would: it is the process's
controlling terminal (so ``getpass`` reads it with echo off) and its stdin/stdout are ttys.

Everything is read as it arrives, from the test's own event loop (the fakes run there too);
``transcript`` is what the person saw, typed answers echoed by the terminal included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

# util-linux's setsid makes the pty the new session's controlling terminal (TIOCSCTTY) and
# execs the command: no Python code runs in the forked child of this threaded test process.
SETSID = ("setsid", "--ctty", "--wait")


class PtySession:
    def __init__(self, process: subprocess.Popen[bytes], master: int) -> None:
        self.process = process
        self.master = master
        self._buffer = bytearray()
        self._changed = asyncio.Event()
        self._closed = False
        self._consumed = 0
        loop = asyncio.get_running_loop()
        os.set_blocking(master, False)
        loop.add_reader(master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child side is gone
            chunk = b""
        if not chunk:
            self._stop_reading()
        else:
            self._buffer.extend(chunk)
        self._changed.set()

    def _stop_reading(self) -> None:
        if not self._closed:
            self._closed = True
            asyncio.get_running_loop().remove_reader(self.master)

    @property
    def transcript(self) -> str:
        return self._buffer.decode(errors="replace").replace("\r\n", "\n")

    async def expect(self, pattern: str, *, timeout: float = 15) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) to appear after what the last expect consumed."""
        compiled = re.compile(pattern)

        async def find() -> re.Match[str]:
            while True:
                match = compiled.search(self.transcript, self._consumed)
                if match:
                    self._consumed = match.end()
                    return match
                if self._closed:
                    raise AssertionError(f"terminal closed before {pattern!r}:\n{self.transcript}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.transcript}") from None

    def type(self, text: str) -> None:
        """Type ``text`` and Enter."""
        os.write(self.master, text.encode() + b"\r")

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def press_ctrl_d(self) -> None:
        """End of input, as at the start of a line."""
        os.write(self.master, b"\x04")

    async def wait(self, timeout: float = 20) -> int:
        """The exit status (a thread waits for the child; the loop keeps reading its output)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.process.wait), timeout)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout} s:\n{self.transcript}") from None

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


@contextlib.asynccontextmanager
async def pty_session(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path
) -> AsyncIterator[PtySession]:
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; we never wait on it here
            [*SETSID, *command],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=dict(env),
        )
    finally:
        os.close(slave)
    session = PtySession(process, master)
    try:
        yield session
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        session._stop_reading()
        os.close(master)
