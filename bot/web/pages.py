"""The web server's HTML pages: one self-contained page (inline style, no script, no
picture), every interpolated value escaped, served with strict security headers."""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass

from aiohttp import web

from bot.linking.words import Tone

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


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its HTTP status and plain-text words (escaped when rendered). ``tone`` picks
    the mark and the accent colour; ``heading`` defaults to the title."""

    status: int
    title: str
    message: str
    hint: str = ""
    tone: Tone = "fail"
    heading: str | None = None
    link: PageLink | None = None


def render_page(page: Page) -> str:
    """A self-contained page; every interpolated value is escaped here."""
    mark, css_class = _MARKS[page.tone]
    extra = ""
    link = page.link
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
        f"<title>{html.escape(page.title)} · nowplaying-bot</title>"
        f"<style>{_STYLE}</style></head>"
        f'<body><main class="{css_class}" role="main">'
        f'<div class="mark" aria-hidden="true">{mark}</div>'
        f"<h1>{html.escape(page.heading or page.title)}</h1>"
        f"<p>{html.escape(page.message)}</p>"
        f"{extra}"
        f'<p class="hint">{html.escape(page.hint)}</p>'
        "</main></body></html>\n"
    )


def page_response(page: Page) -> web.Response:
    return web.Response(
        status=page.status,
        text=render_page(page),
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )
