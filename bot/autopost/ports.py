"""What the auto-poster needs from its surroundings: Discord, Spotify, the scheduler, hooks.

The auto-poster's parts depend on these protocols and types only. ``bot.autopost.discord_side``
implements :class:`DiscordSide` over discord.py; ``bot.app`` wires the rest (the Spotify call,
the sender's hold, the metrics hooks).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.autopost.observations import Observation, RecordResult
from bot.messages.message import BotMessage
from bot.spotify.models import CurrentlyPlaying

Source = Literal["spotify", "presence"]
PostAction = Literal["posted", "edited"]
# (action, seconds from the item's start to the post): the metrics hook.
PostHook = Callable[[PostAction, float], None]
# (member, Unix time since which nobody looked): a poll's answer ended a stretch long enough
# to hide a whole counted play (``RecordResult.unseen_since``): the listening log's gap fill.
GapListener = Callable[[int, float], None]
GapHook = GapListener
# Every observation, from any source, before the posting rules (the listening log).
PlayListener = Callable[[int, CurrentlyPlaying, Source], None]
Fetch = Callable[[int], Awaitable[CurrentlyPlaying]]


class Renderer(Protocol):
    """The now-playing message, handed in (``bot.nowplaying.renderer`` in the app)."""

    async def prepare(self, playback: CurrentlyPlaying, *, wait: float) -> None: ...

    def render(
        self,
        playback: CurrentlyPlaying,
        *,
        member_name: str,
        member_avatar_url: str | None,
        now: float | None = None,
    ) -> BotMessage: ...


class PollScheduling(Protocol):
    """The part of ``PollScheduler`` the loop uses (a benchmark swaps in a baseline)."""

    def add(self, member_id: int, now: float) -> float: ...

    def remove(self, member_id: int) -> bool: ...

    def __contains__(self, member_id: object) -> bool: ...

    def __len__(self) -> int: ...

    def pop_due(self, now: float, limit: int | None = None) -> list[int]: ...

    def next_wakeup(self, now: float) -> float | None: ...

    def record(self, member_id: int, observation: Observation, now: float) -> RecordResult: ...

    def hold_all_until(self, until: float) -> None: ...

    def stretch(self, now: float) -> float: ...


class SpotifyHold(Protocol):
    """The Spotify sender's app-wide 429 hold (``bot.spotify.http.SpotifySender``)."""

    @property
    def hold_until(self) -> float:
        """Monotonic time before which every request fails at once; 0.0 when none."""
        ...

    @property
    def hold_quota_exceeded(self) -> bool: ...

    def hold_remaining(self) -> float: ...


@dataclass(frozen=True, slots=True)
class MemberView:
    """How a member is shown in one guild (nickname and avatar are per guild)."""

    display_name: str
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class PostOwner:
    """Whose auto-post it is, and for which server."""

    guild_id: int
    member_id: int


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
    """Everything the auto-poster asks of Discord."""

    async def wait_until_ready(self) -> None: ...

    def check_channel(self, guild_id: int, channel_id: int) -> ChannelCheck: ...

    async def fetch_member(self, guild_id: int, user_id: int) -> MemberView | None:
        """The member as they are now; None when they are not in the guild."""
        ...

    async def send(
        self, channel_id: int, message: BotMessage, nonce: str | None = None, *, owner: PostOwner
    ) -> int:
        """Post; return the new message's id. Raises ChannelUnusable or DiscordUnavailable.
        ``nonce``: the same post sent again (a retry, another process) lands once. ``owner``:
        whose post it is (a post sent late is checked again for them)."""
        ...

    async def edit(self, channel_id: int, message_id: int, message: BotMessage) -> bool:
        """Replace a message's content; False when the message no longer exists."""
        ...

    async def last_message_id(self, channel_id: int) -> int | None: ...
