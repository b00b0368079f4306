"""Decoding image files into RGB PIL images with a defined handling of every mode Pillow can open.

Handling (documented in docs/data.md):
- EXIF orientation is applied first (`ImageOps.exif_transpose`), so boxes refer to the image as it is displayed;
- 8-bit modes (L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, LAB, HSV, 1) are converted with `Image.convert("RGB")`, which
  is what the original loaders do: an alpha channel is dropped (not composited), CMYK uses Pillow's conversion;
- 16-bit and 32-bit integer grey images (modes I;16*, I) are scaled linearly from 0..65535 to 0..255
  (value / 257, rounded; values outside 0..65535 are clipped), then replicated to RGB;
- 32-bit float images (mode F) are an error: their value range is not defined;
- a missing, corrupt or truncated file raises `DataError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from egtr.data.errors import DataError

logger = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Convert an opened, fully loaded image of any supported mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    if image.mode == "F":
        raise DataError(f"{path}: 32-bit float images (mode F) are not supported; convert them to 8 or 16 bit")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot convert image mode {image.mode!r} to RGB ({error})") from error


def load_image(path: str | Path, exif_transpose: bool = True) -> Image.Image:
    """Read an image file completely and return it as an 8-bit RGB PIL image.

    Args:
        path: image file.
        exif_transpose: apply the EXIF orientation tag (default True).

    Returns:
        RGB `PIL.Image.Image` of size (width, height) as displayed.

    Raises:
        DataError: the file is missing, not an image, truncated/corrupt, or of an unsupported mode.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as opened:
            # load() decodes all pixels now, so a truncated file fails here (Pillow raises OSError) and not later
            # inside a transform.
            opened.load()
            image = ImageOps.exif_transpose(opened) if exif_transpose else opened.copy()
    except UnidentifiedImageError as error:
        raise DataError(f"{path}: not a readable image file ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: corrupt or truncated image ({error})") from error
    if image.width < 1 or image.height < 1:
        raise DataError(f"{path}: empty image ({image.width}x{image.height})")
    return _to_rgb(image, path)
