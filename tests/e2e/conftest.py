"""The end-to-end tests that run the whole stack run once per storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module that drives the stack (tests.harness.Stack) runs on both backends, unless it
    # names its own (a module about the SQLite file itself says DATABASE_BACKENDS = ("sqlite",)).
    if "e2e_database" not in metafunc.fixturenames:
        return
    module = metafunc.module
    backends = getattr(module, "DATABASE_BACKENDS", None)
    if backends is None:
        backends = ("sqlite", "postgresql") if hasattr(module, "Stack") else ("sqlite",)
    # As a mark (not metafunc.parametrize) so that it replaces the fixture's own params.
    metafunc.definition.add_marker(
        pytest.mark.parametrize(
            "database_backend",
            [
                pytest.param(b, id=b, marks=[pytest.mark.postgresql] if b == "postgresql" else [])
                for b in backends
            ],
            indirect=True,
        )
    )


@pytest.fixture(autouse=True)
def e2e_database(database_target: str | Path) -> Iterator[None]:
    harness.database_url = database_target if isinstance(database_target, str) else None
    try:
        yield
    finally:
        harness.database_url = None
