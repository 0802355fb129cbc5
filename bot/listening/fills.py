"""When the log asks recently-played for a polled member: the listening log without polling.

Recently-played lists every play of 30 s or more, the last 50, so a member's log is complete as
long as it is asked before 50 new entries can pile up: at worst (every play just 30 s) that is
25 minutes of listening, at a usual pace (about 18 counted plays an hour) hours. The poller's
answers say when a member starts listening, even when it looks rarely (under a daily budget),
and from then on :class:`FillPlan` asks once per stretch of listening, whether the poller looks
again or not (``due``, on a timer):

* when the member has listened for ``fill_interval`` since the last call: 20 minutes until
  their pace is known, then the time 40 entries take at the pace of their last calls (at most
  two hours); the stretch counts from the last answer before the listening was seen, since it
  may have begun right after it. A call whose latest entry is minutes old keeps the stretch
  open whatever the poller saw; one that lists nothing new ends it (they stopped);
* when an answer shows them stopped (nothing playing) after listening: the session's plays are
  all counted by then;
* when nothing was asked for ``SWEEP_EVERY`` (a session between two rare idle checks);
* never again within ``RETRY_AFTER`` of a call that failed (a hold ends, Spotify comes back),
  nor while one is under way.

Each call asks for the plays after the previous call (less ``OVERLAP``: an entry is stamped when
Spotify counts it); what is already logged matches and is not logged twice. Pure: Unix times
are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

ENTRIES: Final = 50  # what recently-played lists at most
SAFE_ENTRIES: Final = 40  # asked before this many can have piled up
FIRST_INTERVAL: Final = 20 * 60.0  # 50 plays of 30 s take 25 minutes: the worst case
LONGEST_INTERVAL: Final = 2 * 3600.0
SWEEP_EVERY: Final = 6 * 3600.0  # a session between idle checks is under 2 hours: < 40 plays
RETRY_AFTER: Final = 5 * 60.0
OVERLAP: Final = 5 * 60.0
_SHORTEST_SAMPLE = 10 * 60.0  # a pace learned from less listening says little

Listening = Literal["playing", "paused", "stopped"]


@dataclass(slots=True, eq=False)
class _Member:
    asked_at: float  # the log holds every play counted before this (less OVERLAP)
    seen_at: float  # the last answer about the member
    state: Listening
    listening_from: float | None  # since when unasked plays may pile up
    per_second: float | None = None  # counted plays per second of listening, lately
    not_before: float = 0.0  # after a failed call


class FillPlan:
    """Per polled member: whether to ask recently-played now, and after which moment."""

    def __init__(self) -> None:
        self._members: dict[int, _Member] = {}

    def per_member_state(self) -> dict[str, Collection[object]]:
        return {"recently-played fills": self._members}

    def forget(self, member_id: int) -> None:
        self._members.pop(member_id, None)

    def fill_interval(self, member_id: int) -> float:
        """Listening after which the member's entries may pile up toward 50."""
        member = self._members.get(member_id)
        if member is None or member.per_second is None:
            return FIRST_INTERVAL
        if member.per_second <= 0:
            return LONGEST_INTERVAL
        return min(LONGEST_INTERVAL, max(FIRST_INTERVAL, SAFE_ENTRIES / member.per_second))

    def observe(self, member_id: int, at: float, state: Listening) -> float | None:
        """An answer of the poller at ``at``; the Unix time to ask recently-played after,
        when a call is due now."""
        member = self._members.get(member_id)
        if member is None:  # the first answer: a restart is the log's catch-up, not ours
            listening_from = at if state == "playing" else None
            self._members[member_id] = _Member(at, at, state, listening_from)
            return None
        if state == "playing" and member.listening_from is None:
            member.listening_from = member.seen_at
        member.seen_at, member.state = at, state
        if not self._due(member_id, member, at) and not (
            state == "stopped" and member.listening_from is not None and at >= member.not_before
        ):
            return None
        return self._claim(member, at)

    def due(self, at: float) -> list[tuple[int, float]]:
        """Members to ask about now however rarely the poller looks, each with the Unix time
        to ask recently-played after."""
        return [
            (member_id, self._claim(member, at))
            for member_id, member in self._members.items()
            if self._due(member_id, member, at)
        ]

    def _due(self, member_id: int, member: _Member, at: float) -> bool:
        if at < member.not_before:
            return False
        if at - member.asked_at >= SWEEP_EVERY:
            return True
        since = member.listening_from
        return since is not None and at - since >= self.fill_interval(member_id)

    @staticmethod
    def _claim(member: _Member, at: float) -> float:
        member.not_before = at + RETRY_AFTER  # one call at a time; ``asked`` frees it
        return member.asked_at - OVERLAP

    def asked(self, member_id: int, at: float, played_at: Sequence[float]) -> None:
        """The call made at ``at`` listed entries played at these times: the log is complete
        to then."""
        member = self._members.get(member_id)
        if member is None:
            return
        entries = len(played_at)
        new = sum(1 for played in played_at if played > member.asked_at)
        member.not_before = 0.0
        if member.listening_from is not None:
            span = at - member.listening_from
            if entries >= ENTRIES:  # it may have overflowed: back to the worst case
                member.per_second = None
            elif span >= _SHORTEST_SAMPLE:
                sample = entries / span
                previous = member.per_second
                member.per_second = sample if previous is None else (previous + sample) / 2.0
        member.asked_at = at
        # Still listening, as far as we know: the last answer said so and this call found
        # plays since the previous one; or a play ended minutes ago, after that answer.
        playing = member.state == "playing" and (new > 0 or member.seen_at > at - OVERLAP)
        latest = max(played_at, default=-math.inf)
        unseen = latest > max(member.seen_at, at - OVERLAP)
        member.listening_from = at if playing or unseen else None

    def failed(self, member_id: int, at: float) -> None:
        member = self._members.get(member_id)
        if member is not None:
            member.not_before = at + RETRY_AFTER


__all__ = ["FillPlan", "Listening"]
