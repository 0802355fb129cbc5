"""Decoding album art safely: JPEG or PNG only, never a picture larger than album art ever is
(a small file can hold a huge picture: a 74 kB PNG of 4096 x 4096 took seconds to decode),
decoded near the size it is needed at."""

from __future__ import annotations

import io
import warnings

from PIL import Image

# Spotify's largest album art is 640 px a side; refuse anything wider or taller than twice
# that rather than decode it (a PNG is decoded whole, whatever size it is drawn at).
MAX_COVER_SIDE = 1280


def open_cover(data: bytes, size: int) -> Image.Image:
    """The cover, opened and set to decode near ``size`` x ``size`` (JPEG draft mode); not
    yet converted. ValueError for anything that is not a JPEG or PNG of at most
    ``MAX_COVER_SIDE`` x ``MAX_COVER_SIDE``; Pillow's own errors for a corrupt file."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        opened = Image.open(io.BytesIO(data))
        if opened.format not in ("JPEG", "PNG"):
            raise ValueError(f"not a JPEG or PNG ({opened.format})")
        if max(opened.width, opened.height) > MAX_COVER_SIDE:
            raise ValueError(f"{opened.width}x{opened.height} is too large to decode")
        opened.draft("RGB", (size, size))
    return opened
