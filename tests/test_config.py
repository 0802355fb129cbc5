from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from bot.cli.dotenv import environment_with_dotenv, read_env_file
from bot.config import (
    DEFAULT_DISCORD_API_BASE,
    Settings,
    database_url_passwords,
    decode_key,
    generate_key,
    load_settings,
    redact_database_url,
)
from bot.errors import ConfigError

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
OTHER_KEY = base64.urlsafe_b64encode(b"o" * 32).decode()


def valid_env(**overrides: str) -> dict[str, str]:
    env = {
        "DISCORD_TOKEN": "discord-token",
        "SPOTIFY_CLIENT_ID": "client-id",
        "SPOTIFY_CLIENT_SECRET": "client-secret",
        "SPOTIFY_REDIRECT_URI": "https://np.example.org/callback",
        "TOKEN_ENCRYPTION_KEY": KEY,
    }
    env.update(overrides)
    return env


def problems_for(**overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(valid_env(**overrides))
    return caught.value.problems


def test_defaults() -> None:
    settings = load_settings(valid_env())
    assert settings.database_path == Path("data/bot.db")
    assert settings.web_host == "127.0.0.1"  # loopback unless exposed on purpose
    assert settings.web_port == 8080
    assert settings.discord_api_base == "https://discord.com/api/v10"
    assert settings.spotify_accounts_base == "https://accounts.spotify.com"
    assert settings.spotify_api_base == "https://api.spotify.com/v1"
    assert settings.spotify_image_base == "https://i.scdn.co"
    assert settings.dev_guild_id is None
    assert settings.enable_presence is True  # statuses first: they cost no Spotify call
    assert settings.spotify_daily_budget == 600
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.metrics_enabled is False
    assert settings.token_encryption_keys == (b"k" * 32,)
    assert settings.redirect_path == "/callback"
    assert settings.discord_api_base == DEFAULT_DISCORD_API_BASE
    assert not settings.redirect_is_loopback
    assert settings.listening_log_days == 90


def test_every_value_read() -> None:
    settings = load_settings(
        valid_env(
            TOKEN_ENCRYPTION_KEY=f"{KEY}, {OTHER_KEY}",
            DATABASE_PATH="/tmp/x/bot.db",
            WEB_HOST="127.0.0.1",
            WEB_PORT="9000",
            DISCORD_API_BASE="http://127.0.0.1:5000/api/v10/",
            SPOTIFY_ACCOUNTS_BASE="http://127.0.0.1:5001",
            SPOTIFY_API_BASE="http://127.0.0.1:5001/v1",
            SPOTIFY_IMAGE_BASE="http://127.0.0.1:5002/cdn/",
            DEV_GUILD_ID="123456789012345678",
            ENABLE_PRESENCE="true",
            LOG_LEVEL="debug",
            LOG_FORMAT="JSON",
            METRICS_ENABLED="1",
            SPOTIFY_REDIRECT_URI="http://127.0.0.1:8080/oauth/done",
            SPOTIFY_REQUEST_BUDGET="60",
            SPOTIFY_DAILY_BUDGET="0",
            LISTENING_LOG_DAYS="0",
        )
    )
    assert settings.token_encryption_keys == (b"k" * 32, b"o" * 32)
    assert settings.database_path == Path("/tmp/x/bot.db")
    assert settings.web_port == 9000
    assert settings.discord_api_base == "http://127.0.0.1:5000/api/v10"
    assert settings.spotify_image_base == "http://127.0.0.1:5002/cdn"
    assert settings.discord_api_base != DEFAULT_DISCORD_API_BASE
    assert settings.dev_guild_id == 123456789012345678
    assert settings.enable_presence is True
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.metrics_enabled is True
    assert settings.redirect_path == "/oauth/done"
    assert settings.redirect_is_loopback
    assert settings.spotify_request_budget == 60
    assert settings.spotify_daily_budget == 0  # no daily limit: an extended-quota app
    assert settings.listening_log_days == 0


def test_settings_are_frozen_and_repr_hides_secrets() -> None:
    settings = load_settings(valid_env())
    with pytest.raises(AttributeError):
        settings.web_port = 1  # type: ignore[misc]
    text = repr(settings)
    assert "discord-token" not in text
    assert "client-secret" not in text
    assert KEY not in text
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(
    "name",
    [
        "DISCORD_TOKEN",
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "SPOTIFY_REDIRECT_URI",
        "TOKEN_ENCRYPTION_KEY",
    ],
)
def test_missing_required(name: str) -> None:
    env = valid_env()
    del env[name]
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{name}: missing")


def test_blank_counts_as_missing() -> None:
    assert problems_for(DISCORD_TOKEN="   ")[0].startswith("DISCORD_TOKEN: missing")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("short", "not URL-safe base64"),
        ("c2hvcnQ=", "decodes to 5 bytes"),
        (base64.urlsafe_b64encode(b"x" * 31).decode(), "decodes to 31 bytes"),
        (base64.urlsafe_b64encode(b"x" * 33).decode(), "decodes to 33 bytes"),
        ("!!!!" * 11, "not URL-safe base64"),
        (base64.b64encode(b"\xfb" * 32).decode(), "not URL-safe base64"),  # '+' and '/'
    ],
)
def test_bad_key(value: str, reason: str) -> None:
    (problem,) = problems_for(TOKEN_ENCRYPTION_KEY=value)
    assert problem.startswith("TOKEN_ENCRYPTION_KEY: key #1 is invalid")
    assert reason in problem
    assert "gen-key" in problem


def test_second_key_bad_named_by_position() -> None:
    (problem,) = problems_for(TOKEN_ENCRYPTION_KEY=f"{KEY},nope")
    assert problem.startswith("TOKEN_ENCRYPTION_KEY: key #2 is invalid")


def test_key_without_padding_accepted() -> None:
    assert decode_key(KEY.rstrip("=")) == b"k" * 32


def test_generated_key_is_valid_and_random() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(decode_key(first)) == 32


@pytest.mark.parametrize(
    "uri",
    [
        "https://np.example.org/callback",
        "http://127.0.0.1:8080/callback",
        "http://[::1]:8080/callback",
    ],
)
def test_redirect_uri_accepted(uri: str) -> None:
    assert load_settings(valid_env(SPOTIFY_REDIRECT_URI=uri)).spotify_redirect_uri == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://np.example.org/callback", "must use https"),
        ("http://192.168.1.5:8080/callback", "must use https"),
        ("ftp://example.org/callback", "scheme 'ftp'"),
        ("np.example.org/callback", "not a full URL"),
        ("http://127.0.0.1/callback", "explicit port"),
        ("http://127.0.0.1:99999/callback", "not a valid URL"),
    ],
)
def test_redirect_uri_rejected(uri: str, reason: str) -> None:
    (problem,) = problems_for(SPOTIFY_REDIRECT_URI=uri)
    assert problem.startswith("SPOTIFY_REDIRECT_URI:")
    assert reason in problem


def test_localhost_redirect_explains_alternative() -> None:
    (problem,) = problems_for(SPOTIFY_REDIRECT_URI="http://localhost:8080/callback")
    assert "SPOTIFY_REDIRECT_URI" in problem
    assert "Spotify rejects" in problem
    assert "http://127.0.0.1:8080/callback" in problem


@pytest.mark.parametrize("port", ["0", "65536", "eighty", "-1"])
def test_bad_port(port: str) -> None:
    (problem,) = problems_for(WEB_PORT=port)
    assert problem.startswith("WEB_PORT:")


@pytest.mark.parametrize(
    "name", ["WEB_PORT", "DEV_GUILD_ID", "SPOTIFY_REQUEST_BUDGET", "LISTENING_LOG_DAYS"]
)
@pytest.mark.parametrize("value", ["²", "१२", "9" * 5000])
def test_numbers_are_ascii_digits_only(name: str, value: str) -> None:
    """``str.isdigit`` accepts "²" (``int`` refuses it) and 5,000 digits (``int`` refuses more
    than 4,300): one line about the setting, never a traceback."""
    (problem,) = problems_for(**{name: value})
    assert problem.startswith(f"{name}:")


def test_non_numeric_guild() -> None:
    (problem,) = problems_for(DEV_GUILD_ID="my-server")
    assert problem.startswith("DEV_GUILD_ID:")
    assert "numeric" in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENABLE_PRESENCE", "maybe"),
        ("METRICS_ENABLED", "sure"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("DISCORD_API_BASE", "discord.com"),
        ("SPOTIFY_ACCOUNTS_BASE", "ws://x"),
        ("SPOTIFY_API_BASE", "nope"),
        ("SPOTIFY_IMAGE_BASE", "i.scdn.co"),
        ("SPOTIFY_REQUEST_BUDGET", "0"),
        ("SPOTIFY_DAILY_BUDGET", "-1"),
        ("SPOTIFY_DAILY_BUDGET", "600 a day"),
        ("LISTENING_LOG_DAYS", "-1"),
        ("LISTENING_LOG_DAYS", "a week"),
    ],
)
def test_other_bad_values(name: str, value: str) -> None:
    (problem,) = problems_for(**{name: value})
    assert problem.startswith(f"{name}:")


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"WEB_PORT": "x", "DEV_GUILD_ID": "y"})
    names = [line.split(":", 1)[0] for line in caught.value.problems]
    assert names == [
        "DISCORD_TOKEN",
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "SPOTIFY_REDIRECT_URI",
        "TOKEN_ENCRYPTION_KEY",
        "WEB_PORT",
        "DEV_GUILD_ID",
    ]


def test_dotenv_parsing_and_precedence(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "DISCORD_TOKEN=from-file\n"
        "export SPOTIFY_CLIENT_ID='quoted id'\n"
        'SPOTIFY_CLIENT_SECRET="with # hash"\n'
        "WEB_PORT=9001 # trailing comment\n"
        "not a line\n"
        "\n",
        encoding="utf-8",
    )
    values = read_env_file(dotenv)
    assert values == {
        "DISCORD_TOKEN": "from-file",
        "SPOTIFY_CLIENT_ID": "quoted id",
        "SPOTIFY_CLIENT_SECRET": "with # hash",
        "WEB_PORT": "9001",
    }
    merged = environment_with_dotenv({"DISCORD_TOKEN": "from-env"}, dotenv)
    assert merged["DISCORD_TOKEN"] == "from-env"
    assert merged["WEB_PORT"] == "9001"
    assert read_env_file(tmp_path / "absent") == {}


def test_env_example_lists_every_variable() -> None:
    text = (Path(__file__).parent.parent / ".env.example").read_text(encoding="utf-8")
    # Set (required) or commented out at its default (optional): each on a line of its own.
    example = {line.lstrip("# ").partition("=")[0] for line in text.splitlines() if "=" in line}
    for name in valid_env():
        assert name in example
    for name in [
        "DATABASE_PATH",
        "WEB_HOST",
        "WEB_PORT",
        "DISCORD_API_BASE",
        "SPOTIFY_ACCOUNTS_BASE",
        "SPOTIFY_API_BASE",
        "SPOTIFY_IMAGE_BASE",
        "DEV_GUILD_ID",
        "ENABLE_PRESENCE",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "METRICS_ENABLED",
        "SPOTIFY_DAILY_BUDGET",
    ]:
        assert name in example
    assert os.environ.get("NOWPLAYING_NEVER_SET") is None


def test_the_web_server_is_not_exposed_unless_the_admin_chooses_to() -> None:
    root = Path(__file__).parent.parent
    example = read_env_file(root / ".env.example")
    assert "WEB_HOST" not in example  # commented out: the default, or the image's choice
    assert "# WEB_HOST=127.0.0.1" in (root / ".env.example").read_text(encoding="utf-8")
    settings = load_settings({**valid_env(), **{k: v for k, v in example.items() if v}})
    assert settings.web_host == "127.0.0.1"
    # The container listens on its own interfaces; the host publishes on loopback only.
    assert "WEB_HOST=0.0.0.0" in (root / "Dockerfile").read_text(encoding="utf-8")
    published = [
        line.strip().strip("-").strip().strip('"')
        for name in ("compose.yaml", "compose.postgres.yaml")
        for line in (root / name).read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("- ") and ":8080" in line
    ]
    # The SQLite bot, and the proxy of the PostgreSQL setup: each on loopback only.
    assert published == ["127.0.0.1:8080:8080", "127.0.0.1:8080:8080"]
    assert "reverse proxy" in (root / "compose.yaml").read_text(encoding="utf-8")


# --- PostgreSQL and shards --------------------------------------------------------------------


def test_database_url_selects_postgresql_and_never_shows_its_password() -> None:
    settings = load_settings(valid_env(DATABASE_URL="postgresql://bot:s3cr%40t@db:5432/nowplaying"))
    assert settings.database_target == "postgresql://bot:s3cr%40t@db:5432/nowplaying"
    assert settings.database_shown == "postgresql://bot:***@db:5432/nowplaying"
    assert "s3cr" not in repr(settings)
    unset = load_settings(valid_env())
    assert unset.database_url is None
    assert unset.database_target == Path("data/bot.db")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://bot:pw@db/x", "must start with postgresql://"),
        ("postgresql://bot:pw@db:port/x", "port that is not a number"),
        ("postgresql://bot:pw@/x", "names no host"),
        ("postgresql://bot:pw@db:5432/", "names no database"),
    ],
)
def test_a_bad_database_url_is_one_line_without_the_password(url: str, expected: str) -> None:
    (problem,) = problems_for(DATABASE_URL=url)
    assert problem.startswith("DATABASE_URL: ")
    assert expected in problem
    assert ":pw@" not in problem


def test_shards() -> None:
    settings = load_settings(
        valid_env(SHARD_COUNT="4", SHARD_IDS="3,1", DATABASE_URL="postgresql://bot@db/bot")
    )
    assert (settings.shard_count, settings.shard_ids) == (4, (1, 3))
    every = load_settings(valid_env(SHARD_COUNT="2"))
    assert (every.shard_count, every.shard_ids) == (2, (0, 1))
    unset = load_settings(valid_env())
    assert (unset.shard_count, unset.shard_ids) == (None, None)
    assert (
        "SHARD_IDS: '0,4' must be shard numbers from 0 to 3"
        in problems_for(SHARD_COUNT="4", SHARD_IDS="0,4")[0]
    )
    assert problems_for(SHARD_IDS="0")[0].startswith("SHARD_COUNT: '' is not a positive")
    (alone,) = problems_for(SHARD_COUNT="2", SHARD_IDS="1")
    assert alone.startswith("SHARD_IDS: this process runs only some of the shards")
    assert "DATABASE_URL" in alone
    assert problems_for(SHARD_COUNT="0", SHARD_IDS="0")[0].startswith("SHARD_COUNT: '0'")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bot:s3cret@db:5432/np", "postgresql://bot:***@db:5432/np"),
        ("postgresql://bot@db/np?password=s3cret", "postgresql://bot@db/np?password=***"),
        (
            "postgresql://bot@db/np?sslmode=require&PassWord=s3cret&sslpassword=s3cret",
            "postgresql://bot@db/np?sslmode=require&PassWord=***&sslpassword=***",
        ),
        ("postgresql://:s3cret@db/np", "postgresql://:***@db/np"),
        ("postgresql://bot:s3cret@[db/np", "postgresql://***"),
        ("postgresql://db/np", "postgresql://db/np"),
    ],
)
def test_every_form_of_a_database_password_is_redacted(url: str, shown: str) -> None:
    assert redact_database_url(url) == shown
    # The log masker knows each of them (a URL too broken to read carries none it could use).
    parsable = "@[" not in url and "s3cret" in url
    assert ("s3cret" in database_url_passwords(url)) is parsable
