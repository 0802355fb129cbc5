"""Discord as the auto-poster sees it (``bot.autopost.ports.DiscordSide``), in memory.

For tests and benchmarks of the auto-poster that need no Discord on the network: who is a member
of which guild, what state each channel is in, failures to inject, every post and edit recorded,
and, when wanted, a pause in each call (``delay=0.0`` yields to the event loop once, as a real
request would). Like Discord, a second post with the same ``nonce`` in a channel answers the
first message's id and posts nothing (discord.py's ``enforce_nonce``).

Typical use::

    side = FakeDiscordSide(members={GUILD: {ALICE}})
    service = AutopostService(storage, fetch, side, ...)
    ...
    assert side.titles(MUSIC) == ["Song t1"]
    side.checks[MUSIC] = ChannelCheck(ChannelState.DELETED)
    side.send_error = DiscordUnavailable("503")
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from bot.autopost.ports import ChannelCheck, ChannelState, MemberView, PostOwner
from bot.messages.message import BotMessage

__all__ = ["Channels", "FakeDiscordSide", "Post"]

OK_MUSIC = ChannelCheck(ChannelState.OK, "music")


@dataclass
class Post:
    """One message the auto-poster posted, with every edit made to it since."""

    channel_id: int
    message_id: int
    message: BotMessage
    nonce: str | None = None
    edits: list[BotMessage] = field(default_factory=list)

    @property
    def shown(self) -> BotMessage:
        """What the channel shows now: the last edit, or the message as posted."""
        return self.edits[-1] if self.edits else self.message

    @property
    def title(self) -> str | None:
        return self.shown.embed.title if self.shown.embed is not None else None


class Channels:
    """What the channels hold: every post by id, the last message of each channel, and the
    nonces already posted (Discord answers a repeated nonce with the first message)."""

    def __init__(self, first_message_id: int, *, keep_posts: bool) -> None:
        self.keep_posts = keep_posts
        self.post_count = 0
        self.posts: list[Post] = []
        self.messages: dict[int, Post] = {}  # by message id; clear one to "delete" it
        self.last_in_channel: dict[int, int] = {}
        self._by_nonce: dict[tuple[int, str], int] = {}
        self._ids = itertools.count(first_message_id)

    def post(self, channel_id: int, message: BotMessage, nonce: str | None) -> int:
        if nonce is not None and (channel_id, nonce) in self._by_nonce:
            return self._by_nonce[channel_id, nonce]
        message_id = next(self._ids)
        self.post_count += 1
        self.last_in_channel[channel_id] = message_id
        if nonce is not None:
            self._by_nonce[channel_id, nonce] = message_id
        if self.keep_posts:
            post = Post(channel_id, message_id, message, nonce)
            self.posts.append(post)
            self.messages[message_id] = post
        return message_id

    def edit(self, message_id: int, message: BotMessage) -> bool:
        post = self.messages.get(message_id)
        if post is None:
            return not self.keep_posts  # without records, every edit lands
        post.edits.append(message)
        return True

    def someone_else_posts(self, channel_id: int) -> None:
        self.last_in_channel[channel_id] = next(self._ids)


class FakeDiscordSide:
    """The ``DiscordSide`` protocol in memory.

    Args:
        members: the members of each guild (user ids); a guild not named has none. None: every
            user is a member of every guild.
        names: display names by user id (default ``member<id>``).
        channel: the state of every channel not set in :attr:`checks` (default: usable, named
            "music").
        first_message_id: the id of the first post (ids count up from it).
        delay: seconds each call waits before answering (0.0: one turn of the event loop);
            None answers at once.
        send_error / lookup_error: raised by every ``send`` / ``fetch_member`` (a failure to
            inject from the start; settable later too).
        keep_posts: False keeps no :class:`Post` (nor the message in it), only
            :attr:`post_count`: for a benchmark that measures what the bot itself retains.

    Settable at any time: :attr:`members`, :attr:`checks` (a channel's state),
    :attr:`send_error` and :attr:`lookup_error` (raised by every ``send`` or ``fetch_member``
    until reset to None), :attr:`ready` (``wait_until_ready`` waits while it is clear).
    What was posted is in :attr:`channels` (:class:`Channels`), and read through
    :attr:`posts`, :attr:`messages`, :attr:`titles`, :attr:`sent`.
    """

    def __init__(
        self,
        *,
        members: Mapping[int, Iterable[int]] | None = None,
        names: Mapping[int, str] | None = None,
        channel: ChannelCheck = OK_MUSIC,
        first_message_id: int = 10_000,
        delay: float | None = None,
        send_error: Exception | None = None,
        lookup_error: Exception | None = None,
        keep_posts: bool = True,
    ) -> None:
        self.members: dict[int, set[int]] | None = (
            None if members is None else {guild: set(ids) for guild, ids in members.items()}
        )
        self._name: Callable[[int], str] = lambda user_id: (names or {}).get(
            user_id, f"member{user_id}"
        )
        self.checks: dict[int, ChannelCheck] = {}
        self._default_check = channel
        self.delay = delay
        self.send_error = send_error
        self.lookup_error = lookup_error
        self.ready = asyncio.Event()
        self.ready.set()
        self.member_lookups: list[tuple[int, int]] = []
        self.channels = Channels(first_message_id, keep_posts=keep_posts)

    @property
    def posts(self) -> list[Post]:
        return self.channels.posts

    @property
    def messages(self) -> dict[int, Post]:
        """Posts by message id; clear one to "delete" it (Discord keeps last_message_id)."""
        return self.channels.messages

    @property
    def post_count(self) -> int:
        return self.channels.post_count

    @property
    def sent(self) -> list[tuple[int, BotMessage, str | None]]:
        """(channel_id, message as posted, nonce) of every post, in order."""
        return [(post.channel_id, post.message, post.nonce) for post in self.posts]

    def titles(self, channel_id: int | None = None) -> list[str | None]:
        """The titles shown by the posts (of one channel), in order."""
        return [post.title for post in self.posts if channel_id in (None, post.channel_id)]

    def someone_else_posts(self, channel_id: int) -> None:
        """A member posts in the channel: the auto-poster's message is no longer the last."""
        self.channels.someone_else_posts(channel_id)

    async def _pause(self) -> None:
        if self.delay is not None:
            await asyncio.sleep(self.delay)

    # --- DiscordSide ---------------------------------------------------------------------------

    async def wait_until_ready(self) -> None:
        await self.ready.wait()

    def check_channel(self, guild_id: int, channel_id: int) -> ChannelCheck:
        return self.checks.get(channel_id, self._default_check)

    async def fetch_member(self, guild_id: int, user_id: int) -> MemberView | None:
        self.member_lookups.append((guild_id, user_id))
        await self._pause()
        if self.lookup_error is not None:
            raise self.lookup_error
        if self.members is not None and user_id not in self.members.get(guild_id, set()):
            return None
        return MemberView(self._name(user_id))

    async def send(
        self, channel_id: int, message: BotMessage, nonce: str | None = None, *, owner: PostOwner
    ) -> int:
        await self._pause()
        if self.send_error is not None:
            raise self.send_error
        return self.channels.post(channel_id, message, nonce)

    async def edit(self, channel_id: int, message_id: int, message: BotMessage) -> bool:
        await self._pause()
        return self.channels.edit(message_id, message)

    async def last_message_id(self, channel_id: int) -> int | None:
        await self._pause()
        return self.channels.last_in_channel.get(channel_id)
