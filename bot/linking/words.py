"""Every word a member reads about linking: the callback's pages, the paste modal's answers,
the DMs, and the HTTP status each failure is served with.

The link service decides what happened (:class:`LinkFailure` carries the kind and its facts);
this module says it. Nothing here names an account unless the caller passes the name in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FailureKind = Literal[
    "denied",
    "missing",
    "unknown_state",
    "expired_state",
    "used_state",
    "wrong_member",
    "exchange_failed",
    "not_registered",
    "rate_limited",
    "spotify_down",
    "bad_config",
    "taken",
]
# What a used state came to (stored with it, so a reload can say so without names).
Outcome = Literal["linked", "renewed", "pending", "taken", "failed"]
Tone = Literal["ok", "info", "fail"]

SPOTIFY_APPS_URL = "https://www.spotify.com/account/apps/"
# Spotify refresh tokens stop working 6 months after the member authorized; refreshing does
# not extend that (docs/spotify.md). Remind members in the last two weeks.
REFRESH_TOKEN_LIFETIME_DAYS = 182
EXPIRY_WARNING_DAYS = 14

_RELINK = "Run /link in Discord to get a fresh link."
DONE_HINT = "You can close this tab and go back to Discord."


class LinkFailure(Exception):
    """A link attempt did not link: what happened, in facts (:func:`failure_words` says it).

    ``outcome``: what a used state came to (``used_state``); ``retry_after``: seconds until
    Spotify's accounts service answers again (``rate_limited``); ``reason``: which part was
    missing (``missing``: ``"state"`` or ``"code"``) or why an exchange failed
    (``exchange_failed``: ``"code"`` for a used or expired code, ``"mismatch"`` otherwise).
    """

    def __init__(
        self,
        kind: FailureKind,
        *,
        outcome: str | None = None,
        retry_after: float = 0.0,
        reason: str | None = None,
    ) -> None:
        super().__init__(kind if reason is None else f"{kind}: {reason}")
        self.kind = kind
        self.outcome = outcome
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FailureWords:
    """A failure as the member reads it: the page's (or the modal's) title and message, the
    HTTP status of the page, and its tone (``info`` for answers that are not an error)."""

    title: str
    message: str
    status: int = 400
    tone: Tone = "fail"


def describe_wait(seconds: float) -> str:
    """ "12 s", "4 min", "2 h" for a page or a message."""
    seconds = max(1.0, seconds)
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"


def failure_words(failure: LinkFailure) -> FailureWords:
    """What the member is told about ``failure`` (never whose accounts)."""
    kind = failure.kind
    if kind == "used_state":
        return _already_used(failure.outcome)
    if kind == "rate_limited":
        wait = describe_wait(failure.retry_after)
        return FailureWords(
            "Spotify asks the bot to wait",
            f"Nothing was used up: reload this page in {wait} to finish linking "
            f"(or run /link again after {wait}).",
            status=429,
        )
    if kind == "missing" and failure.reason == "code":
        return FailureWords(
            "This link is incomplete",
            "Spotify did not send an authorization code. Paste the whole address from "
            "your browser's address bar, or run /link in Discord to get a fresh link.",
        )
    if kind == "exchange_failed" and failure.reason == "mismatch":
        return FailureWords(
            "Spotify did not accept this sign-in",
            "Something did not match on Spotify's side. " + _RELINK,
        )
    return _FIXED[kind]


_TAKEN = FailureWords(
    "This Spotify account is linked to another Discord account",
    "A Spotify account can be linked to one Discord account at a time, and the bot never "
    "moves it. Nothing was changed. If that other Discord account is yours, run /unlink there "
    "first, then /link again from this one.",
    status=409,
)

_FIXED: dict[str, FailureWords] = {
    "denied": FailureWords(
        "Linking was cancelled",
        "You chose not to give the bot access on Spotify, so nothing was linked. "
        "If that was a mistake, run /link again.",
        status=403,
    ),
    "missing": FailureWords(
        "This link is incomplete",
        "The address is missing part of what Spotify sends back. " + _RELINK,
    ),
    "wrong_member": FailureWords(
        "This link belongs to someone else",
        "Each /link address works only for the member who asked for it. " + _RELINK,
        status=403,
    ),
    "unknown_state": FailureWords(
        "This link is not valid",
        "The bot does not recognise this sign-in attempt. " + _RELINK,
    ),
    "expired_state": FailureWords(
        "This link has expired",
        "Sign-in links are valid for 10 minutes. " + _RELINK,
        status=410,
    ),
    "exchange_failed": FailureWords(
        "Spotify did not accept this sign-in",
        "The authorization code was already used or has expired. " + _RELINK,
    ),
    "not_registered": FailureWords(
        "Your Spotify account is not allowed yet",
        "This bot's Spotify app is in development mode, which only works for accounts "
        "the bot owner has added to its allow-list. Ask the bot owner to add your "
        "Spotify email address in the Spotify developer dashboard, then run /link again.",
        status=403,
    ),
    "bad_config": FailureWords(
        "The bot is not set up correctly",
        "Spotify rejected the bot's app credentials. Please tell the bot owner.",
    ),
    "spotify_down": FailureWords(
        "Spotify is not answering right now",
        "Nothing was saved. Please run /link again in a minute.",
        status=424,
    ),
    "taken": _TAKEN,
}


def _already_used(outcome: str | None) -> FailureWords:
    """A used state: say what it came to, never whose accounts, never a new success."""
    title = "This sign-in link was already used"
    if outcome in ("linked", "renewed"):
        return FailureWords(
            title,
            "It already finished linking a Spotify account, so nothing new happened here. "
            "The bot's direct message in Discord names the account.",
            status=200,
            tone="info",
        )
    if outcome == "pending":
        return FailureWords(
            title,
            "Spotify accepted it; the bot finishes the link as soon as Spotify lets it and "
            "then sends you a direct message in Discord. Nothing else to do.",
            status=200,
            tone="info",
        )
    if outcome == "taken":
        return _TAKEN
    if outcome is None:
        message = "It is still being used in another tab, or that attempt was cut off. "
    else:
        message = "It did not link anything. "
    return FailureWords(title, message + "Each sign-in link works once. " + _RELINK, status=410)


def pending_words(retry_after: float, *, where: str = "") -> str:
    """A link that waits for Spotify's Web API hold (``where``: " in Discord" on a page)."""
    return (
        "Spotify accepted your sign-in but asked the bot to pause for about "
        f"{describe_wait(retry_after)}. The bot finishes the link by itself then "
        f"and sends you a direct message{where}"
    )


def linked_words(spotify_name: str, kind: str) -> str:
    """The DM after a link made in the browser (or finished after a Spotify hold)."""
    if kind == "renewed":
        return f"Your link to the Spotify account **{spotify_name}** is renewed."
    return (
        f"Linked as **{spotify_name}** (your Spotify account). "
        "Try /np to show what you are playing."
    )


def expiry_reminder(linked_at: float, now: float) -> str | None:
    """Words for a member whose link runs out soon (or None): Spotify ends it 6 months after
    they authorized, however often the bot refreshes."""
    days_left = REFRESH_TOKEN_LIFETIME_DAYS - (now - linked_at) / 86400
    if days_left > EXPIRY_WARNING_DAYS:
        return None
    when = "within a day" if days_left <= 1 else f"in {math.ceil(days_left)} days"
    return (
        f"Heads-up: Spotify ends your link {when} (links last six months). "
        "Run /link to renew it; it takes a few seconds."
    )


__all__ = [
    "DONE_HINT",
    "SPOTIFY_APPS_URL",
    "FailureKind",
    "FailureWords",
    "LinkFailure",
    "Outcome",
    "Tone",
    "describe_wait",
    "expiry_reminder",
    "failure_words",
    "linked_words",
    "pending_words",
]
