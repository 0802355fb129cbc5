"""What the Developer Portal says about the bot's application: whether the privileged intents
presence mode needs (Presence, Server Members) are switched on.

``GET /oauth2/applications/@me`` answers ``flags``; each switch has two bits (the ``_LIMITED``
one is the same switch for a bot in fewer than 100 servers). Asking the gateway for an intent
whose switch is off closes the connection with 4014, so the bot reads these first.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp

from bot.errors import StartupError
from bot.gateway.rest import get_json

FLAG_PRESENCE: Final = (1 << 12) | (1 << 13)
FLAG_GUILD_MEMBERS: Final = (1 << 14) | (1 << 15)
SWITCHES: Final = (("Presence", FLAG_PRESENCE), ("Server Members", FLAG_GUILD_MEMBERS))
WHERE_THE_SWITCHES_ARE: Final = "Developer Portal -> your app -> Bot -> Privileged Gateway Intents"


def switches_off(flags: int) -> list[str]:
    """The names of the presence switches that are off in ``flags`` (empty: both on)."""
    return [name for name, bits in SWITCHES if not flags & bits]


def switches_advice(missing: list[str]) -> str:
    """One sentence naming the switches to turn on, and where."""
    names = " and ".join(missing) if missing else "Presence and Server Members"
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"the {names} intent{'' if len(missing) == 1 else 's'} {verb} off: switch "
        f"{'it' if len(missing) == 1 else 'them'} on in the {WHERE_THE_SWITCHES_ARE}"
    )


def presence_off(reason: str) -> str:
    """What the bot (a WARNING at start) and ``check`` say when it cannot see statuses."""
    return (
        f"Presence is off: {reason}. Until then the bot sees no member's Spotify status, so /np "
        "and auto-posts spend Spotify's small daily quota of Web API calls instead (restart "
        "the bot after switching them on), or set ENABLE_PRESENCE=false to silence this"
    )


def flags_of(payload: Any) -> int | None:
    """The ``flags`` of an application payload, or None when it has none."""
    if not isinstance(payload, dict):
        return None
    flags = payload.get("flags")
    return flags if isinstance(flags, int) and not isinstance(flags, bool) else None


async def fetch_application_flags(
    session: aiohttp.ClientSession, api_base: str, token: str, rejected: str
) -> int | None:
    """The application's flags, or None when Discord answered without them (a REST proxy
    that does not know the route, say: the gateway's answer decides then). StartupError
    (``rejected``) when Discord refuses the token; a network error when nothing answered."""
    status, payload = await get_json(session, api_base, "/oauth2/applications/@me", token)
    if status == 401:
        raise StartupError(rejected)
    return flags_of(payload) if status == 200 else None


__all__ = [
    "FLAG_GUILD_MEMBERS",
    "FLAG_PRESENCE",
    "WHERE_THE_SWITCHES_ARE",
    "fetch_application_flags",
    "flags_of",
    "presence_off",
    "switches_advice",
    "switches_off",
]
