"""The final model export of a training run: weights, config and the preprocessing the run validated with."""

from __future__ import annotations

from pathlib import Path

from tests.training.conftest import IMAGE_SIZE, tiny_model_config

from egtr import EGTR
from egtr.data import DataConfig
from egtr.inference import Predictor
from egtr.preprocessing import PreprocessorConfig, load_preprocessor_config
from egtr.training.engine import export_model


def test_export_records_the_validation_resize_and_normalisation(tmp_path: Path):
    # Random training sizes around 64 px; validation at 64 px with the longer side <= 128.
    data = DataConfig.for_synthetic(".", image_size=IMAGE_SIZE, image_mean=(0.5, 0.5, 0.5), image_std=(0.3, 0.3, 0.3))
    assert data.train_sizes != (data.eval_size,)
    export_model(EGTR(tiny_model_config()), tmp_path / "model", data)

    recorded = load_preprocessor_config(tmp_path / "model")
    assert recorded == PreprocessorConfig(IMAGE_SIZE, 2 * IMAGE_SIZE, (0.5, 0.5, 0.5), (0.3, 0.3, 0.3))
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    predictor = Predictor.from_pretrained(tmp_path / "model", device="cpu")
    assert (predictor.preprocessor.shortest_edge, predictor.preprocessor.longest_edge) == (IMAGE_SIZE, 2 * IMAGE_SIZE)
