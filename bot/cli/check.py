"""``python -m bot check``: the setup doctor.

It reads the same configuration as ``python -m bot`` (the environment over ``.env``) and prints
one line per item with a verdict, ``ok``, ``problem`` or ``skipped``::

    ok       settings: every value is valid
    ok       database: ...
    problem  spotify credentials: ...

then the exact redirect URI to register in the Spotify dashboard and the bot's invite URL.
The exit status is 0 when the bot is usable (no ``problem`` line) and 1 otherwise.

Invalid settings are reported here as ``problem`` lines with exit status **1**, like every
other problem this command finds. Starting the bot with the same settings (``python -m bot``)
exits with status **2** instead: that is the start-up contract (README, "Command line") for
"cannot start, fix the configuration", while ``check`` is a report whose status only says
usable or not. Hints name the command the user ran (``command``).

What it does and does not touch:

* the database is never created, migrated or written: when the file exists it is opened
  read-write without creating it (so SQLite cleans up its ``-wal``/``-shm`` files on close,
  which a read-only connection cannot do) and only read; when the folder does not exist yet,
  the check proves its nearest existing parent is writable and says the bot will create it;
  folder writability is proven by creating and removing a temporary file, which also works
  for root, read-only mounts and ACLs, where permission bits say little;
* Discord: ``GET /users/@me`` and ``GET /oauth2/applications/@me`` at DISCORD_API_BASE;
* Spotify: one client-credentials token request at SPOTIFY_ACCOUNTS_BASE, never retried.

Every request has a 10 s timeout; a refused connection, a DNS failure or a timeout becomes one
``problem`` line, never a traceback. No secret is printed: every line goes through the same
masker as the bot's logs, which knows the configured token, client secret and keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import quote, urlsplit

import aiohttp
import aiosqlite
import discord

from bot.config import Settings, load_settings, redact_database_url
from bot.crypto import TokenCipher
from bot.errors import (
    ConfigError,
    InvalidClient,
    SpotifyAuthError,
    SpotifyError,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.logs import SecretMasker, masker_for_settings
from bot.spotify.auth import SpotifyAuth
from bot.spotify.http import SpotifySender
from bot.storage import Storage
from bot.storage import migrations as db
from bot.storage.engines.sqlite import BUSY_TIMEOUT_MS, SqliteDatabase, is_memory_path
from bot.storage.secrets import (
    count_secrets_by_key,
    keys_open_summary,
    unreadable_advice,
)

OK: Final = "ok"
PROBLEM: Final = "problem"
SKIPPED: Final = "skipped"

REQUEST_TIMEOUT: Final = 10.0
POSTGRES_CHECK_TIMEOUT: Final = 10.0

INVITE_BASE: Final = "https://discord.com/oauth2/authorize"
INVITE_SCOPES: Final = ("bot", "applications.commands")
# Only what the bot uses: it sees the music channel, posts the now-playing embed there and
# edits its own posts (by id: no Read Message History needed). Slash command replies and DMs
# need no channel permission at all.
BOT_PERMISSIONS: Final = discord.Permissions(
    view_channel=True, send_messages=True, embed_links=True
)
BOT_PERMISSION_NAMES: Final = "View Channels, Send Messages, Embed Links"

# Application flags (Discord's "Get Current Application"): the privileged intents switched
# on in the Developer Portal; the _LIMITED flags are the same switch for bots in < 100 servers.
_FLAG_PRESENCE: Final = (1 << 12) | (1 << 13)
_FLAG_GUILD_MEMBERS: Final = (1 << 14) | (1 << 15)

_ITEMS_AFTER_SETTINGS: Final = (
    "database",
    "encryption keys",
    "discord token",
    "discord application",
    "privileged intents",
    "spotify credentials",
    "redirect uri",
)


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: str
    item: str
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<9}{self.item}: {self.detail}"


class _Report:
    """Prints findings as they come (masked), and remembers whether any was a problem."""

    def __init__(self, out: TextIO, masker: SecretMasker) -> None:
        self._out = out
        self.masker = masker
        self.problems = 0

    def add(self, finding: Finding) -> None:
        if finding.verdict == PROBLEM:
            self.problems += 1
        self.say(finding.line())

    def say(self, text: str = "") -> None:
        self._out.write(self.masker.mask(text) + "\n")
        self._out.flush()


def invite_url(application_id: str | int) -> str:
    """The URL that adds the bot to a server with its commands and the permissions it needs."""
    return (
        f"{INVITE_BASE}?client_id={application_id}&scope={'+'.join(INVITE_SCOPES)}"
        f"&permissions={BOT_PERMISSIONS.value}"
    )


def run_check(
    env: Mapping[str, str],
    *,
    out: TextIO | None = None,
    command: str = "nowplaying-bot",
    source: str | None = None,
) -> int:
    """Check the configuration in ``env``; print the report; return the exit status.
    ``command`` is how the user runs the bot, named in hints; ``source`` says where the
    settings were read (which ``.env``), printed after the verdicts."""
    return asyncio.run(check_async(env, out=out, command=command, source=source))


async def check_async(
    env: Mapping[str, str],
    *,
    out: TextIO | None = None,
    timeout: float = REQUEST_TIMEOUT,
    command: str = "nowplaying-bot",
    source: str | None = None,
) -> int:
    """:func:`run_check` for callers that already run an event loop (the tests)."""
    out = sys.stdout if out is None else out
    try:
        settings = load_settings(env, command=command)
    except ConfigError as exc:
        report = _Report(out, SecretMasker())
        for problem in exc.problems:
            report.add(Finding(PROBLEM, "settings", problem))
        for item in _ITEMS_AFTER_SETTINGS:
            report.add(Finding(SKIPPED, item, "not checked until the settings are fixed"))
        report.say()
        if source:
            report.say(source)
        report.say(
            f"{report.problems} problem(s) in the settings (see .env.example): fix them, then "
            f"run `{command} check` again."
        )
        return 1

    report = _Report(out, masker_for_settings(settings))
    report.add(Finding(OK, "settings", "every value is valid"))
    cipher = TokenCipher(settings.token_encryption_keys)
    if settings.database_url is not None:
        database, counts = await _check_postgresql(settings.database_url, cipher)
    else:
        database, counts = await _check_database(settings.database_path, cipher)
    report.add(database)
    report.add(_check_keys(len(settings.token_encryption_keys), counts, command))

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        discord_result, spotify = await asyncio.gather(
            _check_discord(session, settings, timeout),
            _check_spotify(session, settings, client_timeout, timeout),
        )
    report.add(discord_result.token)
    report.add(discord_result.application)
    report.add(_check_intents(settings, discord_result.flags))
    report.add(spotify)
    report.add(_check_redirect(settings))

    report.say()
    report.say("Register this exact redirect URI in the Spotify dashboard (app settings):")
    report.say(f"  {settings.spotify_redirect_uri}")
    if discord_result.application_id is not None:
        report.say(
            "Invite the bot with this URL (scopes bot and applications.commands; permissions "
            f"{BOT_PERMISSION_NAMES}):"
        )
        report.say(f"  {invite_url(discord_result.application_id)}")
    else:
        report.say("Invite URL: unknown until Discord accepts the token (it needs the app id).")
    if source:
        report.say(source)
    report.say()
    if report.problems:
        report.say(
            f"{report.problems} problem(s): the bot is not usable until they are fixed; then "
            f"run `{command} check` again."
        )
        return 1
    report.say("Everything checked is usable.")
    return 0


# --- database and keys ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretCounts:
    current: int
    older: int
    undecryptable: int

    @property
    def total(self) -> int:
        return self.current + self.older + self.undecryptable


def _writable_folder(folder: Path) -> str | None:
    """None when a file can be created in ``folder``; else why not. Leaves nothing behind."""
    try:
        fd, name = tempfile.mkstemp(prefix=".nowplaying-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


async def _check_database(path: Path, cipher: TokenCipher) -> tuple[Finding, SecretCounts | None]:
    located = _locate_database(path)
    if isinstance(located, Finding):
        return located, None
    item = "database"
    try:
        version, counts = await _read_database(located, cipher)
    except (sqlite3.Error, OSError) as exc:
        detail = f"{located} cannot be read as a SQLite database ({exc})"
        return Finding(PROBLEM, item, detail), None
    latest = db.LATEST_SCHEMA_VERSION
    if version > latest:
        return (
            Finding(
                PROBLEM,
                item,
                f"{located} is at schema version {version}, newer than this bot supports "
                f"({latest}): upgrade the bot or restore a matching backup",
            ),
            counts,
        )
    if version < latest:
        return (
            Finding(
                OK,
                item,
                f"{located} is writable, schema version {version}; the bot migrates it to "
                f"{latest} at start-up (back the file up first)",
            ),
            counts,
        )
    return Finding(OK, item, f"{located} is writable, schema version {version} (current)"), counts


async def _check_postgresql(url: str, cipher: TokenCipher) -> tuple[Finding, SecretCounts | None]:
    """Connect once (no retry, no migration) and read the schema version and the secrets."""
    from bot.storage.connect import (
        CONNECT_ERRORS,
        TRANSIENT_ERRORS,
        describe_transient,
        refusal_line,
    )
    from bot.storage.engines.postgresql import PostgresDatabase

    item = "database"
    shown = redact_database_url(url)
    latest = db.LATEST_SCHEMA_VERSION
    try:
        async with asyncio.timeout(POSTGRES_CHECK_TIMEOUT):
            database = await PostgresDatabase.open(url, max_size=1)
    except CONNECT_ERRORS as exc:
        if isinstance(exc, TRANSIENT_ERRORS):
            return (
                Finding(
                    PROBLEM,
                    item,
                    f"PostgreSQL at {shown} cannot be reached ({describe_transient(exc)}); "
                    "the bot keeps trying at start-up",
                ),
                None,
            )
        return Finding(PROBLEM, item, refusal_line(exc, shown)), None
    storage = Storage(database)
    try:
        version = await storage.schema_version()
        counts = None
        if version >= 1:
            current, older, undecryptable = await count_secrets_by_key(storage.links, cipher)
            counts = SecretCounts(current, older, undecryptable)
    finally:
        await storage.close()
    if version > latest:
        detail = (
            f"PostgreSQL at {shown} is at schema version {version}, newer than this bot "
            f"supports ({latest}): upgrade the bot or restore a matching backup"
        )
        return Finding(PROBLEM, item, detail), counts
    if version < latest:
        detail = (
            f"PostgreSQL at {shown} accepts the connection, schema version {version}; the bot "
            f"migrates it to {latest} at start-up"
        )
        return Finding(OK, item, detail), counts
    detail = f"PostgreSQL at {shown} accepts the connection, schema version {version} (current)"
    return Finding(OK, item, detail), counts


def _locate_database(path: Path) -> Finding | Path:
    """The existing database file to read, or the finding when there is nothing to read."""
    item = "database"
    latest = db.LATEST_SCHEMA_VERSION
    if is_memory_path(path):
        return Finding(SKIPPED, item, "DATABASE_PATH is :memory:, links are lost on restart")
    shown = path.absolute()
    folder = shown.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Finding(PROBLEM, item, f"{existing} is a file, so {folder} cannot be a folder")
    reason = _writable_folder(existing)
    if reason is not None:
        return Finding(PROBLEM, item, f"folder {existing} is not writable ({reason})")
    if existing != folder:
        return Finding(
            OK,
            item,
            f"folder {folder} does not exist yet; the bot creates it and {path.name} at "
            f"start-up ({existing} is writable), with schema version {latest}",
        )
    if not shown.exists():
        return Finding(
            OK,
            item,
            f"folder {folder} is writable; {path.name} does not exist yet, the bot creates it "
            f"at start-up with schema version {latest}",
        )
    if not shown.is_file():
        return Finding(PROBLEM, item, f"{shown} exists but is not a file")
    if not os.access(shown, os.R_OK | os.W_OK):
        return Finding(PROBLEM, item, f"{shown} is not readable and writable by this user")
    return shown


async def _read_database(path: Path, cipher: TokenCipher) -> tuple[int, SecretCounts | None]:
    # mode=rw: never creates the file. Not mode=ro: a read-only connection to a WAL database
    # leaves -wal and -shm files behind, which the last read-write connection removes on close.
    uri = f"file:{quote(str(path))}?mode=rw"
    connection = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    storage = Storage(SqliteDatabase(connection))
    try:
        async with connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"):
            pass
        version = await storage.schema_version()
        if version < 1:  # no tables yet: nothing stored
            return version, None
        current, older, undecryptable = await count_secrets_by_key(storage.links, cipher)
        return version, SecretCounts(current, older, undecryptable)
    finally:
        await storage.close()


def _check_keys(key_count: int, counts: SecretCounts | None, command: str) -> Finding:
    item = "encryption keys"
    keys = f"{key_count} key(s) valid"
    if counts is None or counts.total == 0:
        return Finding(OK, item, f"{keys}; no stored secrets yet")
    parts = [f"{counts.current} under the first key"]
    if counts.older:
        parts.append(f"{counts.older} under an older key")
    if counts.undecryptable:
        parts.append(f"{counts.undecryptable} that no configured key can read")
    summary = f"{keys}; {counts.total} stored secret(s): {', '.join(parts)}"
    if counts.undecryptable:
        opens = keys_open_summary(counts.total - counts.undecryptable, counts.total)
        return Finding(
            PROBLEM, item, f"{opens}: {', '.join(parts)}. To fix it, {unreadable_advice(command)}"
        )
    if counts.older:
        return Finding(
            OK,
            item,
            f"{summary}; run `{command} rotate-keys`, then remove the older key(s)",
        )
    if key_count > 1:
        return Finding(OK, item, f"{summary}; the other key(s) can be removed")
    return Finding(OK, item, summary)


# --- network --------------------------------------------------------------------------------


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


async def _check_discord(
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
    flags = app.get("flags")
    return _DiscordResult(
        token,
        Finding(OK, "discord application", f"id {app['id']} ({app.get('name', '?')})"),
        str(app["id"]),
        flags if isinstance(flags, int) and not isinstance(flags, bool) else None,
    )


def _describe_failure(exc: BaseException, timeout: float, what: str, setting: str) -> str:
    reason = _network_reason(exc, timeout)
    if reason is not None:
        return f"cannot reach {what}: {reason}"
    return f"unexpected answer from {what} ({type(exc).__name__}); is {setting} right?"


def _check_intents(settings: Settings, flags: int | None) -> Finding:
    item = "privileged intents"
    if not settings.enable_presence:
        return Finding(SKIPPED, item, "none needed (ENABLE_PRESENCE is off)")
    needed = (
        "ENABLE_PRESENCE=true needs the Presence and Server Members intents switched on in the "
        "Developer Portal (your application -> Bot -> Privileged Gateway Intents)"
    )
    if flags is None:
        return Finding(SKIPPED, item, f"{needed}; could not read them from Discord")
    missing = [
        name
        for name, bits in (("Presence", _FLAG_PRESENCE), ("Server Members", _FLAG_GUILD_MEMBERS))
        if not flags & bits
    ]
    if missing:
        return Finding(
            PROBLEM,
            item,
            f"{needed}; {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} off, so "
            "Discord would refuse the gateway connection (close code 4014)",
        )
    return Finding(OK, item, f"{needed}: both are on")


async def _check_spotify(
    session: aiohttp.ClientSession,
    settings: Settings,
    client_timeout: aiohttp.ClientTimeout,
    timeout: float,
) -> Finding:
    item = "spotify credentials"
    base = settings.spotify_accounts_base
    sender = SpotifySender(session, timeout=client_timeout, max_retries=0)
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
        return Finding(
            PROBLEM,
            item,
            f"Spotify rejected client id {client_id} or its secret ({exc.error}: "
            f"{exc.description or 'no description'}); copy both again from the Spotify "
            "developer dashboard into SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET",
        )
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


def _check_redirect(settings: Settings) -> Finding:
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
