"""The callback pages and /healthz through aiohttp's test client.

``bot.web.server.create_app`` over a real LinkService (real Storage on tmp_path, real TokenCipher,
real Spotify clients against the fake Spotify on loopback), served with the same access logger as
``bot.app``.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.linking.words import SPOTIFY_APPS_URL
from bot.storage import Storage
from bot.web.access import runner_options
from bot.web.server import WebDependencies, create_app
from tests.fakes.spotify import UNREGISTERED_USER, FakeSpotify
from tests.helpers import ALICE, BOB, LinkWorld, query_of

AiohttpServer = Callable[..., Awaitable[TestServer]]
AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

XSS = '<script>alert("x")</script>'
XSS_VARIANTS = (
    XSS,
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "</title><script>alert(1)</script>",
)


@dataclass
class Web:
    world: LinkWorld
    client: TestClient[web.Request, web.Application]
    health: dict[str, Any]

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Page:
        async with self.client.get(path, params=params, allow_redirects=False) as response:
            return Page(response.status, response.headers.copy(), await response.text())

    async def callback(self, query: Mapping[str, str]) -> Page:
        return await self.get("/callback", params=query)

    async def link(self, query: Mapping[str, str]) -> tuple[Page, Page]:
        """The callback, then the result page it redirects to (as a browser follows it)."""
        redirect = await self.callback(query)
        assert redirect.status == 303, redirect.body
        location = redirect.headers["Location"]
        assert location.startswith("/callback/done/")
        assert "?" not in location  # code and state leave the address bar
        return redirect, await self.get(location)


@dataclass
class Page:
    status: int
    headers: Mapping[str, str]
    body: str


@pytest.fixture
async def world(fake: FakeSpotify, tmp_path: Path) -> AsyncIterator[LinkWorld]:
    db_path = tmp_path / "bot.db"
    async with aiohttp.ClientSession() as session, await Storage.open(db_path) as storage:
        yield LinkWorld(fake, storage, session, db_path)


async def serve(
    world: LinkWorld,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    health: dict[str, Any],
    **overrides: Any,
) -> TestClient[web.Request, web.Application]:
    async def database_ok() -> bool:
        value = health["database"]
        if isinstance(value, BaseException):
            raise value
        return await world.storage.ping() and bool(value)

    def gateway_ok() -> bool:
        value = health["gateway"]
        if isinstance(value, BaseException):
            raise value
        return bool(value)

    def spotify_state() -> str:
        value = health["spotify"]
        if isinstance(value, BaseException):
            raise value
        return str(value)

    deps = WebDependencies(
        links=overrides.get("links", world.links),
        redirect_path="/callback",
        database_ok=database_ok,
        gateway_ok=gateway_ok,
        spotify_state=spotify_state,
        presence=lambda: bool(health["presence"]),
    )
    # The runner options bot.app uses: the access log that leaves the query out.
    server = await aiohttp_server(create_app(deps), **runner_options())
    return await aiohttp_client(server)


@pytest.fixture
async def site(
    world: LinkWorld, aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> Web:
    health: dict[str, Any] = {"database": True, "gateway": True, "spotify": "ok", "presence": True}
    client = await serve(world, aiohttp_server, aiohttp_client, health)
    return Web(world, client, health)


# --- what every page must be ---------------------------------------------------------------


class _Resources(HTMLParser):
    """Every src/href/action (and inline handler) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.handlers: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data"):
                self.urls.append(value or "")
            if name.startswith("on"):
                self.handlers.append(name)


def assert_safe_page(page: Page, status: int) -> None:
    assert page.status == status, page.body
    headers = page.headers
    assert headers["Content-Type"].split(";")[0] == "text/html"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = headers["Content-Security-Policy"]
    directives = {d.strip().split()[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == "default-src 'none'"
    assert "unsafe-inline" not in csp
    assert "script-src" not in directives  # scripts fall back to 'none'
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    body = page.body.lower()
    assert body.startswith("<!doctype html>")
    assert "<script" not in body
    assert "traceback" not in body
    parser = _Resources()
    parser.feed(page.body)
    # Self-contained: no images, fonts or scripts; the one link a page may carry leads to
    # Spotify's page where a user removes the bot's access.
    assert parser.urls in ([], [SPOTIFY_APPS_URL]), parser.urls
    assert parser.handlers == []
    assert "script" not in parser.tags
    assert not re.search(r"<[a-z][^>]*\ssrc\s*=", body)
    assert list(re.findall(r"href\s*=\s*\"([^\"]*)\"", body)) in ([], [SPOTIFY_APPS_URL])
    assert "@import" not in body
    assert "url(" not in body


async def assert_nothing_stored(world: LinkWorld, *members: int) -> None:
    for member in members or (ALICE, BOB):
        assert await world.storage.links.get_link(member) is None
    assert await world.storage.links.count_links() == 0
    assert await world.storage.links.count_links("broken") == 0


# --- success -------------------------------------------------------------------------------


async def test_success_names_the_account_and_stores_the_link_encrypted(site: Web) -> None:
    world = site.world
    world.fake.add_user("ann", display_name="Ann & Co")
    redirect, page = await site.link(await world.approved_query(ALICE, "ann"))
    assert redirect.headers["Cache-Control"] == "no-store"
    assert redirect.headers["Referrer-Policy"] == "no-referrer"
    assert_safe_page(page, 200)
    assert "Linked as Ann &amp; Co" in page.body
    # Names the Discord account it is now linked to, and where to undo it if that is wrong.
    assert f"linked to the Discord account Member {ALICE} (@member{ALICE})" in page.body
    assert f'href="{SPOTIFY_APPS_URL}"' in page.body
    assert "/np" in page.body
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert (link.spotify_user_id, link.display_name, link.status) == ("ann", "Ann & Co", "active")
    [refresh_token] = world.fake.refresh_tokens_of("ann")
    assert link.refresh_token is not None
    assert refresh_token.encode() not in link.refresh_token
    assert await world.stored_refresh_token(ALICE) == refresh_token
    assert refresh_token.encode() not in world.database_bytes()


async def test_the_display_name_is_escaped(site: Web) -> None:
    world = site.world
    for index, variant in enumerate(XSS_VARIANTS):
        spotify_user = f"x{index}"
        world.fake.add_user(spotify_user, display_name=variant)
        _, page = await site.link(await world.approved_query(ALICE + index, spotify_user))
        assert_safe_page(page, 200)
        assert variant not in page.body or not set(variant) & set("<>\"'&")
        assert html.escape(variant) in page.body
    world.fake.add_user("xb", display_name=XSS)
    assert "&lt;script&gt;" in (await site.link(await world.approved_query(BOB, "xb")))[1].body


async def test_reloads_of_a_used_success_url_name_nobody(site: Web) -> None:
    query = await site.world.approved_query(ALICE)
    redirect, page = await site.link(query)
    assert "Linked as Alice" in page.body
    reload = await site.callback(query)  # history, a shared link, a second tab
    assert_safe_page(reload, 200)
    assert "already used" in reload.body
    assert "already finished linking" in reload.body
    assert "Alice" not in reload.body
    assert "Linked as" not in reload.body
    assert site.world.fake.call_count("token") == 1  # the used code was not sent again
    # The result page itself names the accounts once only.
    again = await site.get(redirect.headers["Location"])
    assert_safe_page(again, 200)
    assert "Alice" not in again.body
    assert "Member" not in again.body
    assert "only once" in again.body


async def test_concurrent_tabs_of_one_callback_agree(site: Web) -> None:
    query = await site.world.approved_query(ALICE)
    site.world.fake.fail_next("me", None, delay=0.3)
    pages = await asyncio.gather(*(site.callback(query) for _ in range(3)))
    assert sorted(page.status for page in pages) == [200, 200, 303]
    for page in pages:
        assert "Alice" not in page.body
        if page.status == 200:
            assert_safe_page(page, 200)
            assert "already finished linking" in page.body


async def test_a_spotify_account_linked_to_another_member_is_a_409(site: Web) -> None:
    world = site.world
    await site.link(await world.approved_query(ALICE, "alice"))
    page = await site.callback(await world.approved_query(BOB, "alice"))
    assert_safe_page(page, 409)
    assert "linked to another Discord account" in page.body
    assert "/unlink" in page.body
    assert "Member" not in page.body
    assert str(ALICE) not in page.body
    assert "Alice" not in page.body
    assert await world.storage.links.get_link(BOB) is None
    link = await world.storage.links.get_link(ALICE)
    assert link is not None
    assert link.spotify_user_id == "alice"


async def test_a_web_api_hold_during_the_callback_says_the_link_finishes_later(
    site: Web,
) -> None:
    world = site.world
    world.fake.fail_next("me", 429, retry_after=1800)
    page = await site.callback(await world.approved_query(ALICE))
    assert_safe_page(page, 202)
    assert "Almost done" in page.body
    assert "30 min" in page.body
    assert "direct message" in page.body
    assert len(await world.storage.link_states.list_pending_links()) == 1


async def test_an_accounts_service_hold_says_when_to_reload(site: Web) -> None:
    world = site.world
    query = await world.approved_query(ALICE)
    world.fake.fail_next("token", 429, retry_after=120)
    page = await site.callback(query)
    assert_safe_page(page, 429)
    assert "reload this page in 2 min" in page.body
    world.monotonic.advance(121)
    await site.link(query)  # the reload works: nothing was used up
    assert await world.storage.links.get_link(ALICE) is not None


async def test_head_never_completes_a_link(site: Web) -> None:
    query = await site.world.approved_query(ALICE)
    async with site.client.head("/callback", params=query, allow_redirects=False) as response:
        assert response.status == 405
    assert site.world.fake.call_count("token") == 0
    _, page = await site.link(query)  # the GET still works
    assert "Linked as Alice" in page.body


# --- failures: friendly 4xx pages, nothing stored ------------------------------------------


async def test_access_denied(site: Web) -> None:
    world = site.world
    world.fake.deny_next()
    query = query_of(
        await world.redirect_after_consent((await world.links.start(ALICE)).authorize_url)
    )
    assert query["error"] == "access_denied"
    page = await site.callback(query)
    assert_safe_page(page, 403)
    assert "cancelled" in page.body
    await assert_nothing_stored(world)
    assert world.fake.call_count("token") == 0


async def test_access_denied_without_state(site: Web) -> None:
    page = await site.callback({"error": "access_denied"})
    assert_safe_page(page, 403)
    await assert_nothing_stored(site.world)


@pytest.mark.parametrize(
    "query",
    [{}, {"code": "abc"}, {"state": ""}, {"code": "abc", "state": "  "}, {"unrelated": "1"}],
)
async def test_missing_state(site: Web, query: dict[str, str]) -> None:
    page = await site.callback(query)
    assert_safe_page(page, 400)
    assert "incomplete" in page.body
    await assert_nothing_stored(site.world)
    assert site.world.fake.call_count("token") == 0


async def test_unknown_state(site: Web) -> None:
    page = await site.callback({"code": "abc", "state": "never-issued"})
    assert_safe_page(page, 400)
    assert "not valid" in page.body
    assert "/link" in page.body
    await assert_nothing_stored(site.world)
    assert site.world.fake.call_count("token") == 0


async def test_expired_state(site: Web) -> None:
    world = site.world
    query = await world.approved_query(ALICE)
    world.clock.advance(10 * 60 + 1)
    page = await site.callback(query)
    assert_safe_page(page, 410)
    assert "expired" in page.body
    await assert_nothing_stored(world)
    assert world.fake.call_count("token") == 0


async def test_already_used_state_after_a_failure(site: Web) -> None:
    world = site.world
    query = await world.approved_query(ALICE)
    world.fake.fail_next("token", 400, body={"error": "invalid_grant", "error_description": "x"})
    assert_safe_page(await site.callback(query), 400)
    page = await site.callback(query)
    assert_safe_page(page, 410)
    assert "already used" in page.body
    await assert_nothing_stored(world)


async def test_a_used_code(site: Web) -> None:
    world = site.world
    code = world.fake.issue_code("alice")
    await world.auth.exchange_code(code)  # Spotify has seen it once already
    state = query_of((await world.links.start(ALICE)).authorize_url)["state"]
    page = await site.callback({"code": code, "state": state})
    assert_safe_page(page, 400)
    assert "did not accept" in page.body
    await assert_nothing_stored(world)


async def test_an_expired_code(site: Web) -> None:
    world = site.world
    query = await world.approved_query(ALICE)
    world.fake.advance(world.fake.code_lifetime + 1)
    page = await site.callback(query)
    assert_safe_page(page, 400)
    await assert_nothing_stored(world)


async def test_a_redirect_uri_mismatch(site: Web) -> None:
    world = site.world
    code = world.fake.issue_code("alice", redirect_uri="http://127.0.0.1:9/elsewhere")
    state = query_of((await world.links.start(ALICE)).authorize_url)["state"]
    page = await site.callback({"code": code, "state": state})
    assert_safe_page(page, 400)
    await assert_nothing_stored(world)


async def test_not_registered_for_the_app(site: Web) -> None:
    world = site.world
    page = await site.callback(await world.approved_query(ALICE, UNREGISTERED_USER))
    assert_safe_page(page, 403)
    assert "allow-list" in page.body
    await assert_nothing_stored(world)
    assert world.fake.call_count("me", UNREGISTERED_USER) == 1


@pytest.mark.parametrize(("endpoint", "status"), [("token", 503), ("token", 500), ("me", 502)])
async def test_spotify_failing_during_the_exchange(site: Web, endpoint: str, status: int) -> None:
    world = site.world
    world.fake.fail_next(endpoint, status, times=10)
    page = await site.callback(await world.approved_query(ALICE))
    assert_safe_page(page, 424)
    assert "Nothing was saved" in page.body
    await assert_nothing_stored(world)
    assert world.fake.call_count(endpoint) == 3  # bounded retries


async def test_spotify_rate_limiting_the_exchange(site: Web) -> None:
    world = site.world
    world.fake.fail_next("token", 429, retry_after=30)
    page = await site.callback(await world.approved_query(ALICE))
    assert_safe_page(page, 429)
    assert "30 s" in page.body
    assert "Nothing was used up" in page.body
    await assert_nothing_stored(world)


async def test_wrong_client_secret(
    world: LinkWorld, aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    world.fake.client_secret = "rotated-by-the-owner"
    site = Web(world, await serve(world, aiohttp_server, aiohttp_client, {}), {})
    page = await site.callback(await world.approved_query(ALICE))
    assert_safe_page(page, 400)
    assert "bot owner" in page.body
    await assert_nothing_stored(world)


# --- reflected input -----------------------------------------------------------------------


@pytest.mark.parametrize("payload", XSS_VARIANTS)
@pytest.mark.parametrize("field", ["error", "error_description", "state", "code"])
async def test_reflected_input_never_appears_raw(site: Web, field: str, payload: str) -> None:
    state = query_of((await site.world.links.start(ALICE)).authorize_url)["state"]
    query = {"state": state, "code": "abc", field: payload}
    if field == "error_description":
        query["error"] = "access_denied"
    page = await site.callback(query)
    assert 400 <= page.status < 500
    assert_safe_page(page, page.status)
    assert payload not in page.body
    await assert_nothing_stored(site.world)


async def test_odd_query_strings_get_a_page(site: Web) -> None:
    for raw in ("state=%ff%fe&code=%00", "state=a&state=b&code=c", "=&&=&", "state=" + "é" * 300):
        page = await site.get(f"/callback?{raw}")
        assert 400 <= page.status < 500, raw
        assert_safe_page(page, page.status)


# --- other routes and failures of our own --------------------------------------------------


async def test_unknown_route_is_a_friendly_404(site: Web) -> None:
    for path in ("/", "/nope", "/callback/", "/callback/extra", "/healthz/x", "/metrics"):
        page = await site.get(path)
        assert_safe_page(page, 404)
        assert "Nothing here" in page.body


async def test_wrong_method_is_a_friendly_405(site: Web) -> None:
    async with site.client.post("/callback", data={"code": "a"}) as response:
        page = Page(response.status, response.headers.copy(), await response.text())
    assert_safe_page(page, 405)


async def test_a_closed_database_never_gives_a_5xx(
    site: Web, caplog: pytest.LogCaptureFixture
) -> None:
    query = await site.world.approved_query(ALICE)
    await site.world.storage.close()
    with caplog.at_level(logging.ERROR, logger="bot.web.server"):
        page = await site.callback(query)
    assert_safe_page(page, 400)
    assert "went wrong" in page.body
    assert "Storage is closed" not in page.body
    # The bot owner gets the traceback in the log; the member does not.
    assert any(r.exc_info is not None for r in caplog.records if r.name == "bot.web.server")


async def test_a_dependency_that_raises_never_gives_a_5xx(
    world: LinkWorld, aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    class Exploding:
        async def complete(self, query: Mapping[str, str], **kwargs: Any) -> None:
            raise ZeroDivisionError("a bug of ours")

    client = await serve(world, aiohttp_server, aiohttp_client, {}, links=Exploding())
    site = Web(world, client, {})
    page = await site.callback({"code": "a", "state": "b"})
    assert_safe_page(page, 400)
    assert "ZeroDivisionError" not in page.body


# --- /healthz ------------------------------------------------------------------------------


async def health_of(site: Web) -> tuple[int, Any, Mapping[str, str]]:
    async with site.client.get("/healthz") as response:
        return response.status, await response.json(), response.headers.copy()


EXTRA = {"spotify": "ok", "presence": True}


async def test_healthz_ok(site: Web) -> None:
    status, body, headers = await health_of(site)
    assert (status, body) == (200, {"status": "ok", "database": True, "gateway": True, **EXTRA})
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"


async def test_the_server_header_names_no_versions(site: Web) -> None:
    for path in ("/healthz", "/callback", "/nope"):
        async with site.client.get(path) as response:
            assert response.headers["Server"] == "nowplaying-bot"
    async with site.client.post("/callback", data={"code": "a"}) as response:
        assert response.headers["Server"] == "nowplaying-bot"


async def test_healthz_degraded_without_the_gateway(site: Web) -> None:
    site.health["gateway"] = False
    status, body, _ = await health_of(site)
    assert (status, body) == (
        200,
        {"status": "degraded", "database": True, "gateway": False, **EXTRA},
    )


async def test_healthz_without_the_database(site: Web) -> None:
    await site.world.storage.close()
    status, body, _ = await health_of(site)
    assert (status, body) == (
        503,
        {"status": "degraded", "database": False, "gateway": True, **EXTRA},
    )


@pytest.mark.parametrize("spotify", ["budget_spent", "quota_spent"])
async def test_healthz_says_the_daily_spotify_limit_is_spent_without_changing_its_status(
    site: Web, spotify: str
) -> None:
    site.health.update(spotify=spotify, presence=False)
    status, body, _ = await health_of(site)
    # The bot is up: members get answers from statuses and the limit's end; no count is public.
    assert (status, body) == (
        200,
        {"status": "ok", "database": True, "gateway": True, "spotify": spotify, "presence": False},
    )


@pytest.mark.parametrize("broken", ["database", "gateway", "spotify"])
async def test_healthz_when_a_check_raises(
    site: Web, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    site.health[broken] = RuntimeError("check failed")
    with caplog.at_level(logging.ERROR, logger="bot.web.server"):
        status, body, _ = await health_of(site)
    if broken == "spotify":  # what members get is not whether the bot is up
        assert (status, body["status"], body["spotify"]) == (200, "ok", "ok")
        return
    assert body["status"] == "degraded"
    assert body[broken] is False
    assert status == (503 if broken == "database" else 200)


# --- the access log ------------------------------------------------------------------------


async def test_the_access_log_leaves_the_code_and_state_out(
    site: Web, caplog: pytest.LogCaptureFixture
) -> None:
    query = await site.world.approved_query(ALICE)
    with caplog.at_level(logging.DEBUG):
        page = await site.callback(query)
    assert page.status == 303
    access = [r.getMessage() for r in caplog.records if r.name == "bot.web.access"]
    assert len(access) == 1
    assert access[0].startswith("GET /callback 303 ")
    assert "?" not in access[0]
    for record in caplog.records:
        message = record.getMessage()
        assert query["code"] not in message, record.name
        assert query["state"] not in message, record.name
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]


async def test_health_probes_are_logged_at_debug_only(
    site: Web, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="bot.web.access"):
        async with site.client.get("/healthz") as response:
            assert response.status == 200
    (record,) = [r for r in caplog.records if r.name == "bot.web.access"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("GET /healthz 200 ")


def test_the_web_module_never_imports_discord() -> None:
    code = (
        "import sys, bot.web\n"
        "sys.exit(1 if any(m.split('.')[0] == 'discord' for m in sys.modules) else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=False, cwd=root, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()


async def test_result_pages_cannot_be_guessed_or_used_up_by_head(site: Web) -> None:
    page = await site.get("/callback/done/" + "A" * 32)
    assert_safe_page(page, 410)
    assert "no longer available" in page.body
    _, first = await site.link(await site.world.approved_query(ALICE))
    assert "Linked as Alice" in first.body
    redirect = await site.callback(await site.world.approved_query(BOB, "bob"))
    location = redirect.headers["Location"]
    async with site.client.head(location) as response:
        assert response.status == 405
    page = await site.get(location)  # the HEAD did not use up the one view with names
    assert "Linked as Bob" in page.body
