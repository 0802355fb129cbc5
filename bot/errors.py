"""Domain errors. Each carries ``user_message``: plain words safe to show a member.

The command tree's error handler shows ``user_message`` ephemerally for any ``BotError``;
anything else is logged with its traceback and the member gets a short apology.
"""

from __future__ import annotations

import math


class BotError(Exception):
    """Base of every error the bot expects; ``user_message`` is meant for the member."""

    user_message: str = "Something went wrong. Please try again in a moment."

    def __init__(self, message: str | None = None, *, user_message: str | None = None) -> None:
        super().__init__(message or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class StartupError(Exception):
    """Start-up cannot go on (a definitive answer, not a network hiccup); the message is one
    clear line for the self-hoster."""

    exit_status = 1  # 2 for a setting that was refused (a bad setting, as at validation)


class ConfigError(BotError):
    """One or more settings are invalid. ``problems`` holds one clear line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class DecryptionError(BotError):
    """A stored secret could not be decrypted: tampered, wrong owner, or unknown key."""

    user_message = (
        "Your stored Spotify link could not be read (the bot's keys may have changed). "
        "Please run /link again."
    )


# --- Spotify -------------------------------------------------------------------------------


class SpotifyError(BotError):
    """Base of every Spotify failure. ``status`` is the HTTP status when there was one."""

    user_message = "Spotify did not answer properly. Please try again in a moment."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.status = status


class SpotifyAuthError(SpotifyError):
    """The accounts service refused a token request (400/401 with ``error``)."""

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int | None = 400,
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error, status=status)
        self.error = error
        self.description = description


class InvalidGrant(SpotifyAuthError):
    """Bad, used or expired code; revoked, expired or unknown refresh token."""

    user_message = (
        "Spotify no longer accepts your link (it was revoked or expired). Please run /link again."
    )


class InvalidClient(SpotifyAuthError):
    """The bot's client id or secret is wrong: a problem for the self-hoster."""

    user_message = "The bot's Spotify app credentials are wrong. Please tell the server admin."


class SpotifyUnauthorized(SpotifyError):
    """401 from the Web API even after one refresh and one retry."""

    user_message = "Spotify did not accept your login. Please try again, or run /link again."


class SpotifyForbidden(SpotifyError):
    """403 from the Web API that is not the allow-list case."""

    user_message = "Spotify refused that request for your account."


class SpotifyMissingScope(SpotifyForbidden):
    """403 ``Insufficient client scope``: the link was made before the bot asked for a scope
    this request needs. The link itself still works; the member runs /link again to allow it."""

    user_message = (
        "Your Spotify link was made before I could read your listening history: run /link "
        "again to allow it (your current link keeps working meanwhile)."
    )


class SpotifyNotRegistered(SpotifyForbidden):
    """Plain-text 403: the user is not on a development-mode app's allow-list. Permanent."""

    user_message = (
        "Your Spotify account is not on this bot's Spotify app allow-list: the bot owner must "
        "add your Spotify email in the Spotify developer dashboard (development-mode apps "
        "allow only 5 users)."
    )


class SpotifyRateLimited(SpotifyError):
    """429, or a request made while an app-wide hold is active.

    ``retry_at`` is a ``time.monotonic()`` value; ``retry_after`` the seconds left when raised.
    """

    def __init__(self, retry_after: float, retry_at: float, *, quota_exceeded: bool = False):
        self.retry_after = max(0.0, retry_after)
        self.retry_at = retry_at
        self.quota_exceeded = quota_exceeded
        seconds = max(1, round(self.retry_after))
        super().__init__(
            f"rate limited for {self.retry_after:.1f}s (quota_exceeded={quota_exceeded})",
            status=429,
            user_message=f"Spotify asks us to wait, try again in {seconds} s.",
        )


class SpotifyDailyLimit(SpotifyRateLimited):
    """No Web API call until ``until`` (Unix time): the bot's daily budget is spent
    (``reason="budget"``), or Spotify answered 429 QUOTA_EXCEEDED (``reason="quota"``).

    Raised without touching the network; a subclass of SpotifyRateLimited so that everything
    that holds on a 429 (the poll loop, a waiting link) holds on it the same way. The member is
    told when it is back as Discord timestamps, never as a number of seconds (hours, often).
    """

    def __init__(
        self, retry_after: float, retry_at: float, *, until: float, reason: str = "budget"
    ) -> None:
        super().__init__(retry_after, retry_at, quota_exceeded=True)
        self.until = until
        self.reason = reason
        self.user_message = daily_limit_words(until)


def relative_at(until: float) -> str:
    """A moment as "in 40 seconds", in each member's language."""
    return f"<t:{math.ceil(until)}:R>"


def back_at(until: float) -> str:
    """A moment as Discord shows it to each member: their clock time, then "in 3 hours"."""
    return f"<t:{math.ceil(until)}:t> ({relative_at(until)})"


def daily_limit_words(until: float) -> str:
    """The sentence a command answers while the daily Spotify limit is used up."""
    return (
        f"The bot's daily Spotify limit is used up; it is back at {back_at(until)}. "
        "Meanwhile /np still works for anyone whose Discord status shows Spotify."
    )


class MemberSpotifyLimit(BotError):
    """A member's commands used their share of Spotify (``bot.spotify.fair_use``): no call is
    made; ``until`` (Unix time) is when the next one may go. ``reason`` is ``"minute"`` (too
    many in a minute) or ``"day"`` (their share of the daily budget)."""

    def __init__(self, until: float, *, reason: str, limit: int) -> None:
        self.until = until
        self.reason = reason
        if reason == "minute":
            words = (
                f"You ran {limit} commands that ask Spotify in the last minute, the most one "
                f"member may, so that everyone gets answers: try again {relative_at(until)}."
            )
        else:
            words = (
                f"Your commands used your share of the bot's daily Spotify calls ({limit} a "
                f"day, so everyone gets some); the next one frees at {back_at(until)}. "
                "Meanwhile /np still works while your Discord status shows Spotify."
            )
        super().__init__(f"member limit ({reason}) until {until:.0f}", user_message=words)


class SpotifyUnavailable(SpotifyError):
    """5xx, connection errors or timeouts that outlasted the bounded retries."""

    user_message = "Spotify is not answering right now. Please try again in a minute."


class SpotifyBadResponse(SpotifyError):
    """Spotify answered with something we cannot parse."""


# --- Members and links ---------------------------------------------------------------------


class NotLinked(BotError):
    user_message = "You have not linked a Spotify account yet. Run /link to connect one."


class LinkBroken(BotError):
    """The stored link stopped working (invalid_grant); tokens were deleted."""

    user_message = (
        "Your Spotify link stopped working (it was revoked or is older than six months). "
        "Please run /link again."
    )
