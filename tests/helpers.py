"""Small helpers several test modules share: a hand-moved clock, a sleep that returns at
once, and a stored link as a finished /link leaves it."""

from __future__ import annotations

from bot.storage import LinkedAccount


class ManualClock:
    """A clock (monotonic or Unix seconds) that moves only when a test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def no_sleep(seconds: float) -> None:
    return None


def linked_account(user_id: int, refresh_token: bytes | None = b"encrypted") -> LinkedAccount:
    return LinkedAccount(
        discord_user_id=user_id,
        spotify_account_id=f"acct-{user_id}",
        spotify_user_id=f"user-{user_id}",
        display_name=f"User {user_id}",
        refresh_token=refresh_token,
        scopes="user-read-currently-playing",
        linked_at=1_750_000_000.0,
        status="active",
    )
