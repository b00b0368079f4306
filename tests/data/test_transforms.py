"""Resize rule, flip, normalisation, the pipelines of `make_transforms`, and collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from egtr.data import DataConfig, collate_fn, make_transforms
from egtr.data.transforms import get_size_with_aspect_ratio, hflip, make_eval_transform, resize
from egtr.preprocessing import FPS_LONGEST_EDGE, FPS_SHORTEST_EDGE, PreprocessorConfig


@pytest.mark.parametrize(
    ("width_height", "size", "max_size", "expected"),
    [
        ((640, 480), 800, 1333, (800, 1066)),  # int(800 * 640 / 480) = 1066 (truncated)
        ((451, 300), 800, 1333, (800, 1202)),
        ((2000, 500), 800, 1333, (333, 1332)),  # capped: round(1333 * 500 / 2000) = 333
        ((500, 2000), 800, 1333, (1332, 333)),
        ((600, 400), 400, 1333, (400, 600)),  # already the right size
        ((640, 480), 600, 1000, (600, 800)),  # speed-measurement resize
    ],
)
def test_get_size_with_aspect_ratio(width_height, size, max_size, expected) -> None:
    assert get_size_with_aspect_ratio(width_height, size, max_size) == expected


def _target(boxes: list[list[float]]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32)}


def test_resize_scales_boxes() -> None:
    image = Image.new("RGB", (200, 100))
    resized, target = resize(image, _target([[10, 20, 110, 60]]), 50, None)
    assert resized.size == (100, 50)
    assert target["boxes"].tolist() == [[5, 10, 55, 30]]


def test_hflip_boxes() -> None:
    image = Image.new("RGB", (200, 100))
    _, target = hflip(image, _target([[10, 20, 110, 60]]))
    assert target["boxes"].tolist() == [[90, 20, 190, 60]]


def test_eval_pipeline_output() -> None:
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[..., 1] = 255
    transforms = make_transforms(DataConfig(eval_size=50, eval_max_size=1000), train=False)
    pixel_values, target = transforms(Image.fromarray(array), _target([[0, 0, 100, 50]]))
    assert pixel_values.shape == (3, 50, 100)
    torch.testing.assert_close(
        pixel_values[:, 0, 0], torch.tensor([-0.485 / 0.229, (1 - 0.456) / 0.224, -0.406 / 0.225])
    )
    assert target["size"].tolist() == [50, 100]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]))


def test_eval_pipeline_of_a_preprocessor_config_is_the_config_eval_pipeline() -> None:
    image = Image.new("RGB", (640, 480))
    preprocessor = PreprocessorConfig(FPS_SHORTEST_EDGE, FPS_LONGEST_EDGE)
    for transforms in (
        make_eval_transform(preprocessor),
        make_transforms(DataConfig.for_evaluation(preprocessor, root="."), train=False),
    ):
        assert transforms(image, _target([[0, 0, 1, 1]]))[1]["size"].tolist() == [600, 800]


def test_train_pipeline_sizes_are_random_and_seeded() -> None:
    config = DataConfig()
    transforms = make_transforms(config, train=True)
    image = Image.new("RGB", (64, 48))
    sizes = set()
    for seed in range(30):
        torch.manual_seed(seed)
        height, width = transforms(image, _target([[0, 0, 8, 8]]))[1]["size"].tolist()
        assert width <= 1333
        sizes.add(height)
    assert len(sizes) > 4 and sizes <= set(config.train_sizes)
    torch.manual_seed(3)
    first = transforms(image, _target([[0, 0, 8, 8]]))[1]
    torch.manual_seed(3)
    again = transforms(image, _target([[0, 0, 8, 8]]))[1]
    assert torch.equal(first["boxes"], again["boxes"]) and torch.equal(first["size"], again["size"])


def test_synthetic_config_sizes() -> None:
    config = DataConfig.for_synthetic("/data/synthetic", image_size=128)
    assert config.eval_size == 128 and config.train_sizes == (96, 112, 128, 144, 160)
    assert DataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown DataConfig fields"):
        DataConfig.from_dict({"kind": "vg", "colour": 1})


def test_collate_pads_bottom_right() -> None:
    first = (torch.ones(3, 4, 6), {"image_id": torch.tensor(1)})
    second = (torch.full((3, 5, 3), 2.0), {"image_id": torch.tensor(2)})
    batch = collate_fn([first, second])
    assert batch["pixel_values"].shape == (2, 3, 5, 6)
    assert batch["pixel_mask"].tolist()[0] == [[1] * 6] * 4 + [[0] * 6]
    assert batch["pixel_mask"].tolist()[1] == [[1, 1, 1, 0, 0, 0]] * 5
    assert batch["pixel_values"][1, :, :, 3:].abs().sum() == 0
    assert [label["image_id"].item() for label in batch["labels"]] == [1, 2]
