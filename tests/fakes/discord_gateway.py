"""The gateway of the fake Discord: websocket sessions, IDENTIFY and its daily budget, intents,
shards, RESUME, member chunks, and dispatching events to the sessions that should get them.

As Discord does it: without GUILD_PRESENCES a GUILD_CREATE carries only the bot's own member and
no presences (so discord.py chunks the guild with op 8 when it has GUILD_MEMBERS);
PRESENCE_UPDATE and GUILD_MEMBER_* go only to sessions with the intent; a privileged intent the
"developer portal" has not enabled closes the gateway with 4014; an IDENTIFY over the
``session_start_limit`` with 4004; a guild's events go to shard ``(guild_id >> 22) % count``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from .discord_http import dumps
from .discord_payloads import (
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    JSON,
    PRIVILEGED_INTENTS,
)
from .discord_state import DiscordWorld
from .discord_waiting import DEFAULT_TIMEOUT, Waiters

_log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
# Which dispatches a real gateway withholds without an intent.
_EVENT_INTENTS = {
    "PRESENCE_UPDATE": INTENT_GUILD_PRESENCES,
    "GUILD_MEMBER_ADD": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_UPDATE": INTENT_GUILD_MEMBERS,
    "GUILD_MEMBER_REMOVE": INTENT_GUILD_MEMBERS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
}


def shard_of(guild_id: str | int, shard_count: int) -> int:
    return (int(guild_id) >> 22) % shard_count


def _guild_of(event: str, data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    guild_id = data.get("guild_id")
    if guild_id is None and event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
        guild_id = data.get("id")
    return str(guild_id) if guild_id is not None else None


class GatewaySession:
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
            await self.ws.send_str(dumps({"op": op, "d": data, "s": None, "t": None}))

    async def dispatch(self, event: str, data: Any) -> float:
        """Send one DISPATCH; returns time.monotonic() taken just before the frame is written."""
        async with self._send_lock:
            self.sequence += 1
            frame = dumps({"op": 0, "t": event, "s": self.sequence, "d": data})
            sent_at = time.monotonic()
            await self.ws.send_str(frame)
        return sent_at


class SessionStartLimit:
    """Discord's daily budget of IDENTIFYs and its sharding advice, as ``GET /gateway/bot``
    reports them. ``remaining`` goes back to ``total`` once ``reset_after`` seconds passed."""

    def __init__(
        self,
        *,
        remaining: int,
        reset_after: float,
        recommended_shards: int,
        max_concurrency: int,
    ) -> None:
        self.total = 1000
        self.remaining = remaining
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        self._reset_at = time.monotonic() + reset_after
        self.over_limit: list[JSON] = []  # IDENTIFYs refused for want of budget

    def refresh(self) -> float:
        """Reset the budget when its time has come; return seconds until the next reset."""
        now = time.monotonic()
        if now >= self._reset_at:
            self.remaining = self.total
            self._reset_at = now + 86_400.0
        return self._reset_at - now

    def spend(self, identify: JSON) -> bool:
        """One IDENTIFY; False (and recorded in ``over_limit``) when none is left."""
        self.refresh()
        if self.remaining <= 0:
            self.over_limit.append(identify)
            return False
        self.remaining -= 1
        return True

    def payload(self, gateway_url: str) -> JSON:
        reset_after = self.refresh()  # first: the budget may have just been reset
        limit = {
            "total": self.total,
            "remaining": self.remaining,
            "reset_after": math.ceil(reset_after * 1000),  # never early
            "max_concurrency": self.max_concurrency,
        }
        return {"url": gateway_url, "shards": self.recommended_shards, "session_start_limit": limit}


@dataclass
class Handshakes:
    """Which websocket handshakes the gateway refuses with 503 while REST keeps working:
    all of them while ``down``, and the first ``refuse_first`` (a gateway that comes up after
    REST); ``refused`` counts the refusals."""

    down: bool = False
    refuse_first: int = 0
    refused: int = 0

    def refuse(self) -> bool:
        if self.down or self.refused < self.refuse_first:
            self.refused += 1
            return True
        return False


class FakeGateway:
    """The gateway websocket: sessions, what the bot sent, and what it is sent.

    Switches a test may flip at any time: ``allow_resume``, and those of ``handshakes``.
    """

    heartbeat_interval_ms: ClassVar[int] = HEARTBEAT_INTERVAL_MS

    def __init__(
        self,
        world: DiscordWorld,
        waiters: Waiters,
        limit: SessionStartLimit,
        *,
        token: str,
        enabled_privileged_intents: int,
        refuse_gateway_handshakes: int,
        gateway_url: Callable[[], str],
    ) -> None:
        self._world = world
        self._waiters = waiters
        self.limit = limit
        self.token = token
        self.enabled_privileged_intents = enabled_privileged_intents
        self.gateway_url = gateway_url
        self.allow_resume = True
        self.handshakes = Handshakes(refuse_first=refuse_gateway_handshakes)
        # Records.
        self.identifies: list[JSON] = []
        self.identify_times: list[float] = []  # monotonic, one per IDENTIFY
        self.gateway_frames: list[JSON] = []
        self.member_chunk_requests: list[JSON] = []
        self.handler_errors: list[BaseException] = []
        self.sessions: list[GatewaySession] = []
        self._sessions_by_id: dict[str, GatewaySession] = {}

    @property
    def connected(self) -> bool:
        return any(s.identified and s.open for s in self.sessions)

    @property
    def intents(self) -> int | None:
        """Intents of the last IDENTIFY."""
        return self.identifies[-1].get("intents") if self.identifies else None

    async def wait_until_connected(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until a session has IDENTIFYed and been sent READY and its GUILD_CREATEs."""
        await self._waiters.wait_for(
            lambda: True if self.connected else None, timeout=timeout, what="IDENTIFY"
        )

    # --- sending -------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: Any, *, force: bool = False) -> float:
        """Send a DISPATCH to every identified session; returns when it was sent (monotonic).

        Events that need an intent (PRESENCE_UPDATE, GUILD_MEMBER_*) skip sessions without it,
        as Discord does, unless ``force``.
        """
        sessions = [s for s in self.sessions if s.identified and s.open]
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

    async def dispatch_if_connected(self, event: str, data: Any) -> None:
        # State changes made before the bot connects reach it through READY / GUILD_CREATE.
        if self.connected:
            await self.dispatch(event, data)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the bot closes and RESUMEs (or re-IDENTIFYs if
        ``allow_resume`` is False, getting READY and every GUILD_CREATE again)."""
        for session in [s for s in self.sessions if s.open]:
            await session.send_op(7, None)

    async def close_all(self) -> None:
        for session in list(self.sessions):
            if session.open:
                await session.ws.close(code=1001, message=b"fake Discord stopping")

    # --- the websocket ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.handshakes.refuse():
            self._waiters.notify()
            return web.Response(status=503, text="fake gateway down")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        session = GatewaySession(ws)
        self.sessions.append(session)
        try:
            await session.send_op(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                self.gateway_frames.append(message)
                try:
                    await self._on_frame(session, message)
                except Exception as exc:
                    _log.exception("fake gateway crashed on %s", message.get("op"))
                    self.handler_errors.append(exc)
                    await ws.close(code=4000, message=b"fake gateway crashed")
                self._waiters.notify()
        except ConnectionError:
            _log.debug("gateway connection dropped")
        finally:
            self.sessions.remove(session)
            self._waiters.notify()
        return ws

    async def _on_frame(self, session: GatewaySession, message: JSON) -> None:
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

    async def _identify(self, session: GatewaySession, data: JSON) -> None:
        self.identifies.append(data)
        self.identify_times.append(time.monotonic())
        if data.get("token") != self.token or not self.limit.spend(data):
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
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
        guilds = self._world.guilds
        mine = [g for g_id, g in guilds.items() if shard_of(g_id, shard_count) == shard_id]
        session.intents = intents
        session.session_id = secrets.token_hex(16)
        self._sessions_by_id[session.session_id] = session
        await session.dispatch(
            "READY",
            {
                "v": 10,
                "user": self._world.client_user(),
                "guilds": [{"id": guild["id"], "unavailable": True} for guild in mine],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url(),
                "session_type": "normal",
                "application": {"id": self._world.application_id, "flags": 0},
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
        bot_id = self._world.bot_user_id
        bot_only = [m for m in guild["members"] if str(m["user"]["id"]) == bot_id]
        return {**guild, "members": bot_only, "presences": []}

    async def _resume(self, session: GatewaySession, data: JSON) -> None:
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

    async def _request_members(self, session: GatewaySession, data: JSON) -> None:
        self.member_chunk_requests.append(data)
        guild_id = str(data.get("guild_id"))
        guild = self._world.guilds.get(guild_id)
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
