"""Decoding of every image flavour users send: modes, bit depths, EXIF rotation, broken files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egtr.errors import DataError
from egtr.images import load_image


def photo(name: str) -> Image.Image:
    """A real photo shipped by scikit-image (astronaut 512x512, coffee 600x400, chelsea 451x300)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def test_rgb_jpeg_photo(tmp_path: Path) -> None:
    path = tmp_path / "astronaut.jpg"
    photo("astronaut").save(path, quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (512, 512)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    import skimage.data

    path = tmp_path / "camera.png"
    Image.fromarray(skimage.data.camera()).save(path)
    array = np.asarray(load_image(path))
    assert array.shape == (512, 512, 3)
    assert (array[..., 0] == skimage.data.camera()).all() and (array[..., 0] == array[..., 2]).all()


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 90, 0  # fully transparent red: alpha is dropped, not composited
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [90, 0, 0]


def test_sixteen_bit_scaled_to_eight_bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 1, 255, 4]  # value / 257, rounded


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    photo("coffee").convert("CMYK").save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (600, 400)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = 255  # left half white in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=100)
    image = load_image(path)
    assert image.size == (20, 40)  # width and height swapped
    displayed = np.asarray(image)
    assert displayed[5, 10].mean() > 200 and displayed[35, 10].mean() < 50  # stored left half is now on top
    assert load_image(path, exif_transpose=False).size == (40, 20)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    photo("chelsea").save(buffer, format="JPEG")
    path = tmp_path / "truncated.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match=r"truncated\.jpg: corrupt or truncated"):
        load_image(path)


def test_not_an_image_and_missing(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(DataError, match=r"text\.jpg: not a readable image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(DataError, match=r"missing\.jpg: image file not found"):
        load_image(tmp_path / "missing.jpg")


def test_float_images_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.ones((4, 4), dtype=np.float32), mode="F").save(path)
    with pytest.raises(DataError, match="mode F"):
        load_image(path)
