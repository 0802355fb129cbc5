"""Ending background tasks on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel every task, then wait until each has ended. What they end with (cancelled, an
    error) is swallowed: the caller is shutting them down and leaves none behind."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio does not report it as never retrieved


__all__ = ["cancel_and_wait"]
