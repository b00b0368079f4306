"""Temporal scene graphs on generated clips of the synthetic world: identity, relation intervals, throughput.

For each seed, a clip of moving synthetic objects is generated (`egtr.video.synthetic_clip`, true tracks and
relations known), `egtr.video.predict_video` runs a model over it (the demo model by default: it was trained on
that world), and the records are scored against the truth (`egtr.video.evaluate`):

* identity: IDF1, the fraction of true track-frames carrying their track's one id, identity switches, class
  accuracy of the track's vote vs the frame's own class; the baseline is the numbering of the objects in each
  frame's scene graph (what a per-frame loop gives);
* relations: frame-level F1, interval recall / precision (tIoU >= 0.5) and the number of appear/end changes
  (flicker), for the unsmoothed per-frame decision (score >= 0.5 in that frame) and the default smoothing.

`--simulated` scores the simulated per-frame detector of `egtr.video.synthetic_clip.simulated_detections` instead
of a model (no decoding; the same tracking, smoothing and metrics), which isolates the temporal part.

Throughput (`--throughput`): frames per second of the whole `predict_video` (decode + model + tracking + smoothing
+ JSONL + annotated MP4) on CPU, for the demo model (or its architecture with random weights when the directory is
missing: speed does not depend on the weights) and for the paper's VG model (random weights) at the VG
preprocessing (shorter side 800, longer <= 1333). Not a test.

    python benchmarks/video_tracking.py --model /work/demo_model/model --seeds 0 1 2 3 4 --out video.json
    python benchmarks/video_tracking.py --simulated --seeds 0 1 2 3 4 5 6 7 8 9
    python benchmarks/video_tracking.py --seeds --throughput --frames 40 --vg-frames 6   # speed only
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from egtr.data.synthetic import PREDICATE_NAMES
from egtr.inference import Predictor
from egtr.video.annotate import render_frame
from egtr.video.decode import iter_frames
from egtr.video.evaluate import relation_metrics, track_metrics
from egtr.video.pipeline import TemporalSceneGraphs, predict_video
from egtr.video.synthetic_clip import ClipTruth, make_moving_clip, simulated_detections
from egtr.video.temporal import SmoothingConfig
from egtr.video.tracking import TrackingConfig
from egtr.video.writers import MP4Writer


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _per_frame_numbering(records: list[dict]) -> list[dict]:
    """The records as a per-frame loop would give them: object i of frame t is 'track' i, its own class."""
    numbered = []
    for record in records:
        objects = [
            item | {"track_id": index, "track_label_name": item["label_name"]}
            for index, item in enumerate(record["objects"])
        ]
        numbered.append(record | {"objects": objects})
    return numbered


def score_clip(
    predictor: Predictor | None, seed: int, frames: int, work: Path, annotate: bool, tracking: TrackingConfig
) -> dict:
    """Generate clip `seed`, predict it (or simulate the detector when `predictor` is None) and score it."""
    clip = work / f"clip{seed}.mp4"
    truth: ClipTruth = make_moving_clip(clip, num_frames=frames, seed=seed)
    started = time.perf_counter()
    outputs = {}
    if predictor is None:
        temporal = TemporalSceneGraphs(frame_rate=truth.fps, predicate_names=PREDICATE_NAMES, tracking=tracking)
        graphs = simulated_detections(truth, seed)
        records = [temporal.update(graph, frame, frame / truth.fps) for frame, graph in enumerate(graphs)]
        if annotate:  # what the annotated MP4 of such a detector looks like
            outputs["video"] = str(work / f"simulated{seed}.annotated.mp4")
            with MP4Writer(outputs["video"], truth.fps) as writer:
                for frame, record in zip(iter_frames(clip), records):
                    boxes, lines = temporal.drawing_inputs(record)
                    writer.write(render_frame(frame.image, boxes, lines, time=frame.time))
    else:
        out = work / f"out{seed}"
        report = predict_video(predictor, clip, out, annotate=annotate, tracking=tracking, progress=False)
        records = _records(report.outputs["frames"])
        outputs = {key: str(value) for key, value in report.outputs.items()}
    seconds = time.perf_counter() - started
    return {
        "seed": seed,
        "objects": len(truth.classes),
        "frames": len(records),
        "seconds": seconds,
        "tracks": track_metrics(truth, records),
        "tracks_per_frame_numbering": track_metrics(truth, _per_frame_numbering(records)),
        "relations_unsmoothed": relation_metrics(truth, records, SmoothingConfig.unsmoothed(0.5)),
        "relations_smoothed": relation_metrics(truth, records, SmoothingConfig()),
        "outputs": outputs,
    }


def _mean(results: list[dict], group: str, key: str) -> float:
    return statistics.fmean(result[group][key] for result in results)


def throughput(predictor: Predictor, clip: Path, frames: int, work: Path, annotate: bool = True) -> dict:
    """Frames per second of `predict_video` over the first `frames` frames of `clip` (after a 2-frame warm-up)."""
    predict_video(predictor, clip, work / "warmup", end=0.2, progress=False)  # first-call costs
    started = time.perf_counter()
    report = predict_video(predictor, clip, work / "timed", end=frames / 10, annotate=annotate, progress=False)
    seconds = time.perf_counter() - started
    return {"frames": report.frames, "seconds": seconds, "fps": report.frames / seconds, "annotate": annotate}


def speed_models(model: str) -> dict[str, Predictor]:
    """The demo model (its directory, else its architecture with random weights: speed does not depend on them)
    at its 128 px, and the paper's VG model (random weights) at the VG evaluation size 800 / 1333."""
    from egtr.config import EGTRConfig
    from egtr.demo import DemoSettings
    from egtr.models.egtr import EGTR

    if Path(model, "config.json").is_file():
        demo = Predictor.from_pretrained(model, device="cpu")
    else:
        demo = Predictor(EGTR(DemoSettings.full().model_config()).eval(), device="cpu", image_size=128, max_size=256)
    return {"demo": demo, "vg": Predictor(EGTR(EGTRConfig()).eval(), device="cpu")}


def print_scores(results: list[dict]) -> None:
    for group, label in (("tracks_per_frame_numbering", "per-frame numbering"), ("tracks", "ByteTrack + vote")):
        print(
            f"  identity, {label:20s}: IDF1 {_mean(results, group, 'idf1'):.3f}  stable "
            f"{_mean(results, group, 'stable_fraction'):.3f}  switches {_mean(results, group, 'id_switches'):.1f}  "
            f"class acc (track / frame) {_mean(results, group, 'track_class_accuracy'):.3f} / "
            f"{_mean(results, group, 'frame_class_accuracy'):.3f}  "
            f"detected {_mean(results, group, 'detected_fraction'):.3f}"
        )
    for group in ("relations_unsmoothed", "relations_smoothed"):
        print(
            f"  {group:22s}: F1 {_mean(results, group, 'f1'):.3f} (P {_mean(results, group, 'precision'):.3f} "
            f"R {_mean(results, group, 'recall'):.3f})  intervals R {_mean(results, group, 'interval_recall'):.3f} "
            f"P {_mean(results, group, 'interval_precision'):.3f}  changes {_mean(results, group, 'changes'):.1f} "
            f"(true {_mean(results, group, 'true_changes'):.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/work/demo_model/model")
    parser.add_argument("--simulated", action="store_true", help="score the simulated detector instead of --model")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="clips to score (none: skip)")
    parser.add_argument("--frames", type=int, default=120, help="frames per clip (10 fps)")
    parser.add_argument("--keep", default=None, help="keep the clips and outputs in this folder")
    parser.add_argument("--throughput", action="store_true", help="also time the demo and the VG model")
    parser.add_argument("--vg-frames", type=int, default=6, help="frames timed with the VG model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duplicate-iou", type=float, default=0.7, help="as `egtr predict`'s (1: off)")
    parser.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from egtr.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="egtr-video-"))
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"threads": args.threads}
    if args.seeds:
        predictor = None if args.simulated else Predictor.from_pretrained(args.model, device="cpu")
        source = "simulated detector" if args.simulated else f"model {args.model}"
        tracking = TrackingConfig(duplicate_iou=None if args.duplicate_iou >= 1 else args.duplicate_iou)
        results = [
            score_clip(predictor, seed, args.frames, work, seed == args.seeds[0], tracking) for seed in args.seeds
        ]
        summary |= {"source": source, "seeds": args.seeds, "tracking": tracking.to_dict(), "clips": results}
        print(f"{len(results)} clips x {args.frames} frames, {source}")
        print_scores(results)
    if args.throughput:
        clip = work / "speed.mp4"
        make_moving_clip(clip, num_frames=max(args.frames, args.vg_frames), seed=0)
        models = speed_models(args.model)
        runs = {
            "demo": throughput(models["demo"], clip, args.frames, work / "demo_speed"),
            "demo_no_mp4": throughput(models["demo"], clip, args.frames, work / "demo_speed", annotate=False),
            "vg": throughput(models["vg"], clip, args.vg_frames, work / "vg_speed"),
        }
        summary["throughput"] = runs
        for name, timing in runs.items():
            print(f"  {name}: {timing['fps']:.2f} frames/s ({timing['frames']} frames in {timing['seconds']:.1f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
