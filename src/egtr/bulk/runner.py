"""Bulk prediction on Lightning's engine: `Trainer.predict` over the corpus, one process per device and node.

Lightning launches and connects the processes (`--devices N` on one machine, `torchrun`, SLURM's `srun`), picks
each rank's device and gives us the global rank and world size; the corpus split, the batching
(`egtr.bulk.dataset`) and the committed shards (`egtr.bulk.writers`) are ours. Each rank writes the shards of its
own units; when all ranks are done, rank 0 merges the errors and writes the manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from egtr.bulk.dataset import BulkBatch, CorpusDataset, collate_bulk
from egtr.bulk.launch import explain_lost_process
from egtr.bulk.progress import RankProgress, format_duration
from egtr.bulk.sources import Corpus
from egtr.bulk.writers import OutputFolder
from egtr.console import silence_lightning_warnings
from egtr.inference import Predictor, TorchRuntime
from egtr.models.checkpoint import state_dict_sha256
from egtr.runtime import dtype_name, set_threads

logger = logging.getLogger("egtr.bulk")


@dataclass(frozen=True)
class BulkOptions:
    """How a bulk run executes and where it writes (the prediction settings are the `Predictor`'s).

    Attributes:
        out: output folder (see `egtr.bulk.writers` for its layout).
        output_format: "parquet", "jsonl" or "jsonl.gz".
        accelerator: Lightning's name: "auto", "cpu", "gpu".
        devices: devices (processes) per node, a list of device indices, or "auto".
        num_nodes: machines (each started by torchrun or SLURM with the same command).
        num_workers: DataLoader worker processes per rank that read, decode and resize (0: in the rank itself).
        bucket: batch images of similar aspect ratio with padding (faster, not exact; see docs/bulk.md).
        overwrite: remove earlier results in `out` first, also when they were made with other settings.
        progress: show a bar (terminal) or a line every `progress_interval` seconds (log file).
        threads: torch intra-op threads of each process (None: a single process keeps torch's setting; several
            share the cores available: `egtr.runtime.threads_per_process`).
        request: what the command line asked for (`egtr.cli.bulk`), kept in the manifest so that the same command
            on a complete folder is recognised before the model is loaded; None from the Python API.
    """

    out: str | Path
    output_format: str = "parquet"
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    num_workers: int = 2
    bucket: bool = False
    overwrite: bool = False
    progress: bool = True
    progress_interval: float = 30.0
    threads: int | None = None
    request: dict[str, Any] | None = None


@dataclass
class BulkSummary:
    """What one rank did; `manifest` (rank 0 only) describes the whole output folder."""

    rank: int = 0
    world_size: int = 1
    images: int = 0
    errors: int = 0
    shards: int = 0
    seconds: float = 0.0
    manifest: dict[str, Any] | None = None
    error_lines: list[str] = field(default_factory=list)
    already_complete: bool = False  # the folder held every record already: nothing was run or written


def bulk_settings(predictor: Predictor, corpus: Corpus, options: BulkOptions) -> dict[str, Any]:
    """Everything the records depend on; stored as settings.json and compared when a run resumes."""
    preprocessor = predictor.preprocessor
    prediction = {
        "top_k": predictor.top_k,
        "score_threshold": predictor.score_threshold,
        "graph_constraint": predictor.graph_constraint,
        "object_threshold": predictor.object_threshold,
        "size": preprocessor.shortest_edge,
        "max_size": preprocessor.longest_edge,
        "image_mean": list(preprocessor.image_mean),
        "image_std": list(preprocessor.image_std),
        "max_pixels": predictor.max_pixels,
        "runtime": predictor.runtime.name,
        "dtype": dtype_name(predictor.dtype),
        "bucket": options.bucket,
        # exact batching does not change the records; padded buckets depend on the batch size
        "batch_size": predictor.batch_size if options.bucket else None,
    }
    source = predictor.source or {}
    return {
        "model": source.get("model"),
        "weights_sha256": source.get("weights_sha256") or state_dict_sha256(predictor.model),
        "prediction": prediction,
        "output_format": options.output_format,
        "inputs": corpus.fingerprint(),
    }


def predict_corpus(predictor: Predictor, corpus: Corpus, options: BulkOptions) -> BulkSummary:
    """Predict every image of `corpus` into shards under `options.out`, resuming what an earlier run left.

    Call it in every process with the same arguments (Lightning starts the other local processes itself when
    `devices` > 1; torchrun and SLURM start them all). Raises `BulkInputError` for unusable inputs or an output
    folder with other settings (unless `overwrite`).
    """
    corpus.check()
    folder = OutputFolder(options.out, options.output_format)
    settings = bulk_settings(predictor, corpus, options)
    folder.check_settings(settings, options.overwrite)
    complete = None if options.overwrite else folder.complete_manifest(settings=settings)
    if complete is not None:  # a rerun of a finished run: it stays exactly as it is
        return BulkSummary(manifest=complete, already_complete=True)
    silence_lightning_warnings()  # the CLI silences its banner too
    module = _BulkModule(predictor, corpus, folder, settings, options)
    writer = _ShardWriter(folder, settings, options)
    distributed = options.num_nodes > 1 or (
        len(options.devices) > 1 if isinstance(options.devices, list) else str(options.devices) not in ("1", "auto")
    )
    trainer = pl.Trainer(
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy="ddp" if distributed else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the dataset splits itself by rank and worker
        callbacks=[writer],
    )
    try:
        trainer.predict(module, return_predictions=False)
    except Exception as error:
        lost = explain_lost_process(error, trainer.global_rank, trainer.world_size)
        if lost is None:
            raise
        raise lost from error  # one line naming the process that died, instead of torch's or gloo's words
    return writer.summary


class _BulkModule(pl.LightningModule):
    """The model on its device, the rank's DataLoader, and the forward + ranking of each batch."""

    def __init__(
        self, predictor: Predictor, corpus: Corpus, folder: OutputFolder, settings: dict, options: BulkOptions
    ) -> None:
        super().__init__()
        # Lightning moves a PyTorch network to this process's device; an exported graph has no module to move
        self.model = predictor.model if isinstance(predictor.runtime, TorchRuntime) else None
        self.predictor = predictor
        self.corpus, self.folder, self.settings, self.options = corpus, folder, settings, options
        self.dataset: CorpusDataset | None = None
        self.threads = 0

    def setup(self, stage: str) -> None:
        if self.trainer.is_global_zero:
            self.folder.prepare(self.settings, self.options.overwrite)
        self.trainer.strategy.barrier("egtr-bulk-prepare")  # nobody lists done units before the folder is ready
        # The processes of one machine share its cores (Lightning leaves every process all of them); a single
        # process keeps its caller's setting unless told.
        if self.options.threads is not None or self.trainer.num_devices > 1:
            set_threads(self.options.threads, self.trainer.num_devices)
        self.threads = torch.get_num_threads()

    def on_predict_start(self) -> None:
        if isinstance(self.predictor.runtime, TorchRuntime):
            self.predictor.runtime.to(self.device)  # Lightning chose this rank's device (and moved the model there)

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        self.dataset = CorpusDataset(
            self.corpus,
            self.predictor.processor,
            batch_size=self.predictor.batch_size,
            bucket=self.options.bucket,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
            done_units=self.folder.committed_units,
        )
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=None, num_workers=self.options.num_workers, collate_fn=collate_bulk
        )

    def transfer_batch_to_device(self, batch: BulkBatch, device: torch.device, dataloader_idx: int) -> BulkBatch:
        return batch  # Predictor.forward pads the images and moves them itself

    def predict_step(self, batch: BulkBatch, batch_idx: int) -> list:
        if not batch.images:
            return []
        return self.predictor.postprocess(self.predictor.forward(batch.images), batch.images)


class _ShardWriter(BasePredictionWriter):
    """Collects the records of each open unit and commits its shard as soon as the unit is complete."""

    def __init__(self, folder: OutputFolder, settings: dict, options: BulkOptions) -> None:
        super().__init__(write_interval="batch")
        self.folder, self.settings, self.options = folder, settings, options
        self.open_units: dict[str, tuple[dict[int, dict], dict[int, dict]]] = {}
        self.summary = BulkSummary()
        self.progress: RankProgress | None = None
        self.started = time.time()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.started = time.time()
        self.summary = BulkSummary(rank=trainer.global_rank, world_size=trainer.world_size)
        total = pl_module.dataset.count(self.options.num_workers) if self.options.progress else None
        self.progress = RankProgress(
            trainer.global_rank,
            trainer.world_size,
            trainer.local_rank,
            total,
            self.options.progress,
            self.options.progress_interval,
        )

    def write_on_batch_end(
        self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        for ref, graph in zip(batch.refs, prediction):
            self._unit(ref.unit)[0][ref.index] = {"key": ref.key, **graph.to_dict()}
        for ref, reason in batch.errors:
            self._unit(ref.unit)[1][ref.index] = {"key": ref.key, "reason": reason}
            logger.warning("unreadable: %s", reason)
            self.summary.error_lines.append(reason)
        for done in batch.completed:
            records, errors = self.open_units.pop(done.unit, ({}, {}))
            if len(records) + len(errors) != done.entries:  # a bug, never a user error
                raise RuntimeError(f"{done.unit}: {done.entries} entries sent, {len(records) + len(errors)} seen")
            self.folder.commit_unit(
                done.unit,
                [records[index] for index in sorted(records)],
                [errors[index] for index in sorted(errors)],
                tar_chunks=done.tar_chunks,
            )
            self.summary.shards += 1
        self.summary.images += len(batch.images)
        self.summary.errors += len(batch.errors)
        assert self.progress is not None  # made in on_predict_start
        self.progress.update(len(batch.images), len(batch.errors))

    def _unit(self, unit: str) -> tuple[dict[int, dict], dict[int, dict]]:
        return self.open_units.setdefault(unit, ({}, {}))

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        summary = self.summary
        assert self.progress is not None
        summary.seconds = self.progress.close()
        rate = summary.images / summary.seconds if summary.seconds > 0 else 0.0
        logger.info(
            "rank %d/%d: %d images, %d unreadable, %d shards written in %s (%.2f images/s)",
            summary.rank,
            summary.world_size,
            summary.images,
            summary.errors,
            summary.shards,
            format_duration(summary.seconds),
            rate,
        )
        trainer.strategy.barrier("egtr-bulk-finish")  # the manifest describes the shards of every rank
        if trainer.is_global_zero:
            extra = {
                "world_size": trainer.world_size,
                "threads": pl_module.threads,
                "request": self.options.request,
                "complete": True,
            }
            summary.manifest = self.folder.finish(self.settings, self.started, extra)
            counts = summary.manifest["counts"]
            logger.info(
                "%d records in %d shards, %d unreadable images (errors.jsonl); manifest: %s",
                counts["records"],
                counts["shards"],
                counts["errors"],
                self.folder.manifest_path,
            )
