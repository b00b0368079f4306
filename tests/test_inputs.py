"""Odd and broken inputs (issue #13, inputs): every one gets a defined answer that names it, and never takes the
other images of the same call down."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import egtr
from egtr import EGTRConfig, Predictor
from egtr.cli import main
from egtr.errors import ConfigError, ImageError
from egtr.images import TooManyPixels, load_image

ASTRONAUT = Path(egtr.__file__).parent / "assets" / "astronaut.jpg"
FAST = {"device": "cpu", "size": 96, "max_size": 160}


@pytest.fixture(scope="module")
def predictor(reference_dir) -> Predictor:
    return Predictor.from_pretrained(reference_dir / "artifact", top_k=5, **FAST)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height (grey, 8 bit) with a tiny, truncated image stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_a_huge_image_is_refused_before_decoding(tmp_path):
    huge = tmp_path / "scan.png"
    _png_header_only(huge, 18_000, 10_000)  # 180 megapixels, as declared; never decoded
    with pytest.raises(ImageError) as refused:
        load_image(huge)
    # Before: "scan.png: corrupt or truncated image (scan.png: 18000x10000 = ...)".
    assert str(refused.value) == (
        f"{huge}: 18000x10000 = 180.0 megapixels, above the limit of 100 megapixels (raise it with --max-pixels / "
        "max_pixels=)"
    )
    with pytest.raises(ImageError, match="above the limit"):
        load_image(huge.read_bytes(), name="upload")


def test_max_pixels_decides_instead_of_pillows_own_limit(tmp_path, monkeypatch):
    # Pillow refuses images over twice its process-wide Image.MAX_IMAGE_PIXELS (178,956,970 pixels by default) when
    # it opens them and again while loading a TIFF; lowering Pillow's number stands in for a --max-pixels above it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = tmp_path / "scan.tif"
    Image.new("RGB", (200, 100), "white").save(path)  # 20,000 pixels: 10 times Pillow's limit
    assert load_image(path, max_pixels=50_000).size == (200, 100)
    limit = r"scan.tif: 200x100 = 0.02 megapixels, above the limit of 0.01 megapixels \(raise it with --max-pixels"
    with pytest.raises(TooManyPixels, match=limit):
        load_image(path, max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == 1_000  # Pillow's own value is back after each decode
    huge = tmp_path / "scan.png"
    _png_header_only(huge, 18_000, 10_000)  # 180 megapixels, above Pillow's default: decoded, found truncated
    monkeypatch.undo()
    with pytest.raises(ImageError, match="corrupt or truncated") as raised:
        load_image(huge, max_pixels=200_000_000)
    assert "decompression bomb" not in str(raised.value)


def test_predict_reports_a_huge_image_and_keeps_going(reference_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    _png_header_only(images / "huge.png", 18_000, 10_000)
    (images / "photo.jpg").write_bytes(ASTRONAUT.read_bytes())
    arguments = ["predict", str(images), "--model", str(reference_dir / "artifact"), "--out", str(tmp_path / "out")]
    code = main([*arguments, "--size", "96", "--max-size", "160", "--device", "cpu", "--no-draw", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 2 images processed" in captured.out
    assert "huge.png" in captured.err and "megapixels" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "photo.json").is_file()


def test_the_pixel_limit_can_be_raised_and_lowered(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (200, 100)).save(path)
    with pytest.raises(ImageError, match=r"small\.png: 200x100"):
        load_image(path, max_pixels=10_000)
    assert load_image(path, max_pixels=None).size == (200, 100)


def test_sixteen_bit_pil_and_array_inputs_match_the_file(predictor, tmp_path):
    values = (np.asarray(load_image(ASTRONAUT).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    opened = Image.open(path)
    assert opened.mode.startswith("I")
    from_file = predictor(path)
    assert predictor(opened).triplets() == from_file.triplets()
    assert predictor(values).triplets() == from_file.triplets()
    assert predictor(path.read_bytes()).triplets() == from_file.triplets()
    assert predictor(opened).relations[0].score == pytest.approx(from_file.relations[0].score, rel=1e-6)


def test_exif_orientation_of_a_pil_image_is_applied_like_a_file(predictor, tmp_path):
    path = tmp_path / "rotated.jpg"
    picture = load_image(ASTRONAUT).resize((160, 96))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    picture.save(path, exif=exif)
    from_file = predictor(path)
    assert from_file.image_size == (160, 96)  # (height, width) as displayed
    assert predictor(Image.open(path)).triplets() == from_file.triplets()


def test_not_an_image_is_named(predictor):
    with pytest.raises(ImageError, match=r"<int>: not an image; expected a path, bytes"):
        predictor(42)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"<dict>: not an image"):
        predictor([{"a": 1}])  # type: ignore[list-item]


def test_a_config_value_of_the_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match=r"EGTRConfig.num_queries is 'sixteen' \(str\); expected int"):
        EGTRConfig.from_dict({"num_queries": "sixteen"})


def test_removed_config_fields_load_with_a_warning(caplog):
    from egtr.config import LossConfig
    from egtr.data.config import DataConfig

    with caplog.at_level("WARNING"):
        loss = LossConfig.from_dict({"extra": {}, "rel_loss_coefficient": 15.0})
        data = DataConfig.from_dict({"num_queries": 200, "root": "x"})
    assert loss.rel_loss_coefficient == 15.0 and data.root == "x"
    assert "LossConfig field 'extra' is no longer used" in caplog.text
    assert "DataConfig field 'num_queries' is no longer used" in caplog.text


def test_use_log_softmax_is_refused_rather_than_ignored():
    with pytest.raises(ConfigError, match="use_log_softmax=true is not supported"):
        EGTRConfig(use_log_softmax=True).validate()


def test_a_zero_size_is_a_one_line_error(reference_dir, tmp_path, capsys):
    code = main(["predict", str(ASTRONAUT), "--model", str(reference_dir / "artifact"), "--out", str(tmp_path)])
    capsys.readouterr()
    assert code == 0 or code == 1  # the real run works (drawings need matplotlib)
    code = main(
        ["predict", str(ASTRONAUT), "--model", str(reference_dir / "artifact"), "--out", str(tmp_path), "--size", "0"]
    )
    assert code == 2
    assert "--size: expected a positive integer, got 0" in capsys.readouterr().err


def test_the_config_file_given_as_the_model_is_explained(reference_dir, tmp_path, capsys):
    code = main(
        ["predict", str(ASTRONAUT), "--model", str(reference_dir / "artifact" / "config.json"), "--out", str(tmp_path)]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert "this is the model's configuration, not its weights" in error and "Traceback" not in error


def test_json_records_the_image_by_absolute_path(predictor, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    load_image(ASTRONAUT).resize((64, 64)).save("photo.png")
    graph = predictor("photo.png")
    assert graph.image_path == str(tmp_path / "photo.png")
    text = graph.to_json()
    monkeypatch.chdir(ASTRONAUT.parent)
    restored = egtr.SceneGraph.from_json(text)
    assert restored.image_path == str(tmp_path / "photo.png") and Path(restored.image_path).is_file()
    os.remove(tmp_path / "photo.png")
    with caplog.at_level("WARNING"):
        restored.draw()
    assert "the image of this scene graph is not there" in caplog.text


def test_an_extreme_aspect_ratio_is_reported_with_its_file(predictor, tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (4000, 3)).save(thin)  # at 96 / 160 px the shorter side rounds to 0
    with pytest.raises(ImageError, match=r"thin.png: cannot be resized for the model"):
        predictor(thin)


def test_a_file_name_that_is_not_utf8_is_processed_and_named(reference_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    odd = os.fsdecode(bytes(images) + b"/caf\xe9.jpg")  # Latin-1 bytes: not valid UTF-8
    Path(odd).write_bytes(ASTRONAUT.read_bytes())
    (images / "zz_broken.jpg").write_bytes(b"not a jpeg")
    arguments = ["predict", str(images), "--model", str(reference_dir / "artifact"), "--out", str(tmp_path / "out")]
    code = main([*arguments, "--size", "96", "--max-size", "160", "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1  # the broken file, not the odd name
    assert "1 of 2 images processed" in captured.out
    assert "zz_broken.jpg" in captured.err and "Traceback" not in captured.err
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert len(written) == 2 and all(name.endswith((".json", ".png")) for name in written)
    json.loads(next((tmp_path / "out").glob("*.json")).read_text())


# ------------------------------------------------------------------------------------------ the CLI's error handler
def test_version_and_verbose_after_the_sub_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"egtr {egtr.__version__}"
    assert main(["info", "-v"]) == 0


def test_internal_errors_exit_1_with_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import egtr.model_summary

    def broken(*args: object) -> str:
        raise KeyError("boom")

    monkeypatch.setattr(egtr.model_summary, "describe_model", broken)
    assert main(["info"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("internal error: KeyError") and "Traceback" not in error and len(error.splitlines()) == 1
    assert main(["info", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["info", "--model", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err
    assert error == f"error: {tmp_path / 'missing'}: no such file or directory\n"


def test_deprecated_spellings_still_work_with_a_note(tmp_path, capsys):
    from egtr.data.synthetic import generate_synthetic_dataset

    root = generate_synthetic_dataset(tmp_path / "world", 2, 1, 1, 64, 0)
    assert main(["data", "validate", str(root), "--kind", "vg", "--no-decode"]) == 0
    error = capsys.readouterr().err
    assert "--kind is deprecated; use --dataset" in error
    assert "a positional dataset folder is deprecated; use --data-root" in error
    assert main(["data", "validate", "--data-root", str(root), "--dataset", "vg", "--no-decode"]) == 0
    assert "deprecated" not in capsys.readouterr().err
