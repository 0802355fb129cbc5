"""The bot's small web server: the OAuth callback pages, /healthz and (optionally) /metrics.

Never imports discord: the Discord side reaches in only through the callables it is given.
Every answer of the callback route is a self-contained HTML page (``bot.web.pages``) with the
words of ``bot.linking.words``; failures are 4xx pages, never a 5xx and never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from bot.linking.service import LinkService
from bot.linking.words import (
    DONE_HINT,
    SPOTIFY_APPS_URL,
    LinkFailure,
    failure_words,
    pending_words,
)
from bot.web.access import loggable
from bot.web.pages import SECURITY_HEADERS, Page, PageLink, page_response

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WebDependencies:
    links: LinkService
    redirect_path: str
    database_ok: Callable[[], Awaitable[bool]]
    gateway_ok: Callable[[], bool]
    # "ok", "budget_spent" or "quota_spent" (the daily Spotify budget, no counts: it is public)
    spotify_state: Callable[[], str] = lambda: "ok"
    presence: Callable[[], bool] = lambda: False  # whether members' statuses are seen
    metrics: Callable[[], tuple[bytes, str]] | None = None


DEPS_KEY = web.AppKey("deps", WebDependencies)


def create_app(deps: WebDependencies) -> web.Application:
    app = web.Application(middlewares=[_friendly_errors])
    app.on_response_prepare.append(_server_header)
    app[DEPS_KEY] = deps
    # No HEAD on the link routes: a HEAD must not complete a link or use up a result page.
    app.router.add_get(deps.redirect_path, _callback, allow_head=False)
    app.router.add_get(result_route(deps.redirect_path), _result, allow_head=False)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would name itself and Python with their versions: a gift to a scanner.
    response.headers["Server"] = "nowplaying-bot"


def result_route(redirect_path: str) -> str:
    """Where the callback sends the browser after a link: beside it, with no query."""
    return redirect_path.rstrip("/") + "/done/{token:[A-Za-z0-9_-]{16,64}}"


async def _callback(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS_KEY]
    query = {key: request.query[key] for key in request.query}
    try:
        result = await deps.links.complete(query)
    except LinkFailure as failure:
        log.info("Link callback refused: %s", failure.kind)
        words = failure_words(failure)
        return page_response(
            Page(words.status, words.title, words.message, "You can close this tab.", words.tone)
        )
    if result.outcome == "pending":
        message = pending_words(result.retry_after, where=" in Discord")
        return page_response(
            Page(
                202,
                "Almost linked",
                message + ": nothing else to do.",
                DONE_HINT,
                "ok",
                heading="Almost done",
            )
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
            Page(
                410,
                "Page expired",
                "Run /np in Discord to see whether your Spotify account is linked.",
                DONE_HINT,
                "info",
                heading="This page is no longer available",
            )
        )
    if not view.first_view or view.spotify_name is None:
        return page_response(
            Page(
                200,
                "Linking finished",
                "For privacy, this page names the linked accounts only once. The bot's direct "
                "message in Discord names your Spotify account.",
                DONE_HINT,
                "info",
            )
        )
    spotify = view.spotify_name
    discord = view.discord_name or "the Discord account that asked for it"
    renewed = view.outcome == "renewed"
    return page_response(
        Page(
            200,
            "Link renewed" if renewed else "Spotify linked",
            f"The Spotify account {spotify} is "
            + ("still" if renewed else "now")
            + f" linked to the Discord account {discord}. Try /np in Discord to show what "
            "you are playing.",
            DONE_HINT,
            "ok",
            heading=f"Link renewed for {spotify}" if renewed else f"Linked as {spotify}",
            link=PageLink(
                before="Not your Discord account? Someone may have sent you a link that was "
                "not yours: ",
                text="remove this bot's access in your Spotify account",
                href=SPOTIFY_APPS_URL,
                after=", and the link stops working.",
            ),
        )
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
        # What members get, not whether the bot is up: neither changes the status above.
        "spotify": _answer(deps.spotify_state, "ok"),
        "presence": _answer(deps.presence, False),
    }
    return web.json_response(
        body, status=200 if database else 503, headers={"Cache-Control": "no-store"}
    )


def _answer(source: Callable[[], T], fallback: T) -> T:
    try:
        return source()
    except Exception:  # a health check answers with what it knows
        log.exception("Health check could not read a state")
        return fallback


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
        Page(
            404,
            "Not found",
            "This address is not part of the bot.",
            "Use /link in Discord to connect your Spotify account.",
            heading="Nothing here",
        )
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
        return page_response(Page(405, "Not allowed", "This page only answers ordinary visits."))
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
            Page(
                400,
                "Something went wrong",
                "The bot could not finish this request. Nothing was saved; please run "
                "/link in Discord to try again.",
                "If this keeps happening, tell the bot owner.",
            )
        )
