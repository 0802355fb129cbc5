"""pytest plugin (loaded by ``-p`` in pyproject): the two storage backends as a fixture param.

``database_target`` is what ``Storage.open`` and ``DATABASE_PATH``/``DATABASE_URL`` take: an
SQLite file under tmp_path, or the URL of a fresh, empty PostgreSQL database on the throwaway
cluster ``scripts/test`` starts (``NOWPLAYING_TEST_POSTGRES_URL``, an administrator's URL).
Without that variable the PostgreSQL half is skipped, except in CI (``CI=true``), where it
fails: CI must never pass without having run it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

POSTGRES_URL_VARIABLE = "NOWPLAYING_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs against the test PostgreSQL cluster")


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if url:
        return url
    message = f"{POSTGRES_URL_VARIABLE} is not set: run the suite with `bash scripts/test`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI; {message}", pytrace=False)
    pytest.skip(message)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def postgres_database() -> AsyncIterator[str]:
    """The URL of a new empty database, dropped (with whoever is still connected) after."""
    admin_url = postgres_admin_url()
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    try:
        yield with_database(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
def database_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def database_target(
    database_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> str | Path:
    """An SQLite path or a PostgreSQL URL, one fresh database per test."""
    if database_backend == "sqlite":
        return tmp_path / "data" / "bot.db"
    url: str = request.getfixturevalue("postgres_database")
    return url
