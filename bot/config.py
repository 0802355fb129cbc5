"""Settings: one frozen object built from a mapping (the environment plus ``.env``).

Nothing here reads the environment at import time; ``load_settings`` takes a mapping so tests
and the CLI pass exactly what they mean. Every problem becomes one line naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit

from bot.errors import ConfigError

DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10"
DEFAULT_SPOTIFY_ACCOUNTS_BASE = "https://accounts.spotify.com"
DEFAULT_SPOTIFY_API_BASE = "https://api.spotify.com/v1"
DEFAULT_SPOTIFY_IMAGE_BASE = "https://i.scdn.co"
# Loopback: only this machine reaches the web server unless the admin exposes it on purpose.
DEFAULT_WEB_HOST = "127.0.0.1"
# Development-mode apps are refused after roughly 800 to 2,600 calls a day (docs/spotify.md).
DEFAULT_SPOTIFY_DAILY_BUDGET = 600
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True, slots=True)
class Settings:
    discord_token: str
    spotify_client_id: str
    spotify_client_secret: str
    spotify_redirect_uri: str
    token_encryption_keys: tuple[bytes, ...]
    database_path: Path = Path("data/bot.db")
    # Loopback by default: a reverse proxy (or the container's WEB_HOST) exposes it on purpose.
    web_host: str = DEFAULT_WEB_HOST
    web_port: int = 8080
    discord_api_base: str = DEFAULT_DISCORD_API_BASE
    spotify_accounts_base: str = DEFAULT_SPOTIFY_ACCOUNTS_BASE
    spotify_api_base: str = DEFAULT_SPOTIFY_API_BASE
    spotify_image_base: str = DEFAULT_SPOTIFY_IMAGE_BASE
    dev_guild_id: int | None = None
    enable_presence: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_enabled: bool = False
    spotify_request_budget: int = 120
    # The most Spotify Web API calls in any rolling 24 hours, all processes together; 0: none.
    spotify_daily_budget: int = DEFAULT_SPOTIFY_DAILY_BUDGET
    listening_log_days: int = 90
    # PostgreSQL instead of SQLite (several processes share one bot); None: DATABASE_PATH.
    database_url: str | None = None
    # This process runs these shards of shard_count; both None: every shard, Discord's count.
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    @property
    def database_target(self) -> str | Path:
        """What ``Storage.open`` takes: the PostgreSQL URL when set, else the SQLite file."""
        return self.database_url if self.database_url is not None else self.database_path

    @property
    def database_shown(self) -> str:
        """The database for messages: the URL without its password, or the SQLite path."""
        if self.database_url is not None:
            return redact_database_url(self.database_url)
        return str(self.database_path)

    @property
    def redirect_path(self) -> str:
        """The web route that serves the OAuth callback: the path of the redirect URI."""
        return urlsplit(self.spotify_redirect_uri).path or "/"

    @property
    def redirect_is_loopback(self) -> bool:
        return is_loopback_redirect(self.spotify_redirect_uri)

    def __repr__(self) -> str:  # never print secrets, even by accident
        return (
            f"Settings(redirect_uri={self.spotify_redirect_uri!r}, "
            f"database={self.database_shown!r}, web={self.web_host}:{self.web_port}, "
            f"presence={self.enable_presence})"
        )


# Query parameters of a PostgreSQL URL that carry a secret (asyncpg and libpq read both).
_SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})


_WHOLE_NUMBER = re.compile(r"[0-9]{1,20}")


def whole_number(text: str | None) -> int | None:
    """``text`` as a number when it is 1 to 20 ASCII digits and nothing else, else None.

    ``str.isdigit`` is no check: it accepts "²" and other digits ``int`` refuses, and
    ``int`` refuses more than 4,300 digits; 20 digits hold any Discord id and any setting."""
    if text is None or not _WHOLE_NUMBER.fullmatch(text):
        return None
    return int(text)


def redact_database_url(url: str) -> str:
    """The URL with every password replaced by ``***``: in the user part
    (``postgresql://user:***@host/db``) and as a query parameter (``?password=***``). A URL
    too malformed to take apart shows only its scheme."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://***" if sep and scheme.isalnum() else "***"
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redacted_parameter(pair) for pair in parts.query.split("&"))
    return parts._replace(netloc=netloc, query=query if parts.query else "").geturl()


def _redacted_parameter(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    if sep and unquote_plus(name).strip().lower() in _SECRET_URL_PARAMETERS:
        return f"{name}=***"
    return pair


def database_url_passwords(url: str) -> tuple[str, ...]:
    """Every password a DATABASE_URL carries, as written and decoded (for the log masker)."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return ()
    for pair in parts.query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and unquote_plus(name).strip().lower() in _SECRET_URL_PARAMETERS:
            found.append(value)
    decoded = [decode(p) for p in found for decode in (unquote, unquote_plus)]
    return tuple(dict.fromkeys([*found, *decoded]))


def check_database_url(url: str) -> str | None:
    """What is wrong with a DATABASE_URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return "must start with postgresql:// (only PostgreSQL is supported here)"
    try:
        port = parts.port
    except ValueError:
        return "has a port that is not a number"
    del port
    socket_host = "host=" in parts.query
    if not parts.hostname and not socket_host:
        return "names no host (postgresql://user:password@host:5432/dbname)"
    if not parts.path.strip("/"):
        return "names no database (postgresql://user:password@host:5432/dbname)"
    return None


def _parse_shards(
    raw_count: str | None, raw_ids: str | None, problems: list[str]
) -> tuple[int | None, tuple[int, ...] | None]:
    if raw_count is None and raw_ids is None:
        return None, None
    count = whole_number(raw_count)
    if count is None or count < 1:
        problems.append(
            f"SHARD_COUNT: '{raw_count or ''}' is not a positive whole number "
            "(set it together with SHARD_IDS, e.g. SHARD_COUNT=4 SHARD_IDS=0,1)"
        )
        return None, None
    if raw_ids is None:
        return count, tuple(range(count))
    ids: list[int] = []
    for entry in raw_ids.split(","):
        shard = whole_number(entry.strip())
        if shard is None or shard >= count:
            problems.append(
                f"SHARD_IDS: '{raw_ids}' must be shard numbers from 0 to {count - 1}, "
                "comma-separated"
            )
            return None, None
        if shard not in ids:
            ids.append(shard)
    return count, tuple(sorted(ids))


def decode_key(text: str) -> bytes:
    """Decode one TOKEN_ENCRYPTION_KEY entry; raise ValueError unless it is 32 bytes."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty key")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not URL-safe base64") from exc
    if any(c not in _URLSAFE_ALPHABET for c in stripped.rstrip("=")):
        raise ValueError("not URL-safe base64")
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes, expected 32")
    return raw


_URLSAFE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def is_loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1")


def _check_redirect_uri(uri: str) -> str | None:
    """Return a problem description, or None when Spotify would accept the URI."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    host = (parts.hostname or "").lower()
    if not parts.scheme or not host:
        return "is not a full URL (expected e.g. https://np.example.org/callback)"
    if host == "localhost" or host.endswith(".localhost"):
        return (
            "uses 'localhost', which Spotify rejects; use the loopback literal "
            f"http://127.0.0.1:{port or 8080}{parts.path or '/callback'} instead"
        )
    if parts.fragment:
        return "must not contain a #fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and address.is_loopback and str(address) in ("127.0.0.1", "::1"):
            if port is None:
                return "needs an explicit port for a loopback address, e.g. http://127.0.0.1:8080/callback"
            return None
        return (
            "must use https, or be a loopback literal (http://127.0.0.1:PORT/... or "
            "http://[::1]:PORT/...)"
        )
    return f"has scheme '{parts.scheme}'; it must be https (or http on 127.0.0.1 / [::1])"


def redirect_uri_problem(uri: str) -> str | None:
    """Why Spotify would refuse this redirect URI, or None (what the setup asks about)."""
    return _check_redirect_uri(uri)


def _check_base_url(name: str, value: str, problems: list[str]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"{name}: '{value}' is not an http(s) URL")
    return value.rstrip("/")


def _bool(name: str, raw: str | None, default: bool, problems: list[str]) -> bool:
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    problems.append(f"{name}: '{raw}' is not true or false")
    return default


def _whole(
    name: str,
    raw: str | None,
    default: int,
    problems: list[str],
    *,
    words: str,
    lowest: int = 0,
    highest: int | None = None,
) -> int:
    """A whole-number setting from ``lowest`` to ``highest``; ``words`` say why not."""
    if raw is None:
        return default
    number = whole_number(raw)
    if number is not None and lowest <= number and (highest is None or number <= highest):
        return number
    problems.append(f"{name}: '{raw}' {words}")
    return default


def load_settings(env: Mapping[str, str], *, command: str = "nowplaying-bot") -> Settings:
    """Build Settings from a mapping. Raises ConfigError listing every problem at once.
    ``command`` is how the user runs the bot, named in hints (``<command> gen-key``)."""
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value != "" else None

    def required(name: str, meaning: str) -> str:
        value = get(name)
        if value is None:
            problems.append(f"{name}: missing; set it to {meaning}")
            return ""
        return value

    discord_token = required("DISCORD_TOKEN", "the bot token from the Discord Developer Portal")
    client_id = required("SPOTIFY_CLIENT_ID", "the client id of your Spotify app")
    client_secret = required("SPOTIFY_CLIENT_SECRET", "the client secret of your Spotify app")
    redirect_uri = required(
        "SPOTIFY_REDIRECT_URI", "the callback URL registered in your Spotify app"
    )
    if redirect_uri:
        problem = _check_redirect_uri(redirect_uri)
        if problem:
            problems.append(f"SPOTIFY_REDIRECT_URI: '{redirect_uri}' {problem}")

    keys: list[bytes] = []
    raw_keys = required(
        "TOKEN_ENCRYPTION_KEY",
        f"a key printed by `{command} gen-key` (comma-separated to rotate)",
    )
    if raw_keys:
        for position, entry in enumerate(raw_keys.split(","), start=1):
            try:
                keys.append(decode_key(entry))
            except ValueError as exc:
                problems.append(
                    f"TOKEN_ENCRYPTION_KEY: key #{position} is invalid ({exc}); each key must be "
                    f"32 random bytes in URL-safe base64, as printed by `{command} gen-key`"
                )

    database_path = Path(get("DATABASE_PATH") or "data/bot.db")
    database_url = get("DATABASE_URL")
    if database_url is not None:
        problem = check_database_url(database_url)
        if problem:
            problems.append(f"DATABASE_URL: '{redact_database_url(database_url)}' {problem}")
    shard_count, shard_ids = _parse_shards(get("SHARD_COUNT"), get("SHARD_IDS"), problems)
    partial = shard_count is not None and shard_ids is not None and len(shard_ids) < shard_count
    if partial and database_url is None:
        problems.append(
            "SHARD_IDS: this process runs only some of the shards, so other processes run "
            "the rest and they must share one database: set DATABASE_URL (PostgreSQL)"
        )
    web_host = get("WEB_HOST") or DEFAULT_WEB_HOST
    web_port = 8080
    raw_port = get("WEB_PORT")
    if raw_port is not None:
        port = whole_number(raw_port)
        if port is not None and 1 <= port <= 65535:
            web_port = port
        else:
            problems.append(f"WEB_PORT: '{raw_port}' is not a port number (1-65535)")

    discord_api_base = _check_base_url(
        "DISCORD_API_BASE", get("DISCORD_API_BASE") or DEFAULT_DISCORD_API_BASE, problems
    )
    accounts_base = _check_base_url(
        "SPOTIFY_ACCOUNTS_BASE",
        get("SPOTIFY_ACCOUNTS_BASE") or DEFAULT_SPOTIFY_ACCOUNTS_BASE,
        problems,
    )
    api_base = _check_base_url(
        "SPOTIFY_API_BASE", get("SPOTIFY_API_BASE") or DEFAULT_SPOTIFY_API_BASE, problems
    )

    image_base = _check_base_url(
        "SPOTIFY_IMAGE_BASE", get("SPOTIFY_IMAGE_BASE") or DEFAULT_SPOTIFY_IMAGE_BASE, problems
    )

    dev_guild_id: int | None = None
    raw_guild = get("DEV_GUILD_ID")
    if raw_guild is not None:
        dev_guild_id = whole_number(raw_guild)
        if dev_guild_id is None:
            problems.append(f"DEV_GUILD_ID: '{raw_guild}' is not a numeric Discord server id")

    enable_presence = _bool("ENABLE_PRESENCE", get("ENABLE_PRESENCE"), True, problems)
    metrics_enabled = _bool("METRICS_ENABLED", get("METRICS_ENABLED"), False, problems)

    log_level = (get("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL: '{log_level}' is not one of {', '.join(LOG_LEVELS)}")
        log_level = "INFO"
    log_format = (get("LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        problems.append(f"LOG_FORMAT: '{log_format}' is not one of {', '.join(LOG_FORMATS)}")
        log_format = "text"

    budget = _whole(
        "SPOTIFY_REQUEST_BUDGET",
        get("SPOTIFY_REQUEST_BUDGET"),
        120,
        problems,
        lowest=1,
        words="is not a positive whole number",
    )
    daily_budget = _whole(
        "SPOTIFY_DAILY_BUDGET",
        get("SPOTIFY_DAILY_BUDGET"),
        DEFAULT_SPOTIFY_DAILY_BUDGET,
        problems,
        highest=10_000_000,
        words="is not a whole number of Web API calls a day (0: no daily limit, for an app "
        "with an extended quota)",
    )
    listening_log_days = _whole(
        "LISTENING_LOG_DAYS",
        get("LISTENING_LOG_DAYS"),
        90,
        problems,
        highest=36500,
        words="is not a whole number of days (0 keeps no listening history)",
    )

    if problems:
        raise ConfigError(problems)
    return Settings(
        discord_token=discord_token,
        spotify_client_id=client_id,
        spotify_client_secret=client_secret,
        spotify_redirect_uri=redirect_uri,
        token_encryption_keys=tuple(keys),
        database_path=database_path,
        web_host=web_host,
        web_port=web_port,
        discord_api_base=discord_api_base,
        spotify_accounts_base=accounts_base,
        spotify_api_base=api_base,
        spotify_image_base=image_base,
        dev_guild_id=dev_guild_id,
        enable_presence=enable_presence,
        log_level=log_level,
        log_format=log_format,
        metrics_enabled=metrics_enabled,
        spotify_request_budget=budget,
        spotify_daily_budget=daily_budget,
        database_url=database_url,
        shard_count=shard_count,
        shard_ids=shard_ids,
        listening_log_days=listening_log_days,
    )
