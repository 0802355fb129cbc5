"""Who is followed: the roster of polled members, and the lookups that keep it right.

A member is followed (polled) when they may be polled (:class:`AutopostSettings`) and are in at
least one guild with a music channel. Membership answers are cached for ``membership_ttl``;
members found in no music guild are parked and looked up again that often. Another source
(presence) may cover a followed member for a while: ``suspend`` takes them off the scheduler
and ``resume`` puts them back.

:class:`Roster` is the small shared record (followed, suspended, parked, the membership cache,
the last item seen per member); :class:`MembershipLookups` owns the queue and the workers that
decide, one member at a time, whether to follow: a member is followed where they are a member
and have not opted out in that guild (the opt-in is read only where they are a member).

Bounds (docs/self-hosting.md, "Memory per member"): linked members L, members who opted in
somewhere O, music guilds G. Followed, suspended, parked: <= L (only linked members are
polled); the last items and the lookup queue: <= L + O; the membership cache: <= (L + O) x G.
Members known only through presence who never opted in get no entry anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from bot.autopost.ports import DiscordSide, DiscordUnavailable, PollScheduling
from bot.autopost.settings import AutopostSettings

log = logging.getLogger(__name__)


class Roster:
    """Followed, suspended and parked members, cached membership, the last item seen."""

    def __init__(
        self,
        scheduler: PollScheduling,
        wake: asyncio.Event,
        *,
        membership_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.membership_ttl = membership_ttl
        self._wake = wake  # set when the scheduler gains a member: the poll loop replans
        self._clock = clock
        self._followed: set[int] = set()  # polled unless suspended
        self._suspended: set[int] = set()  # another source (presence) covers them
        self._parked: dict[int, float] = {}  # in no music guild when last looked: since when
        self._membership: dict[tuple[int, int], tuple[bool, float]] = {}  # (guild, member)
        self._observed: dict[int, str] = {}  # member -> last item seen

    def per_member_state(self) -> dict[str, Collection[object]]:
        """Every per-member structure, by name (keys: member ids, or (guild, member))."""
        return {
            "followed": self._followed,
            "suspended (presence-covered)": self._suspended,
            "parked": self._parked,
            "guild membership": self._membership,
            "last item seen": self._observed,
        }

    # --- following ---------------------------------------------------------------------------

    def is_followed(self, member_id: int) -> bool:
        return member_id in self._followed

    @property
    def followed_count(self) -> int:
        return len(self._followed)

    def follow(self, member_id: int) -> None:
        self._parked.pop(member_id, None)
        self._followed.add(member_id)
        if member_id not in self._suspended and member_id not in self.scheduler:
            self.scheduler.add(member_id, self._clock())
            self._wake.set()

    def unfollow(self, member_id: int) -> None:
        self._followed.discard(member_id)
        self._parked.pop(member_id, None)
        self._observed.pop(member_id, None)
        self.scheduler.remove(member_id)

    def park(self, member_id: int) -> None:
        """In no music guild: not polled; looked up again after ``membership_ttl``."""
        self.unfollow(member_id)
        self._parked[member_id] = self._clock()

    def parked_due(self, now: float) -> list[int]:
        """Parked members whose last lookup is ``membership_ttl`` old (restarting the wait)."""
        due = [m for m, since in self._parked.items() if now - since >= self.membership_ttl]
        for member_id in due:
            self._parked[member_id] = now
        return due

    def suspend(self, member_id: int) -> None:
        """Stop polling a followed member while another source (presence) covers them."""
        self._suspended.add(member_id)
        self.scheduler.remove(member_id)

    def resume(self, member_id: int) -> None:
        """Poll again when the other source went away; a no-op unless suspended."""
        if member_id not in self._suspended:
            return
        self._suspended.discard(member_id)
        # What was seen before may be stale (another process posted meanwhile): the first
        # poll decides again per channel, from the last posts.
        self._observed.pop(member_id, None)
        if member_id in self._followed and member_id not in self.scheduler:
            self.scheduler.add(member_id, self._clock())
            self._wake.set()

    def stop_following(self, member_id: int) -> None:
        """Unfollowed, and no longer suspended either (went private, unlinked): the
        scheduler keeps nothing of them."""
        self.unfollow(member_id)
        self.scheduler.forget(member_id)
        self._suspended.discard(member_id)

    def forget(self, member_id: int, guild_ids: list[int]) -> None:
        """An unlinked member: not followed, and their cached membership dropped."""
        self.stop_following(member_id)
        for guild_id in guild_ids:
            self._membership.pop((guild_id, member_id), None)

    # --- membership cache --------------------------------------------------------------------

    def known_absent(self, guild_id: int, member_id: int) -> bool:
        """Not in the guild when last looked, within ``membership_ttl``."""
        cached = self._membership.get((guild_id, member_id))
        return (
            cached is not None
            and not cached[0]
            and self._clock() - cached[1] <= self.membership_ttl
        )

    def cached_membership(self, guild_id: int, member_id: int) -> bool | None:
        cached = self._membership.get((guild_id, member_id))
        if cached is not None and self._clock() - cached[1] <= self.membership_ttl:
            return cached[0]
        return None

    def note_membership(self, guild_id: int, member_id: int, present: bool) -> None:
        self._membership[guild_id, member_id] = (present, self._clock())

    # --- the last item seen (the posting rules' first duplicate check) ----------------------

    def claim_item(self, member_id: int, key: str) -> bool:
        """Mark ``key`` as the member's current item; False if it already was. No await
        between the check and the mark, so concurrent sources never both claim it."""
        if self._observed.get(member_id) == key:
            return False
        self._observed[member_id] = key
        return True

    def is_current_item(self, member_id: int, key: str) -> bool:
        return self._observed.get(member_id) == key

    def release_item(self, member_id: int, key: str) -> None:
        """Let the next observation of ``key`` try again (a post failed somewhere)."""
        if self._observed.get(member_id) == key:
            del self._observed[member_id]


class MembershipLookups:
    """The queue of members whose following is to be decided, and the workers that do it."""

    def __init__(
        self,
        roster: Roster,
        settings: AutopostSettings,
        discord: DiscordSide,
        *,
        workers: int,
    ) -> None:
        self._roster = roster
        self._settings = settings
        self._discord = discord
        self._worker_count = workers
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self.workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.workers = [
            asyncio.create_task(self._work(), name=f"autopost-lookup-{index}")
            for index in range(self._worker_count)
        ]

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the workers; return them for the caller to await."""
        workers, self.workers = self.workers, []
        for task in workers:
            task.cancel()
        return workers

    @property
    def queued(self) -> Collection[int]:
        return self._queued

    async def join(self) -> None:
        """Until every queued lookup is done."""
        await self._queue.join()

    def queue(self, member_id: int) -> None:
        if member_id not in self._queued:
            self._queued.add(member_id)
            self._queue.put_nowait(member_id)

    def everyone(self) -> None:
        """Decide again for every linked member (a channel changed)."""
        for member_id in sorted(self._settings.linked):
            self.queue(member_id)

    def parked(self, now: float) -> None:
        for member_id in self._roster.parked_due(now):
            self.queue(member_id)

    async def _work(self) -> None:
        while True:
            member_id = await self._queue.get()
            self._queued.discard(member_id)
            try:
                await self._refresh(member_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-post: could not decide whether to follow member %s", member_id)
            finally:
                self._queue.task_done()

    async def _refresh(self, member_id: int) -> None:
        """Follow the member if eligible, in some music guild and not opted out there;
        otherwise park them."""
        roster, settings = self._roster, self._settings
        if not settings.eligible_for_polling(member_id):
            roster.unfollow(member_id)
            return
        present = False
        for guild_id in list(settings.channels):
            try:
                # Membership first: the opt-in is read only where they are a member.
                if await self._is_member(guild_id, member_id) and await settings.may_post_in(
                    guild_id, member_id
                ):
                    present = True
                    break
            except DiscordUnavailable:
                present = True  # cannot tell now: poll; posting looks them up again anyway
                break
        if not settings.eligible_for_polling(member_id):  # changed while we looked
            roster.unfollow(member_id)
        elif present:
            roster.follow(member_id)
        else:
            roster.park(member_id)

    async def _is_member(self, guild_id: int, member_id: int) -> bool:
        cached = self._roster.cached_membership(guild_id, member_id)
        if cached is not None:
            return cached
        view = await self._discord.fetch_member(guild_id, member_id)
        self._roster.note_membership(guild_id, member_id, view is not None)
        return view is not None


@dataclass(frozen=True, slots=True)
class Following:
    """Who is followed, as the parts that post and poll read it: the settings (channels,
    links, opt-ins), the roster, and the lookups that keep it right."""

    settings: AutopostSettings
    roster: Roster
    lookups: MembershipLookups
