"""The bot's small web server: the OAuth callback page, /healthz and (optionally) /metrics.

Never imports discord: the Discord side reaches in only through the callables it is given.
Every answer of the callback route is a self-contained HTML page; failures are 4xx pages,
never a 5xx and never a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from bot.linking.service import SPOTIFY_APPS_URL, LinkFailure, LinkService, describe_wait

log = logging.getLogger(__name__)
access_log = logging.getLogger("bot.web.access")

_STYLE = """
:root { color-scheme: light dark; --accent: #1db954; }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: #f4f5f7; color: #1f2328; padding: 16px; }
main { width: 100%; max-width: 28rem; background: #fff; border-radius: 12px; padding: 24px;
  box-shadow: 0 2px 12px rgba(0, 0, 0, .08); border-top: 6px solid var(--accent); }
main.failure { border-top-color: #d1242f; }
main.info { border-top-color: #0969da; }
a { color: inherit; text-decoration: underline; }
h1 { font-size: 1.35rem; margin: 0 0 .5rem; overflow-wrap: anywhere; }
p { margin: .5rem 0; overflow-wrap: anywhere; }
.hint { color: #59636e; font-size: .9rem; }
.mark { font-size: 2rem; line-height: 1; margin-bottom: .5rem; }
@media (prefers-color-scheme: dark) {
  body { background: #16181d; color: #e6e8eb; }
  main { background: #22252b; box-shadow: none; }
  .hint { color: #9aa3ad; }
}
""".strip()

_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; "
        f"style-src 'sha256-{_STYLE_HASH}'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


Tone = Literal["ok", "info", "fail"]
_MARKS: dict[str, tuple[str, str]] = {
    "ok": ("&#10003;", "success"),
    "info": ("&#8505;", "info"),
    "fail": ("&#9888;", "failure"),
}


@dataclass(frozen=True, slots=True)
class PageLink:
    """One outgoing link on a page: ``before`` + the link text + ``after``, all plain text."""

    before: str
    text: str
    href: str
    after: str = ""


def render_page(
    *,
    title: str,
    heading: str,
    message: str,
    hint: str,
    ok: bool,
    tone: Tone | None = None,
    link: PageLink | None = None,
) -> str:
    """A self-contained page; every interpolated value is escaped here."""
    mark, css_class = _MARKS[tone or ("ok" if ok else "fail")]
    extra = ""
    if link is not None:
        extra = (
            f'<p class="hint">{html.escape(link.before)}'
            f'<a href="{html.escape(link.href)}" rel="noopener noreferrer">'
            f"{html.escape(link.text)}</a>{html.escape(link.after)}</p>"
        )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)} · nowplaying-bot</title>"
        f"<style>{_STYLE}</style></head>"
        f'<body><main class="{css_class}" role="main">'
        f'<div class="mark" aria-hidden="true">{mark}</div>'
        f"<h1>{html.escape(heading)}</h1>"
        f"<p>{html.escape(message)}</p>"
        f"{extra}"
        f'<p class="hint">{html.escape(hint)}</p>'
        "</main></body></html>\n"
    )


def page_response(
    *,
    status: int,
    title: str,
    heading: str,
    message: str,
    hint: str,
    ok: bool,
    tone: Tone | None = None,
    link: PageLink | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=render_page(
            title=title, heading=heading, message=message, hint=hint, ok=ok, tone=tone, link=link
        ),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


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


@dataclass(frozen=True, slots=True)
class WebDependencies:
    links: LinkService
    redirect_path: str
    database_ok: Callable[[], Awaitable[bool]]
    gateway_ok: Callable[[], bool]
    metrics: Callable[[], tuple[bytes, str]] | None = None


DEPS_KEY = web.AppKey("deps", WebDependencies)


def create_app(deps: WebDependencies) -> web.Application:
    app = web.Application(middlewares=[_friendly_errors])
    app[DEPS_KEY] = deps
    # No HEAD on the link routes: a HEAD must not complete a link or use up a result page.
    app.router.add_get(deps.redirect_path, _callback, allow_head=False)
    app.router.add_get(result_route(deps.redirect_path), _result, allow_head=False)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


def result_route(redirect_path: str) -> str:
    """Where the callback sends the browser after a link: beside it, with no query."""
    return redirect_path.rstrip("/") + "/done/{token:[A-Za-z0-9_-]{16,64}}"


_DONE_HINT = "You can close this tab and go back to Discord."


async def _callback(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS_KEY]
    query = {key: request.query[key] for key in request.query}
    try:
        result = await deps.links.complete(query)
    except LinkFailure as failure:
        log.info("Link callback refused: %s", failure.kind)
        return page_response(
            status=failure.status,
            title=failure.title,
            heading=failure.title,
            message=failure.message,
            hint="You can close this tab.",
            ok=False,
            tone=failure.tone,
        )
    if result.outcome == "pending":
        return page_response(
            status=202,
            title="Almost linked",
            heading="Almost done",
            message=(
                "Spotify accepted your sign-in but asked the bot to pause for about "
                f"{describe_wait(result.retry_after)}. The bot finishes the link by itself then "
                "and sends you a direct message in Discord: nothing else to do."
            ),
            hint=_DONE_HINT,
            ok=True,
        )
    # The names go on a page of their own, once: the code and state leave the address bar,
    # and a reload, the history or a shared address shows nobody's account.
    location = result_route(deps.redirect_path).replace(
        "{token:[A-Za-z0-9_-]{16,64}}", result.result_token or ""
    )
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


async def _result(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    view = await deps.links.open_result(request.match_info["token"])
    if view is None:
        return page_response(
            status=410,
            title="Page expired",
            heading="This page is no longer available",
            message="Run /np in Discord to see whether your Spotify account is linked.",
            hint=_DONE_HINT,
            ok=False,
            tone="info",
        )
    if not view.first_view or view.spotify_name is None:
        return page_response(
            status=200,
            title="Linking finished",
            heading="Linking finished",
            message=(
                "For privacy, this page names the linked accounts only once. The bot's direct "
                "message in Discord names your Spotify account."
            ),
            hint=_DONE_HINT,
            ok=True,
            tone="info",
        )
    spotify = view.spotify_name
    discord = view.discord_name or "the Discord account that asked for it"
    renewed = view.outcome == "renewed"
    return page_response(
        status=200,
        title="Link renewed" if renewed else "Spotify linked",
        heading=f"Link renewed for {spotify}" if renewed else f"Linked as {spotify}",
        message=(
            f"The Spotify account {spotify} is "
            + ("still" if renewed else "now")
            + f" linked to the Discord account {discord}. Try /np in Discord to show what "
            "you are playing."
        ),
        hint=_DONE_HINT,
        ok=True,
        link=PageLink(
            before=(
                "Not your Discord account? Someone may have sent you a link that was not yours: "
            ),
            text="remove this bot's access in your Spotify account",
            href=SPOTIFY_APPS_URL,
            after=", and the link stops working.",
        ),
    )


async def _healthz(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    try:
        database = await deps.database_ok()
    except Exception:
        log.exception("Health check could not reach the database")
        database = False
    try:
        gateway = deps.gateway_ok()
    except Exception:
        # A health check answers with what it knows; it never turns into an error page.
        log.exception("Health check could not read the gateway state")
        gateway = False
    body: dict[str, Any] = {
        "status": "ok" if database and gateway else "degraded",
        "database": database,
        "gateway": gateway,
    }
    return web.json_response(
        body, status=200 if database else 503, headers={"Cache-Control": "no-store"}
    )


async def _metrics(request: web.Request) -> web.Response:
    deps = request.app[DEPS_KEY]
    if deps.metrics is None:
        return _not_found()
    payload, content_type = deps.metrics()
    response = web.Response(body=payload, headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = content_type
    return response


def _not_found() -> web.Response:
    return page_response(
        status=404,
        title="Not found",
        heading="Nothing here",
        message="This address is not part of the bot.",
        hint="Use /link in Discord to connect your Spotify account.",
        ok=False,
    )


@web.middleware
async def _friendly_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _not_found()
    except web.HTTPMethodNotAllowed:
        return page_response(
            status=405,
            title="Not allowed",
            heading="Not allowed",
            message="This page only answers ordinary visits.",
            hint="",
            ok=False,
        )
    except web.HTTPException:
        raise
    except Exception:
        # Our own bug: log it with its traceback, show a friendly page, never a 5xx.
        log.exception(
            "Unexpected error serving %s after %.0f ms",
            loggable(request.rel_url.path),
            (time.perf_counter() - started) * 1000,
        )
        return page_response(
            status=400,
            title="Something went wrong",
            heading="Something went wrong",
            message="The bot could not finish this request. Nothing was saved; please run "
            "/link in Discord to try again.",
            hint="If this keeps happening, tell the bot owner.",
            ok=False,
        )
