"""The two REST questions the starter asks Discord before any bot exists (with the bot's
token, over our own session): where the gateway is, and which intents the app may ask for."""

from __future__ import annotations

from typing import Any

import aiohttp

REST_TIMEOUT_SECONDS = 10.0


async def get_json(
    session: aiohttp.ClientSession, api_base: str, path: str, token: str
) -> tuple[int, Any]:
    """(HTTP status, the JSON body or None when it is not JSON) of ``GET {api_base}{path}``.
    Network errors propagate: the caller decides whether to ask again."""
    headers = {"Authorization": f"Bot {token}"}
    timeout = aiohttp.ClientTimeout(total=REST_TIMEOUT_SECONDS)
    async with session.get(f"{api_base}{path}", headers=headers, timeout=timeout) as response:
        try:
            payload = await response.json(content_type=None)
        except ValueError:
            payload = None
        return response.status, payload


__all__ = ["REST_TIMEOUT_SECONDS", "get_json"]
