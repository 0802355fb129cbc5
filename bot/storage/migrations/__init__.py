"""The schema's history, as data: one ``NNNN_<name>.sql`` file per migration in this folder.

Migration ``n`` takes a database from schema version ``n - 1`` to ``n``; ``bot.storage.migrate``
applies them, on both engines. Each file holds both engines' statements, so a reader sees the
same tables, columns, keys and indexes side by side in each engine's types (INTEGER ids ->
BIGINT, REAL -> DOUBLE PRECISION, BLOB -> BYTEA)::

    -- what the migration does (its description, logged when it is applied)

    -- [sqlite]

    -- a note on the statement below (not run)
    CREATE TABLE example (
        id INTEGER PRIMARY KEY
    );

    -- [postgresql]

    CREATE TABLE example (
        id BIGINT PRIMARY KEY
    );

The first line is the description. ``-- [sqlite]`` and ``-- [postgresql]`` start each engine's
statements; a statement ends on a line that ends with ``;``. Lines starting with ``--`` between
statements are notes. Statements deliberately have no IF NOT EXISTS: re-running a migration
must fail loudly.

To change the schema, add the next file (``0010_<name>.sql``, numbers consecutive from 0001)
with both sections, and write the code that uses it; ``LATEST_SCHEMA_VERSION`` follows. Never
edit a released migration: databases out there already ran it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from bot.storage.engines import Dialect

DIALECTS: Final[tuple[Dialect, ...]] = ("sqlite", "postgresql")
_FILE_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_SECTION = re.compile(r"-- \[(\w+)\]")


class SchemaVersionError(RuntimeError):
    """The database was written by a newer version of the bot than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: the same change in each engine's statements."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...] = ()

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgresql


def parse_migration(version: int, text: str) -> Migration:
    """A migration file's text (see the module) as a Migration; ValueError when malformed."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("-- "):
        raise ValueError(f"migration {version}: the first line must be '-- <description>'")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    statement: list[str] = []
    for line in lines[1:]:
        section = _SECTION.fullmatch(line.strip())
        if section is not None and not statement:
            if section[1] not in DIALECTS or section[1] in sections:
                raise ValueError(f"migration {version}: unexpected section {line.strip()!r}")
            current = sections[section[1]] = []
            continue
        if not statement and (not line.strip() or line.lstrip().startswith("--")):
            continue  # a blank line or a note between statements
        if current is None:
            raise ValueError(f"migration {version}: a statement before '-- [sqlite]'")
        statement.append(line)
        if line.rstrip().endswith(";"):
            current.append("\n".join(statement).rstrip()[:-1].rstrip())
            statement = []
    if statement:
        raise ValueError(f"migration {version}: the last statement does not end with ';'")
    missing = [dialect for dialect in DIALECTS if not sections.get(dialect)]
    if missing:
        raise ValueError(f"migration {version}: no statements for {', '.join(missing)}")
    return Migration(
        version=version,
        description=lines[0][3:].strip(),
        sqlite=tuple(sections["sqlite"]),
        postgresql=tuple(sections["postgresql"]),
    )


def load_migrations() -> tuple[Migration, ...]:
    """Every migration file of this folder, in order; numbered 1, 2, 3... without a gap."""
    files: list[tuple[int, Traversable]] = []
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".sql"):
            match = _FILE_NAME.fullmatch(entry.name)
            if match is None:
                raise ValueError(f"{entry.name}: a migration file is named NNNN_<name>.sql")
            files.append((int(match[1]), entry))
    files.sort(key=lambda numbered: numbered[0])
    numbers = [number for number, _ in files]
    if numbers != list(range(1, len(files) + 1)):
        raise ValueError(f"migration files must be numbered 1, 2, 3... without a gap: {numbers}")
    return tuple(parse_migration(number, entry.read_text("utf-8")) for number, entry in files)


MIGRATIONS: Final[tuple[Migration, ...]] = load_migrations()

LATEST_SCHEMA_VERSION: Final = len(MIGRATIONS)


__all__ = [
    "LATEST_SCHEMA_VERSION",
    "MIGRATIONS",
    "Migration",
    "SchemaVersionError",
    "load_migrations",
    "parse_migration",
]
