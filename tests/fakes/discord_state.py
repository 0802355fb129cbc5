"""The world of the fake Discord: guilds, members, channels, users, permissions, and the
application commands the bot registered.

The payload dicts are live: a change made here shows in the next GUILD_CREATE and REST answer.
A change a connected bot would be told about is dispatched through ``dispatch`` (PRESENCE_UPDATE,
GUILD_MEMBER_*, CHANNEL_*); made before the bot connects, it reaches it in READY/GUILD_CREATE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .discord_payloads import (
    ATTACH_FILES,
    DM,
    EMBED_LINKS,
    GUILD_TEXT,
    JSON,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    compute_permissions,
    make_channel,
    make_member,
    make_overwrite,
    make_presence,
    make_role,
    make_user,
    new_snowflake,
)
from .discord_waiting import DEFAULT_TIMEOUT, Waiters

Dispatch = Callable[[str, Any], Awaitable[None]]


class DiscordWorld:
    """Guilds, channels and users as Discord holds them, seen from the bot's application.

    Switches a test may flip at any time: ``dms_closed`` (every DM POST answers 403 50007) and
    ``closed_dm_user_ids`` (the same for some users).
    """

    def __init__(
        self,
        *,
        bot_user: JSON,
        application_id: str,
        bot_permissions: int,
        guilds: Sequence[JSON],
        users: Sequence[JSON],
        dispatch: Dispatch,
        notify: Callable[[], None],
    ) -> None:
        self.bot_user = bot_user
        self.bot_user_id = str(bot_user["id"])
        self.application_id = application_id
        self.bot_permissions = bot_permissions
        self._dispatch = dispatch
        self._notify = notify
        self.guilds: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        self.users: dict[str, JSON] = {self.bot_user_id: bot_user}
        self.deleted_channel_ids: set[str] = set()
        self.dm_channels: dict[str, JSON] = {}  # user id -> DM channel
        self.dms_closed = False
        self.closed_dm_user_ids: set[str] = set()
        for user in users:
            self.users[str(user["id"])] = user
        for guild in guilds:
            self.add_guild(guild)

    def add_guild(self, guild: JSON) -> None:
        """Take a guild in, adding the bot's member and its managed role when missing."""
        guild_id = str(guild["id"])
        self.guilds[guild_id] = guild
        for channel in guild.setdefault("channels", []):
            channel["guild_id"] = guild_id
            self.channels[str(channel["id"])] = channel
        guild.setdefault("presences", [])
        members = guild.setdefault("members", [])
        for member in members:
            self.users[str(member["user"]["id"])] = member["user"]
        if not any(str(m["user"]["id"]) == self.bot_user_id for m in members):
            roles = guild.setdefault("roles", [])
            position = max((int(role.get("position", 0)) for role in roles), default=0) + 1
            bot_role = make_role(
                name=self.bot_user["username"],
                permissions=self.bot_permissions,
                position=position,
                managed=True,
            )
            bot_role["tags"] = {"bot_id": self.bot_user_id}
            roles.append(bot_role)
            members.append(make_member(self.bot_user, roles=[bot_role["id"]]))
        guild["member_count"] = len(members)

    # --- looking things up ---------------------------------------------------------------------

    @property
    def default_guild_id(self) -> str:
        if not self.guilds:
            raise LookupError("the fake has no guild")
        return next(iter(self.guilds))

    def member(self, guild_id: str | int, user_id: str | int) -> JSON | None:
        members: list[JSON] = self.guilds[str(guild_id)]["members"]
        return next((m for m in members if str(m["user"]["id"]) == str(user_id)), None)

    def bot_member(self, guild_id: str | int) -> JSON:
        member = self.member(guild_id, self.bot_user_id)
        assert member is not None
        return member

    def default_user_id(self, guild_id: str | None = None) -> str:
        """The first member who is not a bot (of ``guild_id``, else of any guild or user)."""
        pools: list[Iterable[JSON]] = []
        if guild_id is not None:
            pools.append(m["user"] for m in self.guilds[guild_id]["members"])
        pools.append(self.users.values())
        for pool in pools:
            for user in pool:
                if not user.get("bot"):
                    return str(user["id"])
        raise LookupError("no non-bot user in the fake: add members or users")

    def default_channel_id(self, guild_id: str) -> str:
        for channel in self.guilds[guild_id]["channels"]:
            if channel["type"] == GUILD_TEXT:
                return str(channel["id"])
        raise LookupError(f"guild {guild_id} has no text channel")

    def user(self, user_id: str | int) -> JSON:
        """A known user, or a plausible stub for an id the fake has not seen."""
        user_id = str(user_id)
        if user_id not in self.users:
            self.users[user_id] = make_user(user_id, f"user{user_id[-4:]}")
        return self.users[user_id]

    def dm_channel(self, user_id: str | int) -> JSON:
        """The DM channel with this user, created on first use (one per user, as on Discord)."""
        user_id = str(user_id)
        channel = self.dm_channels.get(user_id)
        if channel is None:
            channel = {
                "id": new_snowflake(),
                "type": DM,
                "last_message_id": None,
                "recipients": [self.user(user_id)],
                "flags": 0,
            }
            self.dm_channels[user_id] = channel
            self.channels[channel["id"]] = channel
        return channel

    def dms_refused(self, channel: JSON) -> bool:
        """A DM the recipient does not accept (403 50007 on Discord)."""
        recipient = str(channel["recipients"][0]["id"])
        return self.dms_closed or recipient in self.closed_dm_user_ids

    def bot_permissions_in(self, channel_id: str | int) -> int:
        channel = self.channels[str(channel_id)]
        if channel["type"] == DM:
            return VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
        guild = self.guilds[str(channel["guild_id"])]
        return compute_permissions(guild, self.bot_member(guild["id"]), channel)

    def client_user(self) -> JSON:
        """The bot's user as ``GET /users/@me`` and READY give it."""
        return {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0}

    # --- changing the world (dispatched to a connected bot) ------------------------------------

    async def update_presence(
        self,
        guild_id: str | int,
        user_id: str | int,
        activities: Sequence[JSON] = (),
        *,
        status: str = "online",
    ) -> JSON:
        """Change a member's presence: stored for later GUILD_CREATEs and dispatched."""
        presence = make_presence(user_id, guild_id, activities=activities, status=status)
        guild = self.guilds[str(guild_id)]
        presences = [p for p in guild["presences"] if str(p["user"]["id"]) != str(user_id)]
        guild["presences"] = [*presences, presence]
        await self._dispatch("PRESENCE_UPDATE", presence)
        return presence

    async def update_user_presence(
        self, user_id: str | int, activities: Sequence[JSON] = (), *, status: str = "online"
    ) -> list[JSON]:
        """The same change in every guild the user shares with the bot: one PRESENCE_UPDATE per
        guild, as Discord sends them (a bot must deduplicate)."""
        return [
            await self.update_presence(guild_id, user_id, activities, status=status)
            for guild_id in self.guilds
            if self.member(guild_id, user_id) is not None
        ]

    async def add_member(self, guild_id: str | int, member: JSON) -> None:
        guild = self.guilds[str(guild_id)]
        guild["members"].append(member)
        guild["member_count"] = len(guild["members"])
        self.users[str(member["user"]["id"])] = member["user"]
        await self._dispatch("GUILD_MEMBER_ADD", {**member, "guild_id": str(guild_id)})

    async def remove_member(self, guild_id: str | int, user_id: str | int) -> None:
        guild = self.guilds[str(guild_id)]
        guild["members"] = [m for m in guild["members"] if str(m["user"]["id"]) != str(user_id)]
        guild["member_count"] = len(guild["members"])
        event = {"guild_id": str(guild_id), "user": self.user(user_id)}
        await self._dispatch("GUILD_MEMBER_REMOVE", event)

    async def update_channel(self, channel_id: str | int, **changes: Any) -> JSON:
        """Change a guild channel's fields and dispatch CHANNEL_UPDATE."""
        channel = self.channels[str(channel_id)]
        channel.update(changes)
        await self._dispatch("CHANNEL_UPDATE", channel)
        return channel

    async def set_bot_overwrite(
        self, channel_id: str | int, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Put a member overwrite for the bot on a channel (CHANNEL_UPDATE is dispatched).

        REST then answers 403 code 50013 to the bot wherever it lacks VIEW_CHANNEL or
        SEND_MESSAGES, and discord.py's ``permissions_for(guild.me)`` shows the same.
        """
        channel = self.channels[str(channel_id)]
        overwrites = [o for o in channel["permission_overwrites"] if o["id"] != self.bot_user_id]
        if allow or deny:
            overwrites.append(make_overwrite(self.bot_user_id, member=True, allow=allow, deny=deny))
        await self.update_channel(channel_id, permission_overwrites=overwrites)

    async def restrict_bot(
        self, channel_id: str | int, deny: int = SEND_MESSAGES | EMBED_LINKS
    ) -> None:
        """Take permissions away from the bot in one channel (default: it can no longer post)."""
        await self.set_bot_overwrite(channel_id, deny=deny)

    async def unrestrict_bot(self, channel_id: str | int) -> None:
        await self.set_bot_overwrite(channel_id)

    async def delete_channel(self, channel_id: str | int) -> JSON:
        """Delete a guild channel: CHANNEL_DELETE is dispatched, its REST answers 10003."""
        channel_id = str(channel_id)
        channel = self.channels.pop(channel_id)
        self.deleted_channel_ids.add(channel_id)
        guild_id = channel.get("guild_id")
        if guild_id is not None:
            guild = self.guilds[str(guild_id)]
            guild["channels"] = [c for c in guild["channels"] if str(c["id"]) != channel_id]
            await self._dispatch("CHANNEL_DELETE", channel)
        self._notify()
        return channel

    async def create_channel(self, guild_id: str | int, channel: JSON | None = None) -> JSON:
        channel = channel if channel is not None else make_channel(name="new-channel")
        channel["guild_id"] = str(guild_id)
        self.guilds[str(guild_id)]["channels"].append(channel)
        self.channels[str(channel["id"])] = channel
        await self._dispatch("CHANNEL_CREATE", channel)
        return channel


@dataclass(eq=False)
class CommandSync:
    """A bulk overwrite of application commands (``tree.sync()``); ``guild_id`` None is global."""

    guild_id: str | None
    commands: list[JSON]
    received_at: float

    @property
    def names(self) -> list[str]:
        return [command["name"] for command in self.commands]


class CommandRegistry:
    """The application commands the bot registered, globally and per guild, with stable ids."""

    def __init__(self, application_id: str, waiters: Waiters) -> None:
        self.application_id = application_id
        self._waiters = waiters
        self.command_syncs: list[CommandSync] = []
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[str, list[JSON]] = {}
        self._ids: dict[tuple[str | None, str, int], str] = {}

    def commands(self, guild_id: str | None) -> list[JSON]:
        return self.guild_commands.get(guild_id, []) if guild_id else self.global_commands

    def command_id(self, guild_id: str | None, name: str, kind: int = 1) -> str | None:
        return self._ids.get((guild_id, name, kind))

    def registered_in(self, guild_id: str, name: str) -> bool:
        return any(command["name"] == name for command in self.guild_commands.get(guild_id, []))

    def overwrite(
        self, guild_id: str | None, sent: Iterable[JSON], received_at: float
    ) -> list[JSON]:
        """``PUT .../commands``: the new set, as Discord stores and answers it."""
        commands: list[JSON] = []
        for command in sent:
            kind = int(command.get("type", 1))
            command_id = self._ids.setdefault((guild_id, command["name"], kind), new_snowflake())
            stored = {
                **command,
                "id": command_id,
                "application_id": self.application_id,
                "type": kind,
                "description": command.get("description", ""),
                "version": new_snowflake(),
                "default_member_permissions": command.get("default_member_permissions"),
            }
            if guild_id is not None:
                stored["guild_id"] = guild_id
            commands.append(stored)
        if guild_id is None:
            self.global_commands = commands
        else:
            self.guild_commands[guild_id] = commands
        self.command_syncs.append(CommandSync(guild_id, commands, received_at))
        return commands

    async def wait_for_command_sync(
        self, guild_id: str | int | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> CommandSync:
        """The latest command sync for this guild (None: global)."""
        wanted = None if guild_id is None else str(guild_id)

        def find() -> CommandSync | None:
            matches = [s for s in self.command_syncs if s.guild_id == wanted]
            return matches[-1] if matches else None

        return await self._waiters.wait_for(
            find, timeout=timeout, what=f"a command sync for {wanted}"
        )
