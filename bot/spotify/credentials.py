"""Are the bot's Spotify client id and secret accepted? One client-credentials token request
answers it, at start (an ERROR line in the log, while the bot stays up for Discord) and in
``check`` (a verdict): both say it in the same words, which name the dashboard page where
the two values are copied from."""

from __future__ import annotations

import logging

from bot.errors import InvalidClient, SpotifyError
from bot.spotify.auth import SpotifyAuth

log = logging.getLogger(__name__)

DASHBOARD = "developer.spotify.com/dashboard -> your app -> Settings"


def rejected_credentials(client_id: str, exc: InvalidClient) -> str:
    """One line for a refused client id or secret (never the secret itself)."""
    return (
        f"Spotify rejected client id {client_id} or its secret ({exc.error}: "
        f"{exc.description or 'no description'}); copy both again from the Spotify developer "
        f"dashboard ({DASHBOARD}) into SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET"
    )


async def report_refused_credentials(auth: SpotifyAuth, client_id: str) -> None:
    """At start: a wrong id or secret would otherwise first show when a member runs /link.
    The token itself is not kept: it reads nothing a member linked."""
    try:
        await auth.client_credentials()
    except InvalidClient as exc:
        log.error(
            "%s. Until then no member can link; the bot stays up for Discord.",
            rejected_credentials(client_id, exc),
        )
    except SpotifyError as exc:
        log.warning(
            "Could not check the Spotify client id and secret at start (%s); "
            "`check` asks Spotify again.",
            type(exc).__name__,
        )
