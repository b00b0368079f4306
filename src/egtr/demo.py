"""`egtr demo`: the whole system on the embedded synthetic scene world, from nothing to drawn scene graphs.

Nobody can download Visual Genome or the official weights on a fresh machine without effort, so the demo makes its
own data: the synthetic scene world of `egtr.data.synthetic` (coloured shapes whose relations are visible in the
pixels). It then runs the same code paths as real work:

1. world      `generate_synthetic_dataset` writes train/val/test in the Visual Genome (RelTR) layout;
2. detector   `pretrain_detector` trains a small Deformable DETR on it (reference §4.1, stage 0);
3. egtr       `train_egtr` trains EGTR from that detector (relation smoothing, connectivity: reference §4.2-4.3);
4. evaluate   `evaluate_model` computes R@K / mR@K on the test split, for the trained model and for the same
              architecture with untrained weights (the floor a trained model has to beat);
5. draw       `Predictor` + `predict_files` draw the scene graphs of a few test images.

Everything goes to one output folder; `demo.json` records the settings and what each step produced, so running
the demo again reuses every finished step (and resumes an interrupted training) unless `restart=True`.

There is no ImageNet backbone offline, so the network trains from scratch; the sizes of `DemoSettings.full()`
were chosen by measurement to finish within the time budget on 2 CPU cores (see docs/demo.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egtr.config import EGTRConfig, LossConfig
from egtr.console import quiet_lightning_info, silence_lightning_warnings, stderr_is_terminal
from egtr.fileio import read_json, write_json

logger = logging.getLogger(__name__)

STATE_FILE = "demo.json"
STEPS = ("world", "detector", "egtr", "evaluate", "draw")
# Everything the demo writes inside its output folder; `restart` removes exactly these and nothing else.
OUTPUT_ENTRIES = ("data", "detector", "egtr", "evaluation", "drawings", STATE_FILE)


@dataclass
class DemoSettings:
    """Sizes of the synthetic world, the network and the training schedule of one demo run.

    `full()` is the default demo, `quick()` the under-two-minutes variant that CI runs end to end. Learning rates
    are the same for every parameter group: the network trains from scratch, so the paper's tiny fine-tuning
    rates (reference §4.2) do not apply.
    """

    name: str = "full"
    # ---- synthetic world (egtr.data.synthetic)
    num_train: int = 1200
    num_val: int = 100
    num_test: int = 100
    image_size: int = 128  # square images; also the training and evaluation size, so nothing is resampled
    seed: int = 0
    # ---- network (small sizes; resnet18 is the smallest backbone the model builds)
    backbone: str = "resnet18"
    d_model: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 256
    num_queries: int = 16
    num_feature_levels: int = 3
    # ---- schedule (each stage: a main pass, then a x0.1 pass from its best checkpoint, as the engine does)
    detector_epochs: int = 4
    detector_finetune_epochs: int = 0
    egtr_epochs: int = 7
    egtr_finetune_epochs: int = 4
    batch_size: int = 8
    learning_rate: float = 1e-3
    gradient_clip: float = 0.1
    # ---- evaluation and drawings
    num_drawings: int = 6
    draw_top_k: int = 10

    @classmethod
    def full(cls) -> DemoSettings:
        """The default demo: 2,250 training steps, 19-23 minutes on the 2-core machines of 2026-12 (docs/demo.md)."""
        return cls()

    @classmethod
    def quick(cls) -> DemoSettings:
        """A tiny run of every step (under 2 minutes on 2 CPU cores), for CI and a first look."""
        return cls(
            name="quick",
            num_train=320,
            num_val=16,
            num_test=32,
            image_size=96,
            d_model=64,
            encoder_layers=1,
            decoder_layers=2,
            ffn_dim=128,
            num_queries=12,
            detector_epochs=3,
            egtr_epochs=3,
            egtr_finetune_epochs=1,
            num_drawings=3,
        )

    def model_config(self) -> EGTRConfig:
        """The architecture (class counts and names are filled in by the engine from the data)."""
        from egtr.data.synthetic import CLASS_NAMES, PREDICATE_NAMES

        return EGTRConfig(
            backbone=self.backbone,
            d_model=self.d_model,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            encoder_attention_heads=self.attention_heads,
            decoder_attention_heads=self.attention_heads,
            encoder_ffn_dim=self.ffn_dim,
            decoder_ffn_dim=self.ffn_dim,
            num_queries=self.num_queries,
            num_feature_levels=self.num_feature_levels,
            dropout=0.0,
            num_labels=len(CLASS_NAMES),
            num_rel_labels=len(PREDICATE_NAMES),
            class_names=list(CLASS_NAMES),
            predicate_names=list(PREDICATE_NAMES),
            # No pre-trained backbone exists offline: the whole backbone learns, with trainable batch norm (frozen
            # norms leave a randomly initialised ResNet without any normalisation; see docs/demo-experiments.md).
            freeze_backbone_stem=False,
            backbone_norm="batch",
        ).validate()

    def data_config(self, root: str | Path) -> Any:
        """Training and evaluation at the world's own size; no flip, since "left of" and "touching" are
        directional and the flip does not swap them."""
        from egtr.data import DataConfig

        return DataConfig.for_synthetic(
            str(root), image_size=self.image_size, train_sizes=(self.image_size,), horizontal_flip_prob=0.0
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DemoResult:
    """Where the demo put everything, and its numbers.

    Attributes:
        out_dir: the output folder.
        model_dir: the trained EGTR model (`EGTR.from_pretrained`, `egtr predict --model`, `egtr evaluate`).
        data_dir: the synthetic world (VG / RelTR layout).
        metrics: test-split numbers of the trained model (`graph_constraint/recall@50`, ...).
        untrained_metrics: the same numbers for the architecture with untrained weights.
        drawings: the drawn scene graphs (PNG files).
        step_seconds: wall time of each step in the run that produced it.
        reused: steps taken over from an earlier run.
    """

    out_dir: Path
    model_dir: Path
    data_dir: Path
    metrics: dict[str, float]
    untrained_metrics: dict[str, float]
    drawings: list[Path]
    step_seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


class DemoRun:
    """The steps of one demo run in `out_dir`, each skipped when `demo.json` says it is already done.

    Args:
        out_dir: output folder (created).
        settings: world, network and schedule sizes.
        echo: where progress lines go (the CLI prints them).
    """

    def __init__(self, out_dir: str | Path, settings: DemoSettings, echo: Callable[[str], None] = print) -> None:
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.echo = echo
        self.data_dir = self.out_dir / "data"
        self.detector_dir = self.out_dir / "detector"
        self.egtr_dir = self.out_dir / "egtr"
        self.model_dir = self.egtr_dir / "model"
        self.evaluation_dir = self.out_dir / "evaluation"
        self.drawings_dir = self.out_dir / "drawings"
        self.state: dict[str, Any] = {"settings": settings.to_dict(), "steps": {}}
        self.reused: list[str] = []
        self.step_seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ state
    def load_state(self) -> None:
        """Read `demo.json`; refuse to mix a run of other settings into this folder."""
        path = self.out_dir / STATE_FILE
        if not path.is_file():
            return
        try:
            state = read_json(path)
        except ValueError as error:
            raise ValueError(f"{error}; use --restart to start over") from error
        if state.get("settings") != self.settings.to_dict():
            previous = (state.get("settings") or {}).get("name", "unknown")
            raise ValueError(
                f"{self.out_dir} holds a demo run with other settings ({previous!r}, this run: "
                f"{self.settings.name!r}); pass --restart to start over there, or choose another --out"
            )
        self.state = state

    def save_state(self) -> None:
        write_json(self.out_dir / STATE_FILE, self.state)

    def _done(self, step: str) -> dict[str, Any] | None:
        return self.state["steps"].get(step)

    def _finish(self, step: str, record: dict[str, Any], started: float) -> dict[str, Any]:
        record["seconds"] = round(time.perf_counter() - started, 1)
        self.step_seconds[step] = record["seconds"]
        self.state["steps"][step] = record
        self.save_state()
        return record

    def _header(self, step: str, text: str) -> None:
        number = STEPS.index(step) + 1
        self.echo(f"\n[{number}/{len(STEPS)}] {text}")

    def _reuse(self, step: str) -> dict[str, Any] | None:
        record = self._done(step)
        if record is not None:
            self.reused.append(step)
            self.step_seconds[step] = record.get("seconds", 0.0)
            self.echo(f"      reusing the finished step from {self.out_dir / STATE_FILE}")
        return record

    # ------------------------------------------------------------------ steps
    def make_world(self) -> dict[str, Any]:
        """Step 1: the synthetic world (train/val/test) in the VG (RelTR) layout."""
        from egtr.data.synthetic import generate_synthetic_dataset

        s = self.settings
        self._header(
            "world",
            f"synthetic scene world: {s.num_train} train / {s.num_val} val / {s.num_test} test "
            f"images of {s.image_size} px -> {self.data_dir}",
        )
        record = self._reuse("world")
        if record is not None and (self.data_dir / "rel.json").is_file():
            return record
        started = time.perf_counter()
        generate_synthetic_dataset(self.data_dir, s.num_train, s.num_val, s.num_test, s.image_size, s.seed)
        relations = read_json(self.data_dir / "rel.json")
        counts = {split: sum(len(triplets) for triplets in relations[split].values()) for split in ("train", "test")}
        self.echo(f"      {counts['train']} training relations, {counts['test']} test relations")
        return self._finish("world", {"relations": counts}, started)

    def _train_config(self, stage: str, output_dir: Path, detector_weights: Path | None) -> Any:
        from egtr.training import TrainConfig

        s = self.settings
        common: dict[str, Any] = {
            "output_dir": str(output_dir),
            "data": s.data_config(self.data_dir),
            "model": s.model_config(),
            "lr": s.learning_rate,
            "lr_backbone": s.learning_rate,
            "lr_relation_head": s.learning_rate,
            "gradient_clip_val": s.gradient_clip,
            "batch_size": s.batch_size,
            "eval_batch_size": 2 * s.batch_size,
            "accumulate_grad_batches": 1,
            "num_workers": 0,  # decoding a small PNG costs ~3 ms; worker processes would cost more on 2 cores
            "early_stopping_patience": 0,
            "log_every_n_steps": 10,
            "sanity_val_steps": 0,
            "evaluate_split": None,  # step 4 evaluates on the test split
            "seed": s.seed,
            # Bars only for a person at a terminal: in CI logs they are escape codes and repeated lines.
            "progress_bar": stderr_is_terminal(),
        }
        if stage == "detector":
            return TrainConfig.for_detector(
                max_epochs=s.detector_epochs, finetune_epochs=s.detector_finetune_epochs, **common
            )
        return TrainConfig(
            # Auxiliary decoder losses in this stage too: they speed up learning from scratch (measured).
            stage="egtr",
            loss=LossConfig(auxiliary_loss=True),
            max_epochs=s.egtr_epochs,
            finetune_epochs=s.egtr_finetune_epochs,
            detector_weights=str(detector_weights) if detector_weights else None,
            **common,
        ).validate()

    def _train(self, step: str, stage: str, run_dir: Path, detector_weights: Path | None) -> dict[str, Any]:
        from egtr.training import pretrain_detector, train_egtr

        record = self._reuse(step)
        if record is not None and (run_dir / "model" / "config.json").is_file():
            return record
        started = time.perf_counter()
        config = self._train_config(stage, run_dir, detector_weights)
        # An interrupted earlier run of the same settings continues from its last checkpoint.
        resume = any(run_dir.glob("*/checkpoints/last.ckpt"))
        if resume:
            self.echo(f"      resuming the interrupted run in {run_dir}")
        train = pretrain_detector if stage == "detector" else train_egtr
        result = train(config, resume=resume)
        passes = [
            {
                "name": item.name,
                "epochs": item.epochs,
                "steps": item.global_step,
                "best_validation_loss": item.best_validation_loss,
            }
            for item in result.passes
        ]
        for item in passes:
            loss = item["best_validation_loss"]
            self.echo(
                f"      pass {item['name']}: {item['epochs']} epochs, {item['steps']} steps, best validation "
                f"loss {loss:.4f}"
                if loss is not None
                else f"      pass {item['name']}: {item['epochs']} epochs"
            )
        return self._finish(step, {"model_dir": str(result.model_dir), "passes": passes}, started)

    def train_detector(self) -> dict[str, Any]:
        """Step 2: Deformable DETR pre-training (detection losses with auxiliary decoder losses)."""
        s = self.settings
        self._header(
            "detector",
            f"pre-training the detector ({s.backbone}, d_model {s.d_model}, "
            f"{s.encoder_layers}+{s.decoder_layers} layers, {s.num_queries} queries) for "
            f"{s.detector_epochs}+{s.detector_finetune_epochs} epochs -> {self.detector_dir}",
        )
        return self._train("detector", "detector", self.detector_dir, None)

    def train_relations(self) -> dict[str, Any]:
        """Step 3: EGTR training from the detector: relation smoothing and connectivity prediction on."""
        s = self.settings
        self._header(
            "egtr",
            f"training EGTR (relation smoothing, connectivity) for {s.egtr_epochs}+"
            f"{s.egtr_finetune_epochs} epochs -> {self.egtr_dir}",
        )
        return self._train("egtr", "egtr", self.egtr_dir, self.detector_dir / "model")

    def evaluate(self) -> dict[str, Any]:
        """Step 4: R@K / mR@K (+ box AP50) on the test split, trained and untrained weights side by side."""
        import torch

        from egtr.model_evaluation import EvaluationSettings, evaluate_model
        from egtr.models.egtr import EGTR

        self._header("evaluate", f"evaluating on the {self.settings.num_test} test images -> {self.evaluation_dir}")
        record = self._reuse("evaluate")
        if record is not None:
            return record
        started = time.perf_counter()
        self.evaluation_dir.mkdir(parents=True, exist_ok=True)
        data_config = self.settings.data_config(self.data_dir)
        trained = EGTR.from_pretrained(self.model_dir)
        # The floor: the same architecture and frequency tables (data statistics, not learned) with fresh weights.
        torch.manual_seed(self.settings.seed)
        untrained = EGTR(trained.config)
        untrained.set_frequency_tables(trained.triplet_dist.detach().clone(), trained.rel_dist.detach().clone())
        results = {}
        for name, model in (("trained", trained), ("untrained", untrained)):
            settings = EvaluationSettings(
                split="test",
                batch_size=2 * self.settings.batch_size,
                detection=name == "trained",
                progress=stderr_is_terminal(),
            )
            report = evaluate_model(model, data_config, settings=settings)
            report.save_json(self.evaluation_dir / f"test_{name}.json")
            results[name] = {key: value for key, value in report.metrics.items() if "/" in key}
        self.echo(
            f"      test R@50 (graph constraint): trained {_percent(results['trained'], 'graph_constraint/recall@50')}"
            f", untrained {_percent(results['untrained'], 'graph_constraint/recall@50')}"
        )
        return self._finish("evaluate", {"metrics": results}, started)

    def draw(self) -> dict[str, Any]:
        """Step 5: predicted scene graphs of the first test images (image with boxes | graph), as PNG + JSON."""
        from egtr.inference import Predictor
        from egtr.inference.files import predict_files

        count = self.settings.num_drawings
        self._header("draw", f"drawing the predicted scene graphs of {count} test images -> {self.drawings_dir}")
        record = self._reuse("draw")
        if record is not None:
            return record
        started = time.perf_counter()
        test_images = read_json(self.data_dir / "test.json")["images"][:count]
        paths = [self.data_dir / "images" / image["file_name"] for image in test_images]
        predictor = Predictor.from_pretrained(
            self.model_dir,
            device="cpu",
            size=self.settings.image_size,
            max_size=2 * self.settings.image_size,
            top_k=self.settings.draw_top_k,
        )
        report = predict_files(
            predictor, paths, self.drawings_dir, draw_formats=("png",), progress=stderr_is_terminal()
        )
        drawings = sorted(str(path) for outputs in report.outputs.values() for path in outputs if path.suffix == ".png")
        if report.failures:
            raise RuntimeError(f"drawing failed for {sorted(report.failures)}")
        return self._finish("draw", {"drawings": drawings}, started)

    # ------------------------------------------------------------------ all steps
    def run(self) -> DemoResult:
        """Run (or reuse) every step and return where everything is."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.load_state()
        self.save_state()
        self.make_world()
        self.train_detector()
        self.train_relations()
        evaluation = self.evaluate()
        drawing = self.draw()
        return DemoResult(
            out_dir=self.out_dir,
            model_dir=self.model_dir,
            data_dir=self.data_dir,
            metrics=evaluation["metrics"]["trained"],
            untrained_metrics=evaluation["metrics"]["untrained"],
            drawings=[Path(path) for path in drawing["drawings"]],
            step_seconds=dict(self.step_seconds),
            reused=list(self.reused),
        )


def clear_outputs(out_dir: str | Path) -> None:
    """Remove what an earlier demo wrote in `out_dir` (only the demo's own entries, never other files)."""
    out_dir = Path(out_dir)
    for name in OUTPUT_ENTRIES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    restart: bool = False,
    settings: DemoSettings | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Generate the synthetic world, train the detector and EGTR, evaluate and draw (see the module docstring).

    Args:
        out_dir: output folder; an earlier run there with the same settings is reused step by step.
        quick: the tiny `DemoSettings.quick()` run instead of `DemoSettings.full()`.
        restart: remove the demo's earlier outputs in `out_dir` first.
        settings: explicit sizes (overrides `quick`).
        echo: receives the progress lines and the summary.

    Returns:
        `DemoResult` with the model directory, the test metrics and the drawings.
    """
    settings = settings or (DemoSettings.quick() if quick else DemoSettings.full())
    if restart:
        clear_outputs(out_dir)
    started = time.perf_counter()
    echo(f"egtr demo ({settings.name}): every output goes to {Path(out_dir).resolve()}")
    with warnings.catch_warnings(), quiet_lightning_info():
        # e.g. the advice to use more DataLoader workers: the demo loads in-process on purpose
        silence_lightning_warnings()
        result = DemoRun(out_dir, settings, echo).run()
    echo("")
    echo(format_summary(result, time.perf_counter() - started))
    return result


def _percent(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


SUMMARY_METRICS = (
    ("R@20   (graph constraint)", "graph_constraint/recall@20"),
    ("R@50   (graph constraint)", "graph_constraint/recall@50"),
    ("R@100  (graph constraint)", "graph_constraint/recall@100"),
    ("mR@50  (graph constraint)", "graph_constraint/mean_recall@50"),
    ("mR@100 (graph constraint)", "graph_constraint/mean_recall@100"),
    ("R@50   (no graph constraint)", "no_graph_constraint/recall@50"),
    ("box AP50", "bbox/AP50"),
)


def format_summary(result: DemoResult, total_seconds: float | None = None) -> str:
    """The closing table: time per step, test metrics (trained vs untrained, in %) and where everything is."""
    from egtr.preprocessing import PREPROCESSOR_NAME

    lines = ["Summary", f"  {'step':<10} {'time':>8}"]
    for step in STEPS:
        seconds = result.step_seconds.get(step)
        note = "  (reused)" if step in result.reused else ""
        lines.append(f"  {step:<10} {_duration(seconds) if seconds is not None else '-':>8}{note}")
    if total_seconds is not None:
        lines.append(f"  {'total':<10} {_duration(total_seconds):>8}  (this run)")
    lines += ["", f"  {'test split, %':<30} {'trained':>8} {'untrained':>10}"]
    for label, key in SUMMARY_METRICS:
        lines.append(f"  {label:<30} {_percent(result.metrics, key):>8} {_percent(result.untrained_metrics, key):>10}")
    model, data = result.model_dir, result.data_dir
    # The exported model records its input size (preprocessor_config.json); a model exported before that file
    # existed needs it on the command line, or the commands would resize to the paper's 800 px.
    size_options = ""
    if not (model / PREPROCESSOR_NAME).is_file() and (data / "synthetic.json").is_file():
        size = read_json(data / "synthetic.json")["image_size"]
        size_options = f" --size {size} --max-size {2 * size}"
    example = max((data / "images").glob("*.png"), default=data / "images" / "<image>.png")
    lines += [
        "",
        "Where everything is",
        f"  synthetic world    {data}",
        f"  trained model      {model}",
        f"  test metrics       {result.out_dir / 'evaluation' / 'test_trained.json'}",
        f"  drawings           {result.drawings[0].parent if result.drawings else result.out_dir / 'drawings'}",
        f"  training logs      {result.out_dir / 'detector'}, {result.out_dir / 'egtr'} (metrics.csv per pass)",
        "",
        "Try",
        f"  egtr predict --model {model}{size_options} --out {result.out_dir / 'predict'} {example}",
        f"  egtr evaluate --model {model} --data-root {data} --split test{size_options}",
    ]
    return "\n".join(lines)
