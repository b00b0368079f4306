"""Uploaded bytes -> RGB PIL image, with the checks a network service needs before decoding anything.

The format is sniffed from the bytes (Pillow's own identification), never taken from a file name or a
Content-Type header; the pixel count is checked from the header before the pixels are decoded, so a decompression
bomb (a small file that expands to gigabytes) is refused without allocating it. The decoded image then goes through
the one conversion to 8-bit RGB of every egtr input (`egtr.images.load_image`: EXIF orientation, 16-bit, CMYK, ...).
Each refusal has its own HTTP status and code, so a client can tell "too large" from "not an image".
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from egtr.errors import ImageError
from egtr.images import DEFAULT_MAX_PIXELS, TooManyPixels, load_image, open_image

# Formats a browser or a camera produces; Pillow can open more (EPS, PSD, ...), which a service has no reason to parse.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
__all__ = ["ACCEPTED_FORMATS", "DEFAULT_MAX_PIXELS", "ImageRejected", "decode_image_bytes"]


class ImageRejected(ValueError):
    """An upload that is not an acceptable image. `status` is the HTTP status, `code` a stable machine name."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def decode_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an uploaded image completely into 8-bit RGB (EXIF orientation applied).

    Raises:
        ImageRejected: empty (400 `empty_body`), not an image (415 `not_an_image`), a format outside
            `ACCEPTED_FORMATS` (415 `unsupported_format`), more than `max_pixels` pixels (413 `too_many_pixels`),
            truncated or corrupt (400 `corrupt_image`), or of a mode without RGB conversion (400 `unsupported_mode`).
    """
    if not data:
        raise ImageRejected(400, "empty_body", "the request carries no image bytes")
    try:
        # egtr's limit (the server's --max-pixels), not Pillow's own, decides; checked from the header
        with open_image(io.BytesIO(data), "upload", max_pixels) as opened:
            _check_format(opened)
            opened.load()  # decode every pixel now: a truncated file fails here, not inside the model
            return _to_rgb(opened)
    except ImageRejected:
        raise
    except TooManyPixels as error:
        raise ImageRejected(413, "too_many_pixels", str(error)) from error
    except UnidentifiedImageError as error:
        raise ImageRejected(415, "not_an_image", "the bytes are not an image Pillow can identify") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(400, "corrupt_image", f"truncated or corrupt image ({error})") from error


def _check_format(opened: Image.Image) -> None:
    if opened.format not in ACCEPTED_FORMATS:
        raise ImageRejected(
            415,
            "unsupported_format",
            f"image format {opened.format} is not accepted; send one of {', '.join(ACCEPTED_FORMATS)}",
        )


def _to_rgb(loaded: Image.Image) -> Image.Image:
    """The one conversion of every egtr input (EXIF orientation, 16-bit, CMYK, ...); the size is checked already."""
    try:
        return load_image(loaded, max_pixels=None, name="upload")
    except ImageError as error:
        raise ImageRejected(400, "unsupported_mode", str(error)) from error
