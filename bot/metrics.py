"""Prometheus metrics, served at ``GET /metrics`` only when METRICS_ENABLED is true.

One :class:`Metrics` per application, each with its own ``CollectorRegistry`` (never the
process-wide default one), so tests and several apps in one process never collide. When
METRICS_ENABLED is off no ``Metrics`` exists at all: ``Services.metrics`` is None and every
hook below is simply not installed.

Families (all prefixed ``nowplaying_``):

* ``commands_total{command,outcome}``: slash commands; outcome ``ok``, ``user_error`` (an
  expected refusal the member was told about, e.g. not linked) or ``error`` (a bug);
* ``spotify_requests_total{endpoint,status}``: every HTTP attempt sent to Spotify; status is
  the HTTP status, ``connection_error`` or ``timeout``;
* ``token_refreshes_total{outcome}``: members' token refreshes, ``ok``, ``invalid_grant``
  (the link is now broken) or ``error``;
* ``spotify_rate_limit_holds_total``: app-wide holds started by a real 429 answer;
* ``autopost_lag_seconds`` (histogram): auto-post detection latency;
* ``autopost_posts_total{action}``: auto-post messages, ``posted`` or ``edited``;
* ``autopost_skip_check_stretch`` (gauge): how much the auto-poster's routine (skip) checks
  are stretched to fit the Spotify budget (1: not at all), read at scrape time;
* ``autopost_unseen_gaps_total``: poll answers that ended a stretch nobody observed, long
  enough for a whole play to go unseen (a budget or hold too tight for the listeners);
* ``spotify_requests_in_window`` (gauge): requests sent to Spotify in the last 30 s (compare
  with SPOTIFY_REQUEST_BUDGET); ``spotify_hold_seconds`` (gauge): what is left of a 429 hold;
* ``spotify_daily_calls{purpose}`` (gauge): Web API calls in the last 24 hours, every process
  together, by purpose (``poll``, ``command``, ``recently_played``, ``linking``);
  ``spotify_daily_token_requests``: the accounts service's, counted apart (not limited);
  ``spotify_daily_budget``: the effective budget (+Inf: no daily limit) and
  ``spotify_daily_budget_learned`` (1 when a QUOTA_EXCEEDED made it smaller than the setting);
  ``spotify_daily_polling_left``: what polling may still spend; ``spotify_quota_hold_seconds``:
  what is left of the daily hold (0: none), all read at scrape time from memory;
* ``linked_members`` (gauge): members with an active link, a cached count;
* ``gateway_latency_seconds`` (gauge): Discord heartbeat latency, read at scrape time.

For the auto-poster (``Services.metrics``, None when metrics are off)::

    if services.metrics is not None:
        services.metrics.observe_autopost_lag(seconds)   # change seen -> detected, in seconds
        services.metrics.autopost_post("posted")         # or "edited"

A scrape never touches the database: ``linked_members`` is a cached count, refreshed by
:meth:`Metrics.linked_members_refresher` once a minute and right after a link, an unlink or a
refresh refused with ``invalid_grant`` (the events that change it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.aio.tasks import cancel_and_wait
from bot.autopost.ports import PostAction
from bot.members.events import MemberEvents
from bot.spotify.budget import DailyBudget
from bot.spotify.http import PURPOSES, Purpose

log = logging.getLogger(__name__)

PREFIX: Final = "nowplaying"
REFRESH_OUTCOMES: Final = ("ok", "invalid_grant", "error")
AUTOPOST_ACTIONS: Final = ("posted", "edited")
# Detection latency of a track change: polls land at a track's predicted end or every few
# tens of seconds for skips; anything past a few minutes is "broken", not "slow".
AUTOPOST_LAG_BUCKETS: Final = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300)
LINKED_MEMBERS_REFRESH_SECONDS: Final = 60.0
DAILY_GAUGES: Final = {
    "daily_token_requests": "Spotify token requests in the last 24 hours (not limited).",
    "daily_budget": "The effective daily budget of Web API calls (+Inf: no daily limit).",
    "daily_budget_learned": "1 when a QUOTA_EXCEEDED made the daily budget smaller than set.",
    "daily_polling_left": "Web API calls polling may still make in the rolling 24 hours.",
    "quota_hold_seconds": "Seconds left of the hold after the daily quota ran out (0: none).",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.commands = Counter(
            f"{PREFIX}_commands",
            "Slash commands handled, by command and outcome (ok, user_error, error).",
            ["command", "outcome"],
            registry=registry,
        )
        self.spotify_requests = Counter(
            f"{PREFIX}_spotify_requests",
            "HTTP attempts sent to Spotify, by endpoint and HTTP status (or connection_error, "
            "timeout).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.token_refreshes = Counter(
            f"{PREFIX}_token_refreshes",
            "Members' access-token refreshes, by outcome (ok, invalid_grant, error).",
            ["outcome"],
            registry=registry,
        )
        self.rate_limit_holds = Counter(
            f"{PREFIX}_spotify_rate_limit_holds",
            "App-wide Spotify holds started by a 429 answer.",
            registry=registry,
        )
        self.autopost_lag = Histogram(
            f"{PREFIX}_autopost_lag_seconds",
            "Auto-post detection latency: from a playback change to the bot noticing it.",
            buckets=AUTOPOST_LAG_BUCKETS,
            registry=registry,
        )
        self.autopost_posts = Counter(
            f"{PREFIX}_autopost_posts",
            "Auto-post messages, by action (posted, edited).",
            ["action"],
            registry=registry,
        )
        self.autopost_stretch = Gauge(
            f"{PREFIX}_autopost_skip_check_stretch",
            "Factor by which auto-post skip checks are stretched to fit the Spotify budget "
            "(1: not stretched; NaN: auto-posting not running).",
            registry=registry,
        )
        self.autopost_unseen_gaps = Counter(
            f"{PREFIX}_autopost_unseen_gaps",
            "Auto-post poll answers that ended an unobserved stretch long enough to hide a play.",
            registry=registry,
        )
        self.spotify_window = Gauge(
            f"{PREFIX}_spotify_requests_in_window",
            "Requests sent to Spotify in the last 30 s (NaN: unknown).",
            registry=registry,
        )
        self.spotify_hold = Gauge(
            f"{PREFIX}_spotify_hold_seconds",
            "Seconds left of the app-wide hold after a Spotify 429 (0: none; NaN: unknown).",
            registry=registry,
        )
        self.linked_members = Gauge(
            f"{PREFIX}_linked_members",
            "Members with an active Spotify link (a cached count, refreshed every minute and "
            "on link changes).",
            registry=registry,
        )
        self.gateway_latency = Gauge(
            f"{PREFIX}_gateway_latency_seconds",
            "Discord gateway heartbeat latency (NaN while disconnected).",
            registry=registry,
        )
        # The daily budget's gauges by name; "daily_calls" has a purpose label.
        self.daily = {
            name: Gauge(f"{PREFIX}_spotify_{name}", text, registry=registry)
            for name, text in DAILY_GAUGES.items()
        }
        self.daily["daily_calls"] = Gauge(
            f"{PREFIX}_spotify_daily_calls",
            "Spotify Web API calls in the last 24 hours, every process, by purpose.",
            ["purpose"],
            registry=registry,
        )
        # Known label values start at 0, so rates and alerts work before the first event.
        for outcome in REFRESH_OUTCOMES:
            self.token_refreshes.labels(outcome=outcome)
        for action in AUTOPOST_ACTIONS:
            self.autopost_posts.labels(action=action)

        self._linked_members = math.nan  # until the first count
        self.linked_members.set_function(lambda: self._linked_members)
        self._gateway_latency_source: Callable[[], float] | None = None
        self.gateway_latency.set_function(self._read_gateway_latency)
        self._sources: dict[str, Callable[[], float]] = {}
        for name, gauge in (
            ("stretch", self.autopost_stretch),
            ("window", self.spotify_window),
            ("hold", self.spotify_hold),
        ):
            gauge.set_function(lambda name=name: self._read(name))  # type: ignore[misc]
        self._linked_members_stale = asyncio.Event()

    # --- hooks the application installs --------------------------------------------------

    def command_completed(self, command: str, outcome: str) -> None:
        """NowPlayingBot's command hook: ``outcome`` is ok, user_error or error."""
        self.commands.labels(command=command, outcome=outcome).inc()

    def spotify_response(self, endpoint: str, status: str) -> None:
        """SpotifySender's ``on_response`` hook, called once per HTTP attempt."""
        self.spotify_requests.labels(endpoint=endpoint, status=status).inc()
        if status == "429":  # a real 429 answer: the sender starts an app-wide hold
            self.rate_limit_holds.inc()

    def token_refresh(self, outcome: str) -> None:
        """TokenManager's ``on_refresh`` hook: ok, invalid_grant or error."""
        self.token_refreshes.labels(outcome=outcome).inc()
        if outcome == "invalid_grant":  # the link was just marked broken
            self.mark_linked_members_stale()

    def set_gateway_latency_source(self, source: Callable[[], float]) -> None:
        """``source()`` (e.g. ``lambda: bot.latency``) is read at every scrape."""
        self._gateway_latency_source = source

    def watch_spotify(
        self, requests_in_window: Callable[[], float], hold: Callable[[], float]
    ) -> None:
        """The sender's request count for the last 30 s and its hold, read at every scrape."""
        self._sources["window"] = requests_in_window
        self._sources["hold"] = hold

    def watch_daily_budget(self, budget: DailyBudget) -> None:
        """The daily budget's count, effective budget and hold, read at every scrape."""
        sources = self._sources
        for purpose in PURPOSES:
            name = f"daily:{purpose}"
            sources[name] = functools.partial(_purpose_calls, budget, purpose)
            self.daily["daily_calls"].labels(purpose=purpose).set_function(
                functools.partial(self._read, name)
            )
        sources["daily_token_requests"] = lambda: sum(budget.calls_by_purpose("accounts").values())
        sources["daily_budget"] = budget.effective
        sources["daily_budget_learned"] = lambda: float(budget.is_learned())
        sources["daily_polling_left"] = budget.polling_left
        sources["quota_hold_seconds"] = budget.hold_seconds
        for name in DAILY_GAUGES:
            self.daily[name].set_function(functools.partial(self._read, name))

    def watch_autopost_stretch(self, stretch: Callable[[], float]) -> None:
        self._sources["stretch"] = stretch

    def _read(self, name: str) -> float:
        source = self._sources.get(name)
        if source is None:
            return math.nan
        try:
            return float(source())
        except Exception:  # a scrape must never fail because of one gauge
            log.debug("metric source %s failed", name, exc_info=True)
            return math.nan

    def _read_gateway_latency(self) -> float:
        if self._gateway_latency_source is None:
            return math.nan
        try:
            return float(self._gateway_latency_source())
        except Exception:  # a scrape must never fail because of one gauge
            log.debug("gateway latency unavailable", exc_info=True)
            return math.nan

    # --- for the auto-poster ---------------------------------------------------------------

    def observe_autopost_lag(self, seconds: float) -> None:
        """Seconds from a member's playback change to the auto-poster noticing it."""
        self.autopost_lag.observe(max(0.0, seconds))

    def autopost_post(self, action: str) -> None:
        """One auto-post message: ``posted`` (a new message) or ``edited`` (an existing one)."""
        self.autopost_posts.labels(action=action).inc()

    def autopost_post_listener(self) -> Callable[[PostAction, float], None]:
        """The auto-poster's ``on_post`` hook: each message posted or edited, and its lag
        (NaN when unknown)."""

        def on_post(action: PostAction, lag: float) -> None:
            self.autopost_post(action)
            if not math.isnan(lag):
                self.observe_autopost_lag(lag)

        return on_post

    def autopost_unseen_gap(self, member_id: int, since: float) -> None:
        """The auto-poster's ``on_gap`` hook: a play may have gone unseen since ``since``."""
        self.autopost_unseen_gaps.inc()

    # --- linked members ----------------------------------------------------------------------

    def set_linked_members(self, count: int) -> None:
        self._linked_members = float(count)

    def mark_linked_members_stale(self) -> None:
        """Ask the refresher to count again now (cheap; call from any event handler)."""
        self._linked_members_stale.set()

    def watch_links(self, events: MemberEvents) -> None:
        """Recount after every link and unlink."""
        events.on("linked", lambda _member_id: self.mark_linked_members_stale())
        events.on("unlinked", lambda _member_id: self.mark_linked_members_stale())

    async def keep_linked_members_fresh(
        self,
        count: Callable[[], Awaitable[int]],
        *,
        interval: float = LINKED_MEMBERS_REFRESH_SECONDS,
    ) -> None:
        """Count now, then again after every change and at least every ``interval`` s."""
        while True:
            self._linked_members_stale.clear()  # before counting: no change is missed
            try:
                self.set_linked_members(await count())
            except Exception:
                log.warning("Could not count linked members for the metrics", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._linked_members_stale.wait()

    @contextlib.asynccontextmanager
    async def linked_members_refresher(
        self,
        count: Callable[[], Awaitable[int]],
        *,
        interval: float = LINKED_MEMBERS_REFRESH_SECONDS,
    ) -> AsyncIterator[None]:
        """Run :meth:`keep_linked_members_fresh` in a task for the duration of the block."""
        task = asyncio.create_task(
            self.keep_linked_members_fresh(count, interval=interval),
            name="metrics-linked-members",
        )
        try:
            yield
        finally:
            await cancel_and_wait([task])

    # --- exposition ----------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text format and its content type (``WebDependencies.metrics``)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _purpose_calls(budget: DailyBudget, purpose: Purpose) -> float:
    return float(budget.calls_by_purpose()[purpose])
