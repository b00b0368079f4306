"""`EGTRLightningModule`: the model, its criterion and the optimiser parameter groups of the paper.

One module serves both stages (reference §4): the detector pre-training (detection losses with auxiliary decoder
losses, 2 learning-rate groups, relation head frozen) and the EGTR relation training (all losses, 3 groups). The
validation loss is the criterion in evaluation mode (the dense, unsampled relation loss, reference §3.3), logged as
`validation_loss`; it drives checkpointing and early stopping as in the original.

The model sits in the attribute `model`, so Lightning checkpoints carry the official key layout (`model.` + the
EGTR state dict keys, reference §2.8) and `egtr.models.checkpoint.read_state_dict` reads them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler

from egtr.losses import EGTRCriterion
from egtr.models.checkpoint import RELATION_HEAD_PREFIXES
from egtr.models.egtr import EGTR
from egtr.training.config import TrainConfig
from egtr.training.data_checks import UnreadableImageError
from egtr.training.resume import RNG_STATE_KEY, apply_optimizer_settings, restore_rng_states, rng_states

logger = logging.getLogger(__name__)

# Substrings of parameter names, as in the original `train_egtr.py` / `pretrain_detr.py` (reference §4.1, §4.2).
BACKBONE_GROUP_KEYS = ("backbone", "reference_points", "sampling_offsets")
RELATION_HEAD_GROUP_KEYS = (
    "proj_q",
    "proj_k",
    "final_sub_proj",
    "final_obj_proj",
    "rel_predictor_gate",
    "rel_predictor",
    "connectivity_layer",
)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before the state is stepped or saved."""


def build_parameter_groups(
    model: EGTR, config: TrainConfig, lr_factor: float = 1.0, new_heads: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """AdamW parameter groups by name substring (reference §4.1, §4.2).

    Detector stage: 2 groups, `lr` for the body and heads, `lr_backbone` for names containing "backbone",
    "reference_points" or "sampling_offsets". EGTR stage: a third group, `lr_relation_head`, for the relation head.
    Unlike the original, the relation head gets its own group even when the detector was not pre-trained (the
    original then trained it with the tiny body lr, quirk Q13). Frozen parameters (`requires_grad=False`: the
    backbone stem, the frequency tables, the relation head in the detector stage) are left out.

    Args:
        model: the model.
        config: learning rates, weight decay and stage.
        lr_factor: multiplies every learning rate (the x0.1 "finetune" pass).
        new_heads: parameter names re-initialised for new labels (the class head after `init_from` with other
            classes); in the EGTR stage they train with `lr_relation_head`, as the other layers that start afresh.

    Returns:
        Groups for `torch.optim.AdamW`, each with a `name` ("body", "backbone", "relation_head") and `lr`; empty
        groups are dropped.
    """
    grouped: dict[str, list[torch.nn.Parameter]] = {"body": [], "backbone": [], "relation_head": []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if config.stage == "egtr" and (name in new_heads or any(key in name for key in RELATION_HEAD_GROUP_KEYS)):
            grouped["relation_head"].append(parameter)
        elif any(key in name for key in BACKBONE_GROUP_KEYS):
            grouped["backbone"].append(parameter)
        else:
            grouped["body"].append(parameter)
    learning_rates = {
        "body": config.lr,
        "backbone": config.lr_backbone,
        "relation_head": config.lr_relation_head,
    }
    return [
        {"name": group, "params": parameters, "lr": learning_rates[group] * lr_factor}
        for group, parameters in grouped.items()
        if parameters
    ]


def learning_rate_multiplier(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The factor on every group's learning rate at optimiser step `step` (0-based) of a pass of `total_steps`.

    Linear warm-up, then constant or a half cosine to 0 at the last step:
    `m(t) = (t + 1) / W` for `t < W`, else `1` ("constant") or `(1 + cos(pi * (t - W) / max(1, T - W))) / 2`
    ("cosine"). A closure, not a callable object, so that `LambdaLR.state_dict()` leaves it out and a resumed run
    follows its own (possibly changed) settings.
    """

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def freeze_relation_head(model: EGTR) -> None:
    """Detector pre-training: the relation head gets no loss, so it must not train (and DDP must not wait for it)."""
    for name, parameter in model.named_parameters():
        if name.startswith(RELATION_HEAD_PREFIXES):
            parameter.requires_grad_(False)


class EGTRLightningModule(pl.LightningModule):
    """Training and validation steps of either stage.

    Args:
        model: an `EGTR` whose class counts, names and (EGTR stage) frequency tables are already set.
        config: the run's `TrainConfig` (stage, learning rates, loss settings).
        lr_factor: multiplies every learning rate (1 for the main pass, `finetune_lr_factor` for the second one).
        new_heads: parameters re-initialised for new labels (see `build_parameter_groups`).
    """

    def __init__(
        self, model: EGTR, config: TrainConfig, lr_factor: float = 1.0, new_heads: frozenset[str] = frozenset()
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.lr_factor = lr_factor
        self.new_heads = new_heads
        if config.stage == "detector":
            freeze_relation_head(model)
        if config.freeze_backbone:
            model.model.backbone.requires_grad_(False)
        self.criterion = EGTRCriterion(
            config.loss,
            model.config.num_labels,
            model.config.num_rel_labels,
            use_relation_losses=config.stage == "egtr",
            num_decoder_layers=model.config.decoder_layers,
            all_reduce_num_boxes=config.all_reduce_num_boxes,
        )
        self._last_step_time: float | None = None
        self._unreadable_in_epoch = 0  # images skipped in this epoch (unreadable_images="skip")

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> Any:
        return self.model(pixel_values, pixel_mask)

    # ------------------------------------------------------------------ steps
    def _losses(self, batch: dict[str, Any], training: bool) -> dict[str, torch.Tensor]:
        outputs = self.model(batch["pixel_values"], batch["pixel_mask"])
        if training:
            # Checked before the matcher, which fails on NaN costs with a bare ValueError (a diverged model).
            matched = [outputs.logits, outputs.pred_boxes, *outputs.aux_logits, *outputs.aux_pred_boxes]
            bad = not all(bool(torch.isfinite(tensor.detach()).all()) for tensor in matched)
            self._stop_if_not_finite(bad, "model outputs (class logits or boxes)", {})
        return self.criterion(outputs, batch["labels"], training=training)

    def _readable(self, batch: dict[str, Any]) -> bool:
        """Stop on, or count and log, the batch's unreadable images (see egtr.training.data_checks); False when no
        image of the batch is left."""
        unreadable = batch.get("unreadable") or []
        if unreadable and self.config.unreadable_images == "stop":
            raise UnreadableImageError(
                f"{unreadable[0]}. Training stopped (unreadable_images=stop); fix or remove the file, or pass "
                "unreadable_images=skip to leave such images out"
            )
        for message in unreadable:
            logger.warning("skipped an unreadable image: %s", message)
        self._unreadable_in_epoch += len(unreadable)
        return bool(batch["labels"])

    def training_step(self, batch: dict[str, Any], batch_index: int) -> torch.Tensor | None:
        if not self._readable(batch):
            return None  # Lightning skips the optimiser step
        losses = self._losses(batch, training=True)
        loss = losses["loss"]
        self._stop_if_not_finite(not bool(torch.isfinite(loss.detach()).item()), "training loss", losses)
        batch_size = len(batch["labels"])
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in losses.items() if name != "loss"},
            batch_size=batch_size,
        )
        self._log_throughput(batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> torch.Tensor | None:
        if not self._readable(batch):
            return None
        losses = self._losses(batch, training=False)
        batch_size = len(batch["labels"])
        # Mean over the epoch, synchronised over DDP ranks: the number that checkpointing and early stopping read.
        self.log("validation_loss", losses["loss"], prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log_dict(
            {f"validation/{name}": value for name, value in losses.items() if name != "loss"},
            sync_dist=True,
            batch_size=batch_size,
        )
        return losses["loss"]

    def _stop_if_not_finite(self, local_bad: bool, what: str, losses: dict[str, torch.Tensor]) -> None:
        """Raise `NonFiniteLossError` on every rank if any rank's `what` is NaN/inf (before backward and step).

        The decision is reduced over DDP ranks so that all processes stop together instead of one waiting forever
        in the gradient all-reduce. `ModelCheckpoint(save_on_exception=False)` writes nothing on the way out, so the
        last checkpoint stays the last good state.
        """
        any_bad = self.trainer.strategy.reduce_boolean_decision(local_bad, all=False)
        if not any_bad:
            return
        terms = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items() if name.startswith("loss"))
        where = "this rank" if local_bad else "another rank"
        terms = f" ({terms})" if terms else ""
        raise NonFiniteLossError(
            f"non-finite {what} on {where} at epoch {self.current_epoch}, global step {self.global_step}{terms}. "
            "Training stopped; no checkpoint was written for this state. Try a lower learning rate, "
            "gradient clipping, --dtype float32 or bfloat16 instead of float16, and check the data "
            "(`egtr data validate`)"
        )

    def _log_throughput(self, batch_size: int) -> None:
        """Images per second over all ranks, from the wall time between consecutive training steps."""
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = now - self._last_step_time
            if elapsed > 0:
                images_per_second = batch_size * self.trainer.world_size / elapsed
                self.log("images_per_second", images_per_second, prog_bar=True, batch_size=batch_size)
        self._last_step_time = now

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None  # the validation pass between epochs is not training time
        self._unreadable_in_epoch = 0

    def on_train_epoch_end(self) -> None:
        if self._unreadable_in_epoch:
            logger.warning(
                "epoch %d: %d unreadable image(s) skipped (listed above)", self.current_epoch, self._unreadable_in_epoch
            )
        self.log("unreadable_images", float(self._unreadable_in_epoch))

    # ------------------------------------------------------------------ optimiser and checkpoints
    def configure_optimizers(self) -> OptimizerLRScheduler:
        groups = build_parameter_groups(self.model, self.config, self.lr_factor, self.new_heads)
        for group in groups:
            count = sum(parameter.numel() for parameter in group["params"])
            logger.info(
                "parameter group %-13s lr %.3g, %d tensors, %d parameters",
                group["name"],
                group["lr"],
                len(group["params"]),
                count,
            )
        # The fused kernel updates every tensor of a group in one pass: the same AdamW, 4-5x less time per step on
        # CPU (11 vs 42-59 ms for the demo's network; 7-10 % of its training step), where it exists. Not under
        # Lightning's mixed precision, which refuses to clip the gradients of an optimiser that unscales them itself.
        fused = self.config.precision in ("32-true", "64-true") and all(
            parameter.device.type in ("cpu", "cuda") and parameter.is_floating_point()
            for group in groups
            for parameter in group["params"]
        )
        optimizer = torch.optim.AdamW(groups, weight_decay=self.config.weight_decay, fused=fused or None)
        if self.config.lr_schedule == "constant" and not self.config.warmup_steps:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        logger.info(
            "learning rate schedule %s over %d steps, %d warm-up",
            self.config.lr_schedule,
            total_steps,
            self.config.warmup_steps,
        )
        multiplier = learning_rate_multiplier(self.config.lr_schedule, self.config.warmup_steps, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain dicts (JSON types only): the checkpoint alone says how to rebuild the model.
        checkpoint["egtr_model_config"] = self.model.config.to_dict()
        checkpoint["egtr_train_config"] = self.config.to_dict()
        checkpoint["egtr_lr_factor"] = self.lr_factor
        checkpoint[RNG_STATE_KEY] = rng_states()  # a resumed run draws what the uninterrupted one would have

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """On resume: this run's optimiser settings win over the checkpoint's (issue #13 item 1); RNGs restored."""
        learning_rates = {
            group["name"]: group["lr"] for group in build_parameter_groups(self.model, self.config, self.lr_factor)
        }
        scheduled = self.config.lr_schedule != "constant" or self.config.warmup_steps > 0
        for change in apply_optimizer_settings(checkpoint, learning_rates, self.config.weight_decay, scheduled):
            logger.info("resume: optimiser setting from this run's config, not the checkpoint: %s", change)
        if RNG_STATE_KEY in checkpoint:
            restore_rng_states(checkpoint[RNG_STATE_KEY])
