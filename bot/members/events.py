"""What happens to a member that every feature keeping something about them must hear.

A member links or unlinks (``LinkService``), goes private or visible again
(``PrivacyService``), here or in another process of the same bot (``bot.shards.members``
relays them). Each feature subscribes in one function of its own; the services that make the
change emit it once, after it is stored. A failing listener is logged and does not stop the
others.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

log = logging.getLogger(__name__)

MemberEvent = Literal["linked", "unlinked", "private", "public"]
# Called with the member's id; may be a coroutine function.
MemberListener = Callable[[int], Awaitable[None] | None]


class MemberEvents:
    def __init__(self) -> None:
        self._listeners: dict[MemberEvent, list[tuple[MemberListener, bool]]] = {
            "linked": [],
            "unlinked": [],
            "private": [],
            "public": [],
        }

    def on(self, event: MemberEvent, listener: MemberListener, *, here_only: bool = False) -> None:
        """``listener(member_id)`` hears ``event``; with ``here_only``, only changes made in
        this process (the relay that tells the other processes)."""
        self._listeners[event].append((listener, here_only))

    async def emit(self, event: MemberEvent, member_id: int, *, here: bool = True) -> None:
        """Tell every listener, one after the other (``here``: the change was made in this
        process, not relayed from another)."""
        for listener, here_only in list(self._listeners[event]):
            if here_only and not here:
                continue
            try:
                result = listener(member_id)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a listener of %s failed for member %s", event, member_id)


__all__ = ["MemberEvent", "MemberEvents", "MemberListener"]
