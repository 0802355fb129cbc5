"""A fake Discord on 127.0.0.1 that the real discord.py 2.7 connects to.

One aiohttp ``web.Application`` plays both halves of Discord: REST under ``/api/v10`` and the
gateway websocket under ``/gateway``. The bot under test is an ordinary ``commands.Bot``; only
two discord.py globals move (see :func:`point_discord_py_at`). Tests drive it by dispatching
gateway events and asserting on what the bot sends back over REST.

Typical use::

    guild = make_guild(members=[make_member(id=USER_ID, username="ann")])
    async with FakeDiscord.running(guilds=[guild]) as fake:
        bot = build_bot(guild_ready_timeout=0.05)       # lower the 2 s on_ready delay
        async with run_client(bot, fake):
            sent = await fake.send_slash_command("np", {"member": UserArg(USER_ID)})
            reply = await sent.wait_for_reply()            # the message the member sees
            assert reply.embeds[0]["title"] == ...

Everything the bot sends is recorded: :attr:`FakeDiscord.requests` (every REST call, with its
``time.monotonic()`` arrival), :attr:`FakeDiscord.messages` (every message that exists, by id),
:attr:`FakeDiscord.command_syncs`, :attr:`FakeDiscord.identifies`. Waiting never polls: each
recorded change wakes the waiters whose condition became true, and every wait has a timeout
that fails the test with a :class:`FakeDiscordTimeoutError` listing the last requests.

Discord behaviours reproduced because a bot must cope with them: 401 on a bad token, 403 code
50007 on a DM to a member whose DMs are closed (the DM channel itself is still created), 403
code 50013 in a channel where the bot lacks permissions, 404 code 10003 on a deleted channel,
400 code 40060 on a second interaction callback, 400 code 50035 ("Invalid Form Body", errors
nested by path) on every body that does not fit its route's schema in Discord's OpenAPI
description (``discord_spec``) or exceeds a limit Discord documents beyond it (content, embeds
in total, component rows, modals), the first follow-up after a defer replacing the
"thinking" message, and intents: without GUILD_PRESENCES a GUILD_CREATE carries only the bot's
own member and no presences (so discord.py chunks the guild with op 8 when it has
GUILD_MEMBERS), PRESENCE_UPDATE and GUILD_MEMBER_* go only to sessions with the intent, and a
privileged intent that the "developer portal" has not enabled closes the gateway with 4014.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from .discord_files import build_attachments, resolve_embed_attachments, upload_problem
from .discord_payloads import (
    ATTACH_FILES,
    DEFAULT_BOT_PERMISSIONS,
    DM,
    EMBED_LINKS,
    EPHEMERAL,
    GUILD_TEXT,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    JSON,
    LOADING,
    MANAGE_CHANNELS,
    PRIVILEGED_INTENTS,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    compute_permissions,
    is_empty_message,
    iso_now,
    make_channel,
    make_custom_status,
    make_guild,
    make_member,
    make_overwrite,
    make_presence,
    make_role,
    make_spotify_activity,
    make_user,
    message_problems,
    modal_problems,
    new_snowflake,
)
from .discord_spec import Problem, body_errors, nest_errors

__all__ = [
    "DEFAULT_TOKEN",
    "ChannelArg",
    "CommandSync",
    "FakeDiscord",
    "FakeDiscordTimeoutError",
    "FakeMessage",
    "InteractionCallback",
    "OptionValue",
    "RecordedFile",
    "RecordedRequest",
    "RoleArg",
    "SentInteraction",
    "UserArg",
    "discord_py_pointed_at",
    "fetch_gateway_url",
    "make_channel",
    "make_custom_status",
    "make_guild",
    "make_member",
    "make_overwrite",
    "make_presence",
    "make_role",
    "make_spotify_activity",
    "make_user",
    "point_discord_py_at",
    "run_client",
]

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DEFAULT_TOKEN = "fake-bot-token.NowPlaying.0000"
DEFAULT_TIMEOUT = 5.0
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
HEARTBEAT_INTERVAL_MS = 41_250
NONCE_WINDOW = 300.0  # how long Discord remembers a message nonce (enforce_nonce)

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

_SELECT_TYPES = frozenset({3, 5, 6, 7, 8})
# Which dispatches a real gateway withholds without an intent.
_EVENT_INTENTS = {
    "PRESENCE_UPDATE": INTENT_GUILD_PRESENCES,
    "GUILD_MEMBER_ADD": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": INTENT_GUILD_MEMBERS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
}

T = TypeVar("T")


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py recognises JSON only by this exact Content-Type; json_response() adds a charset.
    return web.Response(body=_dumps(data).encode(), status=status, content_type="application/json")


def _error(status: int, code: int, message: str, errors: Any = None) -> web.Response:
    body: JSON = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _json_response(body, status=status)


def _invalid_form_body(problems: Sequence[Problem]) -> web.Response:
    return _error(400, 50035, "Invalid Form Body", nest_errors(problems))


def _callback_type_problem(message: str) -> web.Response:
    return _invalid_form_body([Problem(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", message)])


class FakeDiscordTimeoutError(AssertionError):
    """A wait on the fake timed out: the bot did not do what the test expected in time."""


# --- recorded traffic --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request."""

    field_name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(eq=False)
class RecordedRequest:
    """One REST request the bot made. ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    received_at: float
    status: int = 0
    error: JSON | None = None  # the JSON body of an error answer (4xx/5xx)

    @property
    def invalid_form_body(self) -> bool:
        """Answered 400 code 50035: a body that did not fit Discord's schema or limits."""
        return self.error is not None and self.error.get("code") == 50035

    def __repr__(self) -> str:
        if self.invalid_form_body and self.error is not None:
            return f"<{self.method} {self.path} -> {self.status} {self.error.get('errors')}>"
        return f"<{self.method} {self.path} -> {self.status}>"


@dataclass(eq=False)
class CommandSync:
    """A bulk overwrite of application commands (``tree.sync()``); ``guild_id`` None is global."""

    guild_id: str | None
    commands: list[JSON]
    received_at: float

    @property
    def names(self) -> list[str]:
        return [command["name"] for command in self.commands]


@dataclass(eq=False)
class FakeMessage:
    """A message that exists in the fake: posted to a channel or sent for an interaction.

    ``created_at`` / ``edited_at`` are ``time.monotonic()`` values; ``edits`` holds the body of
    every edit in order. Interaction messages carry ``interaction_id``.
    """

    id: str
    channel_id: str
    guild_id: str | None
    author: JSON
    content: str
    embeds: list[JSON]
    components: list[JSON]
    flags: int
    attachments: list[JSON]
    created_at: float
    type: int = 0
    interaction_id: str | None = None
    interaction_user_id: str | None = None
    webhook_id: str | None = None
    edited_at: float | None = None
    deleted: bool = False
    edits: list[JSON] = field(default_factory=list)
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while it is a deferred "Bot is thinking..." placeholder."""
        return bool(self.flags & LOADING)

    def apply_edit(self, data: Mapping[str, Any], attachments: Sequence[JSON], now: float) -> None:
        if "content" in data:
            self.content = data["content"] or ""
        if "embeds" in data:
            self.embeds = list(data["embeds"] or [])
        if "components" in data:
            self.components = list(data["components"] or [])
        if "attachments" in data:
            kept = {str(a.get("id")) for a in data["attachments"] or []}
            self.attachments = [a for a in self.attachments if a["id"] in kept]
        self.attachments.extend(attachments)
        self.embeds = resolve_embed_attachments(self.embeds, self.attachments)
        self.flags &= ~LOADING
        self.edits.append(dict(data))
        self.edited_at = now
        self.edited_timestamp = iso_now()

    def iter_components(self) -> Iterator[JSON]:
        """Every component, nested ones (action rows, sections, containers) included."""

        def walk(components: Iterable[JSON]) -> Iterator[JSON]:
            for component in components:
                yield component
                yield from walk(component.get("components") or [])
                for key in ("accessory", "component"):
                    if isinstance(component.get(key), dict):
                        yield from walk([component[key]])

        return walk(self.components)

    def find_component(self, custom_id: str | None = None, label: str | None = None) -> JSON:
        """The interactive component with this custom_id or label (LookupError if none)."""
        for component in self.iter_components():
            if "custom_id" not in component:
                continue
            if custom_id is not None and component["custom_id"] == custom_id:
                return component
            if label is not None and component.get("label") == label:
                return component
        available = [
            (c.get("label"), c["custom_id"]) for c in self.iter_components() if "custom_id" in c
        ]
        raise LookupError(
            f"message {self.id} has no component custom_id={custom_id!r} label={label!r}; "
            f"it has (label, custom_id): {available}"
        )

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": self.id,
            "channel_id": self.channel_id,
            "author": self.author,
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self.attachments,
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            payload["guild_id"] = self.guild_id
        if self.webhook_id is not None:
            payload["webhook_id"] = self.webhook_id
            payload["application_id"] = self.webhook_id
        return payload


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


# --- interaction option arguments --------------------------------------------------------------


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

    fake: FakeDiscord
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
        return self.fake.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        return [self.fake.messages[message_id] for message_id in self.followup_ids]

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
        return await self.fake.wait_for(lambda: find(self), timeout=timeout, what=self.__repr__)

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
        return await self.fake.click(
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
        return await self.fake.submit_modal(
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


# --- the gateway side ----------------------------------------------------------------------------


def shard_of(guild_id: str | int, shard_count: int) -> int:
    return (int(guild_id) >> 22) % shard_count


def _guild_of(event: str, data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    guild_id = data.get("guild_id")
    if guild_id is None and event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
        guild_id = data.get("id")
    return str(guild_id) if guild_id is not None else None


class _GatewaySession:
    """One websocket connection from the bot."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.sequence = 0
        self.session_id: str | None = None
        self.intents = 0
        self.identified = False
        self.shard: tuple[int, int] = (0, 1)  # [shard_id, shard_count] from IDENTIFY
        self._send_lock = asyncio.Lock()

    def owns(self, guild_id: str | int | None) -> bool:
        """Discord routes a guild's events to shard (guild_id >> 22) % shard_count, and
        everything without a guild (DMs) to shard 0."""
        shard_id, shard_count = self.shard
        if guild_id is None:
            return shard_id == 0
        return shard_of(guild_id, shard_count) == shard_id

    @property
    def open(self) -> bool:
        return not self.ws.closed

    async def send_op(self, op: int, data: Any) -> None:
        async with self._send_lock:
            await self.ws.send_str(_dumps({"op": op, "d": data, "s": None, "t": None}))

    async def dispatch(self, event: str, data: Any) -> float:
        """Send one DISPATCH; returns time.monotonic() taken just before the frame is written."""
        async with self._send_lock:
            self.sequence += 1
            frame = _dumps({"op": 0, "t": event, "s": self.sequence, "d": data})
            sent_at = time.monotonic()
            await self.ws.send_str(frame)
        return sent_at


@dataclass(eq=False)
class _InjectedFailure:
    predicate: Callable[[RecordedRequest], bool]
    status: int
    code: int
    message: str
    times: int


_Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


class FakeDiscord:
    """A fake Discord server: REST + gateway on one loopback port.

    Args:
        guilds: GUILD_CREATE payloads (see :func:`make_guild`); the bot's own member and a
            managed role with ``bot_permissions`` are added to each.
        bot_user: the bot's user (default: a new bot user named "NowPlaying").
        token: the token the bot must present (REST ``Authorization: Bot <token>`` and
            IDENTIFY); anything else gets 401 / close code 4004.
        application_id: defaults to the bot user's id, as for any modern application.
        bot_permissions: permissions of the bot's managed role.
        enabled_privileged_intents: privileged intents switched on in the "developer portal";
            asking for another one at IDENTIFY closes the gateway with 4014.
        users: extra users that are not members of any guild (for DMs, fetch_user).
        validate: answer 400 (code 50035 / 50006) to bodies Discord would reject: every body
            is checked against its route's schema in Discord's OpenAPI description
            (``discord_spec``), then against the limits Discord documents beyond it.
        check_errors: on stop, fail if a handler of the fake itself crashed.

        session_starts_remaining / session_starts_reset_after: the ``session_start_limit``
            that ``GET /gateway/bot`` reports (``remaining`` goes back to 1000 once
            ``reset_after`` seconds have passed). Each IDENTIFY spends one; an IDENTIFY with none
            left is recorded in ``identifies_over_limit`` and refused with close code 4004, as
            Discord resets a token that exceeds the limit.

    Switches a test may flip at any time: ``dms_closed`` (every DM POST answers 403 50007),
    ``closed_dm_user_ids`` (the same for some users), ``allow_resume``, ``gateway_down`` (the
    gateway websocket handshake answers 503 while REST keeps working). ``refuse_gateway_handshakes``
    answers 503 to that many handshakes first (a gateway that comes up after REST), counted in
    ``refused_gateway_handshakes``.
    """

    heartbeat_interval_ms: ClassVar[int] = HEARTBEAT_INTERVAL_MS

    def __init__(
        self,
        *,
        guilds: Sequence[JSON] = (),
        bot_user: JSON | None = None,
        token: str = DEFAULT_TOKEN,
        application_id: str | int | None = None,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        enabled_privileged_intents: int = PRIVILEGED_INTENTS,
        users: Sequence[JSON] = (),
        validate: bool = True,
        check_errors: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        session_starts_remaining: int = 999,
        session_starts_reset_after: float = 86_400.0,
        refuse_gateway_handshakes: int = 0,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
    ) -> None:
        self.token = token
        # Sharding: /gateway/bot's advice; IDENTIFY's "shard" decides which guilds a session gets.
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        self.bot_user: JSON = bot_user or make_user(username="NowPlaying", bot=True)
        self.bot_user.setdefault("bot", True)
        self.bot_user_id = str(self.bot_user["id"])
        self.application_id = str(application_id) if application_id else self.bot_user_id
        self.bot_permissions = bot_permissions
        self.enabled_privileged_intents = enabled_privileged_intents
        self.validate = validate
        self.check_errors = check_errors
        self.host = host
        self.port = port

        # Switches.
        self.dms_closed = False
        self.closed_dm_user_ids: set[str] = set()
        self.allow_resume = True
        self.gateway_down = False
        self.refuse_gateway_handshakes = refuse_gateway_handshakes
        self.refused_gateway_handshakes = 0

        # Discord's daily budget of IDENTIFYs, as GET /gateway/bot reports it.
        self.session_starts_total = 1000
        self.session_starts_remaining = session_starts_remaining
        self._session_starts_reset_at = time.monotonic() + session_starts_reset_after
        self.identifies_over_limit: list[JSON] = []

        # World state (the payload dicts are live: edits show up in the next GUILD_CREATE).
        self.guilds: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        self.users: dict[str, JSON] = {self.bot_user_id: self.bot_user}
        self.deleted_channel_ids: set[str] = set()
        self._dm_channel_by_user: dict[str, JSON] = {}
        for user in users:
            self.users[str(user["id"])] = user
        for guild in guilds:
            self._add_guild(guild)

        # Records.
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self.messages: dict[str, FakeMessage] = {}
        self.attachment_data: dict[str, bytes] = {}  # attachment id -> uploaded bytes
        self.channel_posts: list[FakeMessage] = []
        # Discord's nonce with enforce_nonce: (channel, nonce) -> (first message, monotonic
        # time); a second create within NONCE_WINDOW answers the first message, posts nothing.
        self._nonces: dict[tuple[str, str], tuple[FakeMessage, float]] = {}
        self.nonce_repeats = 0
        self.interactions: dict[str, SentInteraction] = {}
        self._interactions_by_token: dict[str, SentInteraction] = {}
        self.command_syncs: list[CommandSync] = []
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[str, list[JSON]] = {}
        self._command_ids: dict[tuple[str | None, str, int], str] = {}
        self.identifies: list[JSON] = []
        self.identify_times: list[float] = []  # monotonic, one per IDENTIFY
        self.gateway_frames: list[JSON] = []
        self.member_chunk_requests: list[JSON] = []
        self._failures: list[_InjectedFailure] = []

        self._sessions: list[_GatewaySession] = []
        self._sessions_by_id: dict[str, _GatewaySession] = {}
        self._waiters: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, **kwargs: Any) -> AsyncIterator[FakeDiscord]:
        """``async with FakeDiscord.running(guilds=[...]) as fake:`` start, yield, stop."""
        fake = cls(**kwargs)
        await fake.start()
        try:
            yield fake
        finally:
            await fake.stop()

    async def start(self) -> None:
        # No access log: it costs time per request and would print interaction tokens.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        _log.debug("fake Discord listening on %s", self.base_url)

    async def stop(self) -> None:
        for session in list(self._sessions):
            if session.open:
                await session.ws.close(code=1001, message=b"fake Discord stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for _, future in self._waiters:
            if not future.done():
                future.cancel()
        if self.check_errors and self.handler_errors:
            raise AssertionError(f"fake Discord handlers crashed: {self.handler_errors!r}")

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the bot sets ``Route.BASE = f"{base_url}/api/v10"``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    # --- world state -------------------------------------------------------------------------

    def _add_guild(self, guild: JSON) -> None:
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
        channel = self._dm_channel_by_user.get(user_id)
        if channel is None:
            channel = {
                "id": new_snowflake(),
                "type": DM,
                "last_message_id": None,
                "recipients": [self.user(user_id)],
                "flags": 0,
            }
            self._dm_channel_by_user[user_id] = channel
            self.channels[channel["id"]] = channel
        return channel

    def dms_to(self, user_id: str | int) -> list[FakeMessage]:
        """Every message posted in the DM channel with this user (by the bot)."""
        channel = self._dm_channel_by_user.get(str(user_id))
        if channel is None:
            return []
        return [m for m in self.channel_posts if m.channel_id == channel["id"]]

    def messages_in(self, channel_id: str | int) -> list[FakeMessage]:
        """Every live message in a channel, interaction messages included."""
        channel_id = str(channel_id)
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    def bot_permissions_in(self, channel_id: str | int) -> int:
        channel = self.channels[str(channel_id)]
        if channel["type"] == DM:
            return VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES
        guild = self.guilds[str(channel["guild_id"])]
        return compute_permissions(guild, self.bot_member(guild["id"]), channel)

    # --- gateway: dispatching events ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        return any(s.identified and s.open for s in self._sessions)

    @property
    def intents(self) -> int | None:
        """Intents of the last IDENTIFY."""
        return self.identifies[-1].get("intents") if self.identifies else None

    async def dispatch(self, event: str, data: Any, *, force: bool = False) -> float:
        """Send a DISPATCH to every identified session; returns when it was sent (monotonic).

        Events that need an intent (PRESENCE_UPDATE, GUILD_MEMBER_*) skip sessions without it,
        as Discord does, unless ``force``.
        """
        sessions = [s for s in self._sessions if s.identified and s.open]
        if not sessions:
            raise RuntimeError(f"cannot dispatch {event}: no bot is connected to the fake gateway")
        needed = 0 if force else _EVENT_INTENTS.get(event, 0)
        sent_at = time.monotonic()
        guild_id = _guild_of(event, data)
        for session in sessions:
            if not session.owns(guild_id):
                continue  # another shard's guild (or a DM, which goes to shard 0)
            if needed and not session.intents & needed:
                _log.debug("not dispatching %s: the session lacks intent %s", event, needed)
                continue
            try:
                sent_at = await session.dispatch(event, data)
            except ConnectionError:
                _log.debug("session closed while dispatching %s", event)
        return sent_at

    async def _dispatch_if_connected(self, event: str, data: Any) -> None:
        # State changes made before the bot connects reach it through READY / GUILD_CREATE.
        if self.connected:
            await self.dispatch(event, data)

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
        await self._dispatch_if_connected("PRESENCE_UPDATE", presence)
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
        await self._dispatch_if_connected("GUILD_MEMBER_ADD", {**member, "guild_id": str(guild_id)})

    async def remove_member(self, guild_id: str | int, user_id: str | int) -> None:
        guild = self.guilds[str(guild_id)]
        guild["members"] = [m for m in guild["members"] if str(m["user"]["id"]) != str(user_id)]
        guild["member_count"] = len(guild["members"])
        event = {"guild_id": str(guild_id), "user": self.user(user_id)}
        await self._dispatch_if_connected("GUILD_MEMBER_REMOVE", event)

    async def post_as_member(
        self, channel_id: str | int, user_id: str | int, content: str = "nice song"
    ) -> FakeMessage:
        """A member (not the bot) posts in a guild channel: it becomes the channel's
        ``last_message_id``. MESSAGE_CREATE goes only to sessions with the GUILD_MESSAGES intent,
        as on Discord. Not a bot post, so not in :attr:`channel_posts`."""
        channel = self.channels[str(channel_id)]
        guild_id = channel.get("guild_id")
        message = FakeMessage(
            id=new_snowflake(),
            channel_id=str(channel["id"]),
            guild_id=guild_id,
            author=self.user(user_id),
            content=content,
            embeds=[],
            components=[],
            flags=0,
            attachments=[],
            created_at=time.monotonic(),
        )
        self.messages[message.id] = message
        channel["last_message_id"] = message.id
        payload = message.to_payload()
        if guild_id is not None and (member := self.member(guild_id, user_id)) is not None:
            payload["member"] = {k: v for k, v in member.items() if k != "user"}
        await self._dispatch_if_connected("MESSAGE_CREATE", payload)
        self._notify()
        return message

    async def update_channel(self, channel_id: str | int, **changes: Any) -> JSON:
        """Change a guild channel's fields and dispatch CHANNEL_UPDATE."""
        channel = self.channels[str(channel_id)]
        channel.update(changes)
        await self._dispatch_if_connected("CHANNEL_UPDATE", channel)
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
            await self._dispatch_if_connected("CHANNEL_DELETE", channel)
        self._notify()
        return channel

    async def create_channel(self, guild_id: str | int, channel: JSON | None = None) -> JSON:
        channel = channel if channel is not None else make_channel(name="new-channel")
        channel["guild_id"] = str(guild_id)
        self.guilds[str(guild_id)]["channels"].append(channel)
        self.channels[str(channel["id"])] = channel
        await self._dispatch_if_connected("CHANNEL_CREATE", channel)
        return channel

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the bot closes and RESUMEs (or re-IDENTIFYs if
        ``allow_resume`` is False, getting READY and every GUILD_CREATE again)."""
        for session in [s for s in self._sessions if s.open]:
            await session.send_op(7, None)

    # --- interactions ------------------------------------------------------------------------

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
            registered_in_guild = guild_id_str is not None and any(
                c["name"] == name for c in self.guild_commands.get(guild_id_str, [])
            )
        command_guild = guild_id_str if registered_in_guild else None
        data: JSON = {
            "id": self._command_ids.get((command_guild, name, 1)) or new_snowflake(),
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
        target = message if isinstance(message, FakeMessage) else self.messages[str(message)]
        component = target.find_component(custom_id, label)
        if user_id is None:
            user_id = target.interaction_user_id
        if user_id is None and target.guild_id is None:
            user_id = self.channels[target.channel_id]["recipients"][0]["id"]
        context = self._context(
            target.guild_id, target.channel_id, user_id, target.guild_id is None
        )
        data: JSON = {"custom_id": component["custom_id"], "component_type": component["type"]}
        if values is not None or component["type"] in _SELECT_TYPES:
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
        data: JSON = {"custom_id": custom_id, "components": _modal_answers(modal, values)}
        target: FakeMessage | None = None
        if message is not None:
            target = message if isinstance(message, FakeMessage) else self.messages[str(message)]
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
            user = str(user_id) if user_id is not None else self.default_user_id()
            channel = str(channel_id) if channel_id is not None else self.dm_channel(user)["id"]
            return None, channel, user
        guild = str(guild_id) if guild_id is not None else self.default_guild_id
        channel = str(channel_id) if channel_id is not None else self.default_channel_id(guild)
        user = str(user_id) if user_id is not None else self.default_user_id(guild)
        if self.member(guild, user) is None:
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
        guild = self.guilds[guild_id] if guild_id is not None else None
        invoker = self.member(guild_id, user_id) if guild_id is not None else None
        resolved: dict[str, dict[str, JSON]] = {}
        option_list: list[JSON] = []
        for name, value in options.items():
            option: JSON = {"name": name}
            if isinstance(value, UserArg):
                target_id = str(value.user_id)
                option.update(type=6, value=target_id)
                resolved.setdefault("users", {})[target_id] = self.user(target_id)
                member = self.member(guild_id, target_id) if guild_id is not None else None
                if member is not None and guild is not None:
                    partial = {k: v for k, v in member.items() if k != "user"}
                    in_channel = self.channels.get(channel_id)
                    partial["permissions"] = str(compute_permissions(guild, member, in_channel))
                    resolved.setdefault("members", {})[target_id] = partial
            elif isinstance(value, ChannelArg):
                target_id = str(value.channel_id)
                channel = self.channels[target_id]
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
            "application_id": self.application_id,
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
            guild = self.guilds[guild_id]
            channel = self.channels.get(channel_id)
            member = self.member(guild_id, user_id)
            assert member is not None
            permissions = (
                member_permissions
                if member_permissions is not None
                else compute_permissions(guild, member, channel)
            )
            app_permissions = compute_permissions(guild, self.bot_member(guild_id), channel)
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
                user=self.user(user_id),
                channel=self.channels[channel_id],
                app_permissions=str(self.bot_permissions_in(channel_id)),
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
            fake=self,
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
        self._interactions_by_token[sent.token] = sent
        sent.sent_at = await self.dispatch("INTERACTION_CREATE", payload)
        return sent

    # --- waiting -----------------------------------------------------------------------------

    async def wait_for(
        self,
        find: Callable[[], T | None],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        what: str | Callable[[], str] = "",
    ) -> T:
        """Wait until ``find()`` returns something other than None, and return it.

        ``find`` is re-run after every recorded change (REST request, gateway frame), never on
        a timer; an exception it raises fails the wait.
        """
        found = find()
        if found is not None:
            return found
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry = (find, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            recent = ", ".join(repr(r) for r in self.requests[-8:]) or "none"
            description = what() if callable(what) else what
            raise FakeDiscordTimeoutError(
                f"timed out after {timeout} s waiting for {description or find!r}; "
                f"last requests: {recent}; unknown routes: {self.unknown_requests!r}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _notify(self) -> None:
        for find, future in list(self._waiters):
            if future.done():
                continue
            try:
                found = find()
            except Exception as exc:
                future.set_exception(exc)
            else:
                if found is not None:
                    future.set_result(found)

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        *,
        start: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RecordedRequest:
        """The first recorded request from index ``start`` on that matches (and is answered).

        Pass ``start=len(fake.requests)`` to only consider requests made from now on.
        """

        def find() -> RecordedRequest | None:
            for request in self.requests[start:]:
                if request.status and predicate(request):
                    return request
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a request matching {predicate}")

    async def wait_for_message(
        self,
        channel_id: str | int | None = None,
        *,
        predicate: Callable[[FakeMessage], bool] | None = None,
        start: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> FakeMessage:
        """The first message the bot POSTed to a channel (``channel_posts[start:]``) matching.

        Interaction responses are not channel posts: use :class:`SentInteraction` for them.
        """
        wanted = None if channel_id is None else str(channel_id)

        def find() -> FakeMessage | None:
            for message in self.channel_posts[start:]:
                if wanted is not None and message.channel_id != wanted:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a message in channel {wanted}")

    async def wait_for_dm(
        self,
        user_id: str | int,
        *,
        predicate: Callable[[FakeMessage], bool] | None = None,
        start: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> FakeMessage:
        """The first DM the bot sent to this user (among ``channel_posts[start:]``)."""

        def find() -> FakeMessage | None:
            channel = self._dm_channel_by_user.get(str(user_id))
            if channel is None:
                return None
            for message in self.channel_posts[start:]:
                if message.channel_id == channel["id"] and (
                    predicate is None or predicate(message)
                ):
                    return message
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a DM to {user_id}")

    async def wait_for_command_sync(
        self, guild_id: str | int | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> CommandSync:
        """The latest command sync for this guild (None: global)."""
        wanted = None if guild_id is None else str(guild_id)

        def find() -> CommandSync | None:
            matches = [s for s in self.command_syncs if s.guild_id == wanted]
            return matches[-1] if matches else None

        return await self.wait_for(find, timeout=timeout, what=f"a command sync for {wanted}")

    async def wait_until_connected(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until a session has IDENTIFYed and been sent READY and its GUILD_CREATEs."""
        await self.wait_for(
            lambda: True if self.connected else None, timeout=timeout, what="IDENTIFY"
        )

    # --- error injection ---------------------------------------------------------------------

    def fail_requests(
        self,
        predicate: Callable[[RecordedRequest], bool],
        *,
        status: int = 500,
        code: int = 0,
        message: str = "injected failure",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests matching ``predicate`` with this error instead.

        Beware: discord.py retries 500/502/504 up to 5 times, sleeping 1, 3, 5... seconds.
        """
        self._failures.append(_InjectedFailure(predicate, status, code, message, times))

    # --- HTTP plumbing -----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        router = app.router
        router.add_get("/gateway", self._gateway)
        router.add_get("/gateway/", self._gateway)

        def add(method: str, path: str, handler: _Handler, *, auth: bool = True) -> None:
            router.add_route(method, API_PREFIX + path, self._endpoint(handler, auth=auth))

        add("GET", "/gateway", self._get_gateway, auth=False)
        add("GET", "/gateway/bot", self._get_gateway_bot)
        add("GET", "/users/@me", self._get_me)
        add("POST", "/users/@me/channels", self._create_dm)
        add("GET", "/users/{user_id}", self._get_user)
        add("GET", "/oauth2/applications/@me", self._get_application)
        add("GET", "/applications/@me", self._get_application)
        add("GET", "/applications/{application_id}/commands", self._get_commands)
        add("PUT", "/applications/{application_id}/commands", self._put_commands)
        guild_commands = "/applications/{application_id}/guilds/{guild_id}/commands"
        add("GET", guild_commands, self._get_commands)
        add("PUT", guild_commands, self._put_commands)
        add("GET", "/guilds/{guild_id}", self._get_guild)
        add("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        add("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)
        add("GET", "/guilds/{guild_id}/roles", self._get_roles)
        add("GET", "/channels/{channel_id}", self._get_channel)
        add("DELETE", "/channels/{channel_id}", self._delete_channel)
        add("POST", "/channels/{channel_id}/typing", self._typing)
        add("POST", "/channels/{channel_id}/messages", self._post_message)
        add("GET", "/channels/{channel_id}/messages", self._get_history)
        message_path = "/channels/{channel_id}/messages/{message_id}"
        add("GET", message_path, self._get_message)
        add("PATCH", message_path, self._edit_message)
        add("DELETE", message_path, self._delete_message)
        callback_path = "/interactions/{interaction_id}/{token}/callback"
        add("POST", callback_path, self._interaction_callback, auth=False)
        add("POST", "/webhooks/{application_id}/{token}", self._execute_webhook, auth=False)
        webhook_message = "/webhooks/{application_id}/{token}/messages/{message_id}"
        add("GET", webhook_message, self._get_webhook_message, auth=False)
        add("PATCH", webhook_message, self._edit_webhook_message, auth=False)
        add("DELETE", webhook_message, self._delete_webhook_message, auth=False)
        router.add_get("/attachments/{attachment_id}/{filename}", self._get_attachment)
        unknown = self._endpoint(self._unknown_route, auth=False, check_body=False)
        router.add_route("*", "/{tail:.*}", unknown)
        return app

    def _endpoint(
        self, handler: _Handler, *, auth: bool, check_body: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            received_at = time.monotonic()
            body, files = await _read_body(request)
            path = request.path
            record = RecordedRequest(
                method=request.method,
                path=path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=body,
                files=files,
                received_at=received_at,
            )
            self.requests.append(record)
            response: web.StreamResponse
            try:
                refused = self._injected_failure(record)
                if refused is None and auth and not self._authorized(request):
                    refused = _error(401, 0, "401: Unauthorized")
                if refused is None and check_body:
                    refused = self._schema_error(record)
                response = refused if refused is not None else await handler(request, record)
            except Exception as exc:
                _log.exception("fake Discord crashed on %s %s", request.method, path)
                self.handler_errors.append(exc)
                response = _error(400, 0, f"fake Discord crashed: {exc!r}")
            record.status = response.status
            if response.status >= 400 and isinstance(response, web.Response):
                with contextlib.suppress(TypeError, ValueError):
                    record.error = json.loads(response.body)  # type: ignore[arg-type]
            self._notify()
            return response

        return endpoint

    def _schema_error(self, record: RecordedRequest) -> web.Response | None:
        """400 50035 when the body does not fit its route's schema in Discord's description."""
        if not self.validate or record.json is None:
            return None
        errors = body_errors(record.method, record.path, record.json)
        return None if errors is None else _error(400, 50035, "Invalid Form Body", errors)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    def _injected_failure(self, record: RecordedRequest) -> web.Response | None:
        for failure in self._failures:
            if failure.times > 0 and failure.predicate(record):
                failure.times -= 1
                body: JSON = {"message": failure.message, "code": failure.code}
                if failure.status == 429:
                    body.update(retry_after=0.0, **{"global": False})
                return _json_response(body, status=failure.status)
        return None

    async def _unknown_route(self, request: web.Request, record: RecordedRequest) -> web.Response:
        _log.warning("fake Discord has no route for %s %s", request.method, request.path)
        self.unknown_requests.append(record)
        return _error(
            404, 0, f"404: Not Found (fake Discord: no route {request.method} {record.path})"
        )

    # --- REST: login, gateway, application ---------------------------------------------------

    async def _get_gateway(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, record: RecordedRequest) -> web.Response:
        reset_after = self._session_starts_refresh()
        limit = {
            "total": self.session_starts_total,
            "remaining": self.session_starts_remaining,
            "reset_after": math.ceil(reset_after * 1000),  # never early
            "max_concurrency": self.max_concurrency,
        }
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": limit,
            }
        )

    def _session_starts_refresh(self) -> float:
        """Reset the daily budget when its time has come; return seconds until the next reset."""
        now = time.monotonic()
        if now >= self._session_starts_reset_at:
            self.session_starts_remaining = self.session_starts_total
            self._session_starts_reset_at = now + 86_400.0
        return self._session_starts_reset_at - now

    async def _get_me(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return _json_response(self._client_user_payload())

    def _client_user_payload(self) -> JSON:
        return {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0}

    async def _get_user(self, request: web.Request, record: RecordedRequest) -> web.Response:
        user = self.users.get(request.match_info["user_id"])
        return _json_response(user) if user else _error(404, 10013, "Unknown User")

    async def _get_application(self, request: web.Request, record: RecordedRequest) -> web.Response:
        owner = make_user("100000000000000001", "owner")
        return _json_response(
            {
                "id": self.application_id,
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": owner,
                "team": None,
                "flags": (1 << 13) | (1 << 15) | (1 << 19),
                "bot": self.bot_user,
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
            }
        )

    async def _get_commands(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild_id = request.match_info.get("guild_id")
        commands = self.guild_commands.get(guild_id, []) if guild_id else self.global_commands
        return _json_response(commands)

    async def _put_commands(self, request: web.Request, record: RecordedRequest) -> web.Response:
        if request.match_info["application_id"] != self.application_id:
            return _error(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        guild_id = request.match_info.get("guild_id")
        if guild_id is not None and guild_id not in self.guilds:
            return _error(403, 50001, "Missing Access")
        commands: list[JSON] = []
        for command in record.json or []:
            kind = int(command.get("type", 1))
            key = (guild_id, command["name"], kind)
            command_id = self._command_ids.setdefault(key, new_snowflake())
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
        self.command_syncs.append(CommandSync(guild_id, commands, record.received_at))
        return _json_response(commands)

    # --- REST: guilds, users, channels -------------------------------------------------------

    async def _get_guild(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild = self.guilds.get(request.match_info["guild_id"])
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        skip = {"channels", "members", "presences", "threads", "voice_states"}
        return _json_response({k: v for k, v in guild.items() if k not in skip})

    async def _get_guild_channels(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        guild = self.guilds.get(request.match_info["guild_id"])
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        return _json_response(guild["channels"])

    async def _get_roles(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild = self.guilds.get(request.match_info["guild_id"])
        if guild is None:
            return _error(404, 10004, "Unknown Guild")
        return _json_response(guild["roles"])

    async def _get_member(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild_id = request.match_info["guild_id"]
        if guild_id not in self.guilds:
            return _error(404, 10004, "Unknown Guild")
        member = self.member(guild_id, request.match_info["user_id"])
        return _json_response(member) if member else _error(404, 10007, "Unknown Member")

    async def _create_dm(self, request: web.Request, record: RecordedRequest) -> web.Response:
        recipient = (record.json or {}).get("recipient_id")
        if recipient is None:
            required = Problem(("recipient_id",), "BASE_TYPE_REQUIRED", "This field is required")
            return _invalid_form_body([required])
        # Creating the channel succeeds even when the user's DMs are closed: only sending fails.
        return _json_response(self.dm_channel(recipient))

    def _channel_or_error(self, channel_id: str) -> tuple[JSON | None, web.Response | None]:
        channel = self.channels.get(channel_id)
        if channel is None:
            return None, _error(404, 10003, "Unknown Channel")
        if channel["type"] != DM and not self.bot_permissions_in(channel_id) & VIEW_CHANNEL:
            return None, _error(403, 50001, "Missing Access")
        return channel, None

    async def _get_channel(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel, error = self._channel_or_error(request.match_info["channel_id"])
        return error or _json_response(channel)

    async def _delete_channel(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel_id = request.match_info["channel_id"]
        channel, error = self._channel_or_error(channel_id)
        if error is not None or channel is None:
            return error or _error(404, 10003, "Unknown Channel")
        if channel["type"] == DM:
            return _json_response(channel)
        if not self.bot_permissions_in(channel_id) & MANAGE_CHANNELS:
            return _error(403, 50013, "Missing Permissions")
        return _json_response(await self.delete_channel(channel_id))

    async def _typing(self, request: web.Request, record: RecordedRequest) -> web.Response:
        _, error = self._channel_or_error(request.match_info["channel_id"])
        return error or web.Response(status=204)

    def _check_can_post(self, channel: JSON) -> web.Response | None:
        if channel["type"] == DM:
            recipient = str(channel["recipients"][0]["id"])
            if self.dms_closed or recipient in self.closed_dm_user_ids:
                return _error(403, 50007, "Cannot send messages to this user")
            return None
        needed = VIEW_CHANNEL | SEND_MESSAGES
        if self.bot_permissions_in(channel["id"]) & needed != needed:
            return _error(403, 50013, "Missing Permissions")
        return None

    def _message_body_error(
        self, data: JSON, files: list[RecordedFile], *, new: bool, prefix: tuple[str, ...] = ()
    ) -> web.Response | None:
        if not self.validate:
            return None
        if new and is_empty_message(data, has_files=bool(files)):
            return _error(400, 50006, "Cannot send an empty message")
        refused = upload_problem(files)
        if refused is not None:
            return _error(*refused)
        problems = message_problems(data, prefix)
        return _invalid_form_body(problems) if problems else None

    async def _post_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel, error = self._channel_or_error(request.match_info["channel_id"])
        if error is not None or channel is None:
            return error or _error(404, 10003, "Unknown Channel")
        data = record.json or {}
        error = self._check_can_post(channel) or self._message_body_error(
            data, record.files, new=True
        )
        if error is not None:
            return error
        nonce = data.get("nonce")
        channel_id = str(channel["id"])
        if nonce is not None and data.get("enforce_nonce"):
            first = self._nonces.get((channel_id, str(nonce)))
            if first is not None and time.monotonic() - first[1] < NONCE_WINDOW:
                self.nonce_repeats += 1
                return _json_response(first[0].to_payload())
        message = self._new_message(
            channel, data, record, flags=int(data.get("flags") or 0) & ~(EPHEMERAL | LOADING)
        )
        if nonce is not None and data.get("enforce_nonce"):
            self._nonces[channel_id, str(nonce)] = (message, time.monotonic())
        self.channel_posts.append(message)
        channel["last_message_id"] = message.id
        return _json_response(message.to_payload())

    async def _get_history(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel_id = request.match_info["channel_id"]
        _, error = self._channel_or_error(channel_id)
        if error is not None:
            return error
        newest_first = sorted(self.messages_in(channel_id), key=lambda m: int(m.id), reverse=True)
        if "before" in record.query:
            newest_first = [m for m in newest_first if int(m.id) < int(record.query["before"])]
        if "after" in record.query:
            newest_first = [m for m in newest_first if int(m.id) > int(record.query["after"])]
        limit = int(record.query.get("limit", 50))
        return _json_response([m.to_payload() for m in newest_first[:limit]])

    def _channel_message(
        self, request: web.Request
    ) -> tuple[FakeMessage | None, web.Response | None]:
        channel_id = request.match_info["channel_id"]
        _, error = self._channel_or_error(channel_id)
        if error is not None:
            return None, error
        message = self.messages.get(request.match_info["message_id"])
        if message is None or message.deleted or message.channel_id != channel_id:
            return None, _error(404, 10008, "Unknown Message")
        return message, None

    async def _get_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, error = self._channel_message(request)
        return error or _json_response(message.to_payload() if message else None)

    async def _edit_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, error = self._channel_message(request)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        if str(message.author["id"]) != self.bot_user_id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        data = record.json or {}
        error = self._message_body_error(data, record.files, new=False)
        if error is not None:
            return error
        message.apply_edit(
            data, self._attachments(record, ephemeral=message.ephemeral), record.received_at
        )
        return _json_response(message.to_payload())

    async def _delete_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, error = self._channel_message(request)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    def _attachments(self, record: RecordedRequest, *, ephemeral: bool = False) -> list[JSON]:
        body = record.json if isinstance(record.json, dict) else {}
        if isinstance(body.get("data"), dict):  # an interaction callback: {"type", "data"}
            body = body["data"]
        stored = build_attachments(
            body,
            record.files,
            base_url=self.base_url,
            new_id=new_snowflake,
            ephemeral=ephemeral,
        )
        for attachment in stored:
            self.attachment_data[attachment.payload["id"]] = attachment.data
        return [attachment.payload for attachment in stored]

    def attachment_bytes(self, attachment: Mapping[str, Any]) -> bytes:
        """The uploaded bytes behind an attachment object of a message."""
        return self.attachment_data[str(attachment["id"])]

    async def _get_attachment(self, request: web.Request) -> web.Response:
        """The CDN side: an attachment's URL serves its bytes (no token needed)."""
        data = self.attachment_data.get(request.match_info["attachment_id"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def _new_message(
        self,
        channel: JSON,
        data: Mapping[str, Any],
        record: RecordedRequest,
        *,
        flags: int,
        interaction: SentInteraction | None = None,
    ) -> FakeMessage:
        message = FakeMessage(
            id=new_snowflake(),
            channel_id=str(channel["id"]),
            guild_id=channel.get("guild_id"),
            author=self.bot_user,
            content=data.get("content") or "",
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            flags=flags,
            attachments=self._attachments(record, ephemeral=bool(flags & EPHEMERAL)),
            created_at=record.received_at,
        )
        message.embeds = resolve_embed_attachments(message.embeds, message.attachments)
        if interaction is not None:
            message.interaction_id = interaction.id
            message.interaction_user_id = interaction.user_id
            message.webhook_id = self.application_id
            message.type = 20 if interaction.type == APPLICATION_COMMAND else 0
        self.messages[message.id] = message
        return message

    # --- REST: interaction callbacks and webhooks ---------------------------------------------

    async def _interaction_callback(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        interaction = self.interactions.get(request.match_info["interaction_id"])
        if interaction is None or interaction.token != request.match_info["token"]:
            return _error(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = record.json or {}
        kind = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        error = self._callback_error(interaction, kind, data, record)
        if error is not None:
            return error
        interaction.callback = InteractionCallback(kind, data, record.received_at, record.files)
        channel = self.channels.get(interaction.channel_id) or {
            "id": interaction.channel_id,
            "guild_id": interaction.guild_id,
        }
        message: FakeMessage | None = None
        ephemeral = int(data.get("flags") or 0) & EPHEMERAL
        if kind == CHANNEL_MESSAGE_WITH_SOURCE:
            message = self._new_message(
                channel, data, record, flags=ephemeral, interaction=interaction
            )
        elif kind == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            message = self._new_message(
                channel, {}, record, flags=ephemeral | LOADING, interaction=interaction
            )
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            interaction.original_message_id = interaction.message_id
            if kind == UPDATE_MESSAGE and interaction.message_id is not None:
                message = self.messages[interaction.message_id]
                message.apply_edit(
                    data, self._attachments(record, ephemeral=message.ephemeral), record.received_at
                )
        if message is not None:
            interaction.original_message_id = message.id
        return _json_response(_callback_response(interaction, kind, message))

    def _callback_error(
        self, interaction: SentInteraction, kind: int, data: JSON, record: RecordedRequest
    ) -> web.Response | None:
        if kind == DEFERRED_UPDATE_MESSAGE and interaction.type not in (
            MESSAGE_COMPONENT,
            MODAL_SUBMIT,
        ):
            return _callback_type_problem("type 6 answers only components and modal submits")
        if kind == UPDATE_MESSAGE and interaction.message_id is None:
            return _callback_type_problem("type 7 needs an interaction on a message")
        if kind == MODAL and interaction.type == MODAL_SUBMIT:
            return _callback_type_problem("a modal cannot answer a modal submit")
        if kind == AUTOCOMPLETE_RESULT and interaction.type != APPLICATION_COMMAND_AUTOCOMPLETE:
            return _callback_type_problem("autocomplete result for a non-autocomplete")
        if interaction.type == APPLICATION_COMMAND_AUTOCOMPLETE and kind != AUTOCOMPLETE_RESULT:
            return _callback_type_problem("an autocomplete interaction needs type 8")
        if kind not in (4, 5, 6, 7, 8, 9, 10, 12):
            return _callback_type_problem(f"unknown callback type {kind}")
        if not self.validate:
            return None
        if kind == MODAL:
            problems = modal_problems(data)
            return _invalid_form_body(problems) if problems else None
        if kind in (CHANNEL_MESSAGE_WITH_SOURCE, UPDATE_MESSAGE):
            return self._message_body_error(
                data, record.files, new=kind == CHANNEL_MESSAGE_WITH_SOURCE, prefix=("data",)
            )
        return None

    def _webhook_interaction(
        self, request: web.Request
    ) -> tuple[SentInteraction | None, web.Response | None]:
        interaction = self._interactions_by_token.get(request.match_info["token"])
        if (
            interaction is None
            or request.match_info["application_id"] != self.application_id
            or interaction.callback is None
        ):
            return None, _error(404, 10015, "Unknown Webhook")
        return interaction, None

    async def _execute_webhook(self, request: web.Request, record: RecordedRequest) -> web.Response:
        interaction, error = self._webhook_interaction(request)
        if error is not None or interaction is None:
            return error or _error(404, 10015, "Unknown Webhook")
        data = record.json or {}
        error = self._message_body_error(data, record.files, new=True)
        if error is not None:
            return error
        original = interaction.original
        if (
            original is not None
            and original.loading
            and not original.deleted  # deleted "thinking": the follow-up is a new message
            and interaction.callback is not None
            and interaction.callback.type == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        ):
            # Discord turns the "thinking" message into the first follow-up; it keeps the
            # ephemerality chosen at defer time, whatever the follow-up's flags say.
            original.apply_edit(
                data, self._attachments(record, ephemeral=original.ephemeral), record.received_at
            )
            message = original
        else:
            channel = self.channels.get(interaction.channel_id) or {
                "id": interaction.channel_id,
                "guild_id": interaction.guild_id,
            }
            flags = int(data.get("flags") or 0) & EPHEMERAL
            message = self._new_message(channel, data, record, flags=flags, interaction=interaction)
        interaction.followup_ids.append(message.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json_response(message.to_payload())
        return web.Response(status=204)

    def _webhook_message(
        self, request: web.Request
    ) -> tuple[FakeMessage | None, web.Response | None]:
        interaction, error = self._webhook_interaction(request)
        if error is not None or interaction is None:
            return None, error
        message_id = request.match_info["message_id"]
        if message_id == "@original":
            message_id = interaction.original_message_id or ""
        owned = {interaction.original_message_id, *interaction.followup_ids}
        message = self.messages.get(message_id)
        if message is None or message.deleted or message_id not in owned:
            return None, _error(404, 10008, "Unknown Message")
        return message, None

    async def _get_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, error = self._webhook_message(request)
        return error or _json_response(message.to_payload() if message else None)

    async def _edit_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, error = self._webhook_message(request)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        data = record.json or {}
        error = self._message_body_error(data, record.files, new=False)
        if error is not None:
            return error
        message.apply_edit(
            data, self._attachments(record, ephemeral=message.ephemeral), record.received_at
        )
        return _json_response(message.to_payload())

    async def _delete_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, error = self._webhook_message(request)
        if error is not None or message is None:
            return error or _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    # --- the gateway websocket ---------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.gateway_down or self.refused_gateway_handshakes < self.refuse_gateway_handshakes:
            self.refused_gateway_handshakes += 1
            self._notify()
            return web.Response(status=503, text="fake gateway down")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = _GatewaySession(ws)
        self._sessions.append(session)
        try:
            await session.send_op(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                self.gateway_frames.append(message)
                try:
                    await self._on_gateway_frame(session, message)
                except Exception as exc:
                    _log.exception("fake gateway crashed on %s", message.get("op"))
                    self.handler_errors.append(exc)
                    await ws.close(code=4000, message=b"fake gateway crashed")
                self._notify()
        except ConnectionError:
            _log.debug("gateway connection dropped")
        finally:
            self._sessions.remove(session)
            self._notify()
        return ws

    async def _on_gateway_frame(self, session: _GatewaySession, message: JSON) -> None:
        op = message.get("op")
        data = message.get("d")
        if op == 1:
            await session.send_op(11, None)
        elif op == 2:
            await self._identify(session, data or {})
        elif op == 6:
            await self._resume(session, data or {})
        elif op == 8:
            await self._request_members(session, data or {})
        elif op in (3, 4):
            pass  # presence and voice state updates: recorded in gateway_frames only
        else:
            _log.warning("fake gateway got unexpected op %s", op)

    async def _identify(self, session: _GatewaySession, data: JSON) -> None:
        self.identifies.append(data)
        self.identify_times.append(time.monotonic())
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        self._session_starts_refresh()
        if self.session_starts_remaining <= 0:
            self.identifies_over_limit.append(data)
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.session_starts_remaining -= 1
        intents = int(data.get("intents") or 0)
        if intents & PRIVILEGED_INTENTS & ~self.enabled_privileged_intents:
            await session.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        shard_id, shard_count = int(shard[0]), int(shard[1])
        if not 0 <= shard_id < shard_count:
            await session.ws.close(code=4010, message=b"Invalid shard.")
            return
        session.shard = (shard_id, shard_count)
        mine = [g for g_id, g in self.guilds.items() if shard_of(g_id, shard_count) == shard_id]
        session.intents = intents
        session.session_id = secrets.token_hex(16)
        self._sessions_by_id[session.session_id] = session
        await session.dispatch(
            "READY",
            {
                "v": 10,
                "user": self._client_user_payload(),
                "guilds": [{"id": guild["id"], "unavailable": True} for guild in mine],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "session_type": "normal",
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "geo_ordered_rtc_regions": [],
                "guild_join_requests": [],
                "user_settings": {},
                "shard": [shard_id, shard_count],
            },
        )
        for guild in mine:
            await session.dispatch("GUILD_CREATE", self._guild_create(guild, intents))
        session.identified = True

    def _guild_create(self, guild: JSON, intents: int) -> JSON:
        # As Discord documents it: without GUILD_PRESENCES, GUILD_CREATE carries only the
        # bot's own member (and voice members), so discord.py chunks with op 8 when it has
        # GUILD_MEMBERS; with it, members and presences come inline and nothing is chunked.
        if intents & INTENT_GUILD_PRESENCES:
            return guild
        bot_only = [m for m in guild["members"] if str(m["user"]["id"]) == self.bot_user_id]
        return {**guild, "members": bot_only, "presences": []}

    async def _resume(self, session: _GatewaySession, data: JSON) -> None:
        session_id = str(data.get("session_id"))
        if data.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        previous = self._sessions_by_id.get(session_id)
        if not self.allow_resume or previous is None:
            await session.send_op(9, False)
            return
        if previous.open:
            await previous.ws.close(code=4000, message=b"resumed elsewhere")
        # The session goes on where it was: same id, sequence and intents (nothing is replayed).
        session.session_id = session_id
        session.sequence = previous.sequence
        session.intents = previous.intents
        session.shard = previous.shard
        session.identified = True
        self._sessions_by_id[session_id] = session
        await session.dispatch("RESUMED", {})

    async def _request_members(self, session: _GatewaySession, data: JSON) -> None:
        self.member_chunk_requests.append(data)
        guild_id = str(data.get("guild_id"))
        guild = self.guilds.get(guild_id)
        members = list(guild["members"]) if guild is not None else []
        user_ids = {str(u) for u in data.get("user_ids") or []}
        if user_ids:
            members = [m for m in members if str(m["user"]["id"]) in user_ids]
        query = (data.get("query") or "").lower()
        if query:
            members = [m for m in members if m["user"]["username"].lower().startswith(query)]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: JSON = {
            "guild_id": guild_id,
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("presences") and guild is not None:
            wanted = {str(m["user"]["id"]) for m in members}
            chunk["presences"] = [p for p in guild["presences"] if str(p["user"]["id"]) in wanted]
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)


def _callback_response(
    interaction: SentInteraction, kind: int, message: FakeMessage | None
) -> JSON:
    """The body of an interaction callback answered ``?with_response=1``."""
    resource: JSON = {"type": kind}
    if message is not None:
        resource["message"] = message.to_payload()
    described: JSON = {
        "id": interaction.id,
        "type": interaction.type,
        "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
        "response_message_ephemeral": bool(message is not None and message.ephemeral),
    }
    if interaction.original_message_id is not None:
        described["response_message_id"] = interaction.original_message_id
    return {"interaction": described, "resource": resource}


def _modal_answers(modal: JSON | None, values: Mapping[str, Any]) -> list[JSON]:
    """The ``components`` of a MODAL_SUBMIT, in the layout of the modal that was shown."""

    def answer(component: JSON, value: Any) -> JSON:
        if component["type"] in _SELECT_TYPES:
            return {
                "type": component["type"],
                "custom_id": component["custom_id"],
                "values": list(value or []),
            }
        return {
            "type": 4,
            "custom_id": component["custom_id"],
            "value": "" if value is None else str(value),
        }

    if modal is None:
        return [
            {"type": 1, "components": [answer({"type": 4, "custom_id": key}, value)]}
            for key, value in values.items()
        ]
    remaining = dict(values)
    inputs: list[tuple[str | None, str]] = []

    def take(component: JSON, label: str | None) -> Any:
        inputs.append((label, component["custom_id"]))
        for key in (component["custom_id"], label):
            if key is not None and key in remaining:
                return remaining.pop(key)
        return None

    rows: list[JSON] = []
    for top in modal.get("components") or []:
        if top["type"] == 1:
            children = [c for c in top.get("components") or [] if "custom_id" in c]
            answers = [answer(c, take(c, c.get("label"))) for c in children]
            rows.append({"type": 1, "components": answers})
        elif top["type"] == 18 and "custom_id" in top.get("component", {}):
            child = top["component"]
            rows.append({"type": 18, "component": answer(child, take(child, top.get("label")))})
    if remaining:
        raise KeyError(f"the modal has no input {sorted(remaining)}; (label, custom_id): {inputs}")
    return rows


async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """The JSON body (``payload_json`` of a multipart body) and any uploaded files."""
    if not request.body_exists:
        return None, []
    if request.content_type == "multipart/form-data":
        payload: Any = None
        files: list[RecordedFile] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            data = bytes(await part.read(decode=False))
            if part.name == "payload_json":
                payload = json.loads(data)
            else:
                content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
                files.append(RecordedFile(part.name or "", part.filename, content_type, data))
        return payload, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []


# --- pointing discord.py at the fake ---------------------------------------------------------


def point_discord_py_at(
    base_url: str, gateway_url: str | yarl.URL | None = None
) -> Callable[[], None]:
    """Send discord.py's REST (and webhooks) to ``{base_url}/api/v10`` and its gateway to
    ``gateway_url`` (default: the fake's ``/gateway`` on the same host). Returns a function
    that restores the previous values; tests must call it (``run_client`` does).

    These are class attributes, process-wide: ``discord.http.Route.BASE`` (a str, read each
    time a Route is built) and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (a
    ``yarl.URL``; Client.connect dials it and never asks ``/gateway/bot`` itself).
    """
    previous_base = discord.http.Route.BASE
    previous_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    if gateway_url is None:
        base = yarl.URL(base_url)
        gateway_url = base.with_scheme("wss" if base.scheme == "https" else "ws").with_path(
            "/gateway"
        )
    discord.http.Route.BASE = f"{base_url.rstrip('/')}{API_PREFIX}"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway_url))

    def restore() -> None:
        discord.http.Route.BASE = previous_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = previous_gateway

    return restore


@contextlib.contextmanager
def discord_py_pointed_at(
    base_url: str, gateway_url: str | yarl.URL | None = None
) -> Iterator[None]:
    """:func:`point_discord_py_at` as a context manager."""
    restore = point_discord_py_at(base_url, gateway_url)
    try:
        yield
    finally:
        restore()


async def fetch_gateway_url(base_url: str, token: str) -> yarl.URL:
    """``GET /api/v10/gateway/bot`` the way the bot does before connecting."""
    headers = {"Authorization": f"Bot {token}"}
    timeout = aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{base_url}{API_PREFIX}/gateway/bot", headers=headers) as response,
    ):
        response.raise_for_status()
        data = await response.json()
    return yarl.URL(data["url"])


@contextlib.asynccontextmanager
async def run_client(
    client: discord.Client,
    fake: FakeDiscord,
    token: str | None = None,
    *,
    ready_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[discord.Client]:
    """Log ``client`` in against ``fake``, connect it, wait for on_ready; close it on exit.

    discord.py waits ``guild_ready_timeout`` (default 2 s) after the last GUILD_CREATE before
    on_ready: build the client with e.g. ``guild_ready_timeout=0.05`` to keep tests fast.
    discord.py globals are restored on exit, and the client is closed (HTTP session, gateway,
    heartbeat thread) so no "Unclosed client session" warning is left behind.
    """
    token = fake.token if token is None else token
    restore = point_discord_py_at(fake.base_url)
    connect_task: asyncio.Task[None] | None = None
    body_failed = False
    try:
        await client.login(token)
        # As the bot does: ask /gateway/bot once logged in, and dial what it says.
        gateway = await fetch_gateway_url(fake.base_url, token)
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
        connect_task = asyncio.create_task(
            client.connect(reconnect=True), name="fake-discord-connect"
        )
        await _wait_until_ready(client, connect_task, ready_timeout)
        yield client
    except BaseException:
        body_failed = True
        raise
    finally:
        try:
            await _close_client(client, connect_task, close_timeout, raise_errors=not body_failed)
        finally:
            restore()


async def _wait_until_ready(
    client: discord.Client, connect_task: asyncio.Task[None], timeout: float
) -> None:
    ready_task = asyncio.create_task(client.wait_until_ready(), name="fake-discord-ready")
    done, _ = await asyncio.wait(
        {ready_task, connect_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if ready_task in done:
        return
    ready_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ready_task
    if connect_task in done:
        # e.g. PrivilegedIntentsRequired, LoginFailure-like closes, or discord.py's
        # AttributeError when the very first gateway connection fails.
        connect_task.result()
        raise RuntimeError("Client.connect returned before on_ready")
    raise FakeDiscordTimeoutError(
        f"the client was not ready after {timeout} s: is guild_ready_timeout low enough?"
    )


async def _close_client(
    client: discord.Client,
    connect_task: asyncio.Task[None] | None,
    timeout: float,
    *,
    raise_errors: bool,
) -> None:
    try:
        await asyncio.wait_for(client.close(), timeout)
        if connect_task is not None:
            await asyncio.wait_for(connect_task, timeout)
    except Exception:
        if connect_task is not None and not connect_task.done():
            connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connect_task
        if raise_errors:
            raise
        # Usually the very error the body already raised (connect died before on_ready).
        _log.debug("error while closing the client after the body failed", exc_info=True)
