"""The auto-poster: who is followed, one polling loop for all of them, and the posting rules.

Sources feed one entry point, :meth:`AutopostService.observe` (``source="spotify"`` from the
polling loop here, ``source="presence"`` from a Discord presence listener), so every posting
rule lives in one place:

* An item (track or episode id; the URI for a local file) is posted when it differs from the
  member's last observed item. Pause, resume and seek keep the item, so they post nothing; a
  replay after another item is a new item. A new item first seen paused is posted at once
  (shown paused): it may never play again before the next one, and it was current.
* Never the same item twice in a row per member and channel: the last post per (member,
  channel) is kept in memory and in the database (``Storage.record_post``), so a restart does
  not repost what is playing.
* Rapid skips: when the member's previous post in that channel is under ``edit_window`` old
  and is still the channel's last message (``GET /channels/{id}``: the bot has no message
  intent, so discord.py's cached ``last_message_id`` never moves), it is edited instead.
* The duplicate check and its mark happen with no ``await`` in between, and a member's posts
  run one at a time (a per-member lock), so concurrent sources (a poll, the same presence
  update from several guilds) never post twice.
* Before each post the member is looked up in the guild again (``fetch_member``; the guilds
  intent alone never tells us someone left), and the member must still be linked or opted in:
  leaving, unlinking or opting out stops posts at once.
* A deleted channel or a lost permission (seen in the cache, or as 404 10003 / 403
  50001/50013 on a post) turns auto-posting off for that guild, with a log line and a notice
  the admin sees on their next ``/autopost``.

Who is polled: linked members who did not opt out (``get_autopost_opt_in`` None means in) and
are in at least one guild with a music channel. Interactive ``/np`` keeps priority: its
requests are counted into the scheduler's budget (``PollScheduler.note_request``), polls use at
most ``max_concurrent_polls`` connections of the shared pool, and a poll never holds a slot
while it posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bot.autopost.scheduler import (
    Gone,
    Observation,
    PollScheduler,
    RateLimited,
    RecordResult,
    SchedulerConfig,
    observation_from_error,
    observation_from_playback,
)
from bot.embeds import NowPlayingMessage, render_now_playing
from bot.errors import BotError
from bot.keyed_locks import KeyedLocks, LockEntry
from bot.spotify.models import CurrentlyPlaying, Playback
from bot.storage import LastPost, Storage

log = logging.getLogger(__name__)

Source = Literal["spotify", "presence"]
PostAction = Literal["posted", "edited"]
# (action, seconds from the item's start to the post): the metrics hook.
PostHook = Callable[[PostAction, float], None]
Fetch = Callable[[int], Awaitable[CurrentlyPlaying]]


# --- what the service needs from its surroundings ------------------------------------------


class PollScheduling(Protocol):
    """The part of :class:`PollScheduler` the loop uses (a benchmark swaps in a baseline)."""

    def add(self, member_id: int, now: float) -> float: ...

    def remove(self, member_id: int) -> bool: ...

    def __contains__(self, member_id: object) -> bool: ...

    def __len__(self) -> int: ...

    def pop_due(self, now: float, limit: int | None = None) -> list[int]: ...

    def next_wakeup(self, now: float) -> float | None: ...

    def record(self, member_id: int, observation: Observation, now: float) -> RecordResult: ...

    def hold_all_until(self, until: float) -> None: ...


@dataclass(frozen=True, slots=True)
class MemberView:
    """How a member is shown in one guild (nickname and avatar are per guild)."""

    display_name: str
    avatar_url: str | None = None


class ChannelState(enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # guild not (yet) in the cache, or an outage: skip quietly
    DELETED = "deleted"
    MISSING_PERMISSIONS = "missing_permissions"


@dataclass(frozen=True, slots=True)
class ChannelCheck:
    state: ChannelState
    name: str | None = None
    missing: tuple[str, ...] = ()  # permission names, e.g. ("Send Messages", "Embed Links")


class ChannelUnusable(Exception):
    """Discord refused a channel for good: deleted (10003) or no access (50001/50013)."""

    def __init__(self, reason: Literal["deleted", "forbidden"], detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DiscordUnavailable(Exception):
    """A Discord request failed in a way that may pass (5xx, timeout, rate limit)."""


class DiscordSide(Protocol):
    """Everything the service asks of Discord; ``bot.autopost.discord_side`` implements it."""

    async def wait_until_ready(self) -> None: ...

    def check_channel(self, guild_id: int, channel_id: int) -> ChannelCheck: ...

    async def fetch_member(self, guild_id: int, user_id: int) -> MemberView | None:
        """The member as they are now; None when they are not in the guild."""
        ...

    async def send(self, channel_id: int, message: NowPlayingMessage) -> int:
        """Post; return the new message's id. Raises ChannelUnusable or DiscordUnavailable."""
        ...

    async def edit(self, channel_id: int, message_id: int, message: NowPlayingMessage) -> bool:
        """Replace a message's content; False when the message no longer exists."""
        ...

    async def last_message_id(self, channel_id: int) -> int | None: ...


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutopostConfig:
    """Tuning of the service around the scheduler. Durations are seconds.

    * ``max_concurrent_polls``: polls in flight at once. The shared aiohttp connector allows 100
      connections; polling stays far below so an interactive ``/np`` always finds one.
    * ``edit_window``: a member's post younger than this, still the channel's last message, is
      edited for their next item instead of followed by a new post (rapid skips).
    * ``membership_ttl``: how long a guild-membership lookup (present or not) is trusted for
      deciding whom to poll, and how often members found in no music guild are looked up
      again. Posting always looks a present member up afresh.
    * ``membership_lookups``: concurrent member lookups while (re)building who is followed.
    * ``shutdown_grace``: how long ``stop`` lets polls and posts in flight finish.
    """

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_concurrent_polls: int = 8
    edit_window: float = 30.0
    membership_ttl: float = 600.0
    membership_lookups: int = 4
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        if self.max_concurrent_polls < 1:
            raise ValueError("max_concurrent_polls must be at least 1")
        if self.membership_lookups < 1:
            raise ValueError("membership_lookups must be at least 1")
        if self.edit_window < 0 or self.membership_ttl <= 0:
            raise ValueError("edit_window must not be negative, membership_ttl must be positive")


# --- the service ---------------------------------------------------------------------------


class AutopostService:
    """Follows members, polls Spotify for them, and posts their new items. See the module doc.

    Lifecycle: ``await start()`` (returns at once; the loop waits for Discord to be ready),
    ``await stop()`` (lets posts in flight finish, cancels the rest, leaves no task behind).
    """

    def __init__(
        self,
        storage: Storage,
        fetch: Fetch,
        discord: DiscordSide,
        *,
        scheduler: PollScheduling | None = None,
        config: AutopostConfig | None = None,
        hold_until: Callable[[], float] | None = None,
        on_post: PostHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or AutopostConfig()
        self.scheduler: PollScheduling = (
            scheduler if scheduler is not None else PollScheduler(self.config.scheduler)
        )
        self._storage = storage
        self._fetch = fetch
        self._discord = discord
        self._hold_until = hold_until
        self._on_post = on_post
        self._clock = clock
        self._wall_clock = wall_clock

        self._channels: dict[int, int] = {}  # guild id -> music channel id
        self._linked: set[int] = set()
        self._choices: dict[int, bool | None] = {}  # stored opt-in choice; None: never chose
        self._followed: set[int] = set()  # polled unless suspended
        self._suspended: set[int] = set()  # another source (presence) covers them
        self._parked: dict[int, float] = {}  # in no music guild when last looked: since when
        self._membership: dict[tuple[int, int], tuple[bool, float]] = {}  # (guild, member)
        self._observed: dict[int, str] = {}  # member -> last item seen
        self._last_posts: dict[tuple[int, int], LastPost] = {}  # (member, channel)
        self._member_locks: KeyedLocks[int, LockEntry] = KeyedLocks(LockEntry)
        self._settings_lock = asyncio.Lock()

        self._lookups: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._stopping = False
        self._next_sweep = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored state and start the loop (it waits for Discord to be ready)."""
        if self._loop_task is not None:
            return
        self._channels = await self._storage.list_music_channels()
        self._last_posts = {
            (post.discord_user_id, post.channel_id): post
            for post in await self._storage.load_last_posts()
        }
        self._loop_task = asyncio.create_task(self._run(), name="autopost-loop")

    async def stop(self) -> None:
        """Stop polling, give posts in flight ``shutdown_grace`` to finish (a post whose record
        is lost would be posted again after the restart), then cancel whatever is left."""
        self._stopping = True
        first = [t for t in (self._loop_task, *self._workers) if t is not None]
        for task in first:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.config.shutdown_grace)
        tasks = [*first, *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loop_task = None
        self._workers.clear()
        self._tasks.clear()

    async def wait_until_ready(self) -> None:
        """Until the stored members are loaded and queued for their first lookups."""
        await self._ready.wait()

    async def settle(self) -> None:
        """Until every queued membership lookup is done (tests and benchmarks)."""
        await self._ready.wait()
        await self._lookups.join()

    # --- what sources call ----------------------------------------------------------------

    async def observe(
        self, member_id: int, playback: CurrentlyPlaying, *, source: Source = "spotify"
    ) -> None:
        """A new fact about what a member plays, from any source: post it if it is new."""
        if not isinstance(playback, Playback) or playback.item is None:
            return
        if not await self._may_post(member_id):
            return
        key = playback.item.key
        # Check and mark with no await in between: a concurrent source sees the mark.
        if self._observed.get(member_id) == key:
            return
        self._observed[member_id] = key
        async with self._member_locks.hold(member_id):
            if self._observed.get(member_id) != key:
                return  # a newer item came in while we waited: that one is posted instead
            posted_everywhere = await self._post_everywhere(member_id, playback, key, source)
        if not posted_everywhere and self._observed.get(member_id) == key:
            # Let the next observation of this item try again where it failed.
            del self._observed[member_id]

    def suspend_polling(self, member_id: int) -> None:
        """Stop polling a followed member while another source (presence) covers them."""
        self._suspended.add(member_id)
        self.scheduler.remove(member_id)

    def resume_polling(self, member_id: int) -> None:
        """Poll again when the other source went away (e.g. the presence lost Spotify).
        A no-op for a member who was not suspended."""
        if member_id not in self._suspended:
            return
        self._suspended.discard(member_id)
        if member_id in self._followed and member_id not in self.scheduler:
            self.scheduler.add(member_id, self._clock())
            self._wake.set()

    # --- what commands and other services call ------------------------------------------

    def is_linked(self, member_id: int) -> bool:
        return member_id in self._linked

    def is_followed(self, member_id: int) -> bool:
        return member_id in self._followed

    def music_channel(self, guild_id: int) -> int | None:
        return self._channels.get(guild_id)

    async def set_channel(self, guild_id: int, channel_id: int) -> None:
        async with self._settings_lock:
            await self._storage.set_music_channel(guild_id, channel_id)
            previous = self._channels.get(guild_id)
            self._channels[guild_id] = channel_id
            if previous is not None and previous != channel_id:
                self._forget_channel_posts(previous)
        log.info("auto-post channel of guild %s set to %s", guild_id, channel_id)
        self._look_up_everyone()

    async def turn_off(self, guild_id: int) -> bool:
        """``/autopost off``. False when it was not on."""
        async with self._settings_lock:
            previous = self._channels.pop(guild_id, None)
            if previous is None:
                return False
            self._forget_channel_posts(previous)
            await self._storage.set_music_channel(guild_id, None)
        log.info("auto-post turned off in guild %s by an admin", guild_id)
        self._look_up_everyone()
        return True

    async def take_notice(self, guild_id: int) -> str | None:
        """The notice left when auto-posting turned itself off, cleared once read."""
        settings = await self._storage.get_guild_settings(guild_id)
        if settings is None or settings.autopost_notice is None:
            return None
        await self._storage.clear_autopost_notice(guild_id)
        return settings.autopost_notice

    async def set_opt_in(self, member_id: int, enabled: bool) -> None:
        """``/autopost me``: stored, and applied at once."""
        self._choices[member_id] = enabled
        if not enabled:
            self._unfollow(member_id)  # before the write: posts in flight stop now
        await self._storage.set_autopost_opt_in(member_id, enabled)
        if enabled:
            self._queue_lookup(member_id)

    async def channel_deleted(
        self, guild_id: int, channel_id: int, *, name: str | None = None
    ) -> None:
        """CHANNEL_DELETE from the gateway."""
        where = f"#{name}" if name else "the music channel"
        await self._disable(guild_id, channel_id, f"{where} was deleted")

    async def member_linked(self, member_id: int, *_: object) -> None:
        """LinkService linked listener."""
        self._linked.add(member_id)
        self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)
        self._queue_lookup(member_id)

    def member_unlinked(self, member_id: int) -> None:
        """LinkService unlinked listener: their settings and last posts are gone too."""
        self._linked.discard(member_id)
        self._choices.pop(member_id, None)
        self._unfollow(member_id)
        for guild_id in self._channels:
            self._membership.pop((guild_id, member_id), None)
        for key in [key for key in self._last_posts if key[0] == member_id]:
            del self._last_posts[key]

    # --- introspection (tests, benchmarks, metrics) -------------------------------------

    @property
    def followed_count(self) -> int:
        return len(self._followed)

    @property
    def polls_in_flight(self) -> int:
        return self._in_flight

    def last_post(self, member_id: int, channel_id: int) -> LastPost | None:
        return self._last_posts.get((member_id, channel_id))

    # --- who is followed ------------------------------------------------------------------

    def _eligible_for_polling(self, member_id: int) -> bool:
        return (
            bool(self._channels)
            and member_id in self._linked
            and self._choices.get(member_id) is not False
        )

    def _may_post_now(self, member_id: int) -> bool:
        """Linked and not opted out, or opted in (members known only through presence)."""
        choice = self._choices.get(member_id)
        if member_id in self._linked:
            return choice is not False
        return choice is True

    async def _may_post(self, member_id: int) -> bool:
        if member_id not in self._linked and member_id not in self._choices:
            self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)
        return self._may_post_now(member_id)

    def _follow(self, member_id: int) -> None:
        self._parked.pop(member_id, None)
        self._followed.add(member_id)
        if member_id not in self._suspended and member_id not in self.scheduler:
            self.scheduler.add(member_id, self._clock())
            self._wake.set()

    def _unfollow(self, member_id: int) -> None:
        self._followed.discard(member_id)
        self._parked.pop(member_id, None)
        self._observed.pop(member_id, None)
        self.scheduler.remove(member_id)

    def _queue_lookup(self, member_id: int) -> None:
        if member_id not in self._queued:
            self._queued.add(member_id)
            self._lookups.put_nowait(member_id)

    def _look_up_everyone(self) -> None:
        for member_id in sorted(self._linked):
            self._queue_lookup(member_id)

    async def _lookup_worker(self) -> None:
        while True:
            member_id = await self._lookups.get()
            self._queued.discard(member_id)
            try:
                await self._refresh_member(member_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-post: could not decide whether to follow member %s", member_id)
            finally:
                self._lookups.task_done()

    async def _refresh_member(self, member_id: int) -> None:
        """Follow the member if eligible and in some music guild; otherwise park them."""
        if not self._eligible_for_polling(member_id):
            self._unfollow(member_id)
            return
        present = False
        for guild_id in list(self._channels):
            try:
                if await self._is_member(guild_id, member_id, self.config.membership_ttl):
                    present = True
                    break
            except DiscordUnavailable:
                present = True  # cannot tell now: poll; posting looks them up again anyway
                break
        if not self._eligible_for_polling(member_id):  # changed while we looked
            self._unfollow(member_id)
        elif present:
            self._follow(member_id)
        else:
            self._unfollow(member_id)
            self._parked[member_id] = self._clock()

    async def _is_member(self, guild_id: int, member_id: int, max_age: float) -> bool:
        cached = self._membership.get((guild_id, member_id))
        if cached is not None and self._clock() - cached[1] <= max_age:
            return cached[0]
        view = await self._discord.fetch_member(guild_id, member_id)
        self._membership[guild_id, member_id] = (view is not None, self._clock())
        return view is not None

    def _look_up_parked(self, now: float) -> None:
        ttl = self.config.membership_ttl
        for member_id, since in list(self._parked.items()):
            if now - since >= ttl:
                self._parked[member_id] = now
                self._queue_lookup(member_id)

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._discord.wait_until_ready()
        self._linked = set(await self._storage.list_active_user_ids())
        for member_id in self._linked:
            self._choices[member_id] = await self._storage.get_autopost_opt_in(member_id)
        self._workers = [
            asyncio.create_task(self._lookup_worker(), name=f"autopost-lookup-{index}")
            for index in range(self.config.membership_lookups)
        ]
        self._look_up_everyone()
        self._ready.set()
        log.info(
            "auto-post started: %d linked members, %d music channels",
            len(self._linked),
            len(self._channels),
        )
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

    @property
    def _sweep_every(self) -> float:
        return min(60.0, self.config.membership_ttl / 4)

    def _turn(self) -> float:
        """Start the polls that are due; return how long to sleep (a change wakes us early)."""
        self._wake.clear()
        now = self._clock()
        self._sync_hold(now)
        free = self.config.max_concurrent_polls - self._in_flight
        popped: list[int] = []
        if free > 0:
            popped = self.scheduler.pop_due(now, limit=free)
            for member_id in popped:
                self._in_flight += 1  # given back by the poll when it has an answer
                self._spawn(self._poll(member_id), f"autopost-poll-{member_id}")
        if now >= self._next_sweep:
            self._look_up_parked(now)
            self._next_sweep = now + self._sweep_every
        timeout = self._next_sweep - now
        if self._in_flight < self.config.max_concurrent_polls:
            wake = self.scheduler.next_wakeup(now)
            if wake is not None:
                # A due member left in the heap after a full pop waits for a free slot (the
                # event); never spin on a wakeup that is already past.
                delay = wake - now if popped or wake > now else 0.05
                timeout = min(timeout, max(0.0, delay))
        return timeout

    def _sync_hold(self, now: float) -> None:
        """An interactive request's 429 holds the sender; hold polling for as long."""
        if self._hold_until is not None:
            until = self._hold_until()
            if until > now:
                self.scheduler.hold_all_until(until)

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
                self._log_poll_failure(member_id, exc, observation)
            else:
                observation = observation_from_playback(current)
            self.scheduler.record(member_id, observation, self._clock())
            if isinstance(observation, Gone):
                self._linked.discard(member_id)
                self._unfollow(member_id)
                current = None
        finally:
            self._in_flight -= 1
            self._wake.set()
        if current is not None and not self._stopping:
            try:
                await self.observe(member_id, current, source="spotify")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auto-post: posting for member %s failed", member_id)

    @staticmethod
    def _log_poll_failure(member_id: int, error: Exception, observation: Observation) -> None:
        if isinstance(observation, Gone):
            log.info("auto-post: stopped following member %s (%s)", member_id, error)
        elif isinstance(observation, RateLimited):
            log.debug("auto-post: poll of member %s rate limited", member_id)
        elif isinstance(error, BotError):  # Spotify down, a bad answer, keys changed: expected
            log.info("auto-post: poll of member %s failed: %s", member_id, error)
        else:
            log.warning("auto-post: poll of member %s failed: %r", member_id, error)

    # --- posting --------------------------------------------------------------------------

    async def _post_everywhere(
        self, member_id: int, playback: Playback, key: str, source: Source
    ) -> bool:
        """Post in every music channel that has not shown ``key`` last. False: retry later."""
        targets = [
            (guild_id, channel_id)
            for guild_id, channel_id in self._channels.items()
            if (last := self._last_posts.get((member_id, channel_id))) is None
            or last.item_key != key
        ]
        if not targets:
            return True
        results = await asyncio.gather(
            *(self._post_in(member_id, g, c, playback, key, source) for g, c in targets)
        )
        return all(results)

    async def _post_in(
        self,
        member_id: int,
        guild_id: int,
        channel_id: int,
        playback: Playback,
        key: str,
        source: Source,
    ) -> bool:
        check = self._discord.check_channel(guild_id, channel_id)
        if check.state is ChannelState.UNAVAILABLE:
            return True
        if check.state is not ChannelState.OK:
            await self._disable_for(guild_id, channel_id, check)
            return True
        cached = self._membership.get((guild_id, member_id))
        if (
            cached is not None
            and not cached[0]
            and self._clock() - cached[1] <= self.config.membership_ttl
        ):
            return True  # not in this guild when last looked
        try:
            member = await self._discord.fetch_member(guild_id, member_id)
        except DiscordUnavailable as exc:
            log.info(
                "auto-post: cannot look up member %s in guild %s: %s", member_id, guild_id, exc
            )
            return False
        self._membership[guild_id, member_id] = (member is not None, self._clock())
        if member is None:
            self._queue_lookup(member_id)  # left: maybe in no music guild any more
            return True
        # Re-check everything the awaits may have changed: opt-out, unlink, channel change.
        if not self._may_post_now(member_id) or self._channels.get(guild_id) != channel_id:
            return True
        last = self._last_posts.get((member_id, channel_id))
        if last is not None and last.item_key == key:
            return True
        now_wall = self._wall_clock()
        message = render_now_playing(
            playback,
            member_name=member.display_name,
            member_avatar_url=member.avatar_url,
            now=now_wall,
        )
        try:
            action, message_id = await self._send_or_edit(channel_id, message, last, now_wall)
        except ChannelUnusable as exc:
            reason = (
                "the music channel was deleted"
                if exc.reason == "deleted"
                else "I lost access to the music channel (I need View Channel, Send Messages "
                "and Embed Links there)"
            )
            await self._disable(guild_id, channel_id, reason)
            return True
        except DiscordUnavailable as exc:
            log.info("auto-post: posting in channel %s failed: %s", channel_id, exc)
            return False
        post = LastPost(member_id, channel_id, key, message_id, self._wall_clock())
        if not self._may_post_now(member_id) or self._channels.get(guild_id) != channel_id:
            return True  # unlinked or turned off while we posted: keep nothing about it
        self._last_posts[member_id, channel_id] = post
        await self._storage.record_post(post)
        self._report(action, playback, source)
        return True

    async def _send_or_edit(
        self, channel_id: int, message: NowPlayingMessage, last: LastPost | None, now: float
    ) -> tuple[PostAction, int]:
        if last is not None and now - last.posted_at < self.config.edit_window:
            try:
                latest = await self._discord.last_message_id(channel_id)
                if latest == last.message_id and await self._discord.edit(
                    channel_id, last.message_id, message
                ):
                    return "edited", last.message_id
            except DiscordUnavailable as exc:
                log.debug("auto-post: cannot edit in channel %s (%s); posting", channel_id, exc)
        return "posted", await self._discord.send(channel_id, message)

    def _report(self, action: PostAction, playback: Playback, source: Source) -> None:
        if self._on_post is None:
            return
        lag = math.nan
        if playback.progress_ms is not None and playback.received_at:
            started = playback.received_at - playback.progress_ms / 1000.0
            lag = max(0.0, self._wall_clock() - started)
        try:
            self._on_post(action, lag)
        except Exception:  # a metrics bug must not stop posting
            log.exception("auto-post: on_post hook failed (%s from %s)", action, source)

    # --- channels that stopped working ----------------------------------------------------

    async def _disable_for(self, guild_id: int, channel_id: int, check: ChannelCheck) -> None:
        where = f"#{check.name}" if check.name else "the music channel"
        if check.state is ChannelState.DELETED:
            await self._disable(guild_id, channel_id, f"{where} was deleted")
        else:
            missing = ", ".join(check.missing) or "some"
            await self._disable(guild_id, channel_id, f"I lost the {missing} permission in {where}")

    async def _disable(self, guild_id: int, channel_id: int, reason: str) -> None:
        async with self._settings_lock:
            if self._channels.get(guild_id) != channel_id:
                return  # already off, or moved to another channel meanwhile
            del self._channels[guild_id]
            self._forget_channel_posts(channel_id)
            notice = (
                f"Auto-posting was turned off <t:{int(self._wall_clock())}:f> because {reason}. "
                "Run /autopost channel to choose a channel again."
            )
            await self._storage.disable_autopost(guild_id, notice)
        log.warning("auto-post turned off in guild %s: %s", guild_id, reason)
        self._look_up_everyone()

    def _forget_channel_posts(self, channel_id: int) -> None:
        for key in [key for key in self._last_posts if key[1] == channel_id]:
            del self._last_posts[key]
