"""Waiting on the fake Discord without polling: each recorded change re-runs the conditions
that tests wait on, and every wait has a timeout that fails the test with what was seen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

DEFAULT_TIMEOUT = 5.0

T = TypeVar("T")


class FakeDiscordTimeoutError(AssertionError):
    """A wait on the fake timed out: the bot did not do what the test expected in time."""


class Waiters:
    """The pending waits of one fake. ``context()`` says what the fake saw last, for the message
    of a wait that timed out."""

    def __init__(self, context: Callable[[], str] = lambda: "") -> None:
        self.context = context
        self._waiters: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    async def wait_for(
        self,
        find: Callable[[], T | None],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        what: str | Callable[[], str] = "",
    ) -> T:
        """Wait until ``find()`` returns something other than None, and return it.

        ``find`` is re-run after every recorded change (REST request, gateway frame), never on
        a timer; an exception it raises fails the wait.
        """
        found = find()
        if found is not None:
            return found
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry = (find, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            description = what() if callable(what) else what
            raise FakeDiscordTimeoutError(
                f"timed out after {timeout} s waiting for {description or find!r}; {self.context()}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def notify(self) -> None:
        """Something changed: settle every wait whose condition is now met."""
        for find, future in list(self._waiters):
            if future.done():
                continue
            try:
                found = find()
            except Exception as exc:
                future.set_exception(exc)
            else:
                if found is not None:
                    future.set_result(found)

    def cancel_all(self) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
