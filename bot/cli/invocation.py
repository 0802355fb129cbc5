"""How the bot was started: the command to name in hints, and which ``.env`` to read.

A hint must be a command the user can paste: on Debian there is often no ``python`` and the
system ``python3`` lacks the bot's venv, so we repeat what they actually ran, the console
script (``nowplaying-bot`` when found on PATH, else the path they typed) or ``<their python>
-m bot``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_COMMAND = "nowplaying-bot"
ENV_FILE_VARIABLE = "NOWPLAYING_ENV_FILE"
# Set by the container image: hints then name the command run on the host (`docker compose run
# --rm bot check`), not the one inside the container.
COMMAND_VARIABLE = "NOWPLAYING_COMMAND"
REQUIRED_NAMES = (
    "DISCORD_TOKEN, SPOTIFY_CLIENT_ID, SPOTIFY_CLIENT_SECRET, SPOTIFY_REDIRECT_URI and "
    "TOKEN_ENCRYPTION_KEY"
)


def command_name(
    argv0: str | None = None,
    orig_argv: Sequence[str] | None = None,
    path: str | None = None,
) -> str:
    """The command the user ran, for hints: ``nowplaying-bot``, ``.venv/bin/nowplaying-bot``
    or ``python3 -m bot`` (arguments default to this process's); the one the container image
    names in ``NOWPLAYING_COMMAND``."""
    named = os.environ.get(COMMAND_VARIABLE, "").strip()
    if named:
        return named
    argv0 = sys.argv[0] if argv0 is None else argv0
    orig_argv = sys.orig_argv if orig_argv is None else orig_argv
    script = Path(argv0)
    if script.name in ("__main__.py", "-m", "-c", ""):
        interpreter = orig_argv[0] if orig_argv else "python3"
        return f"{shlex.quote(interpreter)} -m bot"
    found = shutil.which(script.name, path=path)
    if found is not None and _same_file(found, argv0):
        return script.name
    return shlex.quote(argv0)


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class EnvFile:
    """The ``.env`` this run reads (or would read): where it is and who named it."""

    path: Path
    named_by: str  # "--env-file", "NOWPLAYING_ENV_FILE" or "the working directory"

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def explicit(self) -> bool:
        return self.named_by != "the working directory"

    def exposure(self) -> str | None:
        """Why other users of this machine can read the file's secrets, or None when they
        cannot (or there is no file)."""
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return None
        readers = [
            who
            for who, bit in (("its group", stat.S_IRGRP), ("others", stat.S_IROTH))
            if mode & bit
        ]
        if not readers:
            return None
        return (
            f"{self.path} holds the bot's secrets and is readable by {' and '.join(readers)} "
            f"(mode {stat.S_IMODE(mode):04o}): run `chmod 600 {shlex.quote(str(self.path))}`"
        )

    def describe(self) -> str:
        """``/srv/np.env (named by --env-file)``, ``/srv/bot/.env (in the working directory)``."""
        if self.explicit:
            return f"{self.path} (named by {self.named_by})"
        return f"{self.path} (in the working directory)"


def locate_env_file(option: str | None, environ: Mapping[str, str] | None = None) -> EnvFile:
    """``--env-file`` wins, then ``NOWPLAYING_ENV_FILE``, then ``.env`` in the working
    directory. The path is made absolute so messages say exactly where we looked."""
    environ = os.environ if environ is None else environ
    if option:
        return EnvFile(Path(option).expanduser().absolute(), "--env-file")
    named = environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        return EnvFile(Path(named).expanduser().absolute(), ENV_FILE_VARIABLE)
    return EnvFile(Path.cwd() / ".env", "the working directory")


def in_container(command: str) -> bool:
    """True when hints name a docker command: the ``.env`` is then in the container's volume."""
    return command.startswith("docker ")


def edit_advice(command: str, env_file: EnvFile) -> str:
    """How to change a value of ``env_file``: the image has no editor, so from the host."""
    if in_container(command):
        return (
            f"{env_file.path} is in the bot's volume: run `{command} setup` again to change the "
            "Discord and Spotify values, or set any value in the .env beside compose.yaml, "
            f"which wins over {env_file.path}"
        )
    return f"edit {env_file.path}"


def create_advice(command: str, env_file: EnvFile, cwd: Path | None = None) -> str:
    """How to write ``env_file`` without the wizard (no terminal), true where it is said."""
    if in_container(command):
        return (
            "or put the values in the .env beside compose.yaml (copy .env.example there and "
            "fill it in)"
        )
    if ((cwd or Path.cwd()) / ".env.example").is_file():
        return f"or copy .env.example to {env_file.path} and fill it in"
    return (
        f"or write {env_file.path} with {REQUIRED_NAMES} (.env.example in the bot's "
        "repository describes every setting)"
    )
