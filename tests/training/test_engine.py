"""End-to-end runs of the engine on the tiny synthetic world: run directory, export, finetune pass, resume logic."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_train_config

from egtr import EGTR
from egtr.models.checkpoint import RELATION_HEAD_PREFIXES
from egtr.preprocessing import load_preprocessor_config
from egtr.training import TrainConfig, checkpoint_io, pretrain_detector, run_training, train_egtr
from egtr.training.module import EGTRLightningModule


def test_two_passes_write_a_complete_run_directory(synthetic_root: Path, tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    config = tiny_train_config(synthetic_root, run_dir, max_epochs=1, finetune_epochs=1, evaluate_split="val")
    training_modes = []
    training_step = EGTRLightningModule.training_step

    def recording_step(self, *args, **kwargs):
        training_modes.append(all(module.training for module in self.model.modules()))
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(EGTRLightningModule, "training_step", recording_step)
    result = train_egtr(config)

    assert [item.name for item in result.passes] == ["main", "finetune"]
    # Every step of both passes trains every module (the finetune pass starts from a model loaded in eval mode).
    assert training_modes == [True] * 4
    assert [item.global_step for item in result.passes] == [2, 2]
    assert TrainConfig.load(run_dir / "config.json") == config
    for pass_name in ("main", "finetune"):
        assert (run_dir / pass_name / "checkpoints" / "last.ckpt").is_file()
        assert (run_dir / pass_name / "version_0" / "metrics.csv").is_file()
        assert (run_dir / pass_name / "done.json").is_file()
        # A pass directory loads like an official artifact, with the evaluation resize it was validated at.
        preprocessor = load_preprocessor_config(run_dir / pass_name)
        assert (preprocessor.shortest_edge, preprocessor.longest_edge) == (
            config.data.eval_size,
            config.data.eval_max_size,
        )
    best = Path(result.passes[0].best_checkpoint)
    assert best.name.startswith("epoch=00-validation_loss=") and best.is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["passes"][1]["name"] == "finetune"
    initialization = json.loads((run_dir / "initialization.json").read_text())
    assert initialization["frequency_statistics"]["training_relations"] > 0
    metrics = json.loads((run_dir / "evaluation_val.json").read_text())["metrics"]
    assert "(single)R@50" in metrics  # the final model was evaluated on the validation split

    # The finetune pass trains with every learning rate x 0.1 (reference §4.3).
    finetune = torch.load(run_dir / "finetune" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    learning_rates = {group["name"]: group["lr"] for group in finetune["optimizer_states"][0]["param_groups"]}
    assert learning_rates == pytest.approx({"body": 2e-5, "backbone": 2e-6, "relation_head": 2e-5})

    # The exported model: names of the data in its config, frequency statistics of the train split inside.
    model = EGTR.from_pretrained(result.model_dir)
    assert model.config.class_names[:3] == ["circle", "square", "triangle"]
    assert model.config.predicate_names[0] == "inside"
    assert model.triplet_dist.abs().sum() > 0
    best_finetune = EGTR.from_pretrained(result.passes[1].best_checkpoint)
    for key, value in best_finetune.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key

    # A finished run is not restarted by accident, and resuming it has nothing left to do.
    with pytest.raises(FileExistsError, match="resume"):
        run_training(config)
    again = run_training(config, resume=True)
    assert [item.global_step for item in again.passes] == [2, 2]


def test_detector_stage_then_egtr_stage_from_its_model(synthetic_root: Path, tmp_path: Path):
    detector_config = tiny_train_config(
        synthetic_root,
        tmp_path / "detector",
        stage="detector",
        max_epochs=1,
        loss=TrainConfig.for_detector().loss,
    )
    detector = pretrain_detector(detector_config)
    detector_model = EGTR.from_pretrained(detector.model_dir)

    relation_config = tiny_train_config(
        synthetic_root,
        tmp_path / "egtr",
        max_epochs=1,
        detector_weights=str(detector.model_dir),
        model=TrainConfig().model,  # sizes must come from the detector's own config.json
    )
    result = train_egtr(relation_config)
    report = json.loads((tmp_path / "egtr" / "initialization.json").read_text())
    # Everything but the relation head (trained anew after a detector) came from the detector's file.
    assert report["detector"]["ignored"] == {} and report["detector"]["scope"] == "detector"
    assert all(key.startswith(RELATION_HEAD_PREFIXES) for key in report["detector"]["reinitialized"])
    assert any(key.startswith("model.encoder.") for key in report["detector"]["kept"])
    trained = EGTR.from_pretrained(result.model_dir)
    assert trained.config.d_model == detector_model.config.d_model == 64


def test_step_checkpoints_refresh_the_one_last_checkpoint(synthetic_root: Path, tmp_path: Path, monkeypatch):
    saved: list[tuple[str, int]] = []
    real_save = checkpoint_io.atomic_torch_save

    def spy(payload, path):
        saved.append((Path(path).name, payload["global_step"]))
        real_save(payload, path)

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", spy)
    config = tiny_train_config(
        synthetic_root, tmp_path / "run", max_epochs=1, limit_train_batches=3, checkpoint_every_n_steps=1
    )
    run_training(config)
    last_steps = [step for name, step in saved if name == "last.ckpt"]
    assert last_steps[:3] == [1, 2, 3]  # refreshed inside the epoch, not only at its end
    files = sorted(path.name for path in (tmp_path / "run" / "main" / "checkpoints").iterdir())
    assert files[-1] == "last.ckpt" and len(files) == 2 and files[0].startswith("epoch=00-")


def _rising_validation_loss(self, batch, batch_index):
    loss = torch.tensor(float(self.current_epoch))  # 0, 1, 2, ...: no epoch after the first improves
    self.log("validation_loss", loss, batch_size=len(batch["labels"]))
    return loss


@pytest.mark.parametrize(
    ("overrides", "final_epochs"),
    [
        ({"max_epochs": 3, "finetune_epochs": 2}, (3, 2)),  # the last epochs did not improve
        ({"max_epochs": 4, "early_stopping_patience": 1}, (2,)),  # early stopping after a worse epoch
        ({"max_epochs": 3, "val_every_n_epochs": 2}, (3,)),  # the last epoch is not a validation epoch
    ],
    ids=["no-improvement", "early-stopping", "val-every-2-epochs"],
)
def test_last_checkpoint_holds_the_final_state_when_validation_did_not_improve(
    synthetic_root: Path, tmp_path: Path, monkeypatch, overrides, final_epochs
):
    # Lightning's ModelCheckpoint writes save_last at an epoch end only together with a new best checkpoint; a
    # validation loss that rises every epoch makes the first validated epoch the only best one.
    monkeypatch.setattr(EGTRLightningModule, "validation_step", _rising_validation_loss)
    config = tiny_train_config(synthetic_root, tmp_path / "run", **{"finetune_epochs": 0, **overrides})
    result = run_training(config)

    assert [item.epochs for item in result.passes] == list(final_epochs)
    for item, epochs in zip(result.passes, final_epochs):
        last = torch.load(
            tmp_path / "run" / item.name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        assert (last["global_step"], last["epoch"]) == (2 * epochs, epochs - 1), item.name
        # The best checkpoint is still the first validated epoch's.
        assert Path(item.best_checkpoint).name.startswith(f"epoch={config.val_every_n_epochs - 1:02d}-")


def test_a_run_stopped_after_epochs_without_improvement_resumes_after_them(
    synthetic_root: Path, tmp_path: Path, monkeypatch
):
    class Stop(Exception):
        pass

    def stop_before_epoch_2(self):
        if self.current_epoch == 2:
            raise Stop  # like a kill between epochs: the epoch-end checkpoints of epochs 0 and 1 are written

    monkeypatch.setattr(EGTRLightningModule, "validation_step", _rising_validation_loss)
    monkeypatch.setattr(EGTRLightningModule, "on_train_epoch_start", stop_before_epoch_2)
    run_dir = tmp_path / "run"
    config = tiny_train_config(synthetic_root, run_dir, max_epochs=3)
    with pytest.raises(Stop):
        run_training(config)
    last = torch.load(run_dir / "main" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4  # epoch 1 did not improve, and is in last.ckpt all the same

    monkeypatch.undo()
    monkeypatch.setattr(EGTRLightningModule, "validation_step", _rising_validation_loss)
    result = run_training(config, resume=True)
    assert result.passes[0].global_step == 6
    with open(run_dir / "main" / "version_1" / "metrics.csv", newline="") as handle:
        resumed_steps = sorted({int(row["step"]) for row in csv.DictReader(handle) if row.get("train_loss")})
    assert resumed_steps == [4, 5]  # only epoch 2 trained again, nothing repeated
