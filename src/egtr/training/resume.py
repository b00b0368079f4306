"""What `--resume` restores and what it takes from the new command line (issue #13 items 1, 4 and 5).

- The shuffle order is a function of (seed, epoch) (`EpochShuffleSampler`), and the random number generators of
  Python, NumPy and torch are saved in every checkpoint and restored with it: a run interrupted at an epoch end and
  resumed trains exactly as the uninterrupted run (bit for bit on CPU), instead of replaying epoch 0's order.
- Optimiser settings are the command line's: the learning rates and weight decay of the resumed run's config are
  written into the restored optimiser state (its moments are kept), so that "lower the learning rate, then resume"
  works. Every setting that differs from the saved config is logged.
- Files a kill can leave in a checkpoint directory are removed before the pass continues: temporaries of an
  interrupted write, and "best" checkpoints that the restored `last.ckpt` does not know (a kill between writing a new
  best file and deleting the old one).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from egtr.fileio import remove_stale_temporaries

logger = logging.getLogger(__name__)

RNG_STATE_KEY = "egtr_rng_states"


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of `range(size)` drawn from `seed + epoch` only (Lightning calls `set_epoch`).

    Unlike `RandomSampler` (which draws from the global generator), the order of epoch k does not depend on what ran
    before in this process, so a resumed run sees the order the uninterrupted run saw.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def rng_states() -> dict[str, Any]:
    """The states of the generators training draws from (augmentation, relation sampling, dropout)."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state_as_tensors(np.random.get_state(legacy=True)),  # type: ignore[arg-type]
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `rng_states` (a CUDA state is restored only where CUDA is in use with as many devices)."""
    random.setstate(_as_python_state(states["python"]))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(position), int(has_gauss), float(cached_gaussian)))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state_as_tensors(state: tuple) -> list:
    # Tensors and plain values only: checkpoints are read with torch.load(weights_only=True), which refuses arrays.
    name, keys, position, has_gauss, cached_gaussian = state
    return [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian]


def _as_python_state(state: Any) -> tuple:
    # torch.load(weights_only=True) may give the nested tuples back as lists.
    version, internal, gauss = state
    return version, tuple(internal), gauss


def apply_optimizer_settings(
    checkpoint: dict[str, Any], learning_rates: dict[str, float], weight_decay: float, scheduled: bool = False
) -> list[str]:
    """Write this run's learning rates (by group name) and weight decay into a checkpoint's optimiser state.

    Args:
        checkpoint: a Lightning checkpoint dict, changed in place before Lightning loads it into the optimiser.
        learning_rates: group name ("body", "backbone", "relation_head") -> learning rate for this pass.
        weight_decay: this run's AdamW weight decay.
        scheduled: this run has a learning-rate schedule (`TrainConfig.lr_schedule` / `warmup_steps`). A schedule
            keeps each group's base rate in `base_lrs` and its `lr` at base x the factor of the saved step: with a
            schedule the new base gets that factor; without one the rate is the base itself again.

    Returns:
        One line per changed value, e.g. "body lr 0.0002 -> 1e-05".
    """
    changes: list[str] = []
    saved_schedules = [state for state in checkpoint.get("lr_schedulers", []) if "base_lrs" in state]
    for state in checkpoint.get("optimizer_states", []):
        for index, group in enumerate(state.get("param_groups", [])):
            name = group.get("name")
            if name in learning_rates:
                base = group.get("initial_lr", group["lr"]) if saved_schedules else group["lr"]
                factor = group["lr"] / base if scheduled and saved_schedules and base else 1.0
                rate = learning_rates[name]
                if base != rate:
                    changes.append(f"{name} lr {base:g} -> {rate:g}")
                elif group["lr"] != rate * factor:
                    changes.append(f"{name} lr {group['lr']:g} -> {rate:g} (no learning-rate schedule in this run)")
                if group["lr"] != rate * factor or base != rate:
                    group["lr"] = rate * factor
                    group["initial_lr"] = rate
                for saved in saved_schedules:
                    saved["base_lrs"][index] = rate
            if "weight_decay" in group and group["weight_decay"] != weight_decay:
                changes.append(f"{name} weight_decay {group['weight_decay']:g} -> {weight_decay:g}")
                group["weight_decay"] = weight_decay
    return changes


def config_changes(saved: Mapping[str, object], current: Mapping[str, object], prefix: str = "") -> list[str]:
    """Settings that differ between two `TrainConfig.to_dict()` results, as "key: old -> new" lines."""
    changes: list[str] = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(config_changes(old, new, f"{prefix}{key}."))
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def clean_checkpoint_directory(directory: Path, last_checkpoint: Path | None) -> None:
    """Remove what a killed run can leave in `directory` (see the module docstring); the run's lock must be held.

    Args:
        directory: a pass's `checkpoints/` directory.
        last_checkpoint: the `last.ckpt` the pass resumes from (None: the pass starts afresh, so every checkpoint
            file but this one is kept, as there is nothing to compare with).
    """
    if not directory.is_dir():
        return
    remove_stale_temporaries(directory)
    if last_checkpoint is None or not last_checkpoint.is_file():
        return
    payload = torch.load(last_checkpoint, map_location="cpu", weights_only=True)
    known = {last_checkpoint.name}
    for key, state in payload.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and isinstance(state, dict):
            known.update(Path(path).name for path in state.get("best_k_models", {}) if path)
            if state.get("best_model_path"):
                known.add(Path(state["best_model_path"]).name)
    for orphan in sorted(path for path in directory.glob("*.ckpt") if path.name not in known):
        logger.warning("removing %s: a checkpoint the resumed state does not know (left by a killed run)", orphan)
        orphan.unlink()
