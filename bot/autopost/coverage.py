"""Which members a Discord presence covers, so that nobody polls Spotify for them.

A member's Spotify status covers them while it shows Spotify (presence mode): their tracks come
from the status, and polling would only spend the budget. The status arrives in the process
that runs the guild's shard, while one process (the leader) polls for every guild, so a cover
has an origin: this process (``HERE``; it lasts until the status loses Spotify) or another
process, named by the relay that heard of it (it lasts until that process says it ended, or
expires unless announced again: a process that died leaves no member unpolled for good).

Polling stops (``Roster.suspend``) when the first cover of a member starts and resumes when the
last one ends. Every process keeps the record, leader or not, so a process that takes over
polling starts from what the others cover.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from typing import Final

from bot.autopost.roster import Roster

log = logging.getLogger(__name__)

HERE: Final = ""  # the origin of covers from this process's own presences

CoverListener = Callable[[int, bool], None]


class PresenceCoverage:
    """Members covered, by origin, each cover with the moment it ends (``clock`` time)."""

    def __init__(
        self,
        roster: Roster,
        *,
        clock: Callable[[], float] = time.monotonic,
        shows_spotify: Callable[[int], bool] | None = None,
    ) -> None:
        """``shows_spotify``: whether a member's Discord status shows Spotify now (the gateway
        cache), for :meth:`cover_from_statuses`."""
        self._roster = roster
        self._clock = clock
        self._shows_spotify = shows_spotify
        self._covers: dict[int, dict[str, float]] = {}  # member -> origin -> ends at
        self._listeners: list[CoverListener] = []

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def add_listener(self, listener: CoverListener) -> None:
        """``listener(member, covered)`` hears a cover from this process start or end."""
        self._listeners.append(listener)

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"presence covers": self._covers}

    def here(self) -> list[int]:
        """The members this process's presences cover (what it announces)."""
        return [member for member, origins in self._covers.items() if HERE in origins]

    def cover(self, member_id: int, origin: str = HERE, *, until: float = math.inf) -> None:
        origins = self._covers.get(member_id)
        if origins is None:
            origins = self._covers[member_id] = {}
            self._roster.suspend(member_id)
        started_here = origin == HERE and HERE not in origins
        origins[origin] = until
        if started_here:
            self._tell(member_id, True)

    def cover_from_statuses(self, linked: Collection[int]) -> None:
        """Cover the ``linked`` members whose status shows Spotify now: their presence updates
        came before they were linked (or read at a start), when no cover could start."""
        if self._shows_spotify is None:
            return
        for member_id in linked:
            if self._shows_spotify(member_id):
                self.cover(member_id)

    def uncover(self, member_id: int, origin: str = HERE) -> None:
        origins = self._covers.get(member_id)
        if origins is None or origins.pop(origin, None) is None:
            return
        if origin == HERE:
            self._tell(member_id, False)
        if not origins:
            del self._covers[member_id]
            self._roster.resume(member_id)

    def uncover_all_from(self, origin: str) -> None:
        """A process said it stopped: whatever it covered is polled again (unless covered
        elsewhere too)."""
        for member_id in [m for m, origins in self._covers.items() if origin in origins]:
            self.uncover(member_id, origin)

    def expire(self) -> list[int]:
        """End the covers of other processes that were not announced again in time; the
        members whose polling resumes."""
        now = self._clock()
        resumed = []
        for member_id, origins in list(self._covers.items()):
            for origin in [o for o, until in origins.items() if until <= now]:
                self.uncover(member_id, origin)
            if member_id not in self._covers:
                resumed.append(member_id)
        if resumed:
            log.info("presence covers expired: polling %d members again", len(resumed))
        return resumed

    def forget(self, member_id: int) -> None:
        """Unlinked or private: no cover is kept (the roster stops following them anyway)."""
        origins = self._covers.pop(member_id, None)
        if origins is not None and HERE in origins:
            self._tell(member_id, False)

    def _tell(self, member_id: int, covered: bool) -> None:
        for listener in self._listeners:
            try:
                listener(member_id, covered)
            except Exception:  # telling other processes must not stop auto-posting here
                log.exception("a presence cover listener failed")


__all__ = ["HERE", "CoverListener", "PresenceCoverage"]
