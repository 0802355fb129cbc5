"""The one polling loop: start the checks the scheduler says are due, record what they find.

Interactive ``/np`` keeps priority: its requests are counted into the scheduler's budget
(``PollScheduler.note_request``), polls use at most ``max_concurrent_polls`` connections of the
shared pool, and a poll never holds a slot while it posts. A 429 met by any request holds the
sender; the loop holds polling for as long.
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
from bot.autopost.ports import Fetch, GapListener, SpotifyHold
from bot.autopost.posting import Poster
from bot.autopost.roster import MembershipLookups, Roster
from bot.autopost.settings import AutopostSettings
from bot.errors import BotError
from bot.spotify.models import CurrentlyPlaying

log = logging.getLogger(__name__)


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
        self._fetch = fetch
        self._roster = roster
        self._lookups = lookups
        self._settings = settings
        self._poster = poster
        self._wake = wake
        self._max_in_flight = max_concurrent_polls
        self._sweep_every = sweep_every
        self._hold = hold
        self._gap_listeners: list[GapListener] = []
        self._clock = clock
        self._wall_clock = wall_clock
        self.in_flight = 0
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0
        self._hold_seen = 0.0  # the end of the last hold we logged

    async def run(self) -> None:
        self._next_sweep = self._clock() + self._sweep_every
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
        self.stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    def _turn(self) -> float:
        """Start the polls that are due; return how long to sleep (a change wakes us early)."""
        self._wake.clear()
        scheduler = self._roster.scheduler
        now = self._clock()
        self._sync_hold(now)
        free = self._max_in_flight - self.in_flight
        popped: list[int] = []
        if free > 0:
            popped = scheduler.pop_due(now, limit=free)
            for member_id in popped:
                self.in_flight += 1  # given back by the poll when it has an answer
                self._spawn(self._poll(member_id), f"autopost-poll-{member_id}")
        if now >= self._next_sweep:
            self._lookups.parked(now)
            self._next_sweep = now + self._sweep_every
        timeout = self._next_sweep - now
        if self.in_flight < self._max_in_flight:
            wake = scheduler.next_wakeup(now)
            if wake is not None:
                # A due member left in the heap after a full pop waits for a free slot (the
                # event); never spin on a wakeup that is already past.
                delay = wake - now if popped or wake > now else 0.05
                timeout = min(timeout, max(0.0, delay))
        return timeout

    def _sync_hold(self, now: float) -> None:
        """An interactive request's 429 holds the sender; hold polling for as long."""
        if self._hold is None:
            return
        until = self._hold.hold_until
        if until <= now:
            return
        self._roster.scheduler.hold_all_until(until)
        if until != self._hold_seen:
            self._hold_seen = until
            why = (
                "Spotify's request quota for this app is used up"
                if self._hold.hold_quota_exceeded
                else "Spotify rate-limited us"
            )
            log.warning(
                "auto-post: polling paused for %.0f s: %s", self._hold.hold_remaining(), why
            )

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                self._report_gap(member_id, result.unseen_since)
            if isinstance(observation, Gone):
                self._settings.link_gone(member_id)
                self._roster.unfollow(member_id)
                current = None
        finally:
            self.in_flight -= 1
            self._wake.set()
        if current is not None and not self.stopping:
            try:
                await self._poster.observe(member_id, current, source="spotify")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-post: posting for member %s failed", member_id)

    def add_gap_listener(self, listener: GapListener) -> None:
        """``listener(member, since)`` hears of stretches (since: Unix time) nobody watched."""
        self._gap_listeners.append(listener)

    def _report_gap(self, member_id: int, since: float) -> None:
        """Nobody looked at the member long enough for a whole play to go unseen."""
        unix_since = self._wall_clock() - (self._clock() - since)
        log.debug("auto-post: member %s not observed since %.0f", member_id, unix_since)
        for listener in self._gap_listeners:
            try:
                listener(member_id, unix_since)
            except Exception:  # a metrics or history bug must not stop polling
                log.exception("auto-post: a gap listener failed for member %s", member_id)


def _log_poll_failure(member_id: int, error: Exception, observation: Observation) -> None:
    if isinstance(observation, Gone):
        log.info("auto-post: stopped following member %s (%s)", member_id, error)
    elif isinstance(observation, RateLimited):
        log.debug("auto-post: poll of member %s rate limited", member_id)
    elif isinstance(error, BotError):  # Spotify down, a bad answer, keys changed: expected
        log.info("auto-post: poll of member %s failed: %s", member_id, error)
    else:
        log.warning("auto-post: poll of member %s failed: %r", member_id, error)
