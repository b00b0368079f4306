"""Uploaded bytes -> RGB PIL image, with the checks a network service needs before decoding anything.

The format is sniffed from the bytes (Pillow's own identification), never taken from a file name or a
Content-Type header; the pixel count is checked from the header before the pixels are decoded, so a decompression
bomb (a small file that expands to gigabytes) is refused without allocating it. The decoded image then goes through
the one conversion to 8-bit RGB of every egtr input (`egtr.images.load_image`: EXIF orientation, 16-bit, CMYK, ...).
Each refusal has its own HTTP status and code, so a client can tell "too large" from "not an image".
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from egtr.errors import ImageError
from egtr.images import DEFAULT_MAX_PIXELS, load_image

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
        with warnings.catch_warnings():
            # The pixel check below replaces Pillow's warning; its hard limit (2x its warning) still raises.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as error:
        raise ImageRejected(413, "too_many_pixels", f"image too large ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageRejected(415, "not_an_image", "the bytes are not an image Pillow can identify") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(400, "corrupt_image", f"corrupt image header ({error})") from error
    with opened:
        if opened.format not in ACCEPTED_FORMATS:
            raise ImageRejected(
                415,
                "unsupported_format",
                f"image format {opened.format} is not accepted; send one of {', '.join(ACCEPTED_FORMATS)}",
            )
        width, height = opened.size
        if width < 1 or height < 1:
            raise ImageRejected(400, "corrupt_image", f"empty image ({width}x{height})")
        if width * height > max_pixels:
            raise ImageRejected(
                413,
                "too_many_pixels",
                f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
            )
        try:
            opened.load()  # decode every pixel now: a truncated file fails here, not inside the model
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageRejected(
                400, "corrupt_image", f"truncated or corrupt {opened.format} image ({error})"
            ) from error
        try:
            return load_image(opened, max_pixels=max_pixels, name="upload")
        except ImageError as error:
            raise ImageRejected(400, "unsupported_mode", str(error)) from error
