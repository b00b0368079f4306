"""Does choosing what to label by uncertainty beat choosing at random? Measured on the synthetic world.

    nice -n 19 python benchmarks/active_selection.py --out /tmp/active [--labelled 80 --pool 320 --budget 80]

1. a synthetic world (egtr.data.synthetic, the `egtr demo --quick` sizes) whose training split is cut into a small
   labelled part and an unlabelled pool; the val and test splits stay whole;
2. a model trained on the labelled part only (detector, then EGTR: the demo's recipe);
3. its predictions on the pool (`predict_files`, as `egtr predict` writes them), ranked by `egtr data select`'s
   strategies (`egtr.inference.selection.select`): uncertainty, diverse, and random with several seeds;
4. for each choice, the chosen images are "labelled" from the world's ground truth, and the model is fine-tuned on
   the labelled part plus them (`init_from` the step-2 model, the same schedule for every strategy);
5. R@50 / mR@50 (graph constraint) on the test split, and the spread of the random seeds: the noise a
   difference has to exceed.

Writes OUT/results.json and prints a table. A rerun with the same OUT reuses the finished trainings and predictions
(the world is deterministic): `--budget`, `--finetune-epochs` and `--random-seeds` can change between runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from egtr.config import LossConfig  # noqa: E402
from egtr.demo import DemoSettings  # noqa: E402

METRICS = ("graph_constraint/recall@50", "graph_constraint/mean_recall@50")


def subset_dataset(world: Path, out: Path, train_ids: set[int]) -> Path:
    """A dataset folder with `world`'s val and test splits and only the training images `train_ids` (ground truth
    of the world: the "labelling" of the chosen images)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "images").exists():
        (out / "images").symlink_to((world / "images").resolve())
    for split in ("val", "test"):
        (out / f"{split}.json").write_text((world / f"{split}.json").read_text())
    train = json.loads((world / "train.json").read_text())
    train["images"] = [image for image in train["images"] if image["id"] in train_ids]
    train["annotations"] = [a for a in train["annotations"] if a["image_id"] in train_ids]
    (out / "train.json").write_text(json.dumps(train))
    relations = json.loads((world / "rel.json").read_text())
    relations["train"] = {key: value for key, value in relations["train"].items() if int(key) in train_ids}
    (out / "rel.json").write_text(json.dumps(relations))
    return out


def train(settings: DemoSettings, data: Path, out: Path, stage: str, epochs: tuple[int, int], **extra: Any) -> Path:
    """One training run with the demo's settings (`egtr demo --quick`): `epochs` = (main, x0.1 pass) epochs; returns
    its model folder. A run finished in `out` before (a rerun of the script) is reused."""
    from egtr.training import TrainConfig, pretrain_detector, train_egtr

    if (out / "model" / "config.json").is_file():
        return out / "model"

    common: dict[str, Any] = {
        "output_dir": str(out),
        "data": settings.data_config(data),
        "model": settings.model_config(),
        "lr": settings.learning_rate,
        "lr_backbone": settings.learning_rate,
        "lr_relation_head": settings.learning_rate,
        "gradient_clip_val": settings.gradient_clip,
        "batch_size": settings.batch_size,
        "eval_batch_size": 2 * settings.batch_size,
        "num_workers": 0,
        "early_stopping_patience": 0,
        "sanity_val_steps": 0,
        "evaluate_split": None,
        "seed": settings.seed,
        "progress_bar": False,
        "max_epochs": epochs[0],
        "finetune_epochs": epochs[1],
        **extra,
    }
    if stage == "detector":
        result = pretrain_detector(TrainConfig.for_detector(**common))
    else:
        result = train_egtr(TrainConfig(stage="egtr", loss=LossConfig(auxiliary_loss=True), **common).validate())
    assert result.model_dir is not None
    return result.model_dir


def evaluate(settings: DemoSettings, model: Path, data: Path) -> dict[str, float]:
    from egtr.evaluation import evaluate_model

    report = evaluate_model(
        str(model), settings.data_config(data), split="test", batch_size=16, device="cpu", progress=False
    )
    return {key: round(100 * float(report.metrics[key]), 2) for key in METRICS}


def predict_pool(settings: DemoSettings, model: Path, world: Path, pool: list[dict], out: Path) -> Path:
    from egtr.inference import Predictor
    from egtr.inference.files import predict_files

    predictor = Predictor.from_pretrained(
        model, device="cpu", size=settings.image_size, max_size=2 * settings.image_size, top_k=20, batch_size=16
    )
    paths = [world / "images" / image["file_name"] for image in pool]
    if not out.is_dir():
        predict_files(predictor, paths, out, draw_formats=(), progress=False)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labelled", type=int, default=160, help="training images labelled at the start")
    parser.add_argument("--pool", type=int, default=480, help="unlabelled training images to choose from")
    parser.add_argument("--budget", type=int, default=120, help="images chosen and labelled")
    parser.add_argument("--test", type=int, default=100, help="test images")
    parser.add_argument("--base-epochs", type=int, default=6, help="EGTR epochs on the labelled part (+1 at x0.1)")
    parser.add_argument(
        "--finetune-epochs", type=int, default=2, help="EGTR epochs with the chosen images (+1 at x0.1)"
    )
    parser.add_argument("--random-seeds", type=int, default=3, help="random choices (their spread is the noise)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from egtr.data.synthetic import generate_synthetic_dataset
    from egtr.inference.selection import read_predictions, select

    settings = DemoSettings.quick()
    started = time.perf_counter()
    world = args.out / "world"
    if not (world / "rel.json").is_file():
        generate_synthetic_dataset(world, args.labelled + args.pool, 16, args.test, settings.image_size, settings.seed)
    train_images = json.loads((world / "train.json").read_text())["images"]
    labelled = {image["id"] for image in train_images[: args.labelled]}
    pool = train_images[args.labelled :]
    base_data = subset_dataset(world, args.out / "labelled", labelled)
    detector = train(settings, base_data, args.out / "detector", "detector", (settings.detector_epochs, 0))
    base = train(settings, base_data, args.out / "base", "egtr", (args.base_epochs, 1), detector_weights=str(detector))
    results: dict[str, Any] = {"base": evaluate(settings, base, base_data)}
    candidates = read_predictions(predict_pool(settings, base, world, pool, args.out / "pool_predictions"))
    id_of = {image["file_name"]: image["id"] for image in pool}
    choices = {"uncertainty": select(candidates, args.budget, "uncertainty"),
               "diverse": select(candidates, args.budget, "diverse")}  # fmt: skip
    for seed in range(args.random_seeds):
        choices[f"random-{seed}"] = select(candidates, args.budget, "random", seed)
    for name, chosen in choices.items():
        # The same "labelled" images in every strategy's dataset, plus its chosen ones (from the world's ground truth).
        ids = labelled | {id_of[Path(item.key).name] for item in chosen}
        data = subset_dataset(world, args.out / f"data-{name}", ids)
        epochs = (args.finetune_epochs, 1)
        model = train(settings, data, args.out / f"finetune-{name}", "egtr", epochs, init_from=str(base))
        results[name] = evaluate(settings, model, data)
        results[name]["mean_uncertainty_chosen"] = round(sum(item.uncertainty for item in chosen) / len(chosen), 4)
        print(name, results[name], flush=True)
    summary = {
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(_table(results))
    print(f"{summary['minutes']} minutes on {summary['cpu']}")
    return 0


def _table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| model | test R@50 | test mR@50 |", "|---|---|---|"]
    for name, values in results.items():
        lines.append(f"| {name} | {values[METRICS[0]]:.2f} | {values[METRICS[1]]:.2f} |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name")), "?")


if __name__ == "__main__":
    sys.exit(main())
