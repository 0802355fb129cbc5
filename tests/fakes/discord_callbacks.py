"""The REST routes of interactions in the fake Discord: the initial callback
(``POST /interactions/{id}/{token}/callback``) and the interaction's webhook (follow-ups,
``@original`` and follow-up messages read, edited and deleted), as Discord answers them.

The first follow-up after a defer ("thinking") becomes the original message, keeping the
ephemerality chosen at defer time; a second callback answers 400 code 40060.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .discord_http import (
    Handler,
    RecordedRequest,
    error,
    invalid_form_body,
    json_response,
    message_body_error,
)
from .discord_interactions import (
    APPLICATION_COMMAND_AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE_WITH_SOURCE,
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE,
    DEFERRED_UPDATE_MESSAGE,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    InteractionCallback,
    InteractionSender,
    SentInteraction,
)
from .discord_messages import FakeMessage, MessageStore
from .discord_payloads import EPHEMERAL, JSON, LOADING, modal_problems
from .discord_spec import ErrorPath, Problem
from .discord_state import DiscordWorld


def _callback_type_problem(message: str) -> web.Response:
    return invalid_form_body([Problem(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", message)])


class InteractionRoutes:
    """The handlers of an interaction's callback and webhook routes."""

    def __init__(
        self,
        world: DiscordWorld,
        messages: MessageStore,
        sender: InteractionSender,
        *,
        validate: Callable[[], bool],
    ) -> None:
        self._world = world
        self._messages = messages
        self._sender = sender
        self._validate = validate

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path under /api/v10, handler): none needs the bot token, as on Discord."""
        webhook_message = "/webhooks/{application_id}/{token}/messages/{message_id}"
        return [
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.callback),
            ("POST", "/webhooks/{application_id}/{token}", self.execute_webhook),
            ("GET", webhook_message, self.get_webhook_message),
            ("PATCH", webhook_message, self.edit_webhook_message),
            ("DELETE", webhook_message, self.delete_webhook_message),
        ]

    def _body_error(
        self, data: JSON, record: RecordedRequest, *, new: bool, prefix: ErrorPath = ()
    ) -> web.Response | None:
        if not self._validate():
            return None
        return message_body_error(data, record.files, new=new, prefix=prefix)

    def _channel_of(self, interaction: SentInteraction) -> JSON:
        """Where the interaction happened (a stand-in for a channel the fake does not hold)."""
        return self._world.channels.get(interaction.channel_id) or {
            "id": interaction.channel_id,
            "guild_id": interaction.guild_id,
        }

    async def callback(self, request: web.Request, record: RecordedRequest) -> web.Response:
        interaction = self._sender.interactions.get(request.match_info["interaction_id"])
        if interaction is None or interaction.token != request.match_info["token"]:
            return error(404, 10062, "Unknown interaction")
        if interaction.callback is not None:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body = record.json or {}
        kind = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        refused = self._callback_error(interaction, kind, data, record)
        if refused is not None:
            return refused
        interaction.callback = InteractionCallback(kind, data, record.received_at, record.files)
        channel = self._channel_of(interaction)
        message: FakeMessage | None = None
        ephemeral = int(data.get("flags") or 0) & EPHEMERAL
        if kind == CHANNEL_MESSAGE_WITH_SOURCE:
            message = self._messages.new_message(
                channel, data, record, flags=ephemeral, interaction=interaction
            )
        elif kind == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE:
            message = self._messages.new_message(
                channel, {}, record, flags=ephemeral | LOADING, interaction=interaction
            )
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            interaction.original_message_id = interaction.message_id
            if kind == UPDATE_MESSAGE and interaction.message_id is not None:
                message = self._messages.messages[interaction.message_id]
                self._messages.edit(message, data, record)
        if message is not None:
            interaction.original_message_id = message.id
        return json_response(_callback_response(interaction, kind, message))

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
        if kind == MODAL and self._validate():
            problems = modal_problems(data)
            return invalid_form_body(problems) if problems else None
        if kind in (CHANNEL_MESSAGE_WITH_SOURCE, UPDATE_MESSAGE):
            new = kind == CHANNEL_MESSAGE_WITH_SOURCE
            return self._body_error(data, record, new=new, prefix=("data",))
        return None

    def _webhook_interaction(
        self, request: web.Request
    ) -> tuple[SentInteraction | None, web.Response | None]:
        interaction = self._sender.by_token.get(request.match_info["token"])
        if (
            interaction is None
            or request.match_info["application_id"] != self._world.application_id
            or interaction.callback is None
        ):
            return None, error(404, 10015, "Unknown Webhook")
        return interaction, None

    async def execute_webhook(self, request: web.Request, record: RecordedRequest) -> web.Response:
        interaction, refused = self._webhook_interaction(request)
        if refused is not None or interaction is None:
            return refused or error(404, 10015, "Unknown Webhook")
        data = record.json or {}
        refused = self._body_error(data, record, new=True)
        if refused is not None:
            return refused
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
            message = self._messages.edit(original, data, record)
        else:
            flags = int(data.get("flags") or 0) & EPHEMERAL
            message = self._messages.new_message(
                self._channel_of(interaction), data, record, flags=flags, interaction=interaction
            )
        interaction.followup_ids.append(message.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return json_response(message.to_payload())
        return web.Response(status=204)

    def _webhook_message(
        self, request: web.Request
    ) -> tuple[FakeMessage | None, web.Response | None]:
        interaction, refused = self._webhook_interaction(request)
        if refused is not None or interaction is None:
            return None, refused
        message_id = request.match_info["message_id"]
        if message_id == "@original":
            message_id = interaction.original_message_id or ""
        owned = {interaction.original_message_id, *interaction.followup_ids}
        message = self._messages.messages.get(message_id)
        if message is None or message.deleted or message_id not in owned:
            return None, error(404, 10008, "Unknown Message")
        return message, None

    async def get_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, refused = self._webhook_message(request)
        return refused or json_response(message.to_payload() if message else None)

    async def edit_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, refused = self._webhook_message(request)
        if refused is not None or message is None:
            return refused or error(404, 10008, "Unknown Message")
        data = record.json or {}
        return self._body_error(data, record, new=False) or self._messages.edited(
            message, data, record
        )

    async def delete_webhook_message(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response:
        message, refused = self._webhook_message(request)
        if refused is not None or message is None:
            return refused or error(404, 10008, "Unknown Message")
        return self._messages.deleted(message)


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
