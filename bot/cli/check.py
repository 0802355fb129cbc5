"""``python -m bot check``: the setup doctor.

It reads the same configuration as ``python -m bot`` (the environment over ``.env``) and prints
one line per item with a verdict, ``ok``, ``problem``, ``skipped`` or ``warning`` (usable,
but worth fixing or knowing: a ``.env`` other users can read, statuses not seen, the daily
Spotify limit spent)::

    ok       settings: every value is valid
    ok       database: ...
    problem  spotify credentials: ...

then the exact redirect URI to register in the Spotify dashboard and the bot's invite URL.
The exit status is 0 when the bot is usable (no ``problem`` line) and 1 otherwise.

Invalid settings are reported here as ``problem`` lines with exit status **1**, like every
other problem this command finds. Starting the bot with the same settings (``python -m bot``)
exits with status **2** instead: that is the start-up contract (docs/commands.md, "Command
line") for "cannot start, fix the configuration", while ``check`` is a report whose status only says
usable or not. Hints name the command the user ran (``command``).

What it does and does not touch:

* the database is never created, migrated or written (unless ``--reset-spotify-budget`` asks
  to forget the daily Spotify budget, before the report): when the file exists it is opened
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
import sys
from collections.abc import Mapping
from typing import Final, TextIO

import aiohttp
import discord

from bot.cli.check_budget import BudgetLook, forget_daily_budget
from bot.cli.check_remote import check_discord, check_intents, check_redirect, check_spotify
from bot.cli.check_storage import check_database, check_keys, check_postgresql
from bot.cli.findings import OK, PROBLEM, SKIPPED, WARNING, Finding
from bot.cli.invocation import EnvFile
from bot.config import load_settings
from bot.crypto import TokenCipher
from bot.errors import (
    ConfigError,
)
from bot.logs import SecretMasker, masker_for_settings

REQUEST_TIMEOUT: Final = 10.0

INVITE_BASE: Final = "https://discord.com/oauth2/authorize"
INVITE_SCOPES: Final = ("bot", "applications.commands")
# Only what the bot uses: it sees the music channel, posts the now-playing embed there and
# edits its own posts (by id: no Read Message History needed). Slash command replies and DMs
# need no channel permission at all.
BOT_PERMISSIONS: Final = discord.Permissions(
    view_channel=True, send_messages=True, embed_links=True
)
BOT_PERMISSION_NAMES: Final = "View Channels, Send Messages, Embed Links"


_ITEMS_AFTER_SETTINGS: Final = (
    "database",
    "encryption keys",
    "discord token",
    "discord application",
    "privileged intents",
    "spotify credentials",
    "spotify budget",
    "redirect uri",
)


class _Report:
    """Prints findings as they come (masked), and remembers whether any was a problem."""

    def __init__(self, out: TextIO, masker: SecretMasker) -> None:
        self._out = out
        self.masker = masker
        self.problems = 0
        self.warnings = 0

    def add(self, finding: Finding) -> None:
        if finding.verdict == PROBLEM:
            self.problems += 1
        elif finding.verdict == WARNING:
            self.warnings += 1
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
    env_file: EnvFile | None = None,
    reset_budget: bool = False,
) -> int:
    """Check the configuration in ``env``; print the report; return the exit status.
    ``command`` is how the user runs the bot, named in hints; ``source`` says where the
    settings were read (which ``.env``), printed after the verdicts; ``env_file`` is that
    file, whose permissions are checked; ``reset_budget``: forget the daily Spotify budget
    first."""
    return asyncio.run(
        check_async(
            env,
            out=out,
            command=command,
            source=source,
            env_file=env_file,
            reset_budget=reset_budget,
        )
    )


async def check_async(
    env: Mapping[str, str],
    *,
    out: TextIO | None = None,
    timeout: float = REQUEST_TIMEOUT,
    command: str = "nowplaying-bot",
    source: str | None = None,
    env_file: EnvFile | None = None,
    reset_budget: bool = False,
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
    if reset_budget:
        report.say(await forget_daily_budget(settings))
    report.add(Finding(OK, "settings", "every value is valid"))
    exposed = env_file.exposure() if env_file is not None else None
    if exposed is not None:
        report.add(Finding(WARNING, "env file", exposed))
    cipher = TokenCipher(settings.token_encryption_keys)
    budget = BudgetLook(settings)
    if settings.database_url is not None:
        database, counts = await check_postgresql(settings.database_url, cipher, budget)
    else:
        database, counts = await check_database(settings.database_path, cipher, budget)
    report.add(database)
    report.add(check_keys(len(settings.token_encryption_keys), counts, command))

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        discord_result, spotify = await asyncio.gather(
            check_discord(session, settings, timeout),
            check_spotify(session, settings, client_timeout, timeout),
        )
    report.add(discord_result.token)
    report.add(discord_result.application)
    report.add(check_intents(settings, discord_result.flags))
    report.add(spotify)
    report.add(budget.finding())
    report.add(check_redirect(settings))

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
    usable = "Everything checked is usable."
    if report.warnings:
        usable += f" {report.warnings} warning(s) above: worth a look."
    report.say(usable)
    return 0
