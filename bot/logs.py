"""Logging set-up: one handler on the root logger, a secret masker on it, text or JSON lines.

The masker sits on the root *handler*, not on a logger, so every record that reaches the
output is masked, whichever logger produced it: ours, ``discord.*`` (at DEBUG it logs gateway
payloads and webhook URLs with interaction tokens), ``aiohttp.access`` (request lines such as
``/callback?code=...&state=...``), ``aiohttp.client``, ``asyncio`` and ``py.warnings``.

It masks the fully rendered record: the message with its arguments applied, the traceback text
and the stack text. It then stores the masked text back on the record (``msg``, ``args=None``,
``exc_text``, ``exc_info=None``), so any formatter prints only masked text.

Two kinds of secret are masked:
- values registered at runtime with ``SecretMasker.add_secret`` (the Discord token, the Spotify
  client secret, the encryption keys in text form, every access and refresh token the token
  manager sees), wherever they appear as a word of their own, i.e. not glued after other
  letters, digits, ``-`` or ``_`` (tokens are always delimited in URLs, headers and JSON);
- shapes that are secret whatever their value: ``code=``/``state=``/``*token=``/``*secret=``/
  ``*key=``/``password=`` in query strings and form bodies, the same keys as quoted keys in
  JSON or Python reprs, ``Authorization`` header values (the scheme word is kept), ``Bearer``
  tokens anywhere, Discord bot tokens by shape, and the token part of Discord
  ``/webhooks/<id>/<token>`` and ``/interactions/<id>/<token>`` URLs.

Choices worth knowing:
- ``state=`` is masked too: it is not a credential, but it ties a pending link to a member and
  masking it costs nothing.
- ``code=`` followed by digits only (an exit or close code) is left alone; OAuth codes never
  are all digits.
- ``aiohttp.access`` is quiet (WARNING) unless LOG_LEVEL is DEBUG: its INFO lines are one per
  request, mostly health checks, and the callback line carries the OAuth code (masked anyway;
  this is defence in depth, and bot.web.server logs requests by path only, on its own logger).
- ``aiosqlite`` never goes below INFO: its DEBUG lines are one per SQL call.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from base64 import b64encode, urlsafe_b64encode
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from bot.config import Settings, database_url_passwords

MASK: Final = "***"
MIN_SECRET_LENGTH: Final = 8
# Runtime secrets (access/refresh tokens) arrive all the time; keep the most recent ones.
# Re-adding a value marks it recent again, so tokens still in use stay registered.
MAX_RUNTIME_SECRETS: Final = 10_000

TEXT_FORMAT: Final = "%(asctime)s.%(msecs)03dZ %(levelname)-8s %(name)s: %(message)s"
TEXT_DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"

# Characters of base64url text: the alphabet of every token and key we register.
_TOKEN_CHARS = "A-Za-z0-9_-"
# Registered secrets are found by looking up the first characters of each run of token
# characters in a dict, so the cost per line does not grow with the number of secrets.
_PREFIX_LENGTH: Final = MIN_SECRET_LENGTH
_RUN_RE = re.compile(rf"[{_TOKEN_CHARS}]{{{_PREFIX_LENGTH},}}")
_PREFIX_RE = re.compile(rf"[{_TOKEN_CHARS}]{{{_PREFIX_LENGTH}}}")

# Names whose value is secret: *token, *secret, *key, password, code, (query only) state.
_SECRET_NAME = r"[A-Za-z_]*(?:token|secret|key|password)|code"

# key=value in query strings, form bodies and free text. The value stops at the usual URL,
# quoting and whitespace delimiters.
_ASSIGNMENT_RE = re.compile(
    rf"(?<![A-Za-z0-9_])((?:{_SECRET_NAME}|state)=)([^&\s#\"'<>,;)\]}}]+)", re.IGNORECASE
)
# "key": "value" in JSON and 'key': 'value' in Python reprs (dicts, CIMultiDict, payloads).
_QUOTED_RE = re.compile(
    rf"""(["'])({_SECRET_NAME}|(?:proxy-)?authorization)\1(\s*:\s*)(["'])((?:\\.|(?!\4)[^\\])*)\4""",
    re.IGNORECASE,
)
# The same inside a string that holds JSON (\"access_token\": \"...\"), e.g. a repr'd body.
_ESCAPED_QUOTED_RE = re.compile(
    rf"""(\\["'])({_SECRET_NAME}|(?:proxy-)?authorization)\1(\s*:\s*)(\\["'])([^"'\\]*)\4""",
    re.IGNORECASE,
)
# Authorization: Bearer xyz / authorization=Bot xyz (header dumps, free text).
_AUTH_HEADER_RE = re.compile(
    r"(?<![A-Za-z0-9_-])((?:proxy-)?authorization\s*[:=]\s*)"
    r"((?:bearer|basic|bot)\s+)?([^\s\"',;&}]+)",
    re.IGNORECASE,
)
_SCHEME_RE = re.compile(r"(?:bearer|basic|bot)\s+", re.IGNORECASE)
# "Bearer <token>" anywhere; 8+ characters so prose such as "Bearer tokens" survives.
_BEARER_RE = re.compile(r"\b(bearer\s+)([A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE)
# Discord bot token: base64(user id) . base64(timestamp) . HMAC. The look-behind makes the
# search start only at the beginning of a run, which keeps it linear on long base64 blobs.
_DISCORD_TOKEN_RE = re.compile(
    rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{23,}}\.[{_TOKEN_CHARS}]{{6,7}}\."
    rf"[{_TOKEN_CHARS}]{{27,}}(?![{_TOKEN_CHARS}])"
)
# Interaction and webhook tokens in REST paths; what follows the token is kept.
_DISCORD_URL_TOKEN_RE = re.compile(r"(/(?:webhooks|interactions)/\d+/)([^/\s?#\"'<>]+)")


def _mask_assignment(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if name.lower() == "code=" and value.isdigit():
        return match.group(0)
    return name + MASK


def _mask_quoted(match: re.Match[str]) -> str:
    quote, name, colon, value_quote, value = match.groups()
    if not value:
        return match.group(0)
    scheme = ""
    if name.lower().endswith("authorization"):
        scheme_match = _SCHEME_RE.match(value)
        scheme = scheme_match.group(0) if scheme_match else ""
    return f"{quote}{name}{quote}{colon}{value_quote}{scheme}{MASK}{value_quote}"


def _mask_auth_header(match: re.Match[str]) -> str:
    return match.group(1) + (match.group(2) or "") + MASK


_Replacement = str | Callable[[re.Match[str]], str]
# (pattern, replacement, hints): a pattern runs only when one of its hints occurs in the
# lower-cased text. Substring tests cost far less than a regex scan, and most lines have none.


def _quoted_names(escape: str) -> tuple[str, ...]:
    """What a quoted secret's key looks like just before its value (``token"``, ``key\\'``
    when the quotes come escaped)."""
    names = ("token", "secret", "key", "password", "code", "authorization")
    return tuple(f"{name}{escape}{quote}" for name in names for quote in "\"'")


_RULES: Final[tuple[tuple[re.Pattern[str], _Replacement, tuple[str, ...]], ...]] = (
    (
        _ASSIGNMENT_RE,
        _mask_assignment,
        ("token=", "secret=", "key=", "password=", "code=", "state="),
    ),
    (_QUOTED_RE, _mask_quoted, _quoted_names("")),
    (_ESCAPED_QUOTED_RE, _mask_quoted, _quoted_names("\\")),
    (_AUTH_HEADER_RE, _mask_auth_header, ("authorization",)),
    (_BEARER_RE, rf"\g<1>{MASK}", ("bearer",)),
    (_DISCORD_URL_TOKEN_RE, rf"\g<1>{MASK}", ("/webhooks/", "/interactions/")),
)
# The middle part of a Discord token; found by a fast literal scan for ".".
_DISCORD_TOKEN_HINT_RE = re.compile(rf"\.[{_TOKEN_CHARS}]{{6,7}}\.")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


_MASKED_STAMP: Final = "_secret_masker_stamp"


class SecretMasker(logging.Filter):
    """A handler filter that rewrites each record so that no secret reaches the output.

    Thread-safe: secrets may be added from any thread while other threads log.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        # Secrets that are never evicted (configuration) and recent runtime secrets.
        self._pinned: set[str] = set()
        self._runtime: OrderedDict[str, None] = OrderedDict()
        # prefix -> secrets with that prefix, longest first. Values are tuples, replaced
        # whole, so readers never see a half-updated entry.
        self._by_prefix: dict[str, tuple[str, ...]] = {}
        # Secrets that do not start with token characters (rare): plain substring search.
        self._unindexed: tuple[str, ...] = ()
        self._traceback_formatter = logging.Formatter()
        self._generation = 0  # bumped by every change to the secrets

    def add_secret(self, value: str | None, *, pinned: bool = False) -> None:
        """Mask ``value`` wherever it appears from now on.

        Values shorter than ``MIN_SECRET_LENGTH`` are ignored, so common words never vanish
        from the logs. ``pinned`` secrets (configuration) are never evicted; the others are
        kept for the most recent ``MAX_RUNTIME_SECRETS`` values.
        """
        if not value:
            return
        secret = value.strip()
        if len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret in self._pinned:
                return
            if pinned:
                self._runtime.pop(secret, None)
                self._pinned.add(secret)
                self._index(secret)
                return
            if secret in self._runtime:
                self._runtime.move_to_end(secret)
                return
            self._runtime[secret] = None
            self._index(secret)
            while len(self._runtime) > MAX_RUNTIME_SECRETS:
                evicted, _ = self._runtime.popitem(last=False)
                self._unindex(evicted)

    def add_secrets(self, values: Iterable[str | None], *, pinned: bool = False) -> None:
        for value in values:
            self.add_secret(value, pinned=pinned)

    def _index(self, secret: str) -> None:
        self._generation += 1
        prefix = secret[:_PREFIX_LENGTH]
        if _PREFIX_RE.fullmatch(prefix):
            bucket = {*self._by_prefix.get(prefix, ()), secret}
            self._by_prefix[prefix] = tuple(sorted(bucket, key=len, reverse=True))
        else:
            bucket = {*self._unindexed, secret}
            self._unindexed = tuple(sorted(bucket, key=len, reverse=True))

    def _unindex(self, secret: str) -> None:
        prefix = secret[:_PREFIX_LENGTH]
        if prefix in self._by_prefix:
            remaining = tuple(s for s in self._by_prefix[prefix] if s != secret)
            if remaining:
                self._by_prefix[prefix] = remaining
            else:
                del self._by_prefix[prefix]
        else:
            self._unindexed = tuple(s for s in self._unindexed if s != secret)

    def mask(self, text: str) -> str:
        """Return ``text`` with every registered secret and every secret shape masked."""
        if not text:
            return text
        text = self._mask_registered(text)
        lowered = text.lower()
        for pattern, replacement, hints in _RULES:
            for hint in hints:
                if hint in lowered:
                    text = pattern.sub(replacement, text)
                    break
        if _DISCORD_TOKEN_HINT_RE.search(text):
            text = _DISCORD_TOKEN_RE.sub(MASK, text)
        return text

    def _mask_registered(self, text: str) -> str:
        by_prefix = self._by_prefix
        if by_prefix:
            pieces: list[str] = []
            done = 0
            for run in _RUN_RE.finditer(text):
                start = run.start()
                if start < done:  # inside a secret already masked (one with dots, say)
                    continue
                candidates = by_prefix.get(text[start : start + _PREFIX_LENGTH])
                if candidates is None:
                    continue
                for secret in candidates:
                    if text.startswith(secret, start):
                        pieces.append(text[done:start])
                        pieces.append(MASK)
                        done = start + len(secret)
                        break
            if pieces:
                pieces.append(text[done:])
                text = "".join(pieces)
        for secret in self._unindexed:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _mask_value(self, value: object) -> object:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {key: self._mask_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._mask_value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._mask_value(item) for item in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        # A record goes through every root handler; mask it once unless secrets were added.
        stamp = (self, self._generation)
        if record.__dict__.get(_MASKED_STAMP) == stamp:
            return True
        try:
            self._mask_record(record)
            record.__dict__[_MASKED_STAMP] = stamp
        except Exception:  # never let a masking bug print the record unmasked
            record.msg = f"<log record from {record.name} dropped: masking failed>"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True

    def _mask_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # bad format arguments: keep what there is, masked
            message = f"{record.msg!s} (log arguments {record.args!r} did not fit: {exc!r})"
        record.msg = self.mask(message)
        record.args = None
        if record.exc_info:
            # Render the traceback ourselves so the formatter prints the masked text.
            record.exc_text = self._traceback_formatter.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        attributes = record.__dict__
        for name in attributes.keys() - _STANDARD_ATTRIBUTES:
            if not name.startswith("_"):
                attributes[name] = self._mask_value(attributes[name])


def masker_for_settings(settings: Settings) -> SecretMasker:
    """A masker that already knows the configured secrets (kept for the whole run)."""
    masker = SecretMasker()
    masker.add_secret(settings.discord_token, pinned=True)
    masker.add_secret(settings.spotify_client_secret, pinned=True)
    # The Basic credentials of the token endpoint, in case a header dump slips through.
    credentials = f"{settings.spotify_client_id}:{settings.spotify_client_secret}".encode()
    masker.add_secret(b64encode(credentials).decode("ascii"), pinned=True)
    if settings.database_url is not None:
        masker.add_secrets(database_url_passwords(settings.database_url), pinned=True)
    for key in settings.token_encryption_keys:
        text = urlsafe_b64encode(key).decode("ascii")
        masker.add_secrets((text, text.rstrip("=")), pinned=True)
    return masker


_JSON_RESERVED: Final = frozenset({"time", "level", "logger", "message", "exc", "stack"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exc, stack, then extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        for name, value in record.__dict__.items():
            if name in _STANDARD_ATTRIBUTES or name in _JSON_RESERVED or name.startswith("_"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue  # only extras that JSON can carry, as documented
            payload[name] = value
        return json.dumps(payload, ensure_ascii=False)


# Characters that end or rewrite a line on a terminal or in a log file: C0 controls but tab,
# DEL, C1 controls and Unicode's line and paragraph separators.
_LINE_BREAKERS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r"}.get(
        char, f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}"
    )


class TextFormatter(logging.Formatter):
    """The text format, one line per message: a message cannot start a line of its own (a
    forged record), whatever it carries. Tracebacks keep their lines; they are ours."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _LINE_BREAKERS.sub(_escape_control, record.message)
        return super().formatMessage(record)


class _RootHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging owns; its class marks it for replacement on reconfigure."""


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    level: str,
    fmt: str,
    masker: SecretMasker,
    stream: TextIO | None = None,
    *,
    capture_warnings: bool = True,
) -> None:
    """Send every log record to one stream (default ``sys.stderr``), masked, as text or JSON.

    Idempotent: calling it again replaces the handler it installed before. Handlers others put
    on the root logger (a test harness, say) are kept and get the masker too.
    """
    number = _level_number(level)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter(TEXT_FORMAT, TEXT_DATE_FORMAT)
        formatter.converter = time.gmtime
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected 'text' or 'json'")

    handler = _RootHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    handler.addFilter(masker)

    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _RootHandler):
            root.removeHandler(old)
            old.close()
            continue
        for old_filter in list(old.filters):
            if isinstance(old_filter, SecretMasker) and old_filter is not masker:
                old.removeFilter(old_filter)
        old.addFilter(masker)  # addFilter ignores a filter that is already there
    root.addHandler(handler)
    root.setLevel(number)

    # One line per request, mostly health checks; the callback line carries the OAuth code.
    access_level = number if number <= logging.DEBUG else max(number, logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(access_level)
    # One DEBUG line per SQL call is noise even when debugging.
    logging.getLogger("aiosqlite").setLevel(max(number, logging.INFO))
    # Connect/resume lines are worth keeping at INFO: follow the root level, never quieter.
    for name in ("discord", "discord.client", "discord.gateway"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    # discord.py says this at every login attempt: beside each start-up retry's WARNING.
    client = logging.getLogger("discord.client")
    if not any(isinstance(existing, _DropLoginNotice) for existing in client.filters):
        client.addFilter(_DropLoginNotice())
    logging.captureWarnings(capture_warnings)


class _DropLoginNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "logging in using static token"
