"""``check``'s look at the daily Spotify budget (read from the database, never written there),
and ``check --reset-spotify-budget``, which forgets it."""

from __future__ import annotations

import math
import time
from typing import Final

from bot.cli.findings import OK, WARNING, Finding
from bot.config import Settings
from bot.gateway.connect import format_wait
from bot.shards.budget import read_daily_budget
from bot.spotify.budget import RISE_AFTER_DAYS, DailyBudget
from bot.spotify.http import Purpose
from bot.storage import Storage

BUDGET_SCHEMA_VERSION: Final = 9  # the migration that added the counts
ITEM: Final = "spotify budget"
PURPOSE_WORDS: Final[tuple[tuple[Purpose, str], ...]] = (
    ("poll", "polls"),
    ("command", "commands"),
    ("recently_played", "recently-played"),
    ("linking", "linking"),
)


def _utc(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


class BudgetLook:
    """Reads the budget while ``check`` has the database open; then says what it found."""

    def __init__(self, settings: Settings, *, now: float | None = None) -> None:
        self._settings = settings
        self._now = time.time() if now is None else now
        self.budget = DailyBudget(settings.spotify_daily_budget, clock=lambda: self._now)
        self.read = False

    async def __call__(self, storage: Storage, version: int) -> None:
        if version >= BUDGET_SCHEMA_VERSION:
            await read_daily_budget(
                storage.spotify_budget, self._settings.spotify_client_id, self.budget, self._now
            )
            self.read = True

    def finding(self) -> Finding:
        budget, now = self.budget, self._now
        setting = self._settings.spotify_daily_budget
        effective = budget.effective()
        if math.isinf(effective):
            limit = "no daily limit (SPOTIFY_DAILY_BUDGET=0)"
        elif budget.is_learned():
            learned_at = budget.quota.learned_at or now
            limit = (
                f"an effective budget of {effective:.0f}, learned from Spotify's refusal at "
                f"{_utc(learned_at)} (SPOTIFY_DAILY_BUDGET={setting}; it rises 10 % a day from "
                f"{_utc(learned_at + RISE_AFTER_DAYS * 86_400)} without another refusal)"
            )
        else:
            limit = f"a budget of {effective:.0f} (SPOTIFY_DAILY_BUDGET)"
        if not self.read:
            return Finding(OK, ITEM, f"nothing counted yet; {limit} in any 24 hours")
        calls = budget.calls_by_purpose()
        parts = ", ".join(f"{words} {calls[purpose]}" for purpose, words in PURPOSE_WORDS)
        tokens = sum(budget.calls_by_purpose("accounts").values())
        counted = (
            f"{sum(calls.values())} Web API calls in the last 24 hours ({parts}) of {limit}; "
            f"{tokens} token requests, counted apart"
        )
        state = budget.state()
        if state == "ok":
            left = budget.polling_left()
            more = "" if math.isinf(left) else f"; polling may spend {left:.0f} more"
            return Finding(OK, ITEM, counted + more)
        end = (
            budget.hold_end()
            if state == "quota_spent"
            else budget.counts.falls_below(effective, now)
        )
        why = (
            "Spotify answered QUOTA_EXCEEDED"
            if state == "quota_spent"
            else "the daily budget is spent"
        )
        return Finding(
            WARNING,
            ITEM,
            f"{why}: no Web API call until {_utc(end)} (in {format_wait(end - now)}); commands "
            f"answer from members' Discord statuses meanwhile. {counted}",
        )


async def forget_daily_budget(settings: Settings) -> str:
    """``check --reset-spotify-budget``: forget the count, the hold and what was learned."""
    if settings.database_url is None and not settings.database_path.is_file():
        return f"Nothing to forget: {settings.database_path} does not exist yet."
    async with await Storage.open(settings.database_target) as storage:
        rows = await storage.spotify_budget.forget(settings.spotify_client_id)
    return (
        f"Forgot the daily Spotify budget of client id {settings.spotify_client_id} "
        f"({rows} row(s)): the count, the hold and what was learned. A bot that is running "
        "keeps what it holds in memory until it restarts."
    )


__all__ = ["BUDGET_SCHEMA_VERSION", "BudgetLook", "forget_daily_budget"]
