"""The REST API of the fake Discord under ``/api/v10``: every request recorded, checked
(injected failures, the bot token, the body against Discord's OpenAPI schema) and answered as
Discord answers, errors included: 401 on a bad token, 403 code 50007 on a DM to a member whose
DMs are closed (the DM channel itself is still created), 403 code 50013 / 50001 in a channel
where the bot lacks permissions, 404 code 10003 on a deleted channel, 400 code 50035 on a body
Discord would refuse."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .discord_callbacks import InteractionRoutes
from .discord_gateway import FakeGateway, SessionStartLimit
from .discord_http import (
    API_PREFIX,
    Handler,
    RecordedRequest,
    error,
    invalid_form_body,
    json_response,
    message_body_error,
    read_body,
)
from .discord_messages import FakeMessage, MessageStore
from .discord_payloads import (
    DM,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_PRESENCES,
    INTENT_MESSAGE_CONTENT,
    JSON,
    MANAGE_CHANNELS,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    make_user,
)
from .discord_spec import Problem, body_errors
from .discord_state import CommandRegistry, DiscordWorld
from .discord_waiting import DEFAULT_TIMEOUT, Waiters

_log = logging.getLogger(__name__)

# The application flags (GATEWAY_*_LIMITED) that say which privileged intents the "developer
# portal" enabled, as GET /applications/@me reports them.
_INTENT_FLAGS = {
    INTENT_GUILD_PRESENCES: 1 << 13,
    INTENT_GUILD_MEMBERS: 1 << 15,
    INTENT_MESSAGE_CONTENT: 1 << 19,
}


@dataclass(eq=False)
class InjectedFailure:
    predicate: Callable[[RecordedRequest], bool]
    status: int
    code: int
    message: str
    times: int


class FakeRest:
    """The REST side: routes, what they were asked, and the failures a test injects."""

    def __init__(
        self,
        world: DiscordWorld,
        messages: MessageStore,
        commands: CommandRegistry,
        gateway: FakeGateway,
        interaction_routes: InteractionRoutes,
        waiters: Waiters,
        *,
        token: str,
        validate: bool,
    ) -> None:
        self._world = world
        self._messages = messages
        self._commands = commands
        self._gateway = gateway
        self._interaction_routes = interaction_routes
        self._waiters = waiters
        self.token = token
        self.validate = validate
        # What GET /applications/@me reports as ``flags``; None: what the gateway enforces.
        # A test sets it to make the portal's answer and the gateway disagree (a 4014 anyway).
        self.application_flags: int | None = None
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.handler_errors: list[BaseException] = []
        self._failures: list[InjectedFailure] = []

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
        self._failures.append(InjectedFailure(predicate, status, code, message, times))

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

        return await self._waiters.wait_for(
            find, timeout=timeout, what=f"a request matching {predicate}"
        )

    def recent(self) -> str:
        """The last requests and any unknown routes, for a timed-out wait's message."""
        recent = ", ".join(repr(r) for r in self.requests[-8:]) or "none"
        return f"last requests: {recent}; unknown routes: {self.unknown_requests!r}"

    # --- plumbing ----------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        guild_commands = "/applications/{application_id}/guilds/{guild_id}/commands"
        message = "/channels/{channel_id}/messages/{message_id}"
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/applications/{application_id}/commands", self._get_commands),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            ("GET", guild_commands, self._get_commands),
            ("PUT", guild_commands, self._put_commands),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/guilds/{guild_id}/roles", self._get_roles),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("DELETE", "/channels/{channel_id}", self._delete_channel),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages", self._get_history),
            ("GET", message, self._get_message),
            ("PATCH", message, self._edit_message),
            ("DELETE", message, self._delete_message),
        ]
        for method, path, handler in routes:
            router.add_route(method, API_PREFIX + path, self._endpoint(handler, auth=True))
        no_token = [("GET", "/gateway", self._get_gateway), *self._interaction_routes.routes()]
        for method, path, handler in no_token:
            router.add_route(method, API_PREFIX + path, self._endpoint(handler, auth=False))
        router.add_get("/attachments/{attachment_id}/{filename}", self._messages.serve_attachment)
        unknown = self._endpoint(self._unknown_route, auth=False, check_body=False)
        router.add_route("*", "/{tail:.*}", unknown)

    def _endpoint(
        self, handler: Handler, *, auth: bool, check_body: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            received_at = time.monotonic()
            body, files = await read_body(request)
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
                    refused = error(401, 0, "401: Unauthorized")
                if refused is None and check_body:
                    refused = self._schema_error(record)
                response = refused if refused is not None else await handler(request, record)
            except Exception as exc:
                _log.exception("fake Discord crashed on %s %s", request.method, path)
                self.handler_errors.append(exc)
                response = error(400, 0, f"fake Discord crashed: {exc!r}")
            record.status = response.status
            if response.status >= 400 and isinstance(response, web.Response):
                with contextlib.suppress(TypeError, ValueError):
                    record.error = json.loads(response.body)  # type: ignore[arg-type]
            self._waiters.notify()
            return response

        return endpoint

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    def _injected_failure(self, record: RecordedRequest) -> web.Response | None:
        for failure in self._failures:
            if failure.times > 0 and failure.predicate(record):
                failure.times -= 1
                body: JSON = {"message": failure.message, "code": failure.code}
                if failure.status == 429:
                    body.update(retry_after=0.0, **{"global": False})
                return json_response(body, status=failure.status)
        return None

    def _schema_error(self, record: RecordedRequest) -> web.Response | None:
        """400 50035 when the body does not fit its route's schema in Discord's description."""
        if not self.validate or record.json is None:
            return None
        errors = body_errors(record.method, record.path, record.json)
        return None if errors is None else error(400, 50035, "Invalid Form Body", errors)

    async def _unknown_route(self, request: web.Request, record: RecordedRequest) -> web.Response:
        _log.warning("fake Discord has no route for %s %s", request.method, request.path)
        self.unknown_requests.append(record)
        return error(
            404, 0, f"404: Not Found (fake Discord: no route {request.method} {record.path})"
        )

    # --- login, gateway, application --------------------------------------------------------

    @property
    def _limit(self) -> SessionStartLimit:
        return self._gateway.limit

    async def _get_gateway(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return json_response({"url": self._gateway.gateway_url()})

    async def _get_gateway_bot(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return json_response(self._limit.payload(self._gateway.gateway_url()))

    async def _get_me(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return json_response(self._world.client_user())

    async def _get_user(self, request: web.Request, record: RecordedRequest) -> web.Response:
        user = self._world.users.get(request.match_info["user_id"])
        return json_response(user) if user else error(404, 10013, "Unknown User")

    async def _get_application(self, request: web.Request, record: RecordedRequest) -> web.Response:
        enabled = self._gateway.enabled_privileged_intents
        flags = sum(flag for intent, flag in _INTENT_FLAGS.items() if enabled & intent)
        if self.application_flags is not None:
            flags = self.application_flags
        bot_user = self._world.bot_user
        return json_response(
            {
                "id": self._world.application_id,
                "name": bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": make_user("100000000000000001", "owner"),
                "team": None,
                "flags": flags,
                "bot": bot_user,
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self._world.guilds),
            }
        )

    async def _get_commands(self, request: web.Request, record: RecordedRequest) -> web.Response:
        return json_response(self._commands.commands(request.match_info.get("guild_id")))

    async def _put_commands(self, request: web.Request, record: RecordedRequest) -> web.Response:
        if request.match_info["application_id"] != self._world.application_id:
            return error(
                403, 20012, "You are not authorized to perform this action on this application"
            )
        guild_id = request.match_info.get("guild_id")
        if guild_id is not None and guild_id not in self._world.guilds:
            return error(403, 50001, "Missing Access")
        commands = self._commands.overwrite(guild_id, record.json or [], record.received_at)
        return json_response(commands)

    # --- guilds, users, channels ---------------------------------------------------------------

    def _guild(self, request: web.Request) -> tuple[JSON | None, web.Response | None]:
        guild = self._world.guilds.get(request.match_info["guild_id"])
        return (guild, None) if guild is not None else (None, error(404, 10004, "Unknown Guild"))

    async def _get_guild(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild, refused = self._guild(request)
        skip = {"channels", "members", "presences", "threads", "voice_states"}
        return refused or json_response({k: v for k, v in (guild or {}).items() if k not in skip})

    async def _get_guild_channels(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        guild, refused = self._guild(request)
        return refused or json_response((guild or {})["channels"])

    async def _get_roles(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild, refused = self._guild(request)
        return refused or json_response((guild or {})["roles"])

    async def _get_member(self, request: web.Request, record: RecordedRequest) -> web.Response:
        guild, refused = self._guild(request)
        if refused is not None or guild is None:
            return refused or error(404, 10004, "Unknown Guild")
        member = self._world.member(guild["id"], request.match_info["user_id"])
        return json_response(member) if member else error(404, 10007, "Unknown Member")

    async def _create_dm(self, request: web.Request, record: RecordedRequest) -> web.Response:
        recipient = (record.json or {}).get("recipient_id")
        if recipient is None:
            required = Problem(("recipient_id",), "BASE_TYPE_REQUIRED", "This field is required")
            return invalid_form_body([required])
        # Creating the channel succeeds even when the user's DMs are closed: only sending fails.
        return json_response(self._world.dm_channel(recipient))

    def _channel(self, channel_id: str) -> tuple[JSON | None, web.Response | None]:
        channel = self._world.channels.get(channel_id)
        if channel is None:
            return None, error(404, 10003, "Unknown Channel")
        if channel["type"] != DM and not self._world.bot_permissions_in(channel_id) & VIEW_CHANNEL:
            return None, error(403, 50001, "Missing Access")
        return channel, None

    async def _get_channel(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel, refused = self._channel(request.match_info["channel_id"])
        return refused or json_response(channel)

    async def _delete_channel(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel_id = request.match_info["channel_id"]
        channel, refused = self._channel(channel_id)
        if refused is not None or channel is None:
            return refused or error(404, 10003, "Unknown Channel")
        if channel["type"] == DM:
            return json_response(channel)
        if not self._world.bot_permissions_in(channel_id) & MANAGE_CHANNELS:
            return error(403, 50013, "Missing Permissions")
        return json_response(await self._world.delete_channel(channel_id))

    async def _typing(self, request: web.Request, record: RecordedRequest) -> web.Response:
        _, refused = self._channel(request.match_info["channel_id"])
        return refused or web.Response(status=204)

    def _cannot_post(self, channel: JSON) -> web.Response | None:
        if channel["type"] == DM:
            if self._world.dms_refused(channel):
                return error(403, 50007, "Cannot send messages to this user")
            return None
        needed = VIEW_CHANNEL | SEND_MESSAGES
        if self._world.bot_permissions_in(channel["id"]) & needed != needed:
            return error(403, 50013, "Missing Permissions")
        return None

    def _body_error(self, data: JSON, record: RecordedRequest, *, new: bool) -> web.Response | None:
        return message_body_error(data, record.files, new=new) if self.validate else None

    async def _post_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel, refused = self._channel(request.match_info["channel_id"])
        if refused is not None or channel is None:
            return refused or error(404, 10003, "Unknown Channel")
        data = record.json or {}
        refused = self._cannot_post(channel) or self._body_error(data, record, new=True)
        if refused is not None:
            return refused
        return json_response(self._messages.post(channel, data, record).to_payload())

    async def _get_history(self, request: web.Request, record: RecordedRequest) -> web.Response:
        channel_id = request.match_info["channel_id"]
        _, refused = self._channel(channel_id)
        if refused is not None:
            return refused
        in_channel = self._messages.messages_in(channel_id)
        newest_first = sorted(in_channel, key=lambda m: int(m.id), reverse=True)
        if "before" in record.query:
            newest_first = [m for m in newest_first if int(m.id) < int(record.query["before"])]
        if "after" in record.query:
            newest_first = [m for m in newest_first if int(m.id) > int(record.query["after"])]
        limit = int(record.query.get("limit", 50))
        return json_response([m.to_payload() for m in newest_first[:limit]])

    def _message(self, request: web.Request) -> tuple[FakeMessage | None, web.Response | None]:
        channel_id = request.match_info["channel_id"]
        _, refused = self._channel(channel_id)
        if refused is not None:
            return None, refused
        message = self._messages.messages.get(request.match_info["message_id"])
        if message is None or message.deleted or message.channel_id != channel_id:
            return None, error(404, 10008, "Unknown Message")
        return message, None

    async def _get_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, refused = self._message(request)
        return refused or json_response(message.to_payload() if message else None)

    async def _edit_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, refused = self._message(request)
        if refused is not None or message is None:
            return refused or error(404, 10008, "Unknown Message")
        if str(message.author["id"]) != self._world.bot_user_id:
            return error(403, 50005, "Cannot edit a message authored by another user")
        data = record.json or {}
        return self._body_error(data, record, new=False) or self._messages.edited(
            message, data, record
        )

    async def _delete_message(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message, refused = self._message(request)
        if refused is not None or message is None:
            return refused or error(404, 10008, "Unknown Message")
        return self._messages.deleted(message)
