"""The ``.env`` file: what it sets, and the environment over it (the environment wins; an
empty value means unset)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: KEY=VALUE lines, ``#`` comments, optional quotes and ``export``."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for line in text.splitlines():
        assignment = parse_env_line(line)
        if assignment is not None:
            name, value = assignment
            values[name] = value
    return values


def parse_env_line(line: str) -> tuple[str, str] | None:
    """``(name, value)`` for a ``.env`` line that sets something, else None."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export "):
        stripped = stripped[len("export ") :].lstrip()
    name, sep, value = stripped.partition("=")
    if not sep:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    elif " #" in value:
        value = value.split(" #", 1)[0].rstrip()
    return name.strip(), value


def environment_with_dotenv(
    environ: Mapping[str, str] | None = None, dotenv: Path = Path(".env")
) -> dict[str, str]:
    """The environment wins over ``.env``, so a deployment can override a file value; an
    empty value in the environment means unset (``DISCORD_TOKEN=`` from a copied
    ``.env.example`` passed by compose must not hide the token ``setup`` wrote)."""
    merged = read_env_file(dotenv)
    environ = os.environ if environ is None else environ
    merged.update({name: value for name, value in environ.items() if value.strip()})
    return merged
