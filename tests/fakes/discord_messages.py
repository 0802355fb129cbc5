"""Messages in the fake Discord: every one that exists (channel posts, DMs, interaction replies),
the files uploaded with them, and waiting for the bot to post."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .discord_files import build_attachments, resolve_embed_attachments
from .discord_http import RecordedRequest, json_response
from .discord_payloads import EPHEMERAL, JSON, LOADING, iso_now, new_snowflake
from .discord_state import DiscordWorld, Dispatch
from .discord_waiting import DEFAULT_TIMEOUT, Waiters

if TYPE_CHECKING:
    from .discord_interactions import SentInteraction

NONCE_WINDOW = 300.0  # how long Discord remembers a message nonce (enforce_nonce)
APPLICATION_COMMAND = 2  # the interaction type whose replies are message type 20


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


class MessageStore:
    """Every message by id, the bot's channel posts in order, and the bytes of every upload."""

    def __init__(
        self,
        world: DiscordWorld,
        waiters: Waiters,
        *,
        base_url: Callable[[], str],
        dispatch: Dispatch,
    ) -> None:
        self._world = world
        self._waiters = waiters
        self._base_url = base_url
        self._dispatch = dispatch
        self.messages: dict[str, FakeMessage] = {}
        self.channel_posts: list[FakeMessage] = []
        self.attachment_data: dict[str, bytes] = {}  # attachment id -> uploaded bytes
        # Discord's nonce with enforce_nonce: (channel, nonce) -> (first message, monotonic
        # time); a second create within NONCE_WINDOW answers the first message, posts nothing.
        self._nonces: dict[tuple[str, str], tuple[FakeMessage, float]] = {}
        self.nonce_repeats = 0

    def new_message(
        self,
        channel: JSON,
        data: Mapping[str, Any],
        record: RecordedRequest,
        *,
        flags: int,
        interaction: SentInteraction | None = None,
    ) -> FakeMessage:
        """A message by the bot, stored (not yet a channel post: see :meth:`post`)."""
        message = FakeMessage(
            id=new_snowflake(),
            channel_id=str(channel["id"]),
            guild_id=channel.get("guild_id"),
            author=self._world.bot_user,
            content=data.get("content") or "",
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            flags=flags,
            attachments=self.attachments(record, ephemeral=bool(flags & EPHEMERAL)),
            created_at=record.received_at,
        )
        message.embeds = resolve_embed_attachments(message.embeds, message.attachments)
        if interaction is not None:
            message.interaction_id = interaction.id
            message.interaction_user_id = interaction.user_id
            message.webhook_id = self._world.application_id
            message.type = 20 if interaction.type == APPLICATION_COMMAND else 0
        self.messages[message.id] = message
        return message

    def post(self, channel: JSON, data: JSON, record: RecordedRequest) -> FakeMessage:
        """``POST /channels/{id}/messages``: a new channel post, or with ``enforce_nonce`` the
        first post of the same nonce within :data:`NONCE_WINDOW` (nothing is posted again)."""
        nonce = data.get("nonce")
        channel_id = str(channel["id"])
        enforced = nonce is not None and bool(data.get("enforce_nonce"))
        if enforced:
            first = self._nonces.get((channel_id, str(nonce)))
            if first is not None and time.monotonic() - first[1] < NONCE_WINDOW:
                self.nonce_repeats += 1
                return first[0]
        flags = int(data.get("flags") or 0) & ~(EPHEMERAL | LOADING)
        message = self.new_message(channel, data, record, flags=flags)
        if enforced:
            self._nonces[channel_id, str(nonce)] = (message, time.monotonic())
        self.channel_posts.append(message)
        channel["last_message_id"] = message.id
        return message

    async def post_as_member(
        self, channel_id: str | int, user_id: str | int, content: str = "nice song"
    ) -> FakeMessage:
        """A member (not the bot) posts in a guild channel: it becomes the channel's
        ``last_message_id``. MESSAGE_CREATE goes only to sessions with the GUILD_MESSAGES intent,
        as on Discord. Not a bot post, so not in :attr:`channel_posts`."""
        channel = self._world.channels[str(channel_id)]
        guild_id = channel.get("guild_id")
        message = FakeMessage(
            id=new_snowflake(),
            channel_id=str(channel["id"]),
            guild_id=guild_id,
            author=self._world.user(user_id),
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
        if guild_id is not None and (member := self._world.member(guild_id, user_id)) is not None:
            payload["member"] = {k: v for k, v in member.items() if k != "user"}
        await self._dispatch("MESSAGE_CREATE", payload)
        self._waiters.notify()
        return message

    def attachments(self, record: RecordedRequest, *, ephemeral: bool = False) -> list[JSON]:
        """Attachment objects for the files of a request (their bytes are kept)."""
        body = record.json if isinstance(record.json, dict) else {}
        if isinstance(body.get("data"), dict):  # an interaction callback: {"type", "data"}
            body = body["data"]
        stored = build_attachments(
            body,
            record.files,
            base_url=self._base_url(),
            new_id=new_snowflake,
            ephemeral=ephemeral,
        )
        for attachment in stored:
            self.attachment_data[attachment.payload["id"]] = attachment.data
        return [attachment.payload for attachment in stored]

    def edit(self, message: FakeMessage, data: JSON, record: RecordedRequest) -> FakeMessage:
        """Apply an edit the bot sent (with any new files)."""
        attachments = self.attachments(record, ephemeral=message.ephemeral)
        message.apply_edit(data, attachments, record.received_at)
        return message

    def edited(self, message: FakeMessage, data: JSON, record: RecordedRequest) -> web.Response:
        """Discord's answer to an accepted edit: the edited message."""
        return json_response(self.edit(message, data, record).to_payload())

    @staticmethod
    def deleted(message: FakeMessage) -> web.Response:
        """Discord's answer to a delete: 204, the message gone from every read."""
        message.deleted = True
        return web.Response(status=204)

    def attachment_bytes(self, attachment: Mapping[str, Any]) -> bytes:
        """The uploaded bytes behind an attachment object of a message."""
        return self.attachment_data[str(attachment["id"])]

    async def serve_attachment(self, request: web.Request) -> web.Response:
        """The CDN side: an attachment's URL serves its bytes (no token needed)."""
        data = self.attachment_data.get(request.match_info["attachment_id"])
        if data is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def dms_to(self, user_id: str | int) -> list[FakeMessage]:
        """Every message posted in the DM channel with this user (by the bot)."""
        channel = self._world.dm_channels.get(str(user_id))
        if channel is None:
            return []
        return [m for m in self.channel_posts if m.channel_id == channel["id"]]

    def messages_in(self, channel_id: str | int) -> list[FakeMessage]:
        """Every live message in a channel, interaction messages included."""
        channel_id = str(channel_id)
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

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

        return await self._waiters.wait_for(
            find, timeout=timeout, what=f"a message in channel {wanted}"
        )

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
            channel = self._world.dm_channels.get(str(user_id))
            if channel is None:
                return None
            for message in self.channel_posts[start:]:
                if message.channel_id == channel["id"] and (
                    predicate is None or predicate(message)
                ):
                    return message
            return None

        return await self._waiters.wait_for(find, timeout=timeout, what=f"a DM to {user_id}")
