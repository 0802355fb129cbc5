"""Member changes made in one process (links, unlinks, privacy, auto-post settings), applied by
the others to what they keep in memory."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final

from bot.aio.tasks import cancel_and_wait
from bot.config import whole_number
from bot.members.events import MemberEvents
from bot.storage import Notifications

log = logging.getLogger(__name__)


MEMBER_CHANNEL: Final = "nowplaying_members"


class MemberChangeRelay:
    """What one process changes for a member, the others apply to what they keep in memory.

    The database holds the change already; the notification only says "member N: look again"
    (``linked``, ``unlinked``, ``visibility``; ``settings``: auto-post channels or opt-ins),
    tagged with the sending process so it skips its own. Another process re-reads what it
    needs: who it follows for auto-posting, the private members it must not show, the cached
    access token of a member who unlinked.
    """

    def __init__(
        self,
        storage: Notifications,
        events: MemberEvents,
        *,
        on_visibility: Callable[[int], Awaitable[None]],
        on_settings: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``events``: what this process changes is sent; what another process changed is
        emitted here (``here=False``). ``on_visibility``: read a member's visibility again
        (``PrivacyService.reload``, which emits the event); ``on_settings``: read the
        auto-post settings again."""
        self._storage = storage
        self._events = events
        self._on_visibility = on_visibility
        self._on_settings = on_settings
        self._origin = secrets.token_hex(8)
        self._tasks: set[asyncio.Task[None]] = set()
        events.on("linked", functools.partial(self._send, "linked"), here_only=True)
        events.on("unlinked", functools.partial(self._send, "unlinked"), here_only=True)
        for event in ("private", "public"):
            events.on(event, functools.partial(self._send, "visibility"), here_only=True)

    def listening(self) -> AbstractAsyncContextManager[None]:
        return self._storage.listen(MEMBER_CHANNEL, self._received)

    # --- sending ---------------------------------------------------------------------------

    def settings_changed(self) -> None:
        """Auto-post settings (music channels, opt-ins) changed here."""
        self._spawn(self._send("settings", 0))

    async def _send(self, kind: str, member_id: int) -> None:
        try:
            await self._storage.notify(MEMBER_CHANNEL, f"{self._origin}:{kind}:{member_id}")
        except Exception:  # the database has the change; other processes see it on restart
            log.warning("could not tell the other processes that member %s %s", member_id, kind)

    # --- receiving --------------------------------------------------------------------------

    def _received(self, payload: str) -> None:
        origin, _, rest = payload.partition(":")
        kind, _, raw_id = rest.partition(":")
        member_id = whole_number(raw_id)
        if origin == self._origin or member_id is None:
            return
        if kind == "linked":
            self._spawn(self._events.emit("linked", member_id, here=False))
        elif kind == "unlinked":
            self._spawn(self._events.emit("unlinked", member_id, here=False))
        elif kind == "visibility":
            self._spawn(self._on_visibility(member_id))
        elif kind == "settings" and self._on_settings is not None:
            self._spawn(self._on_settings())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("applying a change from another process failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)


__all__ = ["MEMBER_CHANNEL", "MemberChangeRelay"]
