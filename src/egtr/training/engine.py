"""`pretrain_detector` and `train_egtr`: the two training stages of EGTR on PyTorch Lightning (reference §4).

Each stage runs two passes, as the original did: `main` (`max_epochs`), then `finetune` (`finetune_epochs`) from the
best `main` checkpoint with every learning rate times `finetune_lr_factor` (reference §4.1, §4.3). Both passes
checkpoint on the validation loss (best + `last.ckpt`), stop early on it, and log to CSV and TensorBoard.

Run directory (`config.output_dir`):

    .egtr.lock               held (flock) by the process training in the directory (egtr.runlock)
    config.json              the TrainConfig (JSON)
    initialization.json      per tensor: kept from the backbone / detector / init_from file or re-initialised (why);
                             frequency-statistics summary
    main/config.json         the model config: `EGTR.from_pretrained("main")` loads the best checkpoint of the pass
    main/checkpoints/        epoch=EE-validation_loss=V.VVVV.ckpt (best) and last.ckpt, written atomically
    main/version_K/          metrics.csv (+ TensorBoard events); K counts the (re)starts of the pass
    main/done.json           written when the pass is complete (resume skips the pass)
    finetune/...             the same for the second pass
    model/                   the final model, `EGTR.from_pretrained(run_dir / "model")`, with the preprocessing of
                             the validation split (`preprocessor_config.json`, used by `Predictor` and the CLI)
    evaluation_val.json      EGTR stage: R@K / mR@K of the final model on `evaluate_split` (default val)
    summary.json             best validation losses, steps and epochs of each pass

`resume=True` continues the first unfinished pass from its `last.ckpt` (weights, optimiser, epoch, step, random
states), with the learning rates and weight decay of `config` (see `egtr.training.resume`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from egtr.config import EGTRConfig
from egtr.data import frequency_bias_tables, load_or_compute_triplet_counts
from egtr.data.config import DataConfig
from egtr.data.statistics import count_triplets
from egtr.fileio import read_json, write_json
from egtr.models.checkpoint import CONFIG_NAME, read_checkpoint
from egtr.models.egtr import EGTR
from egtr.runlock import RunLock
from egtr.training.checkpoint_io import AtomicCheckpointIO, BestAndLastCheckpoint
from egtr.training.config import TrainConfig
from egtr.training.data_checks import check_dataset_before_training
from egtr.training.datamodule import SceneGraphDataModule
from egtr.training.initialization import load_backbone_weights, load_initial_weights, new_class_head
from egtr.training.module import EGTRLightningModule
from egtr.training.progress import ProgressLines
from egtr.training.resume import clean_checkpoint_directory, config_changes

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
INITIALIZATION_NAME = "initialization.json"
PASSES = ("main", "finetune")


@dataclass
class PassResult:
    """Outcome of one pass (`main` or `finetune`)."""

    name: str
    best_checkpoint: str | None  # best validation_loss checkpoint, None without validation/checkpointing
    best_validation_loss: float | None
    epochs: int  # epochs completed
    global_step: int  # optimiser steps taken in this pass


@dataclass
class TrainResult:
    """Outcome of a training run: where everything is, and how each pass went."""

    run_dir: Path
    model_dir: Path | None  # the exported final model (rank 0 only; None on other ranks)
    passes: list[PassResult]


# ---------------------------------------------------------------------- public entry points
def pretrain_detector(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Stage 0: train the Deformable DETR detector on the scene-graph dataset (reference §4.1).

    Args:
        config: a detector-stage config (`TrainConfig.for_detector(...)`); `backbone_weights` and/or
            `detector_weights` (e.g. COCO Deformable DETR) initialise it.
        resume: continue the run in `config.output_dir` from its last checkpoint.
    """
    if config.stage != "detector":
        raise ValueError("pretrain_detector needs stage='detector' (use TrainConfig.for_detector())")
    return run_training(config, resume)


def train_egtr(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Stages 1-2: EGTR relation training from a pre-trained detector, then the x0.1 pass (reference §4.2, §4.3).

    Args:
        config: an EGTR-stage config; `detector_weights` names the pre-trained detector (our `pretrain-detector`
            run's `model/` directory or the released pre-trained DETR directory). Without it the detector starts
            from `backbone_weights` or from scratch.
        resume: continue the run in `config.output_dir` from its last checkpoint.
    """
    if config.stage != "egtr":
        raise ValueError("train_egtr needs stage='egtr'")
    return run_training(config, resume)


def run_training(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Run every pass of `config.stage` in `config.output_dir` and export the final model (see module docstring).

    The run directory is locked for the whole run (`egtr.runlock.RunLock`): a second run or resume into it raises
    `RunLockedError` naming the holder. A `fast_dev_run` (smoke test) writes nothing there, so it takes no lock and
    exports no model (`TrainResult.model_dir` is None), as docs/training.md says.
    """
    config.validate()
    run_dir = Path(config.output_dir)
    if config.fast_dev_run or getattr(rank_zero_only, "rank", 0) != 0:  # DDP ranks > 0 run inside rank 0's lock
        return _run_training_locked(config, resume, run_dir)
    with RunLock(run_dir, f"egtr training ({config.stage} stage)"):
        return _run_training_locked(config, resume, run_dir)


def _run_training_locked(config: TrainConfig, resume: bool, run_dir: Path) -> TrainResult:
    is_rank_zero = getattr(rank_zero_only, "rank", 0) == 0
    writes = is_rank_zero and not config.fast_dev_run  # one process writes; a smoke test writes nothing
    _start_run(config, resume, run_dir, writes)
    # Before the model is built: its initial weights are drawn from the seed (the same seed gives the same run).
    pl.seed_everything(config.seed, workers=True)
    datamodule = SceneGraphDataModule(
        config.data,
        config.batch_size,
        config.eval_batch_size,
        config.num_workers,
        num_queries=config.model.num_queries,
        seed=config.seed,
    )
    datamodule.setup()
    results: list[PassResult] = []
    model: EGTR | None = None
    # A class head re-initialised for new labels trains with the relation head's rate (see build_parameter_groups).
    new_heads = new_class_head(_read_json_or_empty(run_dir / INITIALIZATION_NAME)) if resume else frozenset()
    passes = [("main", config.max_epochs, 1.0)]
    if config.finetune_epochs > 0:
        passes.append(("finetune", config.finetune_epochs, config.finetune_lr_factor))
    for pass_name, max_epochs, lr_factor in passes:
        pass_dir = run_dir / pass_name
        done_file = pass_dir / "done.json"
        if resume and done_file.is_file():
            results.append(PassResult(**read_json(done_file)))
            logger.info("pass %s already complete (%s), skipping", pass_name, done_file)
            continue
        last_checkpoint = pass_dir / "checkpoints" / LAST_CHECKPOINT
        resume_from = last_checkpoint if resume and last_checkpoint.is_file() else None
        if is_rank_zero:  # what a SIGKILL can leave: temporary files, a best checkpoint last.ckpt does not know
            clean_checkpoint_directory(last_checkpoint.parent, resume_from)
        if resume_from is not None:
            model = EGTR(read_checkpoint(resume_from).config)  # fit() restores the weights
            logger.info("resuming pass %s from %s", pass_name, resume_from)
        elif not results:
            model, report = initial_model_and_report(config, datamodule)
            if writes:
                write_json(run_dir / INITIALIZATION_NAME, report)
            new_heads = new_class_head(report)
        else:
            model = _model_after(results[-1], model)
        result, model = _run_pass(config, datamodule, model, pass_name, max_epochs, lr_factor, resume_from, new_heads)
        results.append(result)
        if writes:
            write_json(done_file, dataclasses.asdict(result))
    model = _model_after(results[-1], model)
    model_dir = None
    if writes:
        model_dir = run_dir / "model"
        export_model(model, model_dir, config.data)
        write_json(run_dir / "summary.json", {"passes": [dataclasses.asdict(result) for result in results]})
        logger.info("final model written to %s", model_dir)
        if config.stage == "egtr" and config.evaluate_split:
            _evaluate(config, model, run_dir)
    return TrainResult(run_dir=run_dir, model_dir=model_dir, passes=results)


def _start_run(config: TrainConfig, resume: bool, run_dir: Path, writes: bool) -> None:
    """Before the data module and the model: refuse to train over a run unless resuming, check the data, and (the
    writing process) create the run directory and save the config, logging what a resume changed."""
    if not resume and (run_dir / "main" / "checkpoints" / LAST_CHECKPOINT).exists():
        raise FileExistsError(
            f"{run_dir} already holds a training run; pass resume=True (--resume) to continue it, or choose "
            "another output directory"
        )
    if config.check_data:
        check_dataset_before_training(config.data)  # before anything is written: errors stop with the full report
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (run_dir / CONFIG_NAME).is_file():
            for change in config_changes(TrainConfig.load(run_dir / CONFIG_NAME).to_dict(), config.to_dict()):
                logger.info("resume: setting changed from the saved config.json: %s", change)
        config.save(run_dir / CONFIG_NAME)


def export_model(model: EGTR, model_dir: Path, data: DataConfig) -> None:
    """Write the final model with the preprocessing it was validated with: the run's evaluation resize (not the
    random training sizes) and its normalisation, so that `egtr predict` / `evaluate` / `benchmark` need no
    `--size` for a model trained at another size than the paper's."""
    model.save_pretrained(model_dir, preprocessor=data.preprocessor())


def _evaluate(config: TrainConfig, model: EGTR, run_dir: Path) -> None:
    """Scene-graph metrics of the final model on `config.evaluate_split` (as the original did after training)."""
    from egtr.model_evaluation import EvaluationSettings, evaluate_model

    assert config.evaluate_split is not None  # called only when an evaluation split is set
    use_cuda = config.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    settings = EvaluationSettings(
        split=config.evaluate_split,
        batch_size=config.eval_batch_size or config.batch_size,
        num_workers=config.num_workers,
        device="cuda" if use_cuda else "cpu",
        progress=config.progress_bar,
    )
    report = evaluate_model(model, config.data, settings=settings)
    path = report.save_json(run_dir / f"evaluation_{config.evaluate_split}.json", model.config.predicate_names)
    logger.info("evaluation on %s written to %s\n%s", config.evaluate_split, path, report.format_table())


# ---------------------------------------------------------------------- models
def _architecture(config: TrainConfig) -> EGTRConfig:
    """The model sizes: from the initial model (`init_from`) or our own pre-trained detector's config.json when
    there is one, else `config.model`."""
    architecture = None
    if config.init_from:
        # Any layout `--init-from` accepts (our directory, the official artifact, a .ckpt) has a config.
        architecture = read_checkpoint(config.init_from).config
        logger.info("architecture from the initial model %s", config.init_from)
    elif config.detector_weights:
        config_path = Path(config.detector_weights) / CONFIG_NAME
        if config_path.is_file() and "egtr_config" in read_json(config_path):
            architecture = EGTRConfig.from_json(config_path)
            logger.info("architecture from the pre-trained detector %s", config_path)
    if architecture is None:
        return config.model
    # Only the sizes come from the file; the relation options are this run's.
    relation_fields = (
        "use_freq_bias",
        "use_log_softmax",
        "freq_bias_eps",
        "logit_adjustment",
        "logit_adj_tau",
        "dense_relation_head",
        "freeze_backbone_stem",
    )
    return dataclasses.replace(architecture, **{name: getattr(config.model, name) for name in relation_fields})


def build_initial_model(config: TrainConfig, datamodule: SceneGraphDataModule, report_dir: Path | None = None) -> EGTR:
    """The model a run starts from: sizes, class/predicate names of the data, initial weights, frequency tables.

    Args:
        config: the run's config (architecture, `backbone_weights`, `detector_weights`, `init_from`, stage).
        datamodule: a set-up data module; its training split gives the names and (EGTR stage) the statistics.
        report_dir: where to write `initialization.json` (None: nowhere, e.g. on DDP ranks other than 0).
    """
    model, report = initial_model_and_report(config, datamodule)
    if report_dir is not None:
        write_json(report_dir / INITIALIZATION_NAME, report)
    return model


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def initial_model_and_report(config: TrainConfig, datamodule: SceneGraphDataModule) -> tuple[EGTR, dict[str, Any]]:
    """`build_initial_model` without writing: the model and the content of `initialization.json`."""
    datamodule.setup()
    train_dataset = datamodule.train_dataset
    assert train_dataset is not None  # setup() built it
    architecture = _architecture(config)
    model_config = dataclasses.replace(
        architecture,
        num_labels=train_dataset.num_labels,
        num_rel_labels=train_dataset.num_rel_labels,
        class_names=list(train_dataset.class_names),
        predicate_names=list(train_dataset.predicate_names),
    ).validate()
    model = EGTR(model_config)
    if config.stage == "egtr" and not (config.detector_weights or config.init_from):
        logger.warning(
            "no detector_weights: the detector starts from %s, but the EGTR-stage learning rates (lr=%g, "
            "lr_backbone=%g) assume a pre-trained detector; run `egtr pretrain-detector` first or raise them",
            "the backbone weights" if config.backbone_weights else "scratch",
            config.lr,
            config.lr_backbone,
        )
    report: dict[str, Any] = {}
    if config.backbone_weights:
        report["backbone"] = dataclasses.asdict(load_backbone_weights(model, config.backbone_weights))
        report["backbone"]["path"] = str(config.backbone_weights)
    # The initial model of a fine-tuning run (`init_from`) or the pre-trained detector: one loader, one policy.
    for name, path in (("init_from", config.init_from), ("detector", config.detector_weights)):
        if path:
            scope = "model" if name == "init_from" and config.stage == "egtr" else "detector"
            loaded = load_initial_weights(model, path, scope=scope, reinitialize=config.reinitialize)
            report[name] = {**dataclasses.asdict(loaded), "path": str(path)}
    if config.stage == "egtr" and model_config.use_freq_bias:
        # Reference §4.2: statistics over the whole training split before training. Only rank 0 uses the cache
        # next to the dataset, so that DDP ranks never write the same file at once.
        if getattr(rank_zero_only, "rank", 0) == 0:
            counts = load_or_compute_triplet_counts(train_dataset)
        else:
            counts = count_triplets(train_dataset, model_config.num_labels, model_config.num_rel_labels)
        model.set_frequency_tables(*frequency_bias_tables(counts, eps=model_config.freq_bias_eps))
        report["frequency_statistics"] = {
            "training_relations": int(counts.sum()),
            "distinct_triplets": int((counts > 0).sum()),
        }
    return model, report


def _model_after(result: PassResult, model: EGTR | None) -> EGTR:
    """The best model of a finished pass: its best checkpoint, else the model as the pass left it."""
    if result.best_checkpoint and Path(result.best_checkpoint).is_file():
        return EGTR.from_pretrained(result.best_checkpoint)
    if model is None:
        raise RuntimeError(f"pass {result.name} left neither a best checkpoint nor a model")
    return model


# ---------------------------------------------------------------------- one pass
def _loggers(config: TrainConfig, run_dir: Path, pass_name: str) -> list[Logger]:
    # Flushed at every logging step, so that a killed run keeps its metrics up to its last step.
    loggers: list[Logger] = [
        CSVLogger(save_dir=run_dir, name=pass_name, flush_logs_every_n_steps=config.log_every_n_steps)
    ]
    try:
        import tensorboard  # noqa: F401  (TensorBoardLogger also accepts tensorboardX; we ask for the real one)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=run_dir, name=pass_name, version=loggers[0].version))
    except ImportError:
        logger.warning("tensorboard is not installed: metrics go to CSV only (pip install 'egtr[train]')")
    return loggers


def build_trainer(
    config: TrainConfig, pass_dir: Path, max_epochs: int, extra_callbacks: Sequence[Callback] = ()
) -> pl.Trainer:
    """The Lightning Trainer of one pass: checkpointing, early stopping, loggers, DDP and precision settings."""
    checkpoint_dir = pass_dir / "checkpoints"
    callbacks: list[Callback] = []
    checkpointing = not config.fast_dev_run  # a smoke test must leave nothing that --resume would pick up
    if checkpointing:
        # Not a plain ModelCheckpoint: Lightning then refreshes last.ckpt only when validation_loss improves,
        # so a pass could end with a last.ckpt epochs behind its final state (see BestAndLastCheckpoint).
        callbacks.append(
            BestAndLastCheckpoint(
                dirpath=checkpoint_dir,
                filename="{epoch:02d}-{validation_loss:.4f}",
                monitor="validation_loss",
                mode="min",
                save_top_k=1,
                save_last=True,
                enable_version_counter=False,  # the step callback below writes the same last.ckpt
            )
        )
    if config.checkpoint_every_n_steps and checkpointing:
        # Refreshes last.ckpt inside long epochs; keeps no other file.
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoint_dir,
                every_n_train_steps=config.checkpoint_every_n_steps,
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
            )
        )
    if config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="validation_loss", mode="min", patience=config.early_stopping_patience))
    if not config.progress_bar:  # no terminal: a line per epoch instead of a bar redrawn with carriage returns
        callbacks.append(ProgressLines(pass_dir.name))
    callbacks.extend(extra_callbacks)
    distributed = not isinstance(config.devices, int) or config.devices > 1 or config.num_nodes > 1
    strategy: Any = DDPStrategy(find_unused_parameters=config.find_unused_parameters) if distributed else "auto"
    optional: dict[str, Any] = {}
    if config.limit_train_batches is not None:
        optional["limit_train_batches"] = config.limit_train_batches
    if config.limit_val_batches is not None:
        optional["limit_val_batches"] = config.limit_val_batches
    return pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,  # type: ignore[arg-type]  # validated against Lightning's names in TrainConfig
        max_epochs=max_epochs,
        accumulate_grad_batches=config.accumulate_grad_batches,
        gradient_clip_val=config.gradient_clip_val or None,
        gradient_clip_algorithm="norm",
        callbacks=callbacks,
        enable_checkpointing=checkpointing,
        logger=_loggers(config, pass_dir.parent, pass_dir.name),
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=config.log_every_n_steps,
        num_sanity_val_steps=config.sanity_val_steps,
        check_val_every_n_epoch=config.val_every_n_epochs,
        deterministic=config.deterministic,
        enable_progress_bar=config.progress_bar,
        fast_dev_run=config.fast_dev_run or False,
        default_root_dir=pass_dir,
        **optional,
    )


def _run_pass(
    config: TrainConfig,
    datamodule: SceneGraphDataModule,
    model: EGTR,
    pass_name: str,
    max_epochs: int,
    lr_factor: float,
    resume_from: Path | None,
    new_heads: frozenset[str] = frozenset(),
) -> tuple[PassResult, EGTR]:
    pl.seed_everything(config.seed, workers=True)
    pass_dir = Path(config.output_dir) / pass_name
    if getattr(rank_zero_only, "rank", 0) == 0 and not config.fast_dev_run:
        # The official artifact layout (config.json + checkpoints/*.ckpt): `EGTR.from_pretrained(pass_dir)` loads
        # the best checkpoint, `EGTR.from_pretrained(any .ckpt of the pass)` that checkpoint.
        pass_dir.mkdir(parents=True, exist_ok=True)
        # The preprocessing first: a config.json present means the directory is complete.
        config.data.preprocessor().save(pass_dir)
        model.config.save(pass_dir / CONFIG_NAME)
    # The model of an earlier pass comes back from its best checkpoint in eval mode, and Lightning keeps the
    # modes it finds: without this the finetune pass trains with batch norms on their running statistics.
    model.train()
    module = EGTRLightningModule(model, config, lr_factor, new_heads)
    trainer = build_trainer(config, pass_dir, max_epochs)
    logger.info(
        "pass %s: up to %d epochs, %s images per optimiser step, lr x %g",
        pass_name,
        max_epochs,
        config.effective_batch_size or "?",
        lr_factor,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    checkpoint = trainer.checkpoint_callback
    assert checkpoint is None or isinstance(checkpoint, ModelCheckpoint)  # build_trainer's BestAndLastCheckpoint
    best_path = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    result = PassResult(
        name=pass_name,
        best_checkpoint=best_path,
        best_validation_loss=float(best_score) if best_score is not None else None,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
    )
    logger.info("pass %s finished: %s", pass_name, result)
    return result, module.model
