"""``nowplaying-bot setup``: ask for the three values only a person can get, write ``.env``.

The Discord token and the Spotify client id and secret are typed without echo (they are
secrets, or next to one) and their shape is checked before anything is written, so a
mistyped value is told apart from a network problem; the redirect URI is proposed; the
encryption key is generated. The file is written with mode 0600 from the first byte. An
existing ``.env`` is updated only when the user says so, after a 0600 backup, and keeps its
encryption key and every setting the wizard does not ask about (a new key would make every
stored link unreadable). The caller runs ``check`` afterwards.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.cli.dotenv import parse_env_line, read_env_file
from bot.config import generate_key, redirect_uri_problem

DEFAULT_WEB_PORT = 8080


class SetupCancelled(Exception):
    """The user ended the setup (Ctrl-C, Ctrl-D, or declined); nothing was written.
    ``status`` is the exit status: 130 for Ctrl-C, as shells report SIGINT, else 1."""

    def __init__(self, status: int = 1) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Terminal:
    """Where the questions go and the answers come from (a test passes its own)."""

    ask: Callable[[str], str] = input
    ask_secret: Callable[[str], str] = getpass.getpass
    say: Callable[[str], None] = field(default=print)


def _answer(read: Callable[[str], str], prompt: str) -> str:
    try:
        return read(prompt).strip()
    except EOFError:
        raise SetupCancelled from None
    except KeyboardInterrupt:
        raise SetupCancelled(130) from None


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


# Discord: base64 of the bot's id, a timestamp and a signature, joined by dots. Spotify: the
# dashboard shows the client id as 32 hexadecimal characters.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_CLIENT_ID_SHAPE = re.compile(r"[0-9A-Fa-f]{32}")


def token_shape_problem(value: str) -> str | None:
    if _TOKEN_SHAPE.fullmatch(value):
        return None
    return (
        "That is not a bot token: a token has three parts separated by dots (copy it again "
        "from Bot -> Reset Token; the application id or public key is not it)."
    )


def client_id_shape_problem(value: str) -> str | None:
    if _CLIENT_ID_SHAPE.fullmatch(value):
        return None
    return (
        "That is not a Spotify client id: it is 32 characters, 0-9 and a-f (copy it again "
        "from your app's Settings page)."
    )


def _ask_secret(
    terminal: Terminal,
    prompt: str,
    what: str,
    shape: Callable[[str], str | None] = lambda value: None,
) -> str:
    while True:
        value = _answer(terminal.ask_secret, prompt)
        if not value:
            terminal.say(f"The {what} is needed; paste it (nothing is shown while you type).")
        elif any(character.isspace() for character in value):
            terminal.say(f"That does not look like a {what} (it contains spaces); paste it again.")
        elif (problem := shape(value)) is not None:
            terminal.say(problem)
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


PRESENCE_SWITCHES = (
    "Before the first start, open the Discord Developer Portal (your app -> Bot -> Privileged "
    "Gateway Intents) and switch on Presence Intent and Server Members Intent. With them, "
    "members' Spotify statuses cost no Spotify call, and the bot shows and posts members who "
    "never link. Without them the bot still works, from the Spotify Web API only, and says so "
    "in one warning at start (ENABLE_PRESENCE=false silences it)."
)


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def env_file_text(values: Mapping[str, str], command: str) -> str:
    lines = [
        f"# nowplaying-bot settings, written by `{command} setup` on {_today()}.",
        "# Every other setting, and what each one means, is listed in .env.example.",
    ]
    for name, value in values.items():
        if name == "TOKEN_ENCRYPTION_KEY":
            lines.append("# Encrypts stored Spotify tokens: keep a copy apart from backups.")
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def updated_env_text(previous: str, values: Mapping[str, str], command: str) -> str:
    """``previous`` with ``values`` set, each on the line that set it (a repeat is dropped),
    the new ones appended: its comments, its order and every other setting stay."""
    remaining = dict(values)
    lines: list[str] = []
    for line in previous.splitlines():
        assignment = parse_env_line(line)
        name = assignment[0] if assignment else None
        if name in remaining:
            lines.append(f"{name}={remaining.pop(name)}")
        elif name not in values:
            lines.append(line)
    if remaining:
        lines.append(f"# Added by `{command} setup` on {_today()}.")
        lines.extend(f"{name}={value}" for name, value in remaining.items())
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


def _backup_path(path: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return path.with_name(f"{path.name}.{stamp}.bak")


def _may_update(terminal: Terminal, env_path: Path, existing: Mapping[str, str]) -> bool:
    terminal.say(
        f"{env_path} already exists. Setup asks again for the Discord token, the Spotify "
        "client id and secret and the redirect URI; it keeps the encryption key and every "
        "other setting in the file, and saves a copy of the file first."
    )
    if not (existing.get("TOKEN_ENCRYPTION_KEY") or "").strip():
        terminal.say(
            f"Warning: {env_path} has no TOKEN_ENCRYPTION_KEY, so a new one will be written. "
            "Links stored under an earlier key cannot be read with it: if this bot ran with "
            "another key, answer n, put that key in the file, and run setup again."
        )
    return confirm(terminal, "Update it?", default=False)


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
    previous = env_path.read_text(encoding="utf-8") if env_path.exists() else None
    existing = read_env_file(env_path)
    if previous is not None and not _may_update(terminal, env_path, existing):
        terminal.say(f"Left {env_path} as it is.")
        return False

    values = {
        "DISCORD_TOKEN": _ask_secret(
            terminal,
            "Discord bot token (discord.com/developers/applications -> your app -> Bot -> "
            "Reset Token): ",
            "bot token",
            token_shape_problem,
        ),
        "SPOTIFY_CLIENT_ID": _ask_secret(
            terminal,
            "Spotify client id (developer.spotify.com/dashboard -> your app -> Settings): ",
            "client id",
            client_id_shape_problem,
        ),
        "SPOTIFY_CLIENT_SECRET": _ask_secret(
            terminal, "Spotify client secret (same page, View client secret): ", "client secret"
        ),
    }
    redirect_uri = values["SPOTIFY_REDIRECT_URI"] = _ask_redirect_uri(
        terminal, proposed_redirect_uri(environ)
    )
    parts = urlsplit(redirect_uri)
    if parts.scheme == "http" and parts.port not in (None, DEFAULT_WEB_PORT):
        values["WEB_PORT"] = str(parts.port)  # a loopback URI names the port to listen on
    kept_key = bool((existing.get("TOKEN_ENCRYPTION_KEY") or "").strip())
    if not kept_key:
        values["TOKEN_ENCRYPTION_KEY"] = generate_key()

    if previous is None:
        write_private_file(env_path, env_file_text(values, command))
        terminal.say(f"Wrote {env_path} (mode 0600) with a new TOKEN_ENCRYPTION_KEY.")
    else:
        backup = _backup_path(env_path)
        write_private_file(backup, previous)
        write_private_file(env_path, updated_env_text(previous, values, command))
        key = "kept its TOKEN_ENCRYPTION_KEY" if kept_key else "wrote a new TOKEN_ENCRYPTION_KEY"
        terminal.say(
            f"Updated {env_path} (mode 0600): {key} and every other setting; the previous "
            f"file is saved as {backup} (mode 0600)."
        )
    if (environ.get("ENABLE_PRESENCE") or "").strip().lower() not in ("false", "0", "no", "off"):
        terminal.say(PRESENCE_SWITCHES)
    return True
