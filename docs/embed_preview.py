"""Draw docs/np-embed.png: the real /np embed (bot.embeds) in a Discord-like dark theme.

The embed comes from ``render_now_playing`` over tests/fixtures/currently_playing_track.json,
so the picture shows exactly the fields, links and progress bar the bot sends, and its colour
is the one ``bot.colours.pick_colour`` picks from the cover. The album art is a made-up cover
(docs/sample_covers.py: this machine has no internet, and the README must not hotlink).

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

from PIL import Image
from playwright.async_api import async_playwright
from sample_covers import cover

from bot.colours import pick_colour
from bot.embeds import render_now_playing
from bot.spotify.models import parse_currently_playing

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "currently_playing_track.json"
OUTPUT = ROOT / "docs" / "np-embed.png"

COVER = cover(0)
ART = "data:image/jpeg;base64," + base64.b64encode(COVER).decode("ascii")


def markdown(text: str) -> str:
    """The little markdown the embed uses: [text](url), `code`, **bold**, escapes."""
    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="#">\1</a>', out)
    return out.replace("\\", "").replace("\n", "<br>")


LIGHT_THEME = """
body.light { background:#ffffff; color:#313338; }
.light .name, .light .author, .light .fname { color:#060607; }
.light .embed { background:#f2f3f5; } .light .footer { color:#5c5e66; }
.light a, .light .title a { color:#006ce7; } .light code { background:#e3e5e8; }
.light .button { background:#6d6f78; }
"""


def page(theme: str = "dark") -> str:
    received = 1_700_000_000.0
    playback = parse_currently_playing(json.loads(FIXTURE.read_text()), received_at=received)
    colour = pick_colour(COVER)
    message = render_now_playing(playback, member_name="Ann", now=received, colour=colour)
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
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin:0; padding:16px; background:#313338; font-family: "gg sans","Noto Sans",
  "Helvetica Neue",Helvetica,Arial,sans-serif; color:#dbdee1; font-size:14px; width:560px; }}
.msg {{ display:flex; gap:14px; }}
.avatar {{ width:40px; height:40px; border-radius:50%; background:#5865f2; flex:none; }}
.name {{ color:#f2f3f5; font-weight:600; }} .tag {{ background:#5865f2; color:white;
  font-size:10px; padding:1px 4px; border-radius:3px; margin-left:4px; }}
.time {{ color:#949ba4; font-size:12px; margin-left:6px; }}
.embed {{ margin-top:6px; background:#2b2d31; border-left:4px solid {colour}; border-radius:4px;
  padding:10px 14px 14px 12px; display:grid; grid-template-columns:1fr 80px; gap:8px;
  max-width:480px; }}
.author {{ font-size:13px; font-weight:600; color:#f2f3f5; }}
.title a {{ color:#00a8fc; font-weight:600; font-size:15px; text-decoration:none; }}
.desc {{ margin-top:6px; }} code {{ background:#1e1f22; padding:1px 3px; border-radius:3px;
  font-family: Consolas, "DejaVu Sans Mono", monospace; font-size:12px; }}
a {{ color:#00a8fc; text-decoration:none; }}
.fields {{ display:flex; flex-wrap:wrap; gap:8px 20px; margin-top:8px; }}
.fname {{ font-weight:600; color:#f2f3f5; }}
.thumb {{ width:80px; height:80px; border-radius:4px; grid-column:2; grid-row:1 / span 4; }}
.footer {{ font-size:12px; color:#b5bac1; margin-top:8px; }}
.button {{ display:inline-block; margin-top:8px; background:#4e5058; color:white;
  padding:6px 14px; border-radius:4px; font-weight:500; }}
{LIGHT_THEME if theme == "light" else ""}
</style></head><body class="{theme}"><div class="msg"><div class="avatar"></div><div>
<span class="name">nowplaying-bot</span><span class="tag">APP</span>
<span class="time">Today at 21:04</span>
<div class="embed"><div>
<div class="author">{html.escape(embed.get("author", {}).get("name", ""))}</div>
<div class="title"><a href="#">{markdown(embed.get("title", ""))}</a></div>
<div class="desc">{markdown(embed.get("description", ""))}</div>
<div class="fields">{fields}</div>
<div class="footer">{html.escape(embed.get("footer", {}).get("text", ""))}</div>
</div><img class="thumb" src="{ART}" alt=""></div>
{buttons}</div></div></body></html>"""


async def main() -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        tab = await browser.new_page(viewport={"width": 600, "height": 300})
        shots = []
        for theme in ("dark", "light"):  # the colour must read on both of Discord's themes
            await tab.set_content(page(theme))
            shots.append(Image.open(io.BytesIO(await tab.locator("body").screenshot())))
        await browser.close()
    both = Image.new("RGB", (sum(s.width for s in shots), max(s.height for s in shots)), "white")
    both.paste(shots[0], (0, 0))
    both.paste(shots[1], (shots[0].width, 0))
    both.save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    asyncio.run(main())
