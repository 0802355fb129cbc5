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
description or exceeds a limit Discord documents beyond it, the first follow-up after a defer
replacing the "thinking" message, and intents (GUILD_CREATE without members and presences,
events withheld, 4014 for a privileged intent the "developer portal" has not enabled).

:class:`FakeDiscord` is the one object tests use; it composes parts, one per concern, and
forwards its attributes to them:

- ``world`` (``discord_state.DiscordWorld``): guilds, members, channels, users, permissions;
  ``commands`` (``discord_state.CommandRegistry``): the application commands the bot synced;
- ``message_store`` (``discord_messages.MessageStore``): every message, post and upload;
- ``gateway`` (``discord_gateway.FakeGateway``): websocket sessions, IDENTIFY and its budget,
  intents, shards, RESUME, dispatching;
- ``interaction_sender`` (``discord_interactions.InteractionSender``): slash commands, clicks and
  modals sent as a member, and :class:`SentInteraction` with its waits;
- ``rest`` (``discord_rest.FakeRest``, with ``discord_callbacks.InteractionRoutes``): the REST
  routes, their errors, recorded requests and injected failures; every body is checked by
  ``discord_spec`` against Discord's OpenAPI description;
- ``waiters`` (``discord_waiting.Waiters``): waiting without polling.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic, TypeVar, overload

from aiohttp import web

from .discord_callbacks import InteractionRoutes
from .discord_client import (
    discord_py_pointed_at,
    fetch_gateway_url,
    point_discord_py_at,
    run_client,
)
from .discord_gateway import (
    FakeGateway,
    GatewaySession,
    SessionStartLimit,
    shard_of,
)
from .discord_http import API_PREFIX, RecordedFile, RecordedRequest
from .discord_interactions import (
    ChannelArg,
    InteractionCallback,
    InteractionSender,
    OptionValue,
    RoleArg,
    SentInteraction,
    UserArg,
)
from .discord_messages import FakeMessage, MessageStore
from .discord_payloads import (
    DEFAULT_BOT_PERMISSIONS,
    JSON,
    PRIVILEGED_INTENTS,
    make_channel,
    make_custom_status,
    make_guild,
    make_member,
    make_overwrite,
    make_presence,
    make_role,
    make_spotify_activity,
    make_user,
)
from .discord_rest import FakeRest
from .discord_state import CommandRegistry, CommandSync, DiscordWorld
from .discord_waiting import DEFAULT_TIMEOUT, FakeDiscordTimeoutError, Waiters

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN",
    "ChannelArg",
    "CommandSync",
    "FakeDiscord",
    "FakeDiscordTimeoutError",
    "FakeMessage",
    "GatewaySession",
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
    "shard_of",
]

_log = logging.getLogger(__name__)

DEFAULT_TOKEN = "fake-bot-token.NowPlaying.0000"

T = TypeVar("T")


class _Part(Generic[T]):
    """An attribute of :class:`FakeDiscord` that lives in one of its parts (read and write)."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self._part = operator.attrgetter(part)
        self._name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = self._name or name

    @overload
    def __get__(self, fake: None, owner: type) -> _Part[T]: ...
    @overload
    def __get__(self, fake: FakeDiscord, owner: type) -> T: ...
    def __get__(self, fake: FakeDiscord | None, owner: type) -> _Part[T] | T:
        if fake is None:
            return self
        value: T = getattr(self._part(fake), str(self._name))
        return value

    def __set__(self, fake: FakeDiscord, value: T) -> None:
        setattr(self._part(fake), str(self._name), value)


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
            asking for another one at IDENTIFY closes the gateway with 4014. ``GET
            /applications/@me`` reports them as its ``flags`` unless a test sets
            ``application_flags`` to something else.
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
        self.check_errors = check_errors
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self.waiters = Waiters(context=lambda: self.rest.recent())
        bot_user = bot_user or make_user(username="NowPlaying", bot=True)
        bot_user.setdefault("bot", True)
        self.world = DiscordWorld(
            bot_user=bot_user,
            application_id=str(application_id) if application_id else str(bot_user["id"]),
            bot_permissions=bot_permissions,
            guilds=guilds,
            users=users,
            dispatch=lambda event, data: self.gateway.dispatch_if_connected(event, data),
            notify=self.waiters.notify,
        )
        self.commands = CommandRegistry(self.world.application_id, self.waiters)
        self.message_store = MessageStore(
            self.world,
            self.waiters,
            base_url=lambda: self.base_url,
            dispatch=lambda event, data: self.gateway.dispatch_if_connected(event, data),
        )
        limit = SessionStartLimit(
            remaining=session_starts_remaining,
            reset_after=session_starts_reset_after,
            recommended_shards=recommended_shards,
            max_concurrency=max_concurrency,
        )
        self.gateway = FakeGateway(
            self.world,
            self.waiters,
            limit,
            token=token,
            enabled_privileged_intents=enabled_privileged_intents,
            refuse_gateway_handshakes=refuse_gateway_handshakes,
            gateway_url=lambda: self.gateway_url,
        )
        self.interaction_sender = InteractionSender(
            self.world,
            self.message_store,
            self.commands,
            self.waiters,
            dispatch=self.gateway.dispatch,
        )
        routes = InteractionRoutes(
            self.world,
            self.message_store,
            self.interaction_sender,
            validate=lambda: self.rest.validate,
        )
        self.rest = FakeRest(
            self.world,
            self.message_store,
            self.commands,
            self.gateway,
            routes,
            self.waiters,
            token=token,
            validate=validate,
        )
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_get("/gateway", self.gateway.handle)
        self.app.router.add_get("/gateway/", self.gateway.handle)
        self.rest.add_routes(self.app.router)

    # --- lifecycle -----------------------------------------------------------------------------

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
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.waiters.cancel_all()
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

    @property
    def handler_errors(self) -> list[BaseException]:
        """Crashes of the fake's own handlers (REST and gateway)."""
        return [*self.rest.handler_errors, *self.gateway.handler_errors]

    # --- the world (discord_state) -------------------------------------------------------------

    token = _Part[str]("rest")
    validate = _Part[bool]("rest")
    bot_user = _Part[JSON]("world")
    bot_user_id = _Part[str]("world")
    application_id = _Part[str]("world")
    bot_permissions = _Part[int]("world")
    guilds = _Part[dict[str, JSON]]("world")
    channels = _Part[dict[str, JSON]]("world")
    users = _Part[dict[str, JSON]]("world")
    deleted_channel_ids = _Part[set[str]]("world")
    dms_closed = _Part[bool]("world")
    closed_dm_user_ids = _Part[set[str]]("world")
    default_guild_id = _Part[str]("world")
    member = _Part[Any]("world")
    bot_member = _Part[Any]("world")
    default_user_id = _Part[Any]("world")
    default_channel_id = _Part[Any]("world")
    user = _Part[Any]("world")
    dm_channel = _Part[Any]("world")
    bot_permissions_in = _Part[Any]("world")
    update_presence = _Part[Any]("world")
    update_user_presence = _Part[Any]("world")
    add_member = _Part[Any]("world")
    remove_member = _Part[Any]("world")
    update_channel = _Part[Any]("world")
    set_bot_overwrite = _Part[Any]("world")
    restrict_bot = _Part[Any]("world")
    unrestrict_bot = _Part[Any]("world")
    delete_channel = _Part[Any]("world")
    create_channel = _Part[Any]("world")
    command_syncs = _Part[list[CommandSync]]("commands")
    global_commands = _Part[list[JSON]]("commands")
    guild_commands = _Part[dict[str, list[JSON]]]("commands")
    wait_for_command_sync = _Part[Any]("commands")

    # --- messages (discord_messages) -----------------------------------------------------------

    messages = _Part[dict[str, FakeMessage]]("message_store")
    channel_posts = _Part[list[FakeMessage]]("message_store")
    attachment_data = _Part[dict[str, bytes]]("message_store")
    nonce_repeats = _Part[int]("message_store")
    post_as_member = _Part[Any]("message_store")
    dms_to = _Part[Any]("message_store")
    messages_in = _Part[Any]("message_store")
    attachment_bytes = _Part[Any]("message_store")
    wait_for_message = _Part[Any]("message_store")
    wait_for_dm = _Part[Any]("message_store")

    # --- the gateway (discord_gateway) ---------------------------------------------------------

    heartbeat_interval_ms = _Part[int]("gateway")
    connected = _Part[bool]("gateway")
    intents = _Part[int | None]("gateway")
    dispatch = _Part[Any]("gateway")
    request_reconnect = _Part[Any]("gateway")
    wait_until_connected = _Part[Any]("gateway")
    enabled_privileged_intents = _Part[int]("gateway")
    allow_resume = _Part[bool]("gateway")
    gateway_down = _Part[bool]("gateway.handshakes", "down")
    refuse_gateway_handshakes = _Part[int]("gateway.handshakes", "refuse_first")
    refused_gateway_handshakes = _Part[int]("gateway.handshakes", "refused")
    identifies = _Part[list[JSON]]("gateway")
    identify_times = _Part[list[float]]("gateway")
    gateway_frames = _Part[list[JSON]]("gateway")
    member_chunk_requests = _Part[list[JSON]]("gateway")
    session_starts_total = _Part[int]("gateway.limit", "total")
    session_starts_remaining = _Part[int]("gateway.limit", "remaining")
    identifies_over_limit = _Part[list[JSON]]("gateway.limit", "over_limit")
    recommended_shards = _Part[int]("gateway.limit")
    max_concurrency = _Part[int]("gateway.limit")

    # --- interactions (discord_interactions) ---------------------------------------------------

    interactions = _Part[dict[str, SentInteraction]]("interaction_sender")
    send_slash_command = _Part[Any]("interaction_sender")
    send_autocomplete = _Part[Any]("interaction_sender")
    click = _Part[Any]("interaction_sender")
    submit_modal = _Part[Any]("interaction_sender")

    # --- REST (discord_rest) and waiting -------------------------------------------------------

    requests = _Part[list[RecordedRequest]]("rest")
    application_flags = _Part[int | None]("rest")
    unknown_requests = _Part[list[RecordedRequest]]("rest")
    fail_requests = _Part[Any]("rest")
    wait_for_request = _Part[Any]("rest")
    wait_for = _Part[Any]("waiters")
