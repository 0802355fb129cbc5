"""The auto-poster's view of Discord, through discord.py: channels, members, posts and edits.

The bot runs with the guilds intent only (unless presence mode adds members and presences), so:

* Channels and the bot's permissions come from the gateway cache (CHANNEL_UPDATE and role
  updates keep ``permissions_for(guild.me)`` current).
* Members come from REST (``GET /guilds/{g}/members/{u}`` works without the privileged
  intent); with the members intent and a chunked guild the cache is authoritative and free.
* A channel's ``last_message_id`` comes from REST (``GET /channels/{id}``): without the message
  intent no MESSAGE_CREATE arrives, so the cached value never moves.
"""

from __future__ import annotations

import logging
from typing import Any

import discord

from bot.autopost.ports import (
    ChannelCheck,
    ChannelState,
    ChannelUnusable,
    DiscordUnavailable,
    MemberView,
    PostOwner,
)
from bot.gateway.connection import DiscordConnection
from bot.messages.message import BotMessage, edit_arguments, send_arguments

log = logging.getLogger(__name__)

UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013

# What posting a now-playing embed needs, with the names Discord's UI uses.
POST_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("embed_links", "Embed Links"),
)


def missing_post_permissions(permissions: discord.Permissions) -> tuple[str, ...]:
    """The names of the permissions a post needs that ``permissions`` lacks."""
    return tuple(label for attr, label in POST_PERMISSIONS if not getattr(permissions, attr))


class DiscordPySide:
    """:class:`bot.autopost.ports.DiscordSide` over the bot's connection (whichever bot the
    starter built last)."""

    def __init__(self, connection: DiscordConnection) -> None:
        self._connection = connection

    @property
    def _client(self) -> discord.Client:
        bot = self._connection.bot
        if bot is None:
            raise DiscordUnavailable("not connected to Discord yet")
        return bot

    async def wait_until_ready(self) -> None:
        await self._connection.wait_until_ready()

    def _elsewhere(self, guild_id: int) -> bool:
        """True for a guild of a shard another process runs (this one polls for all of them:
        such a guild is never in our cache, so channels and members are asked over REST)."""
        count = self._client.shard_count
        ids = getattr(self._client, "shard_ids", None)
        if not count or ids is None:
            return False
        return (guild_id >> 22) % count not in ids

    def check_channel(self, guild_id: int, channel_id: int) -> ChannelCheck:
        guild = self._client.get_guild(guild_id)
        if guild is None and self._elsewhere(guild_id):
            # Not in our cache: Discord itself says on the post whether the channel works
            # (deleted or forbidden turn auto-posting off there, as for our own guilds).
            return ChannelCheck(ChannelState.OK)
        if guild is None or guild.unavailable:
            return ChannelCheck(ChannelState.UNAVAILABLE)
        channel = guild.get_channel(channel_id)
        if channel is None:
            return ChannelCheck(ChannelState.DELETED)
        if not isinstance(channel, discord.TextChannel):
            return ChannelCheck(ChannelState.DELETED, channel.name)
        missing = missing_post_permissions(channel.permissions_for(guild.me))
        if missing:
            return ChannelCheck(ChannelState.MISSING_PERMISSIONS, channel.name, missing)
        return ChannelCheck(ChannelState.OK, channel.name)

    async def fetch_member(self, guild_id: int, user_id: int) -> MemberView | None:
        guild = self._client.get_guild(guild_id)
        if guild is None and self._elsewhere(guild_id):
            return await self._fetch_member_elsewhere(guild_id, user_id)
        if guild is None:
            return None  # the bot is no longer in that guild
        if self._client.intents.members and guild.chunked:
            cached = guild.get_member(user_id)  # kept current by GUILD_MEMBER_* events
            return _view(cached) if cached is not None else None
        try:
            member = await guild.fetch_member(user_id)
        except discord.NotFound:
            return None
        except discord.HTTPException as exc:
            raise DiscordUnavailable(f"member lookup: HTTP {exc.status} ({exc.code})") from exc
        except (OSError, TimeoutError) as exc:
            raise DiscordUnavailable(f"member lookup: {exc!r}") from exc
        return _view(member)

    async def _fetch_member_elsewhere(self, guild_id: int, user_id: int) -> MemberView | None:
        try:
            data = await self._client.http.get_member(guild_id, user_id)
        except discord.NotFound:
            return None  # not a member (10007), or the bot left the guild (10004)
        except discord.HTTPException as exc:
            raise DiscordUnavailable(f"member lookup: HTTP {exc.status} ({exc.code})") from exc
        except (OSError, TimeoutError) as exc:
            raise DiscordUnavailable(f"member lookup: {exc!r}") from exc
        return _view_of_payload(self._client, guild_id, data)

    async def send(
        self, channel_id: int, message: BotMessage, nonce: str | None = None, *, owner: PostOwner
    ) -> int:
        channel = self._client.get_partial_messageable(channel_id)
        # With a nonce discord.py also sends enforce_nonce: Discord answers a second create
        # with the same nonce in the channel (within minutes) with the first message.
        arguments = send_arguments(message)
        if nonce is not None:
            arguments["nonce"] = nonce
        try:
            sent = await channel.send(**arguments)
        except discord.HTTPException as exc:
            raise _translate(exc, "post") from exc
        except (OSError, TimeoutError) as exc:
            raise DiscordUnavailable(f"post: {exc!r}") from exc
        return sent.id

    async def edit(self, channel_id: int, message_id: int, message: BotMessage) -> bool:
        partial = self._client.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            await partial.edit(**edit_arguments(message))
        except discord.NotFound as exc:
            if exc.code == UNKNOWN_MESSAGE:
                return False
            raise _translate(exc, "edit") from exc
        except discord.HTTPException as exc:
            raise _translate(exc, "edit") from exc
        except (OSError, TimeoutError) as exc:
            raise DiscordUnavailable(f"edit: {exc!r}") from exc
        return True

    async def last_message_id(self, channel_id: int) -> int | None:
        try:
            channel = await self._client.fetch_channel(channel_id)
        except discord.HTTPException as exc:
            raise _translate(exc, "channel lookup") from exc
        except (OSError, TimeoutError) as exc:
            raise DiscordUnavailable(f"channel lookup: {exc!r}") from exc
        last: int | None = getattr(channel, "last_message_id", None)
        return last


def _view(member: discord.Member) -> MemberView:
    return MemberView(display_name=member.display_name, avatar_url=member.display_avatar.url)


def _view_of_payload(client: discord.Client, guild_id: int, data: Any) -> MemberView:
    """A member from ``GET /guilds/{g}/members/{u}`` (no cached guild to build one on)."""
    user = data["user"]
    user_id = int(user["id"])
    state = client._connection
    name = data.get("nick") or user.get("global_name") or user["username"]
    if data.get("avatar"):
        avatar = discord.Asset._from_guild_avatar(state, guild_id, user_id, data["avatar"])
    elif user.get("avatar"):
        avatar = discord.Asset._from_avatar(state, user_id, user["avatar"])
    else:
        avatar = discord.Asset._from_default_avatar(state, (user_id >> 22) % 6)
    return MemberView(display_name=str(name), avatar_url=avatar.url)


def _translate(error: discord.HTTPException, what: str) -> Exception:
    if isinstance(error, discord.NotFound) and error.code == UNKNOWN_CHANNEL:
        return ChannelUnusable("deleted", f"{what}: Unknown Channel")
    if isinstance(error, discord.Forbidden) and error.code in (MISSING_ACCESS, MISSING_PERMISSIONS):
        return ChannelUnusable("forbidden", f"{what}: {error.text or error.code}")
    return DiscordUnavailable(f"{what}: HTTP {error.status} ({error.code})")
