"""The back-off of start-up retries (Discord's login and gateway, PostgreSQL): 1, 2, 4, 8, 16,
then every 20 s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

MAX_RETRY_SECONDS: Final = 20.0


def backoff_delays(first: float = 1.0, cap: float = MAX_RETRY_SECONDS) -> Iterator[float]:
    """1, 2, 4, 8, 16, 20, 20, ... seconds."""
    delay = first
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


__all__ = ["MAX_RETRY_SECONDS", "backoff_delays"]
