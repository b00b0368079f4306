"""The one conversion of anything image-like into the 8-bit RGB PIL image that the model pipeline starts from.

Files, bytes, PIL images, NumPy arrays and tensors all go through `load_image`, so the same picture gives the same
scene graph however it is handed over (training, `Predictor`, drawings, the service):

- EXIF orientation is applied first (`ImageOps.exif_transpose`), also for a PIL image that still carries the tag,
  so boxes refer to the image as it is displayed;
- 8-bit modes (L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, LAB, HSV, 1) use `Image.convert("RGB")`, as the original
  loaders do: an alpha channel is dropped (not composited), CMYK uses Pillow's conversion;
- 16-bit and 32-bit integer grey images (modes I;16*, I; uint16/int32 arrays) are scaled linearly from 0..65535 to
  0..255 (value / 257, rounded, clipped), then replicated to RGB;
- 32-bit float images (mode F) are refused (their value range is not defined); float arrays must hold [0, 1];
- an image over `max_pixels` (default `DEFAULT_MAX_PIXELS`, 100 megapixels) is refused before its pixels are
  decoded: a decompression bomb or a mistaken 180-megapixel scan must not take the process's memory;
- a missing, corrupt or truncated file raises `ImageError` naming the file.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from egtr.errors import ImageError

ImageSource = str | Path | bytes | Image.Image | np.ndarray | torch.Tensor

# 100 megapixels: above every camera and the largest VG / OI images (both under 2 megapixels), far below what fills
# the memory of a 2-core machine (one 100 MP RGB image is 300 MB decoded, its float tensor 1.2 GB).
DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Pillow's own bomb check reads the process-wide Image.MAX_IMAGE_PIXELS inside Image.open; our limit replaces it
# for the duration of an open, so the switch is guarded by a lock for threaded decoding.
_PILLOW_LIMIT_LOCK = threading.Lock()


def describe_source(source: object) -> str:
    """How an image source is named in messages: a path as written (undecodable bytes escaped), else its type."""
    if isinstance(source, (str, Path)):
        return str(source).encode("utf-8", "backslashreplace").decode("utf-8")
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    exif_transpose: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Read or convert an image completely and return it as an 8-bit RGB PIL image (the module docstring says how
    each kind of input is handled).

    Args:
        source: a file path, the encoded bytes of a file, a PIL image, an (H, W) / (H, W, 1|3|4) array (uint8,
            uint16, or float in [0, 1]) or a (3, H, W) / (H, W, 3) tensor.
        exif_transpose: apply the EXIF orientation tag.
        max_pixels: refuse images with more pixels than this (None: no limit).
        name: how to call the image in messages (default: the path, or the input's type).

    Raises:
        ImageError: missing, unreadable, truncated, of an unsupported mode or shape, or over `max_pixels`.
    """
    label = name or describe_source(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label}: image file not found")
        with open(path, "rb") as handle:
            return _decode(handle, label, exif_transpose, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError(f"{label}: empty (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), label, exif_transpose, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, label, max_pixels)
        picture = ImageOps.exif_transpose(source) if exif_transpose else source
        return _to_rgb(picture, label)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _from_array(source, label, max_pixels)
    raise ImageError(f"{label}: not an image; expected a path, bytes, a PIL image, a NumPy array or a tensor")


def _check_pixels(width: int, height: int, label: str, max_pixels: int | None) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{label}: empty image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
            f"{max_pixels / 1e6:g} megapixels (raise it with --max-pixels / max_pixels=)"
        )


def _decode(handle: BinaryIO, label: str, exif_transpose: bool, max_pixels: int | None) -> Image.Image:
    try:
        with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                opened = Image.open(handle)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with opened:
            _check_pixels(opened.width, opened.height, label, max_pixels)
            # load() decodes every pixel now, so a truncated file fails here and not later inside a transform.
            opened.load()
            picture = ImageOps.exif_transpose(opened) if exif_transpose else opened.copy()
    except ImageError:
        raise  # our own verdict (over the pixel limit) is no decoding error: it was called "corrupt or truncated"
    except UnidentifiedImageError as error:
        raise ImageError(f"{label}: not a readable image file ({error})") from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{label}: corrupt or truncated image ({error})") from error
    return _to_rgb(picture, label)


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """Convert a fully loaded image of any supported mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _from_sixteen_bit(np.asarray(image, dtype=np.float64))
    if image.mode == "F":
        raise ImageError(f"{label}: 32-bit float images (mode F) are not supported; convert them to 8 or 16 bit")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageError(f"{label}: cannot convert image mode {image.mode!r} to RGB ({error})") from error


def _from_sixteen_bit(values: np.ndarray) -> Image.Image:
    eight_bit = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    if eight_bit.ndim == 2:
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    return Image.fromarray(eight_bit[..., :3] if eight_bit.shape[-1] >= 3 else eight_bit[..., 0]).convert("RGB")


def _from_array(image: np.ndarray | torch.Tensor, label: str, max_pixels: int | None) -> Image.Image:
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() == 3 and tensor.shape[0] in (1, 3) and tensor.shape[-1] not in (3, 4):
            tensor = tensor.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        array = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ImageError(f"{label}: expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    _check_pixels(array.shape[1], array.shape[0], label, max_pixels)
    if array.dtype == np.uint8:
        return Image.fromarray(array).convert("RGB")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"{label}: float image arrays must hold finite values in [0, 1]; pass uint8 for 0..255")
        return Image.fromarray(np.rint(array * 255).astype(np.uint8)).convert("RGB")
    if array.dtype == np.bool_:
        return Image.fromarray(array.astype(np.uint8) * 255).convert("RGB")
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0:
            raise ImageError(f"{label}: integer image arrays must not be negative, got minimum {array.min()}")
        # uint16 is 16-bit data (what a 16-bit PNG or TIFF decodes to); other integer types are 8-bit values when
        # they fit in 0..255 (NumPy's default int64 from a list) and 16-bit values when they do not.
        if array.dtype == np.uint16 or array.max() > 255:
            if array.max() > 65535:
                raise ImageError(f"{label}: integer image values above 65535 (maximum {array.max()})")
            return _from_sixteen_bit(array.astype(np.float64))
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    raise ImageError(f"{label}: unsupported array dtype {array.dtype}")


def is_image_file_name(path: Path) -> bool:
    """Whether a file name has one of the image suffixes folders are searched for."""
    return path.suffix.lower() in IMAGE_SUFFIXES
