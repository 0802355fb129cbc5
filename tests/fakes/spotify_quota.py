"""Spotify's daily quota of Web API calls, for the fake Spotify (``docs/spotify.md``).

A development-mode app may make a number of Web API calls in any rolling 24 hours (Spotify
publishes none; a test names one). The next call answers 429 with the QUOTA_EXCEEDED body and a
Retry-After pointing at the moment the oldest counted call leaves the window, not midnight, and
every call is refused until then; the refused calls are not counted. Time is the fake's own
clock (``FakeSpotify.now``/``advance``), so a test can let a day pass.
"""

from __future__ import annotations

import math
from collections import deque

from aiohttp import web

QUOTA_BODY = {"error": {"status": 429, "message": "Too many requests", "reason": "QUOTA_EXCEEDED"}}
DAY = 86_400.0


class DailyQuota:
    """At most ``calls`` Web API calls in any ``window`` seconds."""

    def __init__(self, calls: int, window: float = DAY) -> None:
        self.calls = calls
        self.window = window
        self.counted: deque[float] = deque()
        self.refused_until = 0.0
        self.refusals = 0

    def admit(self, now: float) -> web.Response | None:
        """None when the call is counted and may be answered; else the 429 to send."""
        if now < self.refused_until:
            return self._refusal(now)
        while self.counted and self.counted[0] <= now - self.window:
            self.counted.popleft()
        if len(self.counted) < self.calls:
            self.counted.append(now)
            return None
        self.refused_until = self.counted[0] + self.window
        return self._refusal(now)

    def _refusal(self, now: float) -> web.Response:
        self.refusals += 1
        retry_after = max(1, math.ceil(self.refused_until - now))
        return web.json_response(QUOTA_BODY, status=429, headers={"Retry-After": str(retry_after)})


__all__ = ["QUOTA_BODY", "DailyQuota"]
