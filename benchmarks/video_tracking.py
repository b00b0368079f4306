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
+ JSONL + annotated MP4) on CPU, for the demo model and for the paper's VG model (random weights: speed does not
depend on them) at the VG preprocessing (shorter side 800, longer <= 1333). Not a test.

    python benchmarks/video_tracking.py --model /work/demo_model/model --seeds 0 1 2 3 4 --out video.json
    python benchmarks/video_tracking.py --simulated --seeds 0 1 2 3 4 5 6 7 8 9
    python benchmarks/video_tracking.py --model /work/demo_model/model --seeds 0 --throughput --vg-frames 6
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
from egtr.video.evaluate import relation_metrics, track_metrics
from egtr.video.pipeline import TemporalSceneGraphs, predict_video
from egtr.video.synthetic_clip import ClipTruth, make_moving_clip, simulated_detections
from egtr.video.temporal import SmoothingConfig


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


def score_clip(predictor: Predictor | None, seed: int, frames: int, work: Path, annotate: bool) -> dict:
    """Generate clip `seed`, predict it (or simulate the detector when `predictor` is None) and score it."""
    clip = work / f"clip{seed}.mp4"
    truth: ClipTruth = make_moving_clip(clip, num_frames=frames, seed=seed)
    started = time.perf_counter()
    outputs = {}
    if predictor is None:
        temporal = TemporalSceneGraphs(frame_rate=truth.fps, predicate_names=PREDICATE_NAMES)
        graphs = simulated_detections(truth, seed)
        records = [temporal.update(graph, frame, frame / truth.fps) for frame, graph in enumerate(graphs)]
    else:
        report = predict_video(predictor, clip, work / f"out{seed}", annotate=annotate, progress=False)
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


def throughput(predictor: Predictor, clip: Path, frames: int, work: Path) -> dict:
    predict_video(predictor, clip, work / "warmup", end=0.2, progress=False)  # first-call costs
    started = time.perf_counter()
    report = predict_video(predictor, clip, work / "timed", end=frames / 10, progress=False)
    seconds = time.perf_counter() - started
    return {"frames": report.frames, "seconds": seconds, "fps": report.frames / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/work/demo_model/model")
    parser.add_argument("--simulated", action="store_true", help="score the simulated detector instead of --model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=120, help="frames per clip (10 fps)")
    parser.add_argument("--keep", default=None, help="keep the clips and outputs in this folder")
    parser.add_argument("--throughput", action="store_true", help="also time the demo and the VG model")
    parser.add_argument("--vg-frames", type=int, default=6, help="frames timed with the VG model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from egtr.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="egtr-video-"))
    work.mkdir(parents=True, exist_ok=True)
    predictor = None if args.simulated else Predictor.from_pretrained(args.model, device="cpu")
    source = "simulated detector" if args.simulated else f"model {args.model}"
    results = [score_clip(predictor, seed, args.frames, work, annotate=seed == args.seeds[0]) for seed in args.seeds]
    summary: dict = {"source": source, "seeds": args.seeds, "clips": results}
    print(f"{len(results)} clips x {args.frames} frames, {source}")
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
    if args.throughput and predictor is not None:
        clip = work / f"clip{args.seeds[0]}.mp4"
        summary["throughput_demo"] = throughput(predictor, clip, args.frames, work / "demo_speed")
        from egtr.config import EGTRConfig
        from egtr.models.egtr import EGTR

        vg = Predictor(EGTR(EGTRConfig()).eval(), device="cpu")  # 800 / 1333, the paper's evaluation size
        summary["throughput_vg"] = throughput(vg, clip, args.vg_frames, work / "vg_speed")
        for name in ("throughput_demo", "throughput_vg"):
            timing = summary[name]
            print(f"  {name}: {timing['fps']:.2f} frames/s ({timing['frames']} frames in {timing['seconds']:.1f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
