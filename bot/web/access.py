"""What the web server writes to the log: one line per request without its query (the
callback's carries the OAuth code), request-borne text escaped, junk from the internet quiet."""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

access_log = logging.getLogger("bot.web.access")

# Probes (Docker's HEALTHCHECK every 30 s, a Prometheus scraper) would drown the log at INFO.
_PROBE_PATHS = frozenset({"/healthz", "/metrics"})
_LOGGABLE_LIMIT = 200
# aiohttp answers a request it could not parse with a stand-in request of this method.
_UNPARSED_METHOD = "UNKNOWN"


def loggable(text: str, limit: int = _LOGGABLE_LIMIT) -> str:
    """Request-borne text made safe for one log line: control characters, backslashes and
    anything outside printable ASCII become escapes, so nobody can start a forged line."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) > limit:
        escaped = escaped[:limit] + "..."
    return escaped


class QuietAccessLogger(AbstractAccessLogger):
    """Access log without query strings (the callback's carries the OAuth code); method and
    path are escaped: they come from whoever sent the request."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.rel_url.path
        level = logging.DEBUG if path in _PROBE_PATHS and response.status < 400 else logging.INFO
        if response.status == 400 and request.method == _UNPARSED_METHOD:
            level = logging.DEBUG  # a malformed request aiohttp refused before routing
        access_log.log(
            level,
            "%s %s %s %.1fms",
            loggable(request.method, 20),
            loggable(path),
            response.status,
            time * 1000,
        )


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, tamed. aiohttp (web_protocol.RequestHandler.handle_error) logs
    every request it cannot parse as "Error handling request" at ERROR with a traceback; junk
    from the internet is no error of ours: one DEBUG line, no traceback. Anything else it
    reports (a handler that crashed past our middleware) stays an ERROR with its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            self.logger.debug("Malformed request refused: %s", _describe_bad_request(error))
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.pop("exc_info", None)
        if isinstance(error, BaseException):
            self.logger.debug("Malformed request refused: %s", _describe_bad_request(error))
            return
        self.logger.debug(msg, *args, **kwargs)


def _describe_bad_request(error: BaseException) -> str:
    detail = error.message if isinstance(error, HttpProcessingError) else str(error)
    return (
        f"{type(error).__name__} ({loggable(str(detail).splitlines()[0] if detail else '', 120)})"
    )


def runner_options() -> dict[str, Any]:
    """How ``web.AppRunner`` (or a test server) must serve the app: our access log and the
    tamed server logger."""
    return {
        "access_log_class": QuietAccessLogger,
        "logger": _ServerLog(logging.getLogger("aiohttp.server"), {}),
    }
