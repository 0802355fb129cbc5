"""Made-up album covers for the pictures of docs/ (the docs must not hotlink real art, and
this machine has no internet): gradients, rings and stripes drawn with Pillow, as JPEG bytes."""

from __future__ import annotations

import colorsys
import io
import random

from PIL import Image, ImageDraw, ImageFilter

# (title, artist, hue, style): names are invented; styles vary the look of the grid.
SAMPLES: list[tuple[str, str, float, str]] = [
    ("Neon Harbour", "The Night Ferries", 0.58, "rings"),
    ("Paper Lanterns", "Mika Sol", 0.07, "sun"),
    ("Glasshouse", "Orchid Avenue", 0.83, "stripes"),
    ("Slow Rivers", "Ana Ribeiro", 0.45, "rings"),
    ("Grey Morning", "Field Notes", -1.0, "grey"),
    ("Citrus Drive", "Los Veranos", 0.14, "stripes"),
    ("Северное сияние", "Aurora Trio", 0.36, "sun"),
    ("Red Line Express", "Metro Lights", 0.99, "rings"),
    ("Κύματα", "Eleni K.", 0.62, "stripes"),
]


def _rgb(hue: float, lightness: float, saturation: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(hue % 1.0, lightness, saturation)
    return round(r * 255), round(g * 255), round(b * 255)


def cover(index: int, size: int = 300) -> bytes:
    _, _, hue, style = SAMPLES[index % len(SAMPLES)]
    rng = random.Random(index)
    grey = hue < 0
    saturation = 0.0 if grey else 0.75
    top = _rgb(hue, 0.55 if not grey else 0.7, saturation)
    bottom = _rgb(hue + 0.08, 0.22, saturation)
    mask = Image.linear_gradient("L").resize((size, size))
    image = Image.composite(
        Image.new("RGB", (size, size), bottom), Image.new("RGB", (size, size), top), mask
    )
    draw = ImageDraw.Draw(image)
    accent = _rgb(hue + 0.5, 0.6, saturation) if not grey else (235, 235, 235)
    centre = (size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.6))
    if style == "rings":
        for step in range(7, 0, -1):
            radius = size * 0.06 * step
            shade = _rgb(hue, 0.25 + 0.06 * step, saturation)
            draw.ellipse(
                (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius),
                outline=shade,
                width=max(2, size // 60),
            )
    elif style == "sun":
        radius = size * 0.22
        draw.ellipse(
            (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius),
            fill=accent,
        )
        draw.rectangle((0, size * 0.7, size, size), fill=_rgb(hue + 0.05, 0.18, saturation))
    elif style == "stripes":
        for stripe in range(0, size * 2, size // 8):
            draw.line((stripe, 0, stripe - size, size), fill=accent, width=size // 30)
    else:  # grey: a photo-like soft blob
        draw.ellipse((size * 0.2, size * 0.25, size * 0.8, size * 0.85), fill=(40, 40, 40))
        image = image.filter(ImageFilter.GaussianBlur(size / 40))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()
