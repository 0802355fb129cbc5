"""Decoding album art safely: JPEG or PNG only, never a picture of absurd size (a small file
can hold a decompression bomb), decoded near the size it is needed at."""

from __future__ import annotations

import io
import warnings

from PIL import Image

# Refuse covers above this many pixels rather than decode them.
MAX_COVER_PIXELS = 4096 * 4096


def open_cover(data: bytes, size: int) -> Image.Image:
    """The cover, opened and set to decode near ``size`` x ``size`` (JPEG draft mode); not
    yet converted. ValueError for anything that is not a JPEG or PNG of at most
    ``MAX_COVER_PIXELS``; Pillow's own errors for a corrupt file."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        opened = Image.open(io.BytesIO(data))
        if opened.format not in ("JPEG", "PNG"):
            raise ValueError(f"not a JPEG or PNG ({opened.format})")
        if opened.width * opened.height > MAX_COVER_PIXELS:
            raise ValueError(f"{opened.width}x{opened.height} is too large to decode")
        opened.draft("RGB", (size, size))
    return opened
