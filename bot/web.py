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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.linking import LinkFailure, LinkService

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


def render_page(*, title: str, heading: str, message: str, hint: str, ok: bool) -> str:
    """A self-contained page; every interpolated value is escaped here."""
    mark = "&#10003;" if ok else "&#9888;"
    css_class = "success" if ok else "failure"
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
        f'<p class="hint">{html.escape(hint)}</p>'
        "</main></body></html>\n"
    )


def page_response(
    *, status: int, title: str, heading: str, message: str, hint: str, ok: bool
) -> web.Response:
    return web.Response(
        status=status,
        text=render_page(title=title, heading=heading, message=message, hint=hint, ok=ok),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


# Probes (Docker's HEALTHCHECK every 30 s, a Prometheus scraper) would drown the log at INFO.
_PROBE_PATHS = frozenset({"/healthz", "/metrics"})


class QuietAccessLogger(AbstractAccessLogger):
    """Access log without query strings: the callback's query carries the OAuth code."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.rel_url.path
        level = logging.DEBUG if path in _PROBE_PATHS and response.status < 400 else logging.INFO
        access_log.log(
            level,
            "%s %s %s %.1fms",
            request.method,
            path,
            response.status,
            time * 1000,
        )


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
    app.router.add_get(deps.redirect_path, _callback)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


_DONE_HINT = "You can close this tab and go back to Discord."


async def _callback(request: web.Request) -> web.Response:
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
        )
    if result.already_linked:
        return page_response(
            status=200,
            title="Already linked",
            heading=f"Already linked as {result.display_name}",
            message=(
                f"Your Spotify account {result.display_name} is already linked. Try /np in Discord."
            ),
            hint=_DONE_HINT,
            ok=True,
        )
    return page_response(
        status=200,
        title="Spotify linked",
        heading=f"Linked as {result.display_name}",
        message=(
            f"Your Spotify account {result.display_name} is now linked. "
            "Try /np in Discord to show what you are playing."
        ),
        hint=_DONE_HINT,
        ok=True,
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
            request.rel_url.path,
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
