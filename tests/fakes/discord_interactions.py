"""Interactions in the fake Discord: sending a member's slash command, click or modal
submission as INTERACTION_CREATE, and everything the bot answered to it (:class:`SentInteraction`:
the callback, the "@original" reply and the follow-ups, with waits that follow defers).

Option values are typed by Python type (str, int, float, bool); :class:`UserArg`,
:class:`ChannelArg` and :class:`RoleArg` are resolved from the fake's state, with the permissions
Discord computes for the invoking member.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .discord_http import RecordedFile
from .discord_messages import FakeMessage, MessageStore
from .discord_payloads import (
    EPHEMERAL,
    JSON,
    SELECT_TYPES,
    compute_permissions,
    modal_submit_components,
    new_snowflake,
)
from .discord_state import CommandRegistry, DiscordWorld
from .discord_waiting import DEFAULT_TIMEOUT, Waiters

T = TypeVar("T")

ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

# Interaction types and callback types (https://discord.com/developers/docs/interactions).
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
APPLICATION_COMMAND_AUTOCOMPLETE = 4
MODAL_SUBMIT = 5
CHANNEL_MESSAGE_WITH_SOURCE = 4
DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9


@dataclass(eq=False)
class InteractionCallback:
    """The bot's initial response to an interaction (POST .../callback).

    ``type``: 4 message, 5 deferred ("thinking"), 6 deferred update, 7 update message,
    8 autocomplete choices, 9 modal. ``data`` is the callback's ``data`` as sent.
    """

    type: int
    data: JSON
    received_at: float
    files: list[RecordedFile] = field(default_factory=list)

    @property
    def flags(self) -> int:
        return int(self.data.get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def content(self) -> str | None:
        content: str | None = self.data.get("content")
        return content

    @property
    def embeds(self) -> list[JSON]:
        return list(self.data.get("embeds") or [])

    @property
    def components(self) -> list[JSON]:
        return list(self.data.get("components") or [])


@dataclass(frozen=True)
class UserArg:
    """A user/member option value (type 6); resolved data is built from the fake's members."""

    user_id: str | int


@dataclass(frozen=True)
class ChannelArg:
    """A channel option value (type 7); resolved with the invoking member's permissions."""

    channel_id: str | int


@dataclass(frozen=True)
class RoleArg:
    """A role option value (type 8)."""

    role_id: str | int


OptionValue = str | int | float | bool | UserArg | ChannelArg | RoleArg


@dataclass(eq=False)
class SentInteraction:
    """An INTERACTION_CREATE the fake sent, and everything the bot answered to it.

    Await the answer with :meth:`wait_for_callback` (the initial response), :meth:`wait_for_reply`
    (the message the member ends up seeing, following defers), :meth:`wait_for_followup`.
    Chain the next step with :meth:`click` and :meth:`submit_modal`.
    """

    sender: InteractionSender
    id: str
    token: str
    type: int
    payload: JSON
    guild_id: str | None
    channel_id: str
    user_id: str
    message_id: str | None = None
    sent_at: float = 0.0
    callback: InteractionCallback | None = None
    original_message_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)

    @property
    def original(self) -> FakeMessage | None:
        """The interaction's "@original" message (for component interactions answered with 6 or
        7, the message the component is on)."""
        if self.original_message_id is None:
            return None
        return self.sender.messages.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        return [self.sender.messages.messages[message_id] for message_id in self.followup_ids]

    @property
    def callback_latency(self) -> float:
        """Seconds from INTERACTION_CREATE written to the callback request arriving."""
        if self.callback is None:
            raise AssertionError(f"interaction {self.id} has no callback yet")
        return self.callback.received_at - self.sent_at

    async def wait_until(
        self, find: Callable[[SentInteraction], T | None], *, timeout: float = DEFAULT_TIMEOUT
    ) -> T:
        """Wait until ``find(self)`` returns something other than None, and return it."""
        return await self.sender.waiters.wait_for(
            lambda: find(self), timeout=timeout, what=self.__repr__
        )

    async def wait_for_callback(self, *, timeout: float = DEFAULT_TIMEOUT) -> InteractionCallback:
        return await self.wait_until(lambda i: i.callback, timeout=timeout)

    async def wait_for_followup(
        self, index: int = 0, *, timeout: float = DEFAULT_TIMEOUT
    ) -> FakeMessage:
        """The ``index``-th follow-up (the first one after a defer is the edited original)."""
        return await self.wait_until(
            lambda i: i.followups[index] if len(i.followup_ids) > index else None, timeout=timeout
        )

    async def wait_for_reply(self, *, timeout: float = DEFAULT_TIMEOUT) -> FakeMessage:
        """The message the member sees as the answer.

        Type 4 and 7: that message at once. Type 5 (defer): the original once it stops
        "thinking" (edit_original_response or first follow-up). Type 6: the component's message
        once edited, or the first follow-up. A modal or autocomplete answer fails at once.
        """
        return await self.wait_until(_find_reply, timeout=timeout)

    async def wait_for_modal(self, *, timeout: float = DEFAULT_TIMEOUT) -> JSON:
        """The modal (callback type 9 ``data``: custom_id, title, components)."""
        callback = await self.wait_for_callback(timeout=timeout)
        if callback.type != MODAL:
            raise AssertionError(f"expected a modal (type 9), got type {callback.type}: {callback}")
        return callback.data

    async def click(
        self,
        custom_id: str | None = None,
        *,
        label: str | None = None,
        values: Sequence[str] | None = None,
        user_id: str | int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SentInteraction:
        """Click a button (or pick ``values`` in a select) on this interaction's reply or
        follow-ups, as the same member unless ``user_id`` is given."""
        reply = await self.wait_for_reply(timeout=timeout)
        target = reply
        for message in [reply, *reversed([m for m in self.followups if m is not reply])]:
            try:
                message.find_component(custom_id, label)
            except LookupError:
                continue
            target = message
            break
        return await self.sender.click(
            target,  # raises LookupError listing the components when none matched
            custom_id=custom_id,
            label=label,
            values=values,
            user_id=user_id if user_id is not None else self.user_id,
        )

    async def submit_modal(
        self,
        values: Mapping[str, str | Sequence[str]],
        *,
        user_id: str | int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SentInteraction:
        """Fill in the modal this interaction opened and submit it.

        ``values`` is keyed by an input's label or custom_id (discord.py generates random
        custom_ids unless the bot sets them); inputs not given are submitted empty.
        """
        modal = await self.wait_for_modal(timeout=timeout)
        return await self.sender.submit_modal(
            modal["custom_id"],
            values,
            modal=modal,
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            user_id=user_id if user_id is not None else self.user_id,
            message=self.message_id,
            dm=self.guild_id is None,
        )

    def __repr__(self) -> str:
        name = self.payload.get("data", {}).get("name") or self.payload.get("data", {}).get(
            "custom_id"
        )
        callback = None if self.callback is None else self.callback.type
        return (
            f"<SentInteraction id={self.id} type={self.type} {name!r} callback={callback} "
            f"original={self.original_message_id} followups={len(self.followup_ids)}>"
        )


def _find_reply(interaction: SentInteraction) -> FakeMessage | None:
    callback = interaction.callback
    if callback is None:
        return None
    if callback.type in (AUTOCOMPLETE_RESULT, MODAL):
        raise AssertionError(
            f"interaction {interaction.id} was answered with callback type {callback.type} "
            "(autocomplete or modal): there is no reply message"
        )
    original = interaction.original
    if callback.type in (CHANNEL_MESSAGE_WITH_SOURCE, UPDATE_MESSAGE):
        return original
    if callback.type == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
        return original if original is not None and not original.loading else None
    if callback.type == DEFERRED_UPDATE_MESSAGE:
        if original is not None and (original.edited_at or 0.0) >= callback.received_at:
            return original
        followups = interaction.followups
        return followups[0] if followups else None
    raise AssertionError(f"unexpected callback type {callback.type} for {interaction!r}")


class InteractionSender:
    """Sends interactions as members would, and keeps them by id and token."""

    def __init__(
        self,
        world: DiscordWorld,
        messages: MessageStore,
        commands: CommandRegistry,
        waiters: Waiters,
        *,
        dispatch: Callable[[str, Any], Any],
    ) -> None:
        self._world = world
        self.messages = messages
        self._commands = commands
        self.waiters = waiters
        self._dispatch = dispatch
        self.interactions: dict[str, SentInteraction] = {}
        self.by_token: dict[str, SentInteraction] = {}

    async def send_slash_command(
        self,
        name: str,
        options: Mapping[str, OptionValue] | Sequence[JSON] = (),
        *,
        subcommand: str | None = None,
        group: str | None = None,
        guild_id: str | int | None = None,
        channel_id: str | int | None = None,
        user_id: str | int | None = None,
        dm: bool = False,
        member_permissions: int | None = None,
        registered_in_guild: bool | None = None,
        locale: str = "en-US",
        resolved: JSON | None = None,
        focused: str | None = None,
    ) -> SentInteraction:
        """Send an INTERACTION_CREATE for a chat-input command, as a member would.

        ``options`` maps option names to values: str, int, float and bool are typed by Python
        type; :class:`UserArg`, :class:`ChannelArg`, :class:`RoleArg` are resolved from the
        fake's state (``resolved.users`` + ``members``, ``channels`` with ``permissions``).
        A sequence of raw option dicts is sent as is (pass ``resolved`` then). Defaults: the
        first guild, its first text channel, its first non-bot member; ``dm=True`` sends it
        from that user's DM instead. ``data.guild_id`` is set when the command was synced to
        that guild (discord.py only finds guild commands with it), unless
        ``registered_in_guild`` says otherwise. ``focused`` makes it an autocomplete request.
        """
        context = self._context(guild_id, channel_id, user_id, dm)
        guild_id_str = context[0]
        option_list, resolved_data = self._build_options(options, context, focused=focused)
        if group is not None:
            subcommand_option: JSON = {"type": 1, "name": subcommand, "options": option_list}
            option_list = [{"type": 2, "name": group, "options": [subcommand_option]}]
        elif subcommand is not None:
            option_list = [{"type": 1, "name": subcommand, "options": option_list}]
        if registered_in_guild is None:
            registered_in_guild = guild_id_str is not None and self._commands.registered_in(
                guild_id_str, name
            )
        command_guild = guild_id_str if registered_in_guild else None
        data: JSON = {
            "id": self._commands.command_id(command_guild, name) or new_snowflake(),
            "name": name,
            "type": 1,
            "options": option_list,
        }
        if resolved is not None:
            data["resolved"] = resolved
        elif resolved_data:
            data["resolved"] = resolved_data
        if command_guild is not None:
            data["guild_id"] = command_guild
        kind = APPLICATION_COMMAND if focused is None else APPLICATION_COMMAND_AUTOCOMPLETE
        payload = self._interaction_payload(
            kind, data, context, member_permissions=member_permissions, locale=locale
        )
        return await self._send_interaction(payload, context)

    async def send_autocomplete(
        self, name: str, options: Mapping[str, OptionValue], focused: str, **kwargs: Any
    ) -> SentInteraction:
        """An autocomplete request (type 4): ``focused`` names the option being typed."""
        return await self.send_slash_command(name, options, focused=focused, **kwargs)

    async def click(
        self,
        message: FakeMessage | str | int,
        *,
        custom_id: str | None = None,
        label: str | None = None,
        values: Sequence[str] | None = None,
        user_id: str | int | None = None,
        member_permissions: int | None = None,
    ) -> SentInteraction:
        """Click a button (or choose ``values`` in a select) on a message the bot sent.

        The component is found by ``custom_id`` or ``label``. The clicking user defaults to the
        member the message answered (interaction messages) or the first non-bot member.
        """
        target = (
            message if isinstance(message, FakeMessage) else self.messages.messages[str(message)]
        )
        component = target.find_component(custom_id, label)
        if user_id is None:
            user_id = target.interaction_user_id
        if user_id is None and target.guild_id is None:
            user_id = self._world.channels[target.channel_id]["recipients"][0]["id"]
        context = self._context(
            target.guild_id, target.channel_id, user_id, target.guild_id is None
        )
        data: JSON = {"custom_id": component["custom_id"], "component_type": component["type"]}
        if values is not None or component["type"] in SELECT_TYPES:
            data["values"] = list(values or [])
        payload = self._interaction_payload(
            MESSAGE_COMPONENT, data, context, message=target, member_permissions=member_permissions
        )
        return await self._send_interaction(payload, context, message_id=target.id)

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str | Sequence[str]],
        *,
        modal: JSON | None = None,
        guild_id: str | int | None = None,
        channel_id: str | int | None = None,
        user_id: str | int | None = None,
        message: FakeMessage | str | None = None,
        dm: bool = False,
    ) -> SentInteraction:
        """Send a MODAL_SUBMIT. With ``modal`` (the type 9 callback data) ``values`` may be keyed
        by label, and the submitted layout mirrors the modal's; without it, by custom_id.
        Prefer :meth:`SentInteraction.submit_modal`, which fills all of this in."""
        context = self._context(guild_id, channel_id, user_id, dm)
        data: JSON = {"custom_id": custom_id, "components": modal_submit_components(modal, values)}
        target: FakeMessage | None = None
        if message is not None:
            target = (
                message
                if isinstance(message, FakeMessage)
                else self.messages.messages[str(message)]
            )
        payload = self._interaction_payload(MODAL_SUBMIT, data, context, message=target)
        return await self._send_interaction(
            payload, context, message_id=target.id if target is not None else None
        )

    def _context(
        self,
        guild_id: str | int | None,
        channel_id: str | int | None,
        user_id: str | int | None,
        dm: bool,
    ) -> tuple[str | None, str, str]:
        if dm:
            user = str(user_id) if user_id is not None else self._world.default_user_id()
            channel = (
                str(channel_id) if channel_id is not None else self._world.dm_channel(user)["id"]
            )
            return None, channel, user
        guild = str(guild_id) if guild_id is not None else self._world.default_guild_id
        channel = (
            str(channel_id) if channel_id is not None else self._world.default_channel_id(guild)
        )
        user = str(user_id) if user_id is not None else self._world.default_user_id(guild)
        if self._world.member(guild, user) is None:
            raise LookupError(f"user {user} is not a member of guild {guild}")
        return guild, channel, user

    def _build_options(
        self,
        options: Mapping[str, OptionValue] | Sequence[JSON],
        context: tuple[str | None, str, str],
        *,
        focused: str | None,
    ) -> tuple[list[JSON], JSON]:
        if not isinstance(options, Mapping):
            return [dict(option) for option in options], {}
        guild_id, channel_id, user_id = context
        guild = self._world.guilds[guild_id] if guild_id is not None else None
        invoker = self._world.member(guild_id, user_id) if guild_id is not None else None
        resolved: dict[str, dict[str, JSON]] = {}
        option_list: list[JSON] = []
        for name, value in options.items():
            option: JSON = {"name": name}
            if isinstance(value, UserArg):
                target_id = str(value.user_id)
                option.update(type=6, value=target_id)
                resolved.setdefault("users", {})[target_id] = self._world.user(target_id)
                member = self._world.member(guild_id, target_id) if guild_id is not None else None
                if member is not None and guild is not None:
                    partial = {k: v for k, v in member.items() if k != "user"}
                    in_channel = self._world.channels.get(channel_id)
                    partial["permissions"] = str(compute_permissions(guild, member, in_channel))
                    resolved.setdefault("members", {})[target_id] = partial
            elif isinstance(value, ChannelArg):
                target_id = str(value.channel_id)
                channel = self._world.channels[target_id]
                option.update(type=7, value=target_id)
                permissions = (
                    compute_permissions(guild, invoker, channel)
                    if guild is not None and invoker is not None
                    else 0
                )
                resolved.setdefault("channels", {})[target_id] = {
                    "id": target_id,
                    "name": channel.get("name"),
                    "type": channel["type"],
                    "parent_id": channel.get("parent_id"),
                    "guild_id": channel.get("guild_id"),
                    "permissions": str(permissions),
                }
            elif isinstance(value, RoleArg):
                target_id = str(value.role_id)
                roles = guild["roles"] if guild is not None else []
                role = next(r for r in roles if str(r["id"]) == target_id)
                option.update(type=8, value=target_id)
                resolved.setdefault("roles", {})[target_id] = role
            elif isinstance(value, bool):
                option.update(type=5, value=value)
            elif isinstance(value, int):
                option.update(type=4, value=value)
            elif isinstance(value, float):
                option.update(type=10, value=value)
            else:
                option.update(type=3, value=str(value))
            if focused == name:
                option["focused"] = True
            option_list.append(option)
        return option_list, resolved

    def _interaction_payload(
        self,
        kind: int,
        data: JSON,
        context: tuple[str | None, str, str],
        *,
        message: FakeMessage | None = None,
        member_permissions: int | None = None,
        locale: str = "en-US",
    ) -> JSON:
        guild_id, channel_id, user_id = context
        payload: JSON = {
            "id": new_snowflake(),
            "application_id": self._world.application_id,
            "type": kind,
            "data": data,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            "version": 1,
            "locale": locale,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "entitlements": [],
            "channel_id": channel_id,
        }
        if guild_id is not None:
            guild = self._world.guilds[guild_id]
            channel = self._world.channels.get(channel_id)
            member = self._world.member(guild_id, user_id)
            assert member is not None
            permissions = (
                member_permissions
                if member_permissions is not None
                else compute_permissions(guild, member, channel)
            )
            app_permissions = compute_permissions(guild, self._world.bot_member(guild_id), channel)
            payload.update(
                guild_id=guild_id,
                guild={"id": guild_id, "locale": guild.get("preferred_locale"), "features": []},
                guild_locale=guild.get("preferred_locale", "en-US"),
                member={**member, "permissions": str(permissions)},
                app_permissions=str(app_permissions),
                context=0,
                authorizing_integration_owners={"0": guild_id},
            )
            if channel is not None:
                payload["channel"] = {**channel, "permissions": str(permissions)}
        else:
            payload.update(
                user=self._world.user(user_id),
                channel=self._world.channels[channel_id],
                app_permissions=str(self._world.bot_permissions_in(channel_id)),
                context=1,
                authorizing_integration_owners={"0": "0"},
            )
        if message is not None:
            payload["message"] = message.to_payload()
        return payload

    async def _send_interaction(
        self,
        payload: JSON,
        context: tuple[str | None, str, str],
        *,
        message_id: str | None = None,
    ) -> SentInteraction:
        guild_id, channel_id, user_id = context
        sent = SentInteraction(
            sender=self,
            id=payload["id"],
            token=payload["token"],
            type=payload["type"],
            payload=payload,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            message_id=message_id,
        )
        # Registered before sending: the callback can arrive before dispatch() returns.
        self.interactions[sent.id] = sent
        self.by_token[sent.token] = sent
        sent.sent_at = await self._dispatch("INTERACTION_CREATE", payload)
        return sent
