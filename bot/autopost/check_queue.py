"""The scheduler's bookkeeping: each followed member's state and their planned checks, in order.

Two binary heaps with lazy deletion, one for predicted-end checks (urgent) and one for the rest,
and one ``__slots__`` object per member: O(log n) per check, a few hundred bytes per member. A
member's live entries carry its current token; planning anew bumps the token, so older entries
become garbage that ``peek`` drops and ``compact`` sweeps.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bot.autopost.observations import Idle, Playing


class CheckKind(enum.Enum):
    """Why a member's next check is planned; ``END``, ``STALE``, ``RESUME`` and ``HOLD``
    checks are time-critical (a resumed track's end is only predicted once a check sees it
    play; the checks a 429 turned away come back first)."""

    FIRST = "first"
    SKIP = "skip"  # while playing: the skip-check cadence
    END = "end"  # at the predicted end of the current item
    STALE = "stale"  # the predicted end showed the old item: look again soon
    PAUSED = "paused"  # paused for a while: backing off like idle
    RESUME = "resume"  # paused lately: checks under 30 s apart look for the resume
    IDLE = "idle"
    ERROR = "error"
    HOLD = "hold"  # after a 429, at its retry time (urgent: it may stand for an end check)
    IN_FLIGHT = "in_flight"  # popped; this is the fallback if its answer never arrives


URGENT_KINDS = frozenset({CheckKind.END, CheckKind.STALE, CheckKind.RESUME, CheckKind.HOLD})


class CheckOutcome(enum.Enum):
    """What the last recorded check found, to tell a repeat (next ladder step) from a change."""

    NONE = enum.auto()
    PLAYING = enum.auto()
    STALE = enum.auto()
    PAUSED = enum.auto()
    IDLE = enum.auto()
    ERROR = enum.auto()


@dataclass(slots=True, eq=False)
class MemberState:
    token: int  # matches the member's live heap entries; older entries are garbage
    due: float
    kind: CheckKind
    rate: float  # routine requests per second this member needs, unstretched (the demand)
    in_flight: bool = False
    purpose: CheckKind = CheckKind.FIRST  # what the check in flight was planned for
    outcome: CheckOutcome = CheckOutcome.NONE
    streak: int = 0
    last_item_key: str | None = None
    paused: bool = False
    paused_since: float = 0.0  # when a check first found the current item paused
    last_seen_at: float | None = None  # when a check last told us what was (not) playing

    def next_step(self, outcome: CheckOutcome, ladder: tuple[float, ...]) -> float:
        """The next step of a back-off ladder; a different outcome than last time restarts it.

        A member idle at its very first check starts at the ceiling: the short first steps are
        for a member who just stopped (or an ad, or a stray 204 mid-track), and someone idle
        since we started following costs the ceiling rate from the first hour on.
        """
        if self.outcome is outcome:
            self.streak += 1
        elif outcome is CheckOutcome.IDLE and self.outcome is CheckOutcome.NONE:
            self.streak = len(ladder)
        else:
            self.streak = 1
        self.outcome = outcome
        return ladder[min(self.streak, len(ladder)) - 1]

    def unseen_since(self, obs: Playing | Idle, now: float, min_play: float) -> float | None:
        """Start of an unobserved stretch long enough to hide a play, if this answer ends one."""
        if self.last_seen_at is None:
            return None
        if isinstance(obs, Playing):
            # (A member's very first answer has no item to compare: any item is a change.)
            if obs.item_key == self.last_item_key and self.outcome is not CheckOutcome.IDLE:
                return None
            # The new item began about ``progress`` ago; before that, since our last look,
            # anything may have played.
            began = now - obs.progress_ms / 1000.0
        elif self.outcome in (CheckOutcome.PLAYING, CheckOutcome.STALE, CheckOutcome.PAUSED):
            began = now
        else:
            return None  # idle then and idle now: assume nothing happened in between
        if began - self.last_seen_at >= min_play:
            return self.last_seen_at
        return None


_Entry = tuple[float, int, int]  # (due, token, member_id)


class CheckQueue:
    """Members' states and their planned checks, urgent ones apart."""

    def __init__(self) -> None:
        self._members: dict[int, MemberState] = {}
        self._urgent: list[_Entry] = []
        self._routine: list[_Entry] = []
        self._tokens = 0

    def get(self, member_id: int) -> MemberState | None:
        return self._members.get(member_id)

    def add(self, member_id: int, state: MemberState) -> None:
        self._members[member_id] = state

    def remove(self, member_id: int) -> MemberState | None:
        """Forget a member (its entries are dropped lazily)."""
        state = self._members.pop(member_id, None)
        if state is not None:
            self._compact()
        return state

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[int]:
        return iter(self._members)

    def states(self) -> Iterable[MemberState]:
        return self._members.values()

    def plan(self, member_id: int, state: MemberState, due: float, kind: CheckKind) -> float:
        """The member's next check, replacing every entry planned before."""
        self._tokens += 1
        state.token = self._tokens
        state.due = due
        state.kind = kind
        heap = self._urgent if kind in URGENT_KINDS else self._routine
        heapq.heappush(heap, (due, self._tokens, member_id))
        self._compact()
        return due

    def plan_end_fallback(self, member_id: int, state: MemberState, due: float) -> None:
        """A second, urgent entry for the planned (routine) check: whichever comes out first
        is the check, and ``pop_due`` counts it as the end check when it is this one."""
        heapq.heappush(self._urgent, (due, state.token, member_id))

    def peek(self, *, urgent: bool) -> tuple[float, int] | None:
        """(due, member) of the next check in one heap, after dropping stale entries."""
        heap = self._urgent if urgent else self._routine
        members = self._members
        while heap:
            due, token, member_id = heap[0]
            state = members.get(member_id)
            if state is not None and state.token == token:
                return due, member_id
            heapq.heappop(heap)
        return None

    def pop_due(
        self, now: float, allowance: float, *, urgent: bool, in_flight_timeout: float
    ) -> list[int]:
        """Up to ``allowance`` members of one heap due at ``now``, now in flight."""
        heap = self._urgent if urgent else self._routine
        popped: list[int] = []
        while len(popped) < allowance:
            top = self.peek(urgent=urgent)
            if top is None or top[0] > now:
                break
            heapq.heappop(heap)
            member_id = top[1]
            state = self._members[member_id]
            popped.append(member_id)
            state.in_flight = True
            # A skip check still waiting for the budget at the item's predicted end comes out
            # of the urgent heap (its fallback entry): it is the end check now.
            end_check = urgent and state.kind is CheckKind.SKIP
            state.purpose = CheckKind.END if end_check else state.kind
            self.plan(member_id, state, now + in_flight_timeout, CheckKind.IN_FLIGHT)
        return popped

    def _compact(self) -> None:
        """Rebuild the heaps when stale entries outnumber live ones (amortised O(1))."""
        live = len(self._members)
        if len(self._urgent) + len(self._routine) <= 3 * live + 1024:
            return
        members = self._members
        for heap in (self._urgent, self._routine):
            heap[:] = [
                entry
                for entry in heap
                if (state := members.get(entry[2])) is not None and state.token == entry[1]
            ]
            heapq.heapify(heap)
