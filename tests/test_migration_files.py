"""The schema's migrations as data files: how one is read, and what a malformed one says."""

from __future__ import annotations

import pytest

from bot.storage import migrations as db
from bot.storage.migrations import parse_migration

EXAMPLE = """-- an example: one table
-- (a second comment line is a note)

-- [sqlite]

-- a note on the table, not run
CREATE TABLE example (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX example_name ON example (name);

-- [postgresql]

CREATE TABLE example (
    id   BIGINT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX example_name ON example (name);
"""


def test_a_file_gives_its_description_and_each_engines_statements() -> None:
    migration = parse_migration(8, EXAMPLE)
    assert migration.version == 8
    assert migration.description == "an example: one table"
    assert migration.statements("sqlite") == (
        "CREATE TABLE example (\n"
        "    id   INTEGER PRIMARY KEY,\n"
        "    name TEXT NOT NULL DEFAULT ''\n"
        ") WITHOUT ROWID",
        "CREATE INDEX example_name ON example (name)",
    )
    assert migration.statements("postgresql") == (
        "CREATE TABLE example (\n"
        "    id   BIGINT PRIMARY KEY,\n"
        "    name TEXT NOT NULL DEFAULT ''\n"
        ")",
        "CREATE INDEX example_name ON example (name)",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CREATE TABLE t (x INTEGER);\n", "first line"),
        ("-- no engine yet\nCREATE TABLE t (x INTEGER);\n", "before"),
        (
            "-- one engine\n-- [sqlite]\nCREATE TABLE t (x INTEGER);\n",
            "no statements for postgresql",
        ),
        ("-- unknown\n-- [mysql]\nCREATE TABLE t (x INTEGER);\n", "unexpected section"),
        (
            "-- twice\n-- [sqlite]\nCREATE TABLE t (x INTEGER);\n-- [sqlite]\nSELECT 1;\n",
            "unexpected section",
        ),
        ("-- unended\n-- [sqlite]\nSELECT 1;\n-- [postgresql]\nSELECT 1\n", "does not end"),
    ],
)
def test_a_malformed_file_is_refused_with_its_number(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_migration(3, text)
    assert "migration 3" in str(raised.value)


def test_the_shipped_files_are_numbered_from_one_without_a_gap() -> None:
    assert [m.version for m in db.load_migrations()] == list(range(1, db.LATEST_SCHEMA_VERSION + 1))
    assert db.load_migrations() == db.MIGRATIONS
