"""Getting onto Discord at start: wait for a network that is not there yet, stop on a refusal.

A host often boots before its network (no DNS yet, Discord's port refused, a proxy still
starting). Until Discord answers, the first login and the gateway discovery are retried with a
backoff capped at 20 s, one WARNING line per attempt and no traceback; the web server is already
up meanwhile and ``/healthz`` says ``degraded``. Only a definitive answer stops the bot: a
rejected token (401, gateway close 4004) or a wrong API base.

Presence (``ENABLE_PRESENCE``) needs two privileged intents that the Developer Portal must
switch on; asking for one that is off closes the gateway with 4014. So the starter reads the
application's switches before it builds the bot, asks for the intents only when both are on,
and when Discord refuses them anyway it builds the bot again without them: the bot stays up,
without statuses, and says so in one WARNING line.

Every IDENTIFY spends one of Discord's daily session starts, so before connecting we read
``session_start_limit`` from ``GET /gateway/bot`` and wait ``reset_after`` when none is left:
a restart loop must never burn the day's budget (see docs/ARCHITECTURE.md, "Start-up").
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import discord.utils
import yarl

from bot.aio.retry import backoff_delays
from bot.errors import StartupError
from bot.gateway.application import (
    fetch_application_flags,
    presence_off,
    switches_advice,
    switches_off,
)
from bot.gateway.connection import DiscordConnection
from bot.gateway.rest import get_json

log = logging.getLogger(__name__)

TOKEN_REJECTED = (
    "DISCORD_TOKEN was rejected by Discord; copy it again from the Developer Portal "
    "(your application -> Bot -> Reset Token)"
)


class DiscoveryFailed(Exception):
    """Discord did not say where its gateway is (yet): worth another try."""


# What the network (not Discord's judgement) can throw while Discord is not reachable yet.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes aiohttp's connector errors (DNS, refused, unreachable)
    aiohttp.ClientError,
    TimeoutError,
    discord.DiscordServerError,
    discord.GatewayNotFound,
)

RETRYABLE_DISCOVERY_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    DiscoveryFailed,
)


def describe_failure(exc: BaseException) -> str:
    """What failed, in a few words, without a traceback (and without any token)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the gateway answered HTTP {exc.status}"
    if isinstance(exc, discord.HTTPException):
        return f"Discord answered HTTP {exc.status}"
    if isinstance(exc, discord.ConnectionClosed):
        return f"the gateway closed the connection (code {exc.code})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def format_wait(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``: how long a wait is, for a log line."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What ``GET /gateway/bot`` says: where to connect and how many session starts are left."""

    url: yarl.URL
    remaining: int
    total: int
    reset_after: float  # seconds until ``remaining`` goes back to ``total``
    max_concurrency: int = 1  # sessions that may IDENTIFY at once (per 5 s)

    @classmethod
    def from_payload(cls, payload: Any) -> GatewayInfo:
        if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
            raise DiscoveryFailed("/gateway/bot did not say where the gateway is")
        limit = payload.get("session_start_limit")
        limit = limit if isinstance(limit, dict) else {}
        total = _int(limit.get("total"), default=1000)
        return cls(
            url=yarl.URL(payload["url"]),
            remaining=_int(limit.get("remaining"), default=total),
            total=total,
            reset_after=_int(limit.get("reset_after"), default=0) / 1000,
            max_concurrency=max(1, _int(limit.get("max_concurrency"), default=1)),
        )


def _int(value: Any, *, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


async def fetch_gateway_info(
    session: aiohttp.ClientSession, api_base: str, token: str
) -> GatewayInfo:
    """Ask ``/gateway/bot``. StartupError on a definitive refusal, DiscoveryFailed (or a
    network error) when it is worth asking again."""
    status, payload = await get_json(session, api_base, "/gateway/bot", token)
    if status == 401:
        raise StartupError(TOKEN_REJECTED)
    if status == 429 or status >= 500:
        raise DiscoveryFailed(f"Discord answered HTTP {status}")
    if status != 200:
        raise StartupError(
            f"{api_base}/gateway/bot answered HTTP {status}; is DISCORD_API_BASE right?"
        )
    if payload is None:
        raise DiscoveryFailed("/gateway/bot answered something that is not JSON")
    return GatewayInfo.from_payload(payload)


def point_discord_at(api_base: str, gateway: yarl.URL | None) -> None:
    """discord.py keeps both addresses as class attributes; set them before connecting."""
    discord.http.Route.BASE = api_base
    if gateway is not None:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


class _FirstConnectQuiet(logging.Filter):
    """discord.py logs a traceback ("Attempting a reconnect") when the very first gateway
    connection fails, then dies with an AttributeError; we retry that ourselves with one
    WARNING line, so its traceback is dropped until the first connection exists."""

    def __init__(self, client: discord.Client) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        first_connection_pending = self.client.ws is None
        return not (
            first_connection_pending and str(record.msg).startswith("Attempting a reconnect")
        )


class IntentsRefused(Exception):
    """Discord closed the gateway with 4014: a privileged intent's switch is off."""


class DiscordStarter:
    """Builds the bot, logs it in, finds the gateway and connects, retrying what the network
    has not answered yet. ``run`` returns when the bot closes; it raises StartupError on a
    refusal. ``build(presence)`` makes a bot with or without the privileged intents."""

    def __init__(
        self,
        connection: DiscordConnection,
        build: Callable[[bool], discord.Client],
        session: aiohttp.ClientSession,
        *,
        token: str,
        api_base: str,
        presence: bool,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.connection, self.build, self.session = connection, build, session
        self.token, self.api_base, self.presence = token, api_base, presence
        self.sleep = sleep

    async def run(self) -> None:
        presence = self.presence and await self.presence_switched_on()
        while True:
            bot = self.build(presence)
            self.connection.attach(bot)
            await self.login(bot)
            try:
                await self.connect(bot)
                return
            except IntentsRefused:
                if not presence:
                    raise StartupError(
                        "Discord closed the gateway with 4014 although the bot asked for no "
                        "privileged intent"
                    ) from None
                log.warning(
                    "%s",
                    presence_off(
                        "Discord refused the privileged intents (4014): " + switches_advice([])
                    ),
                )
                presence = False
                await bot.close()

    async def presence_switched_on(self) -> bool:
        """Whether the Developer Portal has both presence switches on, asked until Discord
        answers; True when it answers without saying (the gateway decides then)."""
        delays = backoff_delays()
        while True:
            try:
                flags = await fetch_application_flags(
                    self.session, self.api_base, self.token, TOKEN_REJECTED
                )
                break
            except TRANSIENT_ERRORS as exc:
                await self._wait("reach Discord", exc, next(delays))
        if flags is None:
            return True
        missing = switches_off(flags)
        if missing:
            log.warning("%s", presence_off(switches_advice(missing)))
            return False
        return True

    async def login(self, bot: discord.Client) -> None:
        delays = backoff_delays()
        while True:
            try:
                await bot.login(self.token)
                return
            except discord.LoginFailure as exc:
                raise StartupError(TOKEN_REJECTED) from exc
            except TRANSIENT_ERRORS as exc:
                await _forget_http_session(bot)
                await self._wait("log in to Discord", exc, next(delays))
            except discord.HTTPException as exc:
                raise StartupError(
                    f"Discord's API at {self.api_base} answered HTTP {exc.status} at login; "
                    "is DISCORD_API_BASE right?"
                ) from exc

    async def discover(self) -> GatewayInfo:
        """``/gateway/bot``, asked until it answers, waiting while no session start is left."""
        delays = backoff_delays()
        while True:
            try:
                info = await fetch_gateway_info(self.session, self.api_base, self.token)
            except RETRYABLE_DISCOVERY_ERRORS as exc:
                await self._wait("find the Discord gateway", exc, next(delays))
                continue
            if info.remaining > 0:
                return info
            wait = max(info.reset_after, 1.0)
            log.warning(
                "Discord allows no new gateway session right now (0 of %d session starts left); "
                "waiting %s until the limit resets before identifying",
                info.total,
                format_wait(wait),
            )
            await self.sleep(wait)

    async def connect(self, bot: discord.Client) -> None:
        """Connect; discord.py reconnects by itself once the first connection exists, but a
        failed *first* connection ends ``connect`` with an AttributeError: retry that here."""
        delays = backoff_delays()
        quiet = _FirstConnectQuiet(bot)
        client_log = logging.getLogger("discord.client")
        client_log.addFilter(quiet)
        try:
            while not bot.is_closed():
                info = await self.discover()
                point_discord_at(self.api_base, info.url)
                try:
                    await bot.connect(reconnect=True)
                    return
                except discord.PrivilegedIntentsRequired as exc:
                    raise IntentsRefused from exc
                except discord.ConnectionClosed as exc:
                    # discord.py has closed the client for any code but 1000.
                    if exc.code == 4004:
                        raise StartupError(TOKEN_REJECTED) from exc
                    raise StartupError(
                        f"Discord closed the gateway connection with code {exc.code} "
                        f"({exc.reason or 'no reason given'})"
                    ) from exc
                except AttributeError as exc:
                    if bot.ws is not None or exc.__context__ is None:
                        raise  # not the first-connection failure described above
                    failure = exc.__context__
                except TRANSIENT_ERRORS as exc:
                    failure = exc
                if bot.is_closed():
                    return
                await self._wait("connect to the Discord gateway", failure, next(delays))
        finally:
            client_log.removeFilter(quiet)

    async def _wait(self, what: str, exc: BaseException, delay: float) -> None:
        log.warning(
            "Could not %s (%s); retrying in %s", what, describe_failure(exc), format_wait(delay)
        )
        await self.sleep(delay)


async def _forget_http_session(bot: discord.Client) -> None:
    """``login`` opens a new aiohttp session each time and shares one connector, which
    closing the session closes: drop both so the next attempt starts clean (no leak)."""
    await bot.http.close()
    bot.http.connector = discord.utils.MISSING
