"""VG (RelTR layout) loading through the real loader, checked against hand-computed targets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from egtr.data import DataConfig, DataError, VisualGenomeDataset, build_dataset, collate_fn

from .conftest import VG_CLASSES, VG_PREDICATES, vg_specs, write_vg


def _eval_dataset(root: Path, split: str) -> VisualGenomeDataset:
    return build_dataset(DataConfig(kind="vg", root=str(root)), split, train=False)


def test_names_order_and_sizes(vg_root: Path) -> None:
    dataset = _eval_dataset(vg_root, "train")
    assert dataset.class_names == VG_CLASSES
    assert dataset.predicate_names == VG_PREDICATES
    assert [annotation.image_id for annotation in dataset.annotations] == [3, 7]  # ordered by id
    pixel_values, target = dataset[1]  # coffee, 600 x 400 (w x h)
    assert target["image_id"].item() == 7 and target["image_id"].shape == ()
    assert target["orig_size"].tolist() == [400, 600]
    assert target["size"].tolist() == [800, 1200]  # shorter side 800, 1200 < 1333
    assert pixel_values.shape == (3, 800, 1200) and pixel_values.dtype == torch.float32
    assert target["class_labels"].tolist() == [1, 3]  # 1-based category ids minus one
    assert target["relations"].tolist() == [[0, 1, 1]]  # predicate 2 (1-based) -> 1
    expected = torch.tensor([[250 / 600, 190 / 400, 300 / 600, 280 / 400], [300 / 600, 350 / 400, 1.0, 100 / 400]])
    torch.testing.assert_close(target["boxes"], expected, atol=1e-6, rtol=0)
    assert target["boxes"].dtype == torch.float32 and target["relations"].dtype == torch.int64


def test_degenerate_boxes_remap_relations(vg_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Q18 fix: an empty box (index 1) and a box clipped to nothing (index 3) are dropped; indices are remapped."""
    dataset = _eval_dataset(vg_root, "train")
    with caplog.at_level(logging.WARNING, logger="egtr.data.targets"):
        _, target = dataset[0]  # chelsea, 451 x 300
    assert target["size"].tolist() == [800, 1202]  # int(800 * 451 / 300)
    assert target["class_labels"].tolist() == [2, 3]  # objects 0 (cat) and 2 (table) remain
    # [0,2,2] -> [0,1,1]; [1,0,3] dropped; [2,0,3] -> [1,0,2]; [0,3,3] dropped; [0,2,3] -> [0,1,2]; sorted
    assert target["relations"].tolist() == [[0, 1, 1], [0, 1, 2], [1, 0, 2]]
    expected = torch.tensor(
        [[200 / 451, 150 / 300, 300 / 451, 260 / 300], [425.5 / 451, 275 / 300, 51 / 451, 50 / 300]]
    )  # table clipped to x <= 451, y <= 300
    torch.testing.assert_close(target["boxes"], expected, atol=1e-6, rtol=0)
    assert any("dropped 2 empty/crowd box(es) and the 2 relation(s)" in message for message in caplog.messages)


def test_training_pipeline_flip_and_resize(vg_root: Path) -> None:
    config = DataConfig(
        kind="vg", root=str(vg_root), train_sizes=(320,), train_intermediate_prob=0.0, horizontal_flip_prob=1.0
    )
    _, target = build_dataset(config, "train", train=True)[1]  # coffee, flipped, shorter side 320
    assert target["size"].tolist() == [320, 480]
    expected = torch.tensor([[350 / 600, 190 / 400, 300 / 600, 280 / 400], [300 / 600, 350 / 400, 1.0, 100 / 400]])
    torch.testing.assert_close(target["boxes"], expected, atol=1e-6, rtol=0)
    assert target["relations"].tolist() == [[0, 1, 1]]  # the flip keeps predicates


def test_collate_real_batch(vg_root: Path) -> None:
    dataset = _eval_dataset(vg_root, "train")
    batch = collate_fn([dataset[0], dataset[1]])
    assert batch["pixel_values"].shape == (2, 3, 800, 1202)
    assert batch["pixel_mask"].dtype == torch.int64
    assert batch["pixel_mask"][1, :, :1200].all() and not batch["pixel_mask"][1, :, 1200:].any()
    assert (batch["pixel_values"][1, :, :, 1200:] == 0).all()
    assert [label["image_id"].item() for label in batch["labels"]] == [3, 7]


def test_generated_image_pixels_normalised(vg_root: Path) -> None:
    dataset = build_dataset(DataConfig(kind="vg", root=str(vg_root), eval_size=32, eval_max_size=100), "test", False)
    pixel_values, target = dataset[0]  # uniform grey 200, 96 x 64 -> 48 x 32
    assert target["size"].tolist() == [32, 48]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (200 / 255 - mean) / std
    torch.testing.assert_close(pixel_values[:, 5, 7], expected, atol=1e-5, rtol=0)


def test_images_without_relations_and_missing_rel_entry(tmp_path: Path) -> None:
    specs = vg_specs()
    root = write_vg(tmp_path / "vg", specs, VG_CLASSES, VG_PREDICATES)
    rel = json.loads((root / "rel.json").read_text())
    del rel["test"]["12"]  # an image absent from rel.json has no relations
    (root / "rel.json").write_text(json.dumps(rel))
    _, target = _eval_dataset(root, "test")[0]
    assert target["relations"].shape == (0, 3)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda coco, rel: coco.update(images=[]), "the 'images' list is empty"),
        (lambda coco, rel: coco["annotations"][0].update(category_id=9), "class 9; train.json categories has 1..4"),
        (lambda coco, rel: rel["train"]["7"].append([0, 5, 1]), "[0, 5, 1] indexes an object outside 0..1"),
        # The values as the files write them (1-based predicates), in the file that holds them (issue #13 item 8).
        (
            lambda coco, rel: rel["train"]["7"].append([0, 1, 4]),
            "rel.json, train['7']: relation 1 [0, 1, 4] has "
            "predicate 4; rel.json rel_categories (after __background__) has 1..3",
        ),
        (
            lambda coco, rel: rel["train"]["7"].append([0, 1, 0]),
            "rel.json, train['7']: relation 1 [0, 1, 0] has predicate 0;",
        ),
        (lambda coco, rel: coco["images"].append(dict(coco["images"][0])), "duplicate image id"),
        (lambda coco, rel: coco["annotations"][0].pop("bbox"), "missing field 'bbox'"),
        (lambda coco, rel: coco["images"][1].update(id="x"), "images[1]: field 'id' must be an integer"),
        (lambda coco, rel: coco["annotations"][1].update(category_id="2"), "field 'category_id' must be an integer"),
    ],
)
def test_bad_annotations_raise_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    root = write_vg(tmp_path / "vg", vg_specs(), VG_CLASSES, VG_PREDICATES)
    coco = json.loads((root / "train.json").read_text())
    rel = json.loads((root / "rel.json").read_text())
    mutate(coco, rel)
    (root / "train.json").write_text(json.dumps(coco))
    (root / "rel.json").write_text(json.dumps(rel))
    with pytest.raises(DataError, match=r"train\.json|rel\.json") as error:
        _eval_dataset(root, "train")
    assert message in str(error.value)


def test_malformed_json_names_the_file(vg_root: Path) -> None:
    (vg_root / "val.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"val\.json: malformed JSON at line 1"):
        _eval_dataset(vg_root, "val")


def test_corrupt_image_error_names_file(vg_root: Path) -> None:
    (vg_root / "images" / "coffee.jpg").write_bytes(b"not an image at all")
    dataset = _eval_dataset(vg_root, "train")
    with pytest.raises(DataError, match=r"coffee\.jpg"):
        dataset[1]


def test_kind_is_explicit() -> None:
    with pytest.raises(ValueError, match="kind"):
        build_dataset(DataConfig(kind="visual_genome", root="x"), "train", train=False)


def test_worker_error_reaches_the_main_process_with_the_file_name(vg_root: Path) -> None:
    (vg_root / "images" / "chelsea.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    dataset = _eval_dataset(vg_root, "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collate_fn)
    with pytest.raises(DataError, match=r"chelsea\.jpg"):
        next(iter(loader))
