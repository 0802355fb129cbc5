"""Draw docs/chart.png: a real /chart picture (bot.pictures.charts) from made-up covers.

The grid, the text under each cover, the neutral tile for a missing cover and the Spotify
attribution all come from ``render_chart``; only the covers and names are invented
(docs/sample_covers.py), since the docs must not hotlink real album art.

Run: .venv/bin/python docs/chart_preview.py
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from sample_covers import SAMPLES, cover

from bot.pictures.charts import render_chart, track_tiles

OUTPUT = Path(__file__).resolve().parent / "chart.png"


def main() -> None:
    entries: list[tuple[bytes | None, str, str]] = [
        (cover(index), title, artist) for index, (title, artist, _, _) in enumerate(SAMPLES)
    ]
    entries[7] = (None, entries[7][1], entries[7][2])  # a cover that could not be fetched
    png = render_chart(track_tiles(entries), 3, heading="Ann's top tracks · last 4 weeks")
    # The bot encodes fast; for the docs the same pixels are stored with the best compression.
    image = Image.open(io.BytesIO(png))
    image.save(OUTPUT, format="PNG", optimize=True)
    size = OUTPUT.stat().st_size // 1024
    print(f"wrote {OUTPUT} ({size} KiB; the bot sent {len(png) // 1024} KiB)")


if __name__ == "__main__":
    main()
