"""The link flow's pages in a real browser: Debian's Chromium, driven by Playwright.

Every page is served by the real bot (``tests.harness.Stack``: the whole application against
the fake Discord and the fake Spotify on 127.0.0.1) and checked the way a member sees it on a
phone: it renders with the right heading, loads nothing from anywhere (the pages are
self-contained: one HTML document, inline style allowed by a CSP hash), logs no console error
(CSP violations would be console errors, so this also checks the style hash), and is readable
375 px wide. Screenshots land in ``test-artifacts/browser/`` (git-ignored).

Never downloads a browser: without ``/usr/bin/chromium`` (``scripts/test`` installs it as root)
these tests are skipped.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp import web

from bot.web.pages import SECURITY_HEADERS, render_page
from bot.web.pages import Page as BotPage
from tests.harness import ALICE_ID, BOB_ID, Stack
from tests.helpers import query_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 375, "height": 740}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed"),
    # One browser for the module: every test runs on the module's event loop.
    pytest.mark.asyncio(loop_scope="module"),
]

if CHROMIUM.exists():
    from playwright.async_api import Browser, ConsoleMessage, Error, Page, Request, async_playwright


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack.running(tmp_path) as running:
        yield running


@dataclass
class Visit:
    """What one page load did, recorded from the browser's side."""

    page: Page
    status: int
    requests: list[Request] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="module")
async def phone(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


async def visit(page: Page, url: str) -> Visit:
    requests: list[Request] = []
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(f"{message.text} @ {message.location['url']}")

    def on_page_error(error: Error) -> None:
        page_errors.append(str(error))

    def on_request(request: Request) -> None:
        requests.append(request)

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        response = await page.goto(url, wait_until="load")
        assert response is not None
        status = response.status
    finally:
        page.remove_listener("request", on_request)
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_page_error)
    return Visit(page, status, requests, console_errors, page_errors)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


LAYOUT_SCRIPT = """
() => {
  const heading = document.querySelector('h1');
  const texts = [...document.querySelectorAll('main h1, main p, main .mark')];
  return {
    scrollWidth: document.documentElement.scrollWidth,
    viewportWidth: window.innerWidth,
    headingFontPx: parseFloat(getComputedStyle(heading).fontSize),
    bodyFontPx: parseFloat(getComputedStyle(document.querySelector('main p')).fontSize),
    // Clipped: content larger than a box that hides its overflow. (Visible overflow is not
    // clipped, and would push the page wider, which scrollWidth catches.)
    clipped: texts
      .filter(el => {
        const style = getComputedStyle(el);
        return (style.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 1)
          || (style.overflowY !== 'visible' && el.scrollHeight > el.clientHeight + 1)
          || style.textOverflow === 'ellipsis';
      })
      .map(el => el.outerHTML.slice(0, 80)),
    outside: texts
      .filter(el => {
        const box = el.getBoundingClientRect();
        return box.left < 0 || box.right > window.innerWidth + 0.5;
      })
      .map(el => el.outerHTML.slice(0, 80)),
  };
}
"""


async def member_page(
    tab: Page,
    url: str,
    bot_origin: str,
    *,
    name: str,
    status: int,
    heading: str,
    text: str,
    expected_hops: int = 0,
    bot_redirects: int = 0,
) -> Visit:
    """Visit ``url`` in ``tab`` and check everything a member's page must be; the visit.
    ``expected_hops``: requests before the bot's page (the authorize step on the fake Spotify
    during a real flow); ``bot_redirects``: the bot's own redirects before it (the callback
    sending the browser to its result page)."""
    visit_result = await visit(tab, url)
    page = visit_result.page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    assert visit_result.status == status
    assert await page.inner_text("h1") == heading
    assert text in await page.inner_text("main")

    # The hop to the fake Spotify's /authorize is the only request outside the bot's origin,
    # and the callback page itself loads no subresource at all: just the document.
    hops = visit_result.requests[:expected_hops]
    own = visit_result.requests[expected_hops:]
    assert all(origin(request.url) != bot_origin for request in hops), hops
    assert [(origin(r.url), r.resource_type) for r in own] == [(bot_origin, "document")] * (
        1 + bot_redirects
    ), [r.url for r in visit_result.requests]

    assert visit_result.page_errors == []
    # Chromium logs every non-2xx document as "Failed to load resource"; failure pages are 4xx
    # on purpose (bot/web/server.py), so that one line for the page itself is expected. Anything
    # else (a CSP violation, a script error, a blocked subresource) is not.
    expected = f"Failed to load resource: the server responded with a status of {status} "
    errors = [
        error
        for error in visit_result.console_errors
        if not (status >= 400 and error.startswith(expected) and error.endswith(f" @ {page.url}"))
    ]
    assert errors == []

    layout: dict[str, Any] = await page.evaluate(LAYOUT_SCRIPT)
    assert layout["viewportWidth"] == PHONE["width"]
    assert layout["scrollWidth"] <= PHONE["width"], layout
    assert layout["headingFontPx"] >= 16, layout
    assert layout["bodyFontPx"] >= 14, layout
    assert layout["clipped"] == [], layout
    assert layout["outside"] == [], layout
    return visit_result


# --- a real link, then reloads ------------------------------------------------------------


async def test_success_then_reload_says_already_linked(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(ALICE_ID)
    assert origin(authorize_url) == stack.spotify.base_url
    stack.spotify.approve_as("alice")

    # Spotify redirects to the callback
    linked = await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="success",
        status=200,
        heading="Linked as Alice",
        text="The Spotify account Alice is now linked to the Discord account Alice (@alice).",
        expected_hops=1,
        bot_redirects=1,
    )
    assert linked.requests[1].redirected_from is linked.requests[0]
    callback_url = linked.requests[1].url
    assert callback_url.startswith(f"{stack.web_base}/callback?code=")
    # The callback sent the browser on: code and state are out of the address bar.
    assert linked.requests[2].redirected_from is linked.requests[1]
    assert phone.url.startswith(f"{stack.web_base}/callback/done/")
    assert "?" not in phone.url
    apps = phone.get_by_role("link", name="remove this bot's access in your Spotify account")
    assert await apps.get_attribute("href") == "https://www.spotify.com/account/apps/"

    # the result page again: nobody named
    await member_page(
        phone,
        phone.url,
        stack.web_base,
        name="result-again",
        status=200,
        heading="Linking finished",
        text="this page names the linked accounts only once",
    )
    assert "Alice" not in await phone.inner_text("main")

    # the callback from history, or shared
    await member_page(
        phone,
        callback_url,
        stack.web_base,
        name="already-used",
        status=200,
        heading="This sign-in link was already used",
        text="It already finished linking a Spotify account, so nothing new happened here.",
    )
    assert "Alice" not in await phone.inner_text("main")


async def test_reload_after_a_failed_exchange_says_used(stack: Stack, phone: Page) -> None:
    state = query_of(await stack.start_link(BOB_ID))["state"]
    callback_url = f"{stack.web_base}/callback?code=not-a-real-code&state={state}"
    await member_page(
        phone,
        callback_url,
        stack.web_base,
        name="exchange-failed",
        status=400,
        heading="Spotify did not accept this sign-in",
        text="The authorization code was already used or has expired.",
    )

    # the state was spent by the first attempt
    await member_page(
        phone,
        callback_url,
        stack.web_base,
        name="used-state",
        status=410,
        heading="This sign-in link was already used",
        text="It did not link anything. Each sign-in link works once.",
    )


async def test_reload_after_unlink_is_not_valid(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(ALICE_ID)
    stack.spotify.approve_as("alice")
    first = await visit(phone, authorize_url)
    assert first.status == 200
    callback_url = first.requests[1].url
    sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
    await sent.wait_for_reply()

    # /unlink forgot the member's states too
    await member_page(
        phone,
        callback_url,
        stack.web_base,
        name="after-unlink",
        status=400,
        heading="This link is not valid",
        text="The bot does not recognise this sign-in attempt.",
    )


async def test_a_spotify_account_linked_to_someone_else(stack: Stack, phone: Page) -> None:
    await stack.link(BOB_ID, "bob")
    authorize_url = await stack.start_link(ALICE_ID)
    stack.spotify.approve_as("bob")  # Alice's button, approved by Bob
    await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="taken",
        status=409,
        heading="This Spotify account is linked to another Discord account",
        text="run /unlink there first, then /link again from this one.",
        expected_hops=1,
    )
    assert "Bob" not in await phone.inner_text("main")


async def test_a_link_that_waits_for_spotify(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(ALICE_ID)
    stack.spotify.approve_as("alice")
    stack.spotify.fail_next("me", 429, retry_after=600)
    await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="pending",
        status=202,
        heading="Almost done",
        text="asked the bot to pause for about 10 min",
        expected_hops=1,
    )


async def test_an_accounts_service_hold_says_when_to_reload(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(ALICE_ID)
    stack.spotify.approve_as("alice")
    stack.spotify.fail_next("token", 429, retry_after="0.2")
    await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="accounts-held",
        status=429,
        heading="Spotify asks the bot to wait",
        text="Nothing was used up: reload this page in 1 s",
        expected_hops=1,
    )
    # Once the hold is over, the reload the page asked for links: nothing was used up.
    await asyncio.sleep(0.3)  # a hold is a span of time: Spotify's Retry-After below
    await member_page(
        phone,
        phone.url,
        stack.web_base,
        name="accounts-held-reloaded",
        status=200,
        heading="Linked as Alice",
        text="is now linked to the Discord account Alice (@alice)",
        bot_redirects=1,
    )


async def test_two_tabs_of_one_callback_agree(stack: Stack, browser: Browser) -> None:
    authorize_url = await stack.start_link(ALICE_ID)
    stack.spotify.approve_as("alice")
    async with stack.http.get(authorize_url, allow_redirects=False) as response:
        callback_url = response.headers["Location"]
    stack.spotify.fail_next("me", None, delay=0.5)  # the first tab takes a while
    context = await browser.new_context(viewport=PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        tabs = [await context.new_page() for _ in range(2)]
        visits = await asyncio.gather(*(visit(tab, callback_url) for tab in tabs))
        headings = sorted([await tab.inner_text("h1") for tab in tabs])
        assert headings == ["Linked as Alice", "This sign-in link was already used"]
        assert sorted(v.status for v in visits) == [200, 200]
        for tab in tabs:
            if await tab.inner_text("h1") != "Linked as Alice":
                assert "already finished linking" in await tab.inner_text("main")
                assert "Alice" not in await tab.inner_text("main")
    finally:
        await context.close()


# --- failures ---------------------------------------------------------------------------------


async def test_access_denied(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(BOB_ID)
    stack.spotify.deny_next()
    await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="access-denied",
        status=403,
        heading="Linking was cancelled",
        text="You chose not to give the bot access on Spotify",
        expected_hops=1,
    )
    assert "error=access_denied" in phone.url


async def test_not_registered(stack: Stack, phone: Page) -> None:
    authorize_url = await stack.start_link(BOB_ID)
    stack.spotify.approve_as("outsider")  # not on the development-mode allow-list
    await member_page(
        phone,
        authorize_url,
        stack.web_base,
        name="not-registered",
        status=403,
        heading="Your Spotify account is not allowed yet",
        text="Ask the bot owner to add your Spotify email address",
        expected_hops=1,
    )


@pytest.mark.parametrize(
    ("path", "name", "status", "heading", "text"),
    [
        (
            "/callback",
            "missing-state",
            400,
            "This link is incomplete",
            "Run /link in Discord to get a fresh link.",
        ),
        (
            "/callback?code=abc&state={state}",  # a state the bot never made
            "unknown-state",
            400,
            "This link is not valid",
            "The bot does not recognise this sign-in attempt.",
        ),
        (
            "/nothing/here",
            "not-found",
            404,
            "Nothing here",
            "Use /link in Discord to connect your Spotify account.",
        ),
    ],
    ids=["missing-state", "unknown-state", "not-found"],
)
async def test_a_page_no_link_led_to(
    stack: Stack, phone: Page, path: str, name: str, status: int, heading: str, text: str
) -> None:
    url = stack.web_base + path.format(state=secrets.token_urlsafe(32))
    await member_page(
        phone, url, stack.web_base, name=name, status=status, heading=heading, text=text
    )


async def test_expired_state(stack: Stack, phone: Page) -> None:
    state = secrets.token_urlsafe(32)
    # A state /link made an hour ago: the ten minutes it was valid for are long over.
    await stack.app.services.storage.link_states.create_link_state(
        state, BOB_ID, now=time.time() - 3600
    )
    await member_page(
        phone,
        f"{stack.web_base}/callback?code=abc&state={state}",
        stack.web_base,
        name="expired-state",
        status=410,
        heading="This link has expired",
        text="Sign-in links are valid for 10 minutes.",
    )


async def test_dark_mode_page(stack: Stack, browser: Browser) -> None:
    context = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, color_scheme="dark"
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = await context.new_page()
        await member_page(
            page,
            f"{stack.web_base}/callback?error=access_denied",
            stack.web_base,
            name="dark-access-denied",
            status=403,
            heading="Linking was cancelled",
            text="nothing was linked",
        )
        colors = await page.evaluate(
            "() => [getComputedStyle(document.body).backgroundColor,"
            " getComputedStyle(document.querySelector('h1')).color]"
        )
        assert colors == ["rgb(22, 24, 29)", "rgb(230, 232, 235)"]  # the dark palette
    finally:
        await context.close()


async def test_the_console_check_would_see_a_csp_violation(browser: Browser) -> None:
    """Control: a page whose style does not match the CSP hash logs a console error."""
    headers = dict(SECURITY_HEADERS)
    headers["Content-Security-Policy"] = "default-src 'none'; style-src 'sha256-AAAA'"
    body = render_page(BotPage(200, "t", "m", "h", "ok", heading="Styled?"))

    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/", page_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = await browser.new_context(viewport=PHONE)
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        page = await context.new_page()
        result = await visit(page, f"http://127.0.0.1:{port}/")
        assert any("Content Security Policy" in error for error in result.console_errors), (
            result.console_errors
        )
    finally:
        await context.close()
        await runner.cleanup()
