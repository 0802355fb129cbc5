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


def command_name(
    argv0: str | None = None,
    orig_argv: Sequence[str] | None = None,
    path: str | None = None,
) -> str:
    """The command the user ran, for hints: ``nowplaying-bot``, ``.venv/bin/nowplaying-bot``
    or ``python3 -m bot`` (arguments default to this process's)."""
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
