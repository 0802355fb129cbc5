"""The one polling loop: start the checks the scheduler says are due, record what they find.

Interactive ``/np`` keeps priority: its requests are counted into the scheduler's budget
(``PollScheduler.note_request``), polls use at most ``max_concurrent_polls`` connections of the
shared pool, and a poll never holds a slot while it posts. A 429 met by any request holds the
sender (so does the daily budget refusing a poll: ``SpotifyRateLimited`` with the time it
frees); the loop holds polling for as long. :class:`PollLoop` runs the turns; the polls in
flight (``PollTasks``), the hold (``HoldWatch``), the gaps reported (``GapReport``) and the
parked members' lookups (``ParkedSweep``) are each a part of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from bot.aio.tasks import cancel_and_wait
from bot.autopost.observations import (
    Gone,
    Observation,
    RateLimited,
    observation_from_error,
    observation_from_playback,
)
from bot.autopost.ports import Fetch, GapListener, PollScheduling, SpotifyHold
from bot.autopost.posting import Poster
from bot.autopost.roster import MembershipLookups, Roster
from bot.autopost.settings import AutopostSettings
from bot.errors import BotError
from bot.spotify.models import CurrentlyPlaying

log = logging.getLogger(__name__)


class PollTasks:
    """The polls (and their posts) running now: how many hold a connection, the tasks to
    wait for or cancel at a stop, and whether new ones may start."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # polls holding a connection (not their posts)
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        return self.max_in_flight - self.in_flight

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float) -> None:
        """Stop starting polls; give the ones in flight (and their posts) ``grace`` seconds,
        then cancel what is left. No task is left behind."""
        self.stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await cancel_and_wait(self._tasks)
        self._tasks.clear()


class HoldWatch:
    """The sender's app-wide 429 hold (an interactive request's, the daily budget's), handed
    to the scheduler so that polling holds as long; logged once per hold."""

    def __init__(self, hold: SpotifyHold | None, scheduler: PollScheduling) -> None:
        self._hold = hold
        self._scheduler = scheduler
        self._seen = 0.0  # the end of the last hold we logged

    def sync(self, now: float) -> None:
        if self._hold is None:
            return
        until = self._hold.hold_until
        if until <= now:
            return
        self._scheduler.hold_all_until(until)
        if until != self._seen:
            self._seen = until
            why = (
                "Spotify's request quota for this app is used up"
                if self._hold.hold_quota_exceeded
                else "Spotify rate-limited us"
            )
            log.warning(
                "auto-post: polling paused for %.0f s: %s", self._hold.hold_remaining(), why
            )


class GapReport:
    """Tells the listeners of stretches a poll found nobody watched (long enough to hide a
    whole play), in Unix time."""

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._listeners: list[GapListener] = []

    def add_listener(self, listener: GapListener) -> None:
        self._listeners.append(listener)

    def report(self, member_id: int, since: float) -> None:
        unix_since = self._wall_clock() - (self._clock() - since)
        log.debug("auto-post: member %s not observed since %.0f", member_id, unix_since)
        for listener in self._listeners:
            try:
                listener(member_id, unix_since)
            except Exception:  # a metrics or history bug must not stop polling
                log.exception("auto-post: a gap listener failed for member %s", member_id)


class ParkedSweep:
    """Members found in no music guild are looked up again every ``every`` seconds."""

    def __init__(self, lookups: MembershipLookups, every: float) -> None:
        self._lookups = lookups
        self.every = every
        self.next_at = 0.0

    def due(self, now: float) -> float:
        """Look the parked members up if it is time; seconds until the next sweep."""
        if now >= self.next_at:
            self._lookups.parked(now)
            self.next_at = now + self.every
        return self.next_at - now


class PollLoop:
    """Runs the due checks with bounded concurrency and hands their answers on."""

    def __init__(
        self,
        fetch: Fetch,
        roster: Roster,
        lookups: MembershipLookups,
        settings: AutopostSettings,
        poster: Poster,
        wake: asyncio.Event,
        *,
        max_concurrent_polls: int,
        sweep_every: float,
        hold: SpotifyHold | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch, self._roster, self._settings = fetch, roster, settings
        self._poster, self._wake, self._clock = poster, wake, clock
        self._tasks = PollTasks(max_concurrent_polls)
        self._holds = HoldWatch(hold, roster.scheduler)
        self._gaps = GapReport(clock, wall_clock)
        self._sweep = ParkedSweep(lookups, sweep_every)

    @property
    def in_flight(self) -> int:
        return self._tasks.in_flight

    @property
    def stopping(self) -> bool:
        return self._tasks.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._tasks.stopping = value

    async def run(self) -> None:
        self._sweep.next_at = self._clock() + self._sweep.every
        while True:
            try:
                timeout = self._turn()
            except Exception:  # a bug must not end auto-posting for good
                log.exception("auto-post: the polling loop failed; going on in a second")
                timeout = 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def drain(self, grace: float) -> None:
        """Stop starting polls; give the ones in flight (and their posts) ``grace`` seconds,
        then cancel what is left. No task is left behind."""
        await self._tasks.drain(grace)

    def _turn(self) -> float:
        """Start the polls that are due; return how long to sleep (a change wakes us early)."""
        self._wake.clear()
        scheduler = self._roster.scheduler
        tasks = self._tasks
        now = self._clock()
        self._holds.sync(now)
        popped: list[int] = []
        if tasks.free > 0:
            popped = scheduler.pop_due(now, limit=tasks.free)
            for member_id in popped:
                tasks.in_flight += 1  # given back by the poll when it has an answer
                tasks.spawn(self._poll(member_id), f"autopost-poll-{member_id}")
        timeout = self._sweep.due(now)
        if tasks.free > 0:
            wake = scheduler.next_wakeup(now)
            if wake is not None:
                # A due member left in the heap after a full pop waits for a free slot (the
                # event); never spin on a wakeup that is already past.
                delay = wake - now if popped or wake > now else 0.05
                timeout = min(timeout, max(0.0, delay))
        return timeout

    async def _poll(self, member_id: int) -> None:
        current: CurrentlyPlaying | None = None
        try:
            observation: Observation
            try:
                current = await self._fetch(member_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                observation = observation_from_error(exc)
                _log_poll_failure(member_id, exc, observation)
            else:
                observation = observation_from_playback(current)
            result = self._roster.scheduler.record(member_id, observation, self._clock())
            if result.unseen_since is not None:
                self._gaps.report(member_id, result.unseen_since)
            if isinstance(observation, Gone):
                self._settings.link_gone(member_id)
                self._roster.unfollow(member_id)
                current = None
        finally:
            self._tasks.in_flight -= 1
            self._wake.set()
        if current is not None and not self._tasks.stopping:
            try:
                await self._poster.observe(member_id, current, source="spotify")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-post: posting for member %s failed", member_id)

    def add_gap_listener(self, listener: GapListener) -> None:
        """``listener(member, since)`` hears of stretches (since: Unix time) nobody watched."""
        self._gaps.add_listener(listener)


def _log_poll_failure(member_id: int, error: Exception, observation: Observation) -> None:
    if isinstance(observation, Gone):
        log.info("auto-post: stopped following member %s (%s)", member_id, error)
    elif isinstance(observation, RateLimited):
        log.debug("auto-post: poll of member %s rate limited", member_id)
    elif isinstance(error, BotError):  # Spotify down, a bad answer, keys changed: expected
        log.info("auto-post: poll of member %s failed: %s", member_id, error)
    else:
        log.warning("auto-post: poll of member %s failed: %r", member_id, error)
