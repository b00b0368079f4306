"""Memory over a long video: `predict_video`'s resident memory as the records are written. Not a test.

A long clip of the synthetic world is generated and run through `predict_video` with every output on (JSONL,
events, annotated MP4): decoding, tracking, smoothing and writing are the real ones. What could grow with the
video's length lives there (tracker and smoother state, writers); the model's memory per frame does not depend on
the frame number, so by default a stand-in replaces the network: it answers each frame with the simulated detector
of `egtr.video.synthetic_clip.simulated_detections` (so thousands of frames run in minutes on a shared CPU).
`--model M` runs a real model instead. A sampler thread reads the process's resident set size (VmRSS) twice a second.

    python benchmarks/video_memory.py --frames 6000
    python benchmarks/video_memory.py --frames 600 --model tests/fixtures/reference/artifact --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from egtr.data.synthetic import PREDICATE_NAMES
from egtr.inference import Predictor
from egtr.inference.scene_graph import SceneGraph
from egtr.video.pipeline import predict_video
from egtr.video.synthetic_clip import make_moving_clip, simulated_detections


class SimulatedPredictor:
    """The part of `Predictor` that `predict_video` uses, answering frames with the simulated detector."""

    batch_size = 4
    predicate_names: ClassVar[list[str]] = list(PREDICATE_NAMES)

    def __init__(self, graphs) -> None:
        self._graphs = graphs

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def forward(self, batch: Sequence[np.ndarray]) -> int:
        return len(batch)

    def postprocess(self, count: int, batch: Sequence[np.ndarray], **options: object) -> list[SceneGraph]:
        return [next(self._graphs) for _ in range(count)]


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a model directory (default: the simulated stand-in)")
    parser.add_argument("--frames", type=int, default=6000)
    parser.add_argument("--size", type=int, default=None, help="model input size (shorter and longer side)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="egtr-video-memory-"))
    clip = work / "long.mp4"
    truth = make_moving_clip(clip, image_size=256, num_frames=args.frames, seed=0)
    if args.model:
        sizes = {"image_size": args.size, "max_size": args.size} if args.size else {}
        predictor = Predictor.from_pretrained(args.model, device="cpu", **sizes)
    else:
        predictor = SimulatedPredictor(simulated_detections(truth, seed=0))
    samples: list[tuple[float, float, int]] = []  # (seconds, MiB, bytes of JSONL written so far)
    done = threading.Event()
    frames_file = work / "out" / "long.frames.partial.jsonl"

    def sample() -> None:
        started = time.perf_counter()
        while not done.wait(0.5):
            written = frames_file.stat().st_size if frames_file.exists() else 0
            samples.append((time.perf_counter() - started, resident_mib(), written))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    report = predict_video(predictor, clip, work / "out", progress=False)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    total = report.outputs["frames"].stat().st_size
    print(
        f"{report.frames} frames in {seconds:.0f} s; resident memory (MiB) when each tenth of the records was written:"
    )
    for tenth in range(1, 11):
        reached = [sample for sample in samples if sample[2] >= total * tenth / 10]
        if reached:
            print(f"  {tenth * 10:3d} %: {reached[0][1]:8.1f}")
    print(f"  peak: {max(sample[1] for sample in samples):.1f} MiB; outputs in {work / 'out'}")


if __name__ == "__main__":
    main()
