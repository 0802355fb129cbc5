"""``nowplaying-bot setup``: ask for the three values only a person can get, write ``.env``.

The Discord token and the Spotify client id and secret are typed without echo (they are
secrets, or next to one); the redirect URI is proposed; the encryption key is generated. The
file is written with mode 0600 from the first byte, and an existing ``.env`` is replaced only
when the user says so. The caller runs ``check`` afterwards.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import generate_key, redirect_uri_problem

DEFAULT_WEB_PORT = 8080


class SetupCancelled(Exception):
    """The user ended the setup (Ctrl-C, Ctrl-D, or declined); nothing was written."""


@dataclass
class Terminal:
    """Where the questions go and the answers come from (a test passes its own)."""

    ask: Callable[[str], str] = input
    ask_secret: Callable[[str], str] = getpass.getpass
    say: Callable[[str], None] = field(default=print)


def _answer(read: Callable[[str], str], prompt: str) -> str:
    try:
        return read(prompt).strip()
    except (EOFError, KeyboardInterrupt):
        raise SetupCancelled from None


def confirm(terminal: Terminal, question: str, *, default: bool) -> bool:
    choices = "[Y/n]" if default else "[y/N]"
    while True:
        answer = _answer(terminal.ask, f"{question} {choices} ").lower()
        if not answer:
            return default
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        terminal.say("Please answer y or n.")


def _ask_secret(terminal: Terminal, prompt: str, what: str) -> str:
    while True:
        value = _answer(terminal.ask_secret, prompt)
        if not value:
            terminal.say(f"The {what} is needed; paste it (nothing is shown while you type).")
        elif any(character.isspace() for character in value):
            terminal.say(f"That does not look like a {what} (it contains spaces); paste it again.")
        else:
            return value


def proposed_redirect_uri(environ: Mapping[str, str]) -> str:
    """The redirect URI already configured, else the loopback one on WEB_PORT (8080)."""
    configured = (environ.get("SPOTIFY_REDIRECT_URI") or "").strip()
    if configured and redirect_uri_problem(configured) is None:
        return configured
    port = (environ.get("WEB_PORT") or "").strip()
    return f"http://127.0.0.1:{port if port.isdigit() else DEFAULT_WEB_PORT}/callback"


def _ask_redirect_uri(terminal: Terminal, proposed: str) -> str:
    terminal.say(
        "Spotify sends members back to the bot's web server after they approve it: the "
        "redirect URI. Behind a reverse proxy with HTTPS use its public address, e.g. "
        "https://np.example.org/callback; otherwise keep the loopback address (members then "
        "paste the final address into the bot's DM)."
    )
    while True:
        uri = _answer(terminal.ask, f"Redirect URI [{proposed}]: ") or proposed
        problem = redirect_uri_problem(uri)
        if problem is None:
            return uri
        terminal.say(f"'{uri}' {problem}.")


def env_file_text(values: Mapping[str, str], command: str) -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        f"# nowplaying-bot settings, written by `{command} setup` on {today}.",
        "# Every other setting, and what each one means, is listed in .env.example.",
    ]
    for name, value in values.items():
        if name == "TOKEN_ENCRYPTION_KEY":
            lines.append("# Encrypts stored Spotify tokens: keep a copy apart from backups.")
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (never briefly readable by
    others), replacing any existing file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # whatever the umask said
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def run_setup(
    env_path: Path,
    *,
    command: str,
    environ: Mapping[str, str],
    terminal: Terminal | None = None,
) -> bool:
    """Ask, then write ``env_path``. False when the user kept an existing file; raises
    SetupCancelled when they stopped half-way (nothing is written then)."""
    terminal = terminal or Terminal()
    terminal.say(
        "Setting up nowplaying-bot: three values from the Discord and Spotify developer sites; "
        "the rest is generated. What you type for them is not shown."
    )
    if env_path.exists() and not confirm(
        terminal, f"{env_path} already exists. Replace it?", default=False
    ):
        terminal.say(f"Left {env_path} as it is.")
        return False

    token = _ask_secret(
        terminal,
        "Discord bot token (discord.com/developers/applications -> your app -> Bot -> "
        "Reset Token): ",
        "bot token",
    )
    client_id = _ask_secret(
        terminal,
        "Spotify client id (developer.spotify.com/dashboard -> your app -> Settings): ",
        "client id",
    )
    client_secret = _ask_secret(
        terminal, "Spotify client secret (same page, View client secret): ", "client secret"
    )
    redirect_uri = _ask_redirect_uri(terminal, proposed_redirect_uri(environ))

    values = {
        "DISCORD_TOKEN": token,
        "SPOTIFY_CLIENT_ID": client_id,
        "SPOTIFY_CLIENT_SECRET": client_secret,
        "SPOTIFY_REDIRECT_URI": redirect_uri,
        "TOKEN_ENCRYPTION_KEY": generate_key(),
    }
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http" and parts.port not in (None, DEFAULT_WEB_PORT):
        values["WEB_PORT"] = str(parts.port)  # a loopback URI names the port to listen on
    write_private_file(env_path, env_file_text(values, command))
    terminal.say(f"Wrote {env_path} (mode 0600) with a new TOKEN_ENCRYPTION_KEY.")
    terminal.say(
        f"Register {redirect_uri} as a redirect URI in your Spotify app (Dashboard -> your app "
        "-> Settings -> Redirect URIs), exactly as written."
    )
    return True
