"""Time the evaluation of a VG-test-sized predictions file (26,446 images x 100 triplets per relation set).

Generates a synthetic ground truth (about 12 objects and 6 relations per image, like the VG150 test split) and a
predictions file with 200 object queries per image (EGTR keeps them all) and 100 ranked triplets in both the
graph-constraint and the no-graph-constraint set, where part of the triplets copy a ground-truth relation with
jittered boxes (so that matching does real work). Then it times `evaluate_predictions_file` (loading included),
R@K / mR@K of both modes: wall-clock and CPU seconds of the process (on a shared machine the CPU time is the
better measure; the evaluation is single-threaded). Not a test.

    python benchmarks/eval_speed.py                      # the full 26,446 images
    python benchmarks/eval_speed.py --images 2000 --open-images --detection
    python benchmarks/eval_speed.py --detection --compare-pycocotools   # detection AP: both backends, same file
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from egtr.inference.postprocess import DetectionPrediction, ScenePrediction
from egtr.metrics import PredictionsWriter, SceneGroundTruth, evaluate_predictions_file, save_ground_truths
from egtr.metrics.detection import STAT_NAMES
from egtr.metrics.evaluate import EvaluationReport

NUM_CLASSES, NUM_PREDICATES, NUM_QUERIES, TOP_K = 150, 50, 200, 100


def make_image(
    generator: np.random.Generator,
) -> tuple[SceneGroundTruth, dict[str, ScenePrediction], DetectionPrediction]:
    height, width = generator.integers(300, 1024, size=2)
    num_objects = int(generator.integers(2, 25))
    corners = generator.uniform(0, 1, size=(num_objects, 2)) * [width * 0.7, height * 0.7]
    sizes = generator.uniform(20, 300, size=(num_objects, 2))
    gt_boxes = np.concatenate([corners, np.minimum(corners + sizes, [width, height])], 1).astype(np.float32)
    gt_labels = generator.integers(0, NUM_CLASSES, num_objects)
    num_relations = int(generator.integers(1, 12))
    relations = np.column_stack(
        [
            generator.integers(0, num_objects, (num_relations, 2)),
            generator.integers(0, NUM_PREDICATES, num_relations),
        ]
    )
    truth = SceneGroundTruth(gt_boxes, gt_labels, relations)

    # Queries 0..G-1 are jittered copies of the ground-truth objects (15% with a wrong class), the rest distractors.
    boxes = np.tile([0, 0, 50, 50], (NUM_QUERIES, 1)).astype(np.float32) + generator.uniform(
        0, 500, (NUM_QUERIES, 1)
    ).astype(np.float32)
    boxes[:num_objects] = gt_boxes + generator.normal(0, 8, (num_objects, 4)).astype(np.float32)
    labels = generator.integers(0, NUM_CLASSES, NUM_QUERIES)
    copied = generator.uniform(size=num_objects) > 0.15
    labels[:num_objects][copied] = gt_labels[copied]
    scores = generator.uniform(0.05, 1, NUM_QUERIES).astype(np.float32)

    ranked = {}
    for name in ("graph_constraint", "no_graph_constraint"):
        triplets = np.column_stack(
            [generator.integers(0, NUM_QUERIES, (TOP_K, 2)), generator.integers(0, NUM_PREDICATES, TOP_K)]
        )
        true_rows = generator.integers(0, TOP_K, num_relations)
        triplets[true_rows] = relations  # ground-truth relations at random ranks (query i copies object i)
        relation_scores = np.sort(generator.uniform(0, 1, TOP_K).astype(np.float32))[::-1]
        ranked[name] = ScenePrediction(
            boxes, labels, scores, triplets.astype(np.int64), relation_scores, relation_scores
        )
    detection = DetectionPrediction(boxes[:TOP_K], labels[:TOP_K], np.sort(scores[:TOP_K])[::-1])
    return truth, ranked, detection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=26446)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open-images", action="store_true", help="also store and time an Open Images set")
    parser.add_argument("--detection", action="store_true", help="also store detections and time the COCO AP")
    parser.add_argument(
        "--compare-pycocotools",
        action="store_true",
        help="with --detection: evaluate the same file again with the pycocotools backend (the reference, slow) and "
        "compare the detection statistics",
    )
    args = parser.parse_args()

    generator = np.random.default_rng(args.seed)
    started = time.perf_counter()
    writer = PredictionsWriter(
        metadata={
            "num_rel_labels": NUM_PREDICATES,
            "num_labels": NUM_CLASSES,
            "top_k": TOP_K,
            "synthetic": True,
        }
    )
    truths = []
    for image in range(args.images):
        truth, ranked, detection = make_image(generator)
        if args.open_images:
            ranked["open_images"] = ranked["no_graph_constraint"]
        truths.append(truth)
        writer.add(
            [image],
            np.array([[600, 800]]),
            {name: [prediction] for name, prediction in ranked.items()},
            detections=[detection] if args.detection else None,
        )
    with tempfile.TemporaryDirectory() as directory:
        predictions_path = writer.save(Path(directory) / "predictions.npz")
        truth_path = save_ground_truths(Path(directory) / "ground_truth.npz", truths)
        print(
            f"generated {args.images} images in {time.perf_counter() - started:.1f} s; "
            f"file {predictions_path.stat().st_size / 2**20:.0f} MiB"
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        report = evaluate_predictions_file(predictions_path, truth_path, detection=args.detection)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(report.format_table())
        print("seconds per metric group:", {k: round(v, 2) for k, v in report.settings["seconds"].items()})
        print(
            f"evaluate_predictions_file total (loading included): {elapsed:.2f} s wall, {cpu:.2f} s CPU for "
            f"{args.images} images"
            + (f", detection backend {report.settings['detection_backend']}" if args.detection else "")
        )
        if args.detection and args.compare_pycocotools:
            compare_with_pycocotools(predictions_path, truth_path, report)


def compare_with_pycocotools(predictions_path: Path, truth_path: Path, report: EvaluationReport) -> None:
    """Evaluate the same file with the pycocotools backend; print its time and how the statistics differ."""
    started, cpu_started = time.perf_counter(), time.process_time()
    reference = evaluate_predictions_file(predictions_path, truth_path, detection_backend="pycocotools")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"evaluate_predictions_file total with pycocotools: {elapsed:.2f} s wall, {cpu:.2f} s CPU")
    print("seconds per metric group:", {k: round(v, 2) for k, v in reference.settings["seconds"].items()})
    fast, slow = report.results["detection"].stats, reference.results["detection"].stats
    differing = [name for name, a, b in zip(STAT_NAMES, fast, slow) if a != b]
    print(f"detection statistics bit-identical: {not differing}; max |difference| {np.max(np.abs(fast - slow)):.3g}")
    for name, a, b in zip(STAT_NAMES, fast, slow):
        if a != b:
            print(f"  {name}: numpy {a!r} pycocotools {b!r}")


if __name__ == "__main__":
    main()
