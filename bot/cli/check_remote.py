"""``check``'s questions to Discord and Spotify, and its look at the redirect URI: one
request each, never retried, every failure one plain line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot.cli.findings import OK, PROBLEM, SKIPPED, WARNING, Finding
from bot.config import Settings
from bot.errors import (
    InvalidClient,
    SpotifyAuthError,
    SpotifyError,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.gateway.application import flags_of, presence_off, switches_advice, switches_off
from bot.spotify.auth import SpotifyAuth
from bot.spotify.credentials import rejected_credentials
from bot.spotify.http import RetryPolicy, SpotifySender


def _network_reason(exc: BaseException, timeout: float) -> str | None:
    """Plain words for a connection failure somewhere in ``exc``'s chain, or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorDNSError):
            return f"cannot resolve the host name {current.host}"
        if isinstance(current, aiohttp.ClientConnectorError):
            os_error = current.os_error
            words = os.strerror(os_error.errno) if os_error.errno else str(os_error)
            return f"cannot connect to {current.host}:{current.port} ({words})"
        if isinstance(current, TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(current, aiohttp.ClientError):
            return f"the connection failed ({type(current).__name__})"
        current = current.__cause__ or current.__context__
    return None


@dataclass(frozen=True, slots=True)
class _DiscordResult:
    token: Finding
    application: Finding
    application_id: str | None
    flags: int | None


class _HttpStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


async def _get_json(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    headers = {"Authorization": f"Bot {token}", "User-Agent": "nowplaying-bot check"}
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        if resp.status != 200:
            raise _HttpStatus(resp.status)
        return await resp.json(content_type=None)


async def check_discord(
    session: aiohttp.ClientSession, settings: Settings, timeout: float
) -> _DiscordResult:
    base = settings.discord_api_base
    not_checked = Finding(SKIPPED, "discord application", "needs an accepted token")
    try:
        me = await _get_json(session, f"{base}/users/@me", settings.discord_token)
    except _HttpStatus as exc:
        if exc.status == 401:
            detail = (
                "rejected by Discord (HTTP 401): copy the token again from the Developer Portal "
                "(your application -> Bot -> Reset Token) into DISCORD_TOKEN"
            )
        else:
            detail = f"{base}/users/@me answered HTTP {exc.status}; is DISCORD_API_BASE right?"
        return _DiscordResult(Finding(PROBLEM, "discord token", detail), not_checked, None, None)
    except Exception as exc:
        detail = _describe_failure(exc, timeout, f"Discord at {base}", "DISCORD_API_BASE")
        return _DiscordResult(Finding(PROBLEM, "discord token", detail), not_checked, None, None)
    if not isinstance(me, dict) or "id" not in me:
        detail = f"{base}/users/@me did not answer with a user; is DISCORD_API_BASE right?"
        return _DiscordResult(Finding(PROBLEM, "discord token", detail), not_checked, None, None)
    if not me.get("bot"):
        detail = "this is not a bot token: use the token from your application's Bot page"
        return _DiscordResult(Finding(PROBLEM, "discord token", detail), not_checked, None, None)
    user_id = str(me["id"])
    token = Finding(
        OK, "discord token", f"accepted; the bot is {me.get('username')} (id {user_id})"
    )

    try:
        app = await _get_json(session, f"{base}/oauth2/applications/@me", settings.discord_token)
    except Exception as exc:
        reason = f"HTTP {exc.status}" if isinstance(exc, _HttpStatus) else None
        reason = reason or _network_reason(exc, timeout) or type(exc).__name__
        return _DiscordResult(
            token,
            Finding(
                OK,
                "discord application",
                f"id {user_id}, assumed equal to the bot's user id (/oauth2/applications/@me "
                f"failed: {reason})",
            ),
            user_id,
            None,
        )
    if not isinstance(app, dict) or "id" not in app:
        return _DiscordResult(
            token,
            Finding(OK, "discord application", f"id {user_id}, assumed equal to the bot's id"),
            user_id,
            None,
        )
    return _DiscordResult(
        token,
        Finding(OK, "discord application", f"id {app['id']} ({app.get('name', '?')})"),
        str(app["id"]),
        flags_of(app),
    )


def _describe_failure(exc: BaseException, timeout: float, what: str, setting: str) -> str:
    reason = _network_reason(exc, timeout)
    if reason is not None:
        return f"cannot reach {what}: {reason}"
    return f"unexpected answer from {what} ({type(exc).__name__}); is {setting} right?"


def check_intents(settings: Settings, flags: int | None) -> Finding:
    item = "privileged intents"
    if not settings.enable_presence:
        return Finding(SKIPPED, item, "none needed (ENABLE_PRESENCE is off)")
    needed = (
        "ENABLE_PRESENCE=true needs the Presence and Server Members intents switched on in the "
        "Developer Portal (your application -> Bot -> Privileged Gateway Intents)"
    )
    if flags is None:
        return Finding(SKIPPED, item, f"{needed}; could not read them from Discord")
    missing = switches_off(flags)
    if missing:
        # The bot runs without statuses (it asks Discord for no privileged intent then).
        return Finding(WARNING, item, presence_off(switches_advice(missing)))
    return Finding(OK, item, f"{needed}: both are on")


async def check_spotify(
    session: aiohttp.ClientSession,
    settings: Settings,
    client_timeout: aiohttp.ClientTimeout,
    timeout: float,
) -> Finding:
    item = "spotify credentials"
    base = settings.spotify_accounts_base
    sender = SpotifySender(session, retry=RetryPolicy(timeout=client_timeout, max_retries=0))
    auth = SpotifyAuth(
        sender,
        client_id=settings.spotify_client_id,
        client_secret=settings.spotify_client_secret,
        redirect_uri=settings.spotify_redirect_uri,
        accounts_base=base,
    )
    client_id = settings.spotify_client_id
    try:
        await auth.client_credentials()
    except InvalidClient as exc:
        return Finding(PROBLEM, item, rejected_credentials(client_id, exc))
    except SpotifyRateLimited as exc:
        return Finding(
            PROBLEM,
            item,
            f"Spotify asks to wait (HTTP 429, {exc.retry_after:.0f} s); run the check later",
        )
    except SpotifyAuthError as exc:
        return Finding(
            PROBLEM, item, f"the Spotify accounts service refused the request ({exc.error})"
        )
    except SpotifyUnavailable as exc:
        reason = _network_reason(exc, timeout)
        if reason is None:
            reason = f"HTTP {exc.status}" if exc.status else "no usable answer"
        return Finding(
            PROBLEM, item, f"cannot reach the Spotify accounts service at {base}: {reason}"
        )
    except SpotifyError:
        return Finding(
            PROBLEM,
            item,
            f"unexpected answer from {base}/api/token; is SPOTIFY_ACCOUNTS_BASE right?",
        )
    except Exception as exc:
        return Finding(
            PROBLEM,
            item,
            _describe_failure(exc, timeout, f"Spotify at {base}", "SPOTIFY_ACCOUNTS_BASE"),
        )
    return Finding(OK, item, f"client id {client_id} and its secret accepted by {base}")


def check_redirect(settings: Settings) -> Finding:
    item = "redirect uri"
    uri = settings.spotify_redirect_uri
    path = settings.redirect_path
    if settings.redirect_is_loopback:
        port = urlsplit(uri).port
        note = ""
        if port != settings.web_port:
            note = (
                f" (its port {port} is not WEB_PORT {settings.web_port}: the page only loads "
                "if something forwards that port)"
            )
        return Finding(
            OK,
            item,
            f"{uri} is loopback: Spotify accepts it without https, but only a browser on this "
            "machine can open it. Members on other devices land on a page that does not load "
            'and finish with the "Paste the link" button in the bot\'s DM' + note,
        )
    return Finding(
        OK,
        item,
        f"{uri} is public https: your reverse proxy must pass {path} to this bot's web server "
        f"({settings.web_host}:{settings.web_port})",
    )
