"""Secret masking and log formatting: every record that reaches the output is masked."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import threading
import time
import warnings

import pytest
from aiohttp import web
from discord.http import Route
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient

from bot import logs
from bot.config import Settings
from bot.logs import (
    MASK,
    JsonFormatter,
    SecretMasker,
    configure_logging,
    masker_for_settings,
)
from tests.peek import secret_count

# configure_logging changes process-wide state: put it back after each test.
pytestmark = pytest.mark.usefixtures("restore_logging")


def spotify_token(prefix: str = "BQ") -> str:
    return prefix + secrets.token_urlsafe(96)


def discord_bot_token() -> str:
    """A value with the shape of a Discord bot token (not a real one)."""
    user_id = base64.b64encode(b"123456789012345678").decode().rstrip("=")
    return f"{user_id}.{secrets.token_urlsafe(5)[:6]}.{secrets.token_urlsafe(30)[:38]}"


def make_settings() -> Settings:
    return Settings(
        discord_token=discord_bot_token(),
        spotify_client_id="0123456789abcdef0123456789abcdef",
        spotify_client_secret=secrets.token_hex(16),
        spotify_redirect_uri="http://127.0.0.1:8080/callback",
        token_encryption_keys=(secrets.token_bytes(32), secrets.token_bytes(32)),
    )


def configured(
    level: str = "DEBUG", fmt: str = "text", masker: SecretMasker | None = None
) -> tuple[io.StringIO, SecretMasker]:
    stream = io.StringIO()
    masker = masker or SecretMasker()
    configure_logging(level, fmt, masker, stream, capture_warnings=False)
    return stream, masker


# --- the masker on its own -------------------------------------------------------------


def test_registered_secret_is_masked_wherever_it_appears() -> None:
    masker = SecretMasker()
    token = spotify_token()
    masker.add_secret(token)
    for text in (
        token,
        f"token {token} end",
        f"'{token}'",
        f"/path/{token}/x",
        f"x={token}&y=1",
        f"{token}.",
    ):
        masked = masker.mask(text)
        assert token not in masked, text
        assert MASK in masked


def test_short_values_are_not_registered() -> None:
    masker = SecretMasker()
    masker.add_secret("bot")
    masker.add_secret("1234567")
    masker.add_secret("")
    masker.add_secret(None)
    assert secret_count(masker) == 0
    assert masker.mask("the bot has 1234567 members") == "the bot has 1234567 members"


def test_plain_text_is_left_alone() -> None:
    masker = SecretMasker()
    masker.add_secret(spotify_token())
    for text in (
        "Shard ID None has connected to Gateway (Session ID: abc).",
        "Bot connected as NowPlaying#1234; basic authentication is off",
        "Bearer tokens expire after an hour",
        "Websocket closed with code=4004, cannot reconnect.",
        '{"code": 50007, "message": "Cannot send messages to this user"}',
        "GET /healthz HTTP/1.1 200",
        "response_type=code&client_id=abc",
    ):
        assert masker.mask(text) == text


def test_query_strings_and_form_bodies() -> None:
    masker = SecretMasker()
    code, state = secrets.token_urlsafe(150), secrets.token_urlsafe(16)
    access, refresh = spotify_token(), spotify_token("AQ")
    texts = [
        f'127.0.0.1 "GET /callback?code={code}&state={state} HTTP/1.1" 200',
        f"https://np.example.org/callback?state={state}&code={code}",
        f"URL('http://127.0.0.1:8080/callback?code={code}&state={state}')",
        f"grant_type=authorization_code&code={code}&redirect_uri=http%3A%2F%2Fx",
        f"grant_type=refresh_token&refresh_token={refresh}",
        f"https://example.org/#access_token={access}&token_type=Bearer",
    ]
    for text in texts:
        masked = masker.mask(text)
        for value in (code, state, access, refresh):
            assert value not in masked, masked
    assert masker.mask(texts[0]) == '127.0.0.1 "GET /callback?code=***&state=*** HTTP/1.1" 200'
    assert masker.mask(texts[4]) == "grant_type=refresh_token&refresh_token=***"


def test_json_bodies() -> None:
    masker = SecretMasker()
    access, refresh = spotify_token(), spotify_token("AQ")
    body = json.dumps(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
            "scope": "user-read-currently-playing",
        }
    )
    masked = masker.mask(f"token endpoint answered {body}")
    assert access not in masked
    assert refresh not in masked
    assert json.loads(masked.removeprefix("token endpoint answered ")) == {
        "access_token": MASK,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": MASK,
        "scope": "user-read-currently-playing",
    }
    # The same body inside a repr'd string (escaped quotes), and a repr'd dict.
    assert access not in masker.mask(repr(body))
    assert refresh not in masker.mask(repr(json.loads(body)))


def test_authorization_headers_keep_the_scheme() -> None:
    masker = SecretMasker()
    access, bot_token = spotify_token(), discord_bot_token()
    basic = base64.b64encode(b"client:secret-value").decode()
    cases = {
        f"Authorization: Bearer {access}": "Authorization: Bearer ***",
        f"authorization=Basic {basic}": "authorization=Basic ***",
        f"{{'Authorization': 'Bot {bot_token}', 'User-Agent': 'DiscordBot'}}": (
            "{'Authorization': 'Bot ***', 'User-Agent': 'DiscordBot'}"
        ),
        f'{{"authorization": "Bearer {access}"}}': '{"authorization": "Bearer ***"}',
        f"sent Bearer {access} to the API": "sent Bearer *** to the API",
    }
    for text, expected in cases.items():
        assert masker.mask(text) == expected
    headers = CIMultiDict({"Authorization": f"Bearer {access}", "Accept": "application/json"})
    masked = masker.mask(repr(headers))
    assert access not in masked
    assert "'Authorization': 'Bearer ***'" in masked
    assert "'Accept': 'application/json'" in masked


def test_discord_bot_token_by_shape() -> None:
    masker = SecretMasker()  # nothing registered: the shape alone is enough
    token = discord_bot_token()
    for text in (token, f"token={token}", f"login with {token}.", f'"{token}"'):
        masked = masker.mask(text)
        assert token not in masked
        assert token.split(".")[2] not in masked


def test_discord_interaction_and_webhook_tokens_in_urls() -> None:
    masker = SecretMasker()
    interaction_token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(120)
    callback = Route(
        "POST",
        "/interactions/{interaction_id}/{interaction_token}/callback",
        interaction_id=1234567890,
        interaction_token=interaction_token,
    ).url
    followup = Route(
        "PATCH",
        "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
        webhook_id=987654321,
        webhook_token=interaction_token,
    ).url
    assert masker.mask(f"POST {callback}?with_response=1 with None has returned 200") == (
        "POST https://discord.com/api/v10/interactions/1234567890/***/callback"
        "?with_response=1 with None has returned 200"
    )
    assert masker.mask(followup) == (
        "https://discord.com/api/v10/webhooks/987654321/***/messages/@original"
    )


def test_gateway_payloads_at_debug() -> None:
    masker = SecretMasker()
    bot_token, interaction_token = discord_bot_token(), secrets.token_urlsafe(120)
    identify = {"op": 2, "d": {"token": bot_token, "intents": 513, "properties": {}}}
    interaction = {"t": "INTERACTION_CREATE", "d": {"id": "1", "token": interaction_token}}
    for payload in (identify, interaction):
        for text in (repr(payload), json.dumps(payload)):
            masked = masker.mask(f"For Shard ID None: WebSocket Event: {text}")
            assert bot_token not in masked
            assert interaction_token not in masked
            assert "'token': '***'" in masked or '"token": "***"' in masked


def test_masker_for_settings_knows_configured_secrets() -> None:
    settings = make_settings()
    masker = masker_for_settings(settings)
    key_texts = [base64.urlsafe_b64encode(key).decode() for key in settings.token_encryption_keys]
    basic = base64.b64encode(
        f"{settings.spotify_client_id}:{settings.spotify_client_secret}".encode()
    ).decode()
    values = [settings.discord_token, settings.spotify_client_secret, basic, *key_texts]
    values += [text.rstrip("=") for text in key_texts]
    for value in values:
        masked = masker.mask(f"value is {value} (and more)")
        assert value not in masked
        assert masked == "value is *** (and more)"
    # The client id is not a secret: it appears in every authorize URL.
    assert settings.spotify_client_id in masker.mask(f"client {settings.spotify_client_id}")


def test_runtime_secrets_are_bounded_and_configuration_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "MAX_RUNTIME_SECRETS", 3)
    masker = SecretMasker()
    pinned = secrets.token_hex(16)
    masker.add_secret(pinned, pinned=True)
    tokens = [spotify_token() for _ in range(4)]
    masker.add_secret(tokens[0])
    masker.add_secret(tokens[1])
    masker.add_secret(tokens[2])
    masker.add_secret(tokens[0])  # seen again: most recent now
    masker.add_secret(tokens[3])  # evicts tokens[1], the least recently seen
    assert secret_count(masker) == 4
    assert tokens[1] in masker.mask(tokens[1])
    for value in (pinned, tokens[0], tokens[2], tokens[3]):
        assert masker.mask(value) == MASK


def test_many_secrets_sharing_a_prefix() -> None:
    masker = SecretMasker()
    key = secrets.token_urlsafe(32)
    masker.add_secret(key + "=")
    masker.add_secret(key)
    longer = key + "extra-part"
    masker.add_secret(longer)
    assert masker.mask(f"a {key}= b") == "a *** b"
    assert masker.mask(f"a {key} b") == "a *** b"
    assert masker.mask(f"a {longer} b") == "a *** b"


# --- records through configure_logging ------------------------------------------------


def test_secret_in_log_arguments_and_f_strings() -> None:
    stream, masker = configured()
    token = spotify_token()
    masker.add_secret(token)
    log = logging.getLogger("bot.members.tokens")
    log.info("refreshed access token %s for %s", token, "member")
    log.info(f"refreshed access token {token}")  # noqa: G004 - f-strings must be masked too
    log.info("payload %r", {"nested": [token]})
    output = stream.getvalue()
    assert token not in output
    assert output.count(MASK) == 3
    assert "for member" in output


def test_secret_in_exception_text_and_traceback() -> None:
    stream, masker = configured()
    token = spotify_token()
    masker.add_secret(token)
    code = secrets.token_urlsafe(64)
    log = logging.getLogger("bot.web.server")
    try:
        raise RuntimeError(f"exchange failed for {token} at /callback?code={code}")
    except RuntimeError:
        log.exception("callback failed")
    try:
        raise ValueError(token)
    except ValueError as exc:
        log.error("wrapped", exc_info=exc)
    log.warning("where am I", stack_info=True, extra={"where": token})
    output = stream.getvalue()
    assert token not in output
    assert code not in output
    assert "Traceback (most recent call last)" in output
    assert "RuntimeError: exchange failed for *** at /callback?code=***" in output
    assert "ValueError: ***" in output
    assert "Stack (most recent call last)" in output


def test_library_loggers_are_masked() -> None:
    stream, _ = configured()
    interaction_token = secrets.token_urlsafe(120)
    url = Route(
        "POST",
        "/interactions/{interaction_id}/{interaction_token}/callback",
        interaction_id=1,
        interaction_token=interaction_token,
    ).url
    logging.getLogger("discord.http").debug(
        "%s %s with %s has returned %s", "POST", url, '{"type": 5}', 200
    )
    logging.getLogger("discord.gateway").debug(
        "For Shard ID %s: WebSocket Event: %s", None, {"d": {"token": interaction_token}}
    )
    logging.getLogger("aiohttp.client").warning("retrying %s", f"{url}?x=1")
    output = stream.getvalue()
    assert interaction_token not in output
    assert "discord.http: POST https://discord.com/api/v10/interactions/1/***/callback" in output
    assert "discord.gateway: " in output
    assert "aiohttp.client: " in output


def test_existing_root_handlers_get_the_masker_too() -> None:
    other = io.StringIO()
    foreign = logging.StreamHandler(other)
    logging.getLogger().addHandler(foreign)
    stream, masker = configured()
    token = spotify_token()
    masker.add_secret(token)
    logging.getLogger("asyncio").error("Task exception: %s", token)
    assert token not in stream.getvalue()
    assert token not in other.getvalue()
    assert "Task exception: ***" in other.getvalue()


def test_bad_format_arguments_are_still_masked() -> None:
    stream, masker = configured()
    token = spotify_token()
    masker.add_secret(token)
    logging.getLogger("bot").info("%d items", token)
    output = stream.getvalue()
    assert token not in output
    assert "did not fit" in output


def test_warnings_are_captured_and_masked() -> None:
    stream = io.StringIO()
    masker = SecretMasker()
    token = spotify_token()
    masker.add_secret(token)
    configure_logging("INFO", "text", masker, stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated call with {token}", UserWarning, stacklevel=1)
    output = stream.getvalue()
    assert "py.warnings" in output
    assert "UserWarning: deprecated call with ***" in output
    assert token not in output


def test_text_format_is_human_readable() -> None:
    stream, _ = configured("INFO", "text")
    logging.getLogger("bot.app").info("connected as %s", "NowPlaying")
    line = stream.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO     bot\.app: connected as NowPlaying",
        line,
    ), line


def test_json_format_one_object_per_line() -> None:
    stream, masker = configured("DEBUG", "json")
    token = spotify_token()
    masker.add_secret(token)
    log = logging.getLogger("bot.members.tokens")
    log.info("first line\nsecond line %s", token, extra={"user_id": 42, "url": f"?code={token}"})
    try:
        raise KeyError(token)
    except KeyError:
        log.exception("lookup failed", extra={"unserialisable": object()})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "bot.members.tokens"
    assert first["message"] == "first line\nsecond line ***"
    assert first["user_id"] == 42
    assert first["url"] == "?code=***"
    assert "exc" not in first
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "ERROR"
    assert second["message"] == "lookup failed"
    assert second["exc"].startswith("Traceback (most recent call last)")
    assert second["exc"].endswith("KeyError: '***'")
    assert "unserialisable" not in second
    assert token not in stream.getvalue()


def test_json_formatter_without_masker_renders_exceptions() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)
    try:
        raise OSError("disk")
    except OSError as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    payload = json.loads(JsonFormatter().format(record))
    assert payload["message"] == "boom now"
    assert payload["exc"].endswith("OSError: disk")


def test_configure_is_idempotent() -> None:
    stream_one, masker = configured()
    stream_two = io.StringIO()
    configure_logging("INFO", "text", masker, stream_two, capture_warnings=False)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, logs._RootHandler)]
    assert len(ours) == 1
    assert root.level == logging.INFO
    logging.getLogger("bot").info("once")
    assert stream_one.getvalue() == ""
    assert stream_two.getvalue().count("once") == 1
    for handler in root.handlers:
        assert sum(isinstance(f, SecretMasker) for f in handler.filters) == 1


def test_configure_rejects_unknown_level_and_format() -> None:
    masker = SecretMasker()
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "text", masker, io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml", masker, io.StringIO())


def test_library_levels() -> None:
    configured("INFO")
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("discord.gateway").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("discord.client").getEffectiveLevel() == logging.INFO
    configured("DEBUG")
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("discord.gateway").getEffectiveLevel() == logging.DEBUG
    configured("ERROR")
    assert logging.getLogger("aiohttp.access").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("discord.gateway").getEffectiveLevel() == logging.ERROR


async def test_aiohttp_access_log_of_the_callback_is_masked(
    aiohttp_client: AiohttpClient,
) -> None:
    stream, _ = configured("DEBUG")

    async def callback(request: web.Request) -> web.Response:
        return web.Response(text="linked")

    app = web.Application()
    app.router.add_get("/callback", callback)
    client = await aiohttp_client(app)
    code, state = secrets.token_urlsafe(150), secrets.token_urlsafe(16)
    response = await client.get("/callback", params={"code": code, "state": state})
    assert response.status == 200
    await response.read()
    await client.close()
    output = stream.getvalue()
    assert "aiohttp.access" in output
    assert "GET /callback?code=***&state=*** HTTP/1.1" in output
    assert code not in output
    assert state not in output


def test_masking_stays_cheap() -> None:
    # Not a benchmark (those live in bench/): a loose bound that only a pathological slowdown
    # would break, such as a regex gone quadratic or a cost per registered secret.
    masker = SecretMasker()
    for _ in range(5000):
        masker.add_secret(spotify_token())
    payload = {"t": "MESSAGE_CREATE", "d": {"content": "hello there", "channel_id": "123"}}
    records = [
        logging.LogRecord(
            "discord.gateway",
            logging.DEBUG,
            __file__,
            1,
            "For Shard ID %s: WebSocket Event: %s",
            (None, payload),
            None,
        )
        for _ in range(10_000)
    ]
    # CPU time of this process: other processes on a busy machine do not count against it.
    started = time.process_time()
    for record in records:
        masker.filter(record)
    elapsed = time.process_time() - started
    assert elapsed < 2.0, f"masking 10,000 records took {elapsed:.2f}s of CPU"
    blob = "A" * 200_000 + "." + "b" * 7 + '"token": "' + "c" * 100_000 + "code=" * 10_000
    started = time.process_time()
    masker.mask(blob)
    assert time.process_time() - started < 1.0


def test_a_record_is_masked_again_only_when_secrets_changed() -> None:
    masker = SecretMasker()
    token = spotify_token()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (token,), None)
    masker.filter(record)
    assert record.getMessage() == f"got {token}"  # not registered yet
    masker.add_secret(token)  # e.g. registered between two handlers
    masker.filter(record)
    assert record.getMessage() == "got ***"


def test_secrets_can_be_added_while_other_threads_log() -> None:
    masker = SecretMasker()
    tokens = [spotify_token() for _ in range(2000)]

    def add_all() -> None:
        for token in tokens:
            masker.add_secret(token)

    adder = threading.Thread(target=add_all)
    adder.start()
    while adder.is_alive():
        masker.mask(f"tokens {tokens[0]} {tokens[-1]}")
    adder.join(timeout=10)
    assert masker.mask(f"tokens {tokens[0]} {tokens[-1]}") == "tokens *** ***"


def test_a_message_cannot_start_a_line_of_its_own() -> None:
    stream, _ = configured("INFO", "text")
    forged = "/x\n2026-11-29T00:00:00.000Z CRITICAL bot.app: Database wiped"
    logging.getLogger("bot.web.access").info("GET %s 404", forged)
    logging.getLogger("bot.web.access").info("a\r\x1b[2Jb\u2028c\x85d\tkept")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(
        "bot.web.access: GET /x\\n2026-11-29T00:00:00.000Z CRITICAL bot.app: Database wiped 404"
    )
    assert lines[1].endswith("bot.web.access: a\\r\\x1b[2Jb\\u2028c\\x85d\tkept")
