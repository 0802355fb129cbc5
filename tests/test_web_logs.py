"""What the web server writes to the log when anyone on the network talks to it.

The real app (``bot.web.server.create_app`` served with ``bot.web.server.runner_options``, as
``bot.app`` serves it) on 127.0.0.1, the real logging set-up (``configure_logging``, text format)
writing to a buffer, and raw sockets sending what browsers, scanners and attackers send.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.logs import SecretMasker, configure_logging
from bot.web.access import runner_options
from bot.web.server import WebDependencies, create_app

# configure_logging changes process-wide state: put it back after each test.
pytestmark = pytest.mark.usefixtures("restore_logging")
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class _NoLinks:
    """The link service is not what these tests are about: every callback is refused."""

    async def complete(self, query: Any, **kwargs: Any) -> None:
        raise AssertionError("no callback expected")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    async def database_ok() -> bool:
        return True

    deps = WebDependencies(
        links=_NoLinks(),  # type: ignore[arg-type]
        redirect_path="/callback",
        database_ok=database_ok,
        gateway_ok=lambda: True,
    )
    runner = web.AppRunner(create_app(deps), **runner_options())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


def log_to(level: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, "text", SecretMasker(), stream, capture_warnings=False)
    return stream


async def send_raw(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(65536), 0.3)
        except TimeoutError:
            writer.write_eof()  # a request cut short ends here, as when a scanner hangs up
            return await asyncio.wait_for(reader.read(65536), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_forged_line_in_the_path_stays_on_its_line(server: tuple[str, int]) -> None:
    stream = log_to("INFO")
    forged = "/x%0a2026-11-29T00:00:00.000Z%20CRITICAL%20bot.app:%20Database%20wiped"
    answer = await send_raw(*server, f"GET {forged} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert LINE_START.match(lines[0])
    assert " INFO     bot.web.access: GET /x\\n2026-11-29" in lines[0]
    assert not any("CRITICAL" in line.split(":", 3)[0] for line in lines)


async def test_control_characters_in_the_method_are_escaped(server: tuple[str, int]) -> None:
    stream = log_to("DEBUG")
    await send_raw(*server, b"G\x1bET / HTTP/1.1\r\nHost: x\r\n\r\n")
    text = stream.getvalue()
    assert "\x1b" not in text
    assert all(LINE_START.match(line) for line in text.splitlines()), text


def junk(rng: random.Random, index: int) -> bytes:
    """What the internet sends an open port: garbage, TLS, broken HTTP of every kind."""
    kinds = [
        lambda: rng.randbytes(rng.randint(1, 300)),
        lambda: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40),
        lambda: b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        lambda: b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x00\x01\x02\r\n\r\n",
        lambda: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: b"GET / HTTP/9.9\r\n\r\n",
        lambda: b"G\x00T / HTTP/1.1\r\n\r\n",
        lambda: b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        lambda: b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        lambda: b"GET / HTTP/1.1\r\nHost: x\r\nX-Forged: a\nb\r\n\r\n",
        lambda: b"\r\n\r\n\r\n",
        lambda: b"GET /\x7f\x80 HTTP/1.1\r\n\r\n",
        lambda: b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",
        lambda: b"GET /%0a2026-01-01T00:00:00.000Z CRITICAL x HTTP/1.1\r\n\r\n",
    ]
    return kinds[index % len(kinds)]()


async def test_1000_junk_requests_raise_no_error(server: tuple[str, int]) -> None:
    stream = log_to("DEBUG")
    rng = random.Random(9)
    payloads = [junk(rng, index) for index in range(1_000)]
    limit = asyncio.Semaphore(20)

    async def one(data: bytes) -> bytes:
        async with limit:
            return await send_raw(*server, data)

    answers = await asyncio.gather(*(one(data) for data in payloads))
    assert sum(b" 400 " in answer[:20] for answer in answers) > 300
    # The server still serves.
    assert (await send_raw(*server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )
    lines = stream.getvalue().splitlines()
    assert lines
    assert all(LINE_START.match(line) for line in lines), [
        line for line in lines if not LINE_START.match(line)
    ][:5]
    levels = {line.split()[1] for line in lines}
    assert levels <= {"DEBUG", "INFO"}, levels
    assert not [line for line in lines if "Traceback" in line or "Error handling" in line]
    malformed = [line for line in lines if "Malformed request refused" in line]
    assert len(malformed) > 300


async def test_junk_is_not_logged_at_info(server: tuple[str, int]) -> None:
    stream = log_to("INFO")
    rng = random.Random(3)
    for index in range(60):
        await send_raw(*server, junk(rng, index))
    assert stream.getvalue() == ""
