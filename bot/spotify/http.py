"""The one place that talks HTTP to Spotify: timeouts, bounded retries and the app-wide hold.

Endpoints (``auth.py``, ``api.py``) only build a :class:`SpotifyRequest` and read the
:class:`SpotifyResponse`; everything about *how* a request is sent lives here:

* every attempt has a timeout;
* 5xx answers, connection errors and timeouts are retried at most twice with jittered
  exponential backoff, the sleeping bounded per caller, then :class:`SpotifyUnavailable`;
* a 429 is never slept on: it raises :class:`SpotifyRateLimited` at once and starts an
  app-wide hold (Spotify limits are per app; other processes of the bot hear of it through
  ``add_hold_listener`` and ``extend_hold``) of the service that answered it: the accounts
  service (``/api/token``) and the Web API are held separately, because a Web API 429 does
  not stop the accounts service from exchanging a code (and the other way round). During a
  hold every request to that service fails at once without touching the network;
* a rolling count of the requests actually sent, for the auto-poster's budget;
* the daily budget (``CallBudget``, ``bot.spotify.budget``): every attempt is counted with the
  purpose its caller gave, a Web API request the budget refuses is never sent
  (:class:`SpotifyDailyLimit`), and a QUOTA_EXCEEDED answer holds the Web API until the
  budget says (often hours).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp

from bot.errors import (
    SpotifyBadResponse,
    SpotifyDailyLimit,
    SpotifyRateLimited,
    SpotifyUnavailable,
)

log = logging.getLogger(__name__)

MAX_RETRIES = 2
BACKOFF_BASE = 0.5  # seconds before the first retry, doubled each time, then jittered
BACKOFF_CAP = 2.0  # no single sleep is longer than this
RETRY_SLEEP_BUDGET = 2.0  # a caller never sleeps longer than this in total (docs/spotify.md)
RETRY_TOTAL_BUDGET = 5.0  # no retry starts after a request has taken this long in all
# Each attempt: Spotify answers in well under a second; a stuck connection must not hold a
# member's /np (or a poll slot) for long.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=3)
DEFAULT_RETRY_AFTER = 5.0  # a 429 without a usable Retry-After header
RATE_WINDOW = 30.0  # Spotify's rolling rate-limit window

Clock = Callable[[], float]
SpotifyService = Literal["accounts", "api"]
SERVICES: tuple[SpotifyService, ...] = ("accounts", "api")
# Why a request is sent, given by its caller: what the daily budget counts it as, and whether
# it may use the reserve kept for commands ("command", "linking") or not ("poll",
# "recently_played": background work).
Purpose = Literal["poll", "command", "recently_played", "linking"]
PURPOSES: tuple[Purpose, ...] = ("poll", "command", "recently_played", "linking")
Sleep = Callable[[float], Awaitable[Any]]
ResponseHook = Callable[[str, str], None]
# (service, seconds from now, quota exceeded): a 429 just started (or lengthened) a hold.
HoldListener = Callable[[SpotifyService, float, bool], None]


@dataclass(frozen=True, slots=True)
class SpotifyRequest:
    """What an endpoint wants sent. ``endpoint`` is a short label for metrics and logs.

    ``headers`` and ``data`` hold tokens, codes and secrets, so they stay out of ``repr``.
    ``idempotent=False`` (token requests) limits retries to failures where the server surely
    did not act on the request: a refused connection or a 5xx answer, never a timeout, since a
    retried refresh could present a refresh token the first attempt already rotated out.
    ``service`` names whose 429 hold applies: the accounts service or the Web API;
    ``purpose`` what the daily budget counts the request as.
    """

    method: str
    url: str
    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    params: Mapping[str, str] | None = None
    data: Mapping[str, str] | None = field(default=None, repr=False)
    idempotent: bool = True
    service: SpotifyService = "api"
    purpose: Purpose = "command"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long an attempt may take and how a failed one is retried (bounded in count, in
    sleep, and in total time)."""

    timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT
    max_retries: int = MAX_RETRIES
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    sleep_budget: float = RETRY_SLEEP_BUDGET
    # No retry starts once a request has taken this long in all: bounded to 5 s in total.
    total_budget: float = RETRY_TOTAL_BUDGET


class CallBudget(Protocol):
    """The daily budget of Web API calls (``bot.spotify.budget.DailyBudget``)."""

    def admit(self, purpose: Purpose) -> None:
        """Raise SpotifyDailyLimit when no Web API call for ``purpose`` may go out now."""
        ...

    def count(self, service: SpotifyService, purpose: Purpose) -> None:
        """One HTTP attempt to ``service`` is being sent."""
        ...

    def quota_exceeded(self, retry_after: float) -> float:
        """Spotify answered 429 QUOTA_EXCEEDED: the Unix time the Web API hold ends."""
        ...


@dataclass(slots=True)
class _Hold:
    until: float = 0.0
    quota_exceeded: bool = False


class _ServiceHolds:
    """The app-wide hold of each service after a 429 (``clock`` time), and who hears one
    start; on the wall clock too, for the daily quota's hold (it names the moment it ends)."""

    def __init__(self, clock: Clock, wall_clock: Clock) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.of: dict[SpotifyService, _Hold] = {service: _Hold() for service in SERVICES}
        self.listeners: list[HoldListener] = []

    def check(self, service: SpotifyService) -> None:
        hold = self.of[service]
        if hold.until:
            now = self.clock()
            if now < hold.until:
                left = hold.until - now
                if hold.quota_exceeded and service == "api":
                    until = self.wall_clock() + left
                    raise SpotifyDailyLimit(left, hold.until, until=until, reason="quota")
                raise SpotifyRateLimited(left, hold.until, quota_exceeded=hold.quota_exceeded)

    def extend(self, service: SpotifyService, seconds: float, quota_exceeded: bool) -> bool:
        hold = self.of[service]
        until = self.clock() + seconds
        if seconds <= 0 or until <= hold.until:
            return False
        hold.until = until
        hold.quota_exceeded = quota_exceeded
        return True

    def started(self, service: SpotifyService, seconds: float, quota_exceeded: bool) -> None:
        """A 429 answered here: hold (never shorter than a hold kept) and tell the listeners."""
        self.extend(service, seconds, quota_exceeded)
        for listener in self.listeners:
            try:
                listener(service, seconds, quota_exceeded)
            except Exception:  # telling the other processes must not change this answer
                log.exception("a Spotify hold listener failed")


class RequestWindow:
    """When the recent HTTP attempts were sent, to count them in a rolling window."""

    def __init__(self, retention: float = RATE_WINDOW) -> None:
        self._sent_at: deque[float] = deque()
        self._retention = retention

    def add(self, now: float) -> None:
        self._sent_at.append(now)
        self._prune(now)

    def count(self, window: float, now: float) -> int:
        """Attempts sent in the last ``window`` seconds before ``now``."""
        if window > self._retention:
            self._retention = window  # keep enough history from now on
        self._prune(now)
        threshold = now - window
        sent_at = self._sent_at
        if not sent_at or sent_at[0] > threshold:
            return len(sent_at)
        return len(sent_at) - bisect.bisect_right(sent_at, threshold)

    def _prune(self, now: float) -> None:
        oldest_kept = now - self._retention
        sent_at = self._sent_at
        while sent_at and sent_at[0] <= oldest_kept:
            sent_at.popleft()


@dataclass(frozen=True, slots=True)
class SpotifyResponse:
    """A non-429, non-5xx answer. ``content_type`` is ``""`` when the header is absent."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(repr=False)
    endpoint: str = ""

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Decode the body as JSON whatever the Content-Type; raise SpotifyBadResponse."""
        if not self.body:
            raise SpotifyBadResponse(
                f"{self.endpoint}: empty body where JSON was expected", status=self.status
            )
        try:
            return json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise SpotifyBadResponse(
                f"{self.endpoint}: answer is not JSON", status=self.status
            ) from exc

    def json_or_none(self) -> Any:
        """The decoded JSON body, or None when the body is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def parse_retry_after(value: str | None, default: float = DEFAULT_RETRY_AFTER) -> float:
    """Seconds from a Retry-After header; ``default`` when missing, negative or garbage."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    if not math.isfinite(seconds) or seconds < 0:
        return default
    return seconds


def _is_quota_exceeded(body: bytes) -> bool:
    if b"QUOTA_EXCEEDED" not in body:  # cheap test first; the body is small anyway
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict):
        return False
    if payload.get("reason") == "QUOTA_EXCEEDED":
        return True
    error = payload.get("error")
    return isinstance(error, dict) and error.get("reason") == "QUOTA_EXCEEDED"


class _Retryable(Exception):
    """Internal: one attempt failed in a way that may be retried."""

    def __init__(self, reason: str, status: int | None, *, may_have_acted: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.may_have_acted = may_have_acted


class SpotifySender:
    """Sends every Spotify request over one shared ``ClientSession`` (owned by the caller)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        retry: RetryPolicy = RetryPolicy(),
        on_response: ResponseHook | None = None,
        budget: CallBudget | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self._session = session
        self._clock = clock
        self._budget = budget
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._retry = retry
        self._on_response = on_response
        self._holds = _ServiceHolds(clock, wall_clock)
        self._window = RequestWindow()

    # --- what the scheduler reads ---------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The monotonic clock this sender measures holds with (shared with token code)."""
        return self._clock

    @property
    def hold_until(self) -> float:
        """``clock()`` value before which every Web API request fails at once; 0.0 when none."""
        return self._holds.of["api"].until

    @property
    def hold_quota_exceeded(self) -> bool:
        """Whether the current (or last) Web API hold came from a QUOTA_EXCEEDED answer."""
        return self._holds.of["api"].quota_exceeded

    def hold_remaining(self, service: SpotifyService = "api") -> float:
        return max(0.0, self._holds.of[service].until - self._clock())

    def add_hold_listener(self, listener: HoldListener) -> None:
        """``listener(service, seconds, quota_exceeded)`` hears each hold a 429 answered
        here starts (not the ones ``extend_hold`` applies); it must not block."""
        self._holds.listeners.append(listener)

    def extend_hold(
        self, service: SpotifyService, seconds: float, *, quota_exceeded: bool = False
    ) -> bool:
        """Hold ``service`` for ``seconds`` from now (a 429 answered to another process, the
        daily quota's hold read from the database); a longer hold already kept stays as it
        is. True when the hold grew."""
        return self._holds.extend(service, seconds, quota_exceeded)

    def requests_in_window(self, window: float = RATE_WINDOW) -> int:
        """How many HTTP attempts were actually sent in the last ``window`` seconds."""
        return self._window.count(window, self._clock())

    # --- sending --------------------------------------------------------------------------

    def check_hold(self, service: SpotifyService = "api") -> None:
        """Raise SpotifyRateLimited (seconds left) while the service's app-wide hold lasts:
        SpotifyDailyLimit when it is the Web API's QUOTA_EXCEEDED hold."""
        self._holds.check(service)

    def admit(self, purpose: Purpose) -> None:
        """Raise (SpotifyRateLimited, SpotifyDailyLimit) unless a Web API request for
        ``purpose`` would go out now: asked before anything that is only worth doing for
        such a request (a token refresh)."""
        self.check_hold("api")
        if self._budget is not None:
            self._budget.admit(purpose)

    async def send(self, request: SpotifyRequest) -> SpotifyResponse:
        """Send with bounded retries. Raises SpotifyRateLimited or SpotifyUnavailable."""
        slept = 0.0
        attempt = 0
        started = self._clock()
        while True:
            # Checked before every attempt: another request may have hit a 429 meanwhile, or
            # spent the last of the daily budget.
            if request.service == "api":
                self.admit(request.purpose)
            else:
                self.check_hold(request.service)
            try:
                return await self._attempt(request)
            except _Retryable as failure:
                if request.idempotent is False and failure.may_have_acted:
                    raise SpotifyUnavailable(
                        f"{request.endpoint}: {failure.reason} (not retried: the request "
                        "may have been acted on)",
                        status=failure.status,
                    ) from None
                retry = self._retry
                delay = min(self._backoff(attempt), retry.sleep_budget - slept)
                elapsed = self._clock() - started
                if (
                    attempt >= retry.max_retries
                    or delay <= 0
                    or elapsed + delay > retry.total_budget
                ):
                    raise SpotifyUnavailable(
                        f"{request.endpoint}: {failure.reason} after {attempt + 1} attempts",
                        status=failure.status,
                    ) from None
                log.info(
                    "spotify %s: %s, retrying in %.2fs", request.endpoint, failure.reason, delay
                )
                await self._sleep(delay)
                slept += delay
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half of the exponential step is fixed, half random, so concurrent
        # callers spread out but none retries immediately.
        step = min(self._retry.backoff_cap, self._retry.backoff_base * (2.0**attempt))
        return step / 2 + self._rng.uniform(0, step / 2)

    def _record(self, endpoint: str, outcome: str) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(endpoint, outcome)
        except Exception:  # a metrics bug must not break a member's request
            log.exception("on_response hook failed for %s", endpoint)

    async def _attempt(self, request: SpotifyRequest) -> SpotifyResponse:
        self._window.add(self._clock())
        if self._budget is not None:
            self._budget.count(request.service, request.purpose)
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=request.headers,
                params=request.params,
                data=request.data,
                timeout=self._retry.timeout,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                status = resp.status
                headers = resp.headers
        except aiohttp.ClientConnectorError as exc:
            self._record(request.endpoint, "connection_error")
            raise _Retryable(
                f"cannot connect ({exc.os_error.strerror or exc})", None, may_have_acted=False
            ) from exc
        except TimeoutError as exc:  # aiohttp's timeouts subclass TimeoutError too
            self._record(request.endpoint, "timeout")
            raise _Retryable("timed out", None, may_have_acted=True) from exc
        except aiohttp.ClientError as exc:
            self._record(request.endpoint, "connection_error")
            raise _Retryable(
                f"connection failed ({type(exc).__name__})", None, may_have_acted=True
            ) from exc

        self._record(request.endpoint, str(status))
        if status == 429:
            raise self._start_hold(request, headers.get("Retry-After"), body)
        if status >= 500:
            raise _Retryable(f"HTTP {status}", status, may_have_acted=False)
        content_type = headers.get("Content-Type", "")
        return SpotifyResponse(
            status=status,
            body=b"" if status == 204 else body,
            content_type=content_type.split(";", 1)[0].strip().lower(),
            headers=headers,
            endpoint=request.endpoint,
        )

    def _start_hold(
        self, request: SpotifyRequest, retry_after_header: str | None, body: bytes
    ) -> SpotifyRateLimited:
        retry_after = parse_retry_after(retry_after_header)
        quota_exceeded = _is_quota_exceeded(body)
        wall_now = self._holds.wall_clock()
        until = wall_now + retry_after
        if quota_exceeded and request.service == "api" and self._budget is not None:
            # Held until Retry-After, or longer while the rolling count is over the budget.
            until = max(until, self._budget.quota_exceeded(retry_after))
            retry_after = max(retry_after, until - wall_now)
        retry_at = self._clock() + retry_after
        log.warning(
            "spotify %s: rate limited, holding every %s request for %.0fs%s",
            request.endpoint,
            "accounts service" if request.service == "accounts" else "Web API",
            retry_after,
            " (quota exceeded)" if quota_exceeded else "",
        )
        self._holds.started(request.service, retry_after, quota_exceeded)
        if quota_exceeded and request.service == "api":
            return SpotifyDailyLimit(retry_after, retry_at, until=until, reason="quota")
        return SpotifyRateLimited(retry_after, retry_at, quota_exceeded=quota_exceeded)
