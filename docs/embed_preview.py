"""Draw the pictures of docs/pictures.md from the bot's real builders, in a Discord-like dark theme.

- docs/np-embed.png: the /np answer, ``render_now_playing`` over
  tests/fixtures/currently_playing_track.json.
- docs/autopost.png: an auto-post in a music channel: the same builder the auto-poster calls,
  for a member whose track just started.
- docs/link-dm.png: the /link DM: the instructions and the two buttons of cogs/linking.py.

So the pictures show exactly the fields, links, progress bar and buttons the bot sends. The embeds'
colour is the one ``bot.pictures.colours.pick_colour`` picks from the cover shown; the covers are
made up (docs/sample_covers.py: this machine has no internet, and the docs must not hotlink).
docs/np-embed-themes.png shows the /np answer on Discord's dark and on its light theme.

Run: .venv/bin/python docs/embed_preview.py   (needs Debian's chromium and playwright)
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import re
from pathlib import Path

import discord
from PIL import Image
from playwright.async_api import async_playwright
from sample_covers import cover

from bot.messages.message import BotMessage
from bot.nowplaying.render import render_now_playing
from bot.pictures.colours import pick_colour
from bot.spotify.models import NothingPlaying, Playback, parse_currently_playing
from cogs.linking import LINK_INSTRUCTIONS, LinkButtons

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "currently_playing_track.json"
OUTPUT = ROOT / "docs" / "np-embed.png"
THEMES_OUTPUT = ROOT / "docs" / "np-embed-themes.png"
AUTOPOST_OUTPUT = ROOT / "docs" / "autopost.png"
LINK_DM_OUTPUT = ROOT / "docs" / "link-dm.png"

NP_COVER = cover(0)
AUTOPOST_COVER = cover(1)


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def markdown(text: str) -> str:
    """The little markdown the embed uses: [text](url), `code`, **bold**, escapes."""
    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="#">\1</a>', out)
    return out.replace("\\", "").replace("\n", "<br>")


STYLE = """
body { margin:0; padding:16px; background:#313338; font-family: "gg sans","Noto Sans",
  "Helvetica Neue",Helvetica,Arial,sans-serif; color:#dbdee1; font-size:14px; width:560px; }
.channel { color:#949ba4; font-weight:600; margin:0 0 12px 0; padding-bottom:8px;
  border-bottom:1px solid #3f4147; } .channel b { color:#f2f3f5; }
.msg { display:flex; gap:14px; }
.avatar { width:40px; height:40px; border-radius:50%; background:#5865f2; flex:none; }
.name { color:#f2f3f5; font-weight:600; } .tag { background:#5865f2; color:white;
  font-size:10px; padding:1px 4px; border-radius:3px; margin-left:4px; }
.time { color:#949ba4; font-size:12px; margin-left:6px; }
.content { margin-top:2px; line-height:1.4; max-width:480px; }
.embed { margin-top:6px; background:#2b2d31; border-left:4px solid var(--colour);
  border-radius:4px; padding:10px 14px 14px 12px; display:grid; grid-template-columns:1fr 80px;
  gap:8px; max-width:480px; }
.author { font-size:13px; font-weight:600; color:#f2f3f5; }
.title a { color:#00a8fc; font-weight:600; font-size:15px; text-decoration:none; }
.desc { margin-top:6px; } code { background:#1e1f22; padding:1px 3px; border-radius:3px;
  font-family: Consolas, "DejaVu Sans Mono", monospace; font-size:12px; }
a { color:#00a8fc; text-decoration:none; }
.fields { display:flex; flex-wrap:wrap; gap:8px 20px; margin-top:8px; }
.fname { font-weight:600; color:#f2f3f5; }
.thumb { width:80px; height:80px; border-radius:4px; grid-column:2; grid-row:1 / span 4; }
.footer { font-size:12px; color:#b5bac1; margin-top:8px; }
.button { display:inline-block; margin:8px 8px 0 0; background:#4e5058; color:white;
  padding:6px 14px; border-radius:4px; font-weight:500; }
.button.primary { background:#4e5058; }
body.light { background:#ffffff; color:#313338; }
.light .name, .light .author, .light .fname { color:#060607; }
.light .embed { background:#f2f3f5; } .light .footer { color:#5c5e66; }
.light a, .light .title a { color:#006ce7; } .light code { background:#e3e5e8; }
.light .button { background:#6d6f78; }
"""


def embed_html(message: BotMessage, art: bytes) -> str:
    """The embed and link buttons of a rendered message, as Discord lays them out."""
    assert message.embed is not None
    embed = message.embed.to_dict()
    fields = "".join(
        f'<div class="field{" inline" if f.get("inline") else ""}"><div class="fname">'
        f"{markdown(f['name'])}</div><div>{markdown(f['value'])}</div></div>"
        for f in embed.get("fields", [])
    )
    buttons = "".join(
        f'<span class="button">{html.escape(b.label)} ↗</span>' for b in message.buttons
    )
    colour = f"#{embed.get('color', 0x1DB954):06x}"
    return f"""<div class="embed" style="--colour:{colour}"><div>
<div class="author">{html.escape(embed.get("author", {}).get("name", ""))}</div>
<div class="title"><a href="#">{markdown(embed.get("title", ""))}</a></div>
<div class="desc">{markdown(embed.get("description", ""))}</div>
<div class="fields">{fields}</div>
<div class="footer">{html.escape(embed.get("footer", {}).get("text", ""))}</div>
</div><img class="thumb" src="{data_url(art)}" alt=""></div>
{buttons}"""


def bot_message(body: str, *, when: str, channel: str | None = None, theme: str = "dark") -> str:
    header = f'<div class="channel"><b>{html.escape(channel)}</b></div>' if channel else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>{STYLE}</style></head>
<body class="{theme}">{header}<div class="msg"><div class="avatar"></div><div>
<span class="name">nowplaying-bot</span><span class="tag">APP</span>
<span class="time">{html.escape(when)}</span>
{body}</div></div></body></html>"""


def fixture_playback(received: float, **changes: object) -> Playback | NothingPlaying:
    payload = json.loads(FIXTURE.read_text())
    payload.update(changes)
    return parse_currently_playing(payload, received_at=received)


def page(theme: str = "dark") -> str:
    """docs/np-embed.png: what /np answers, in the colour picked from the cover."""
    received = 1_700_000_000.0
    message = render_now_playing(
        fixture_playback(received),
        member_name="Ann",
        now=received,
        colour=pick_colour(NP_COVER),
    )
    return bot_message(embed_html(message, NP_COVER), when="Today at 21:04", theme=theme)


def autopost_page() -> str:
    """docs/autopost.png: what the auto-poster posts when a member starts a track (a few
    seconds in, as the poll or the presence update notices it)."""
    received = 1_700_000_000.0
    playback = fixture_playback(received, progress_ms=3_000, is_playing=True)
    message = render_now_playing(
        playback, member_name="Bo", now=received + 1, colour=pick_colour(AUTOPOST_COVER)
    )
    return bot_message(
        embed_html(message, AUTOPOST_COVER), when="Today at 21:07", channel="# music"
    )


def link_dm_page(labels: list[tuple[str, bool]]) -> str:
    """docs/link-dm.png: the DM /link sends; ``labels`` are the view's (label, is_link)."""
    buttons = "".join(
        f'<span class="button">{html.escape(label)}{" ↗" if is_link else ""}</span>'
        for label, is_link in labels
    )
    body = f'<div class="content">{markdown(LINK_INSTRUCTIONS)}</div>{buttons}'
    return bot_message(body, when="Today at 21:02", channel="@nowplaying-bot (direct message)")


async def link_dm_buttons() -> list[tuple[str, bool]]:
    """The DM's buttons as cogs/linking.py builds them (a View needs the running loop)."""
    view = LinkButtons(links=None, authorize_url="https://accounts.spotify.com/authorize")  # type: ignore[arg-type]
    labels = [
        (str(item.label), item.url is not None)
        for item in view.children
        if isinstance(item, discord.ui.Button)
    ]
    view.stop()
    return labels


async def main() -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        tab = await browser.new_page(viewport={"width": 600, "height": 300})
        # The /np answer on both themes, side by side: the colour must read on either.
        shots = []
        for theme in ("dark", "light"):
            await tab.set_content(page(theme))
            shots.append(Image.open(io.BytesIO(await tab.locator("body").screenshot())))
        both = Image.new("RGB", (sum(s.width for s in shots), max(s.height for s in shots)))
        both.paste(shots[0], (0, 0))
        both.paste(shots[1], (shots[0].width, 0))
        both.save(THEMES_OUTPUT, optimize=True)
        print(f"wrote {THEMES_OUTPUT}")
        # The /np picture is the message alone; the others show where they appear.
        pictures = [
            (page(), ".msg", OUTPUT),
            (autopost_page(), "body", AUTOPOST_OUTPUT),
            (link_dm_page(await link_dm_buttons()), "body", LINK_DM_OUTPUT),
        ]
        for content, part, output in pictures:
            await tab.set_content(content)
            await tab.locator(part).screenshot(path=str(output))
            print(f"wrote {output}")
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
