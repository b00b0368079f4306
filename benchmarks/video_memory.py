"""Memory over a long video: `predict_video`'s resident memory after each tenth of the frames. Not a test.

A long clip of the synthetic world is generated, then processed with a small model (the reference fixture's tiny
untrained EGTR by default: memory growth comes from the pipeline, not the weights) with every output on (JSONL,
events, annotated MP4). A sampler thread records the process's resident set size (VmRSS) while it runs.

    python benchmarks/video_memory.py --frames 3000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch

from egtr.inference import Predictor
from egtr.video.pipeline import predict_video
from egtr.video.synthetic_clip import make_moving_clip

REFERENCE_MODEL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reference" / "artifact"


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REFERENCE_MODEL))
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64, help="model input size (shorter and longer side)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="egtr-video-memory-"))
    clip = work / "long.mp4"
    make_moving_clip(clip, image_size=128, num_frames=args.frames, seed=0)
    predictor = Predictor.from_pretrained(args.model, device="cpu", image_size=args.size, max_size=args.size)
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
    report = predict_video(predictor, clip, work / "out", progress=False)
    done.set()
    thread.join()
    total = report.outputs["frames"].stat().st_size
    print(f"{report.frames} frames; resident memory (MiB) when each tenth of the records was written:")
    for tenth in range(1, 11):
        reached = [sample for sample in samples if sample[2] >= total * tenth / 10]
        if reached:
            print(f"  {tenth * 10:3d} %: {reached[0][1]:8.1f}")
    print(f"  peak: {max(sample[1] for sample in samples):.1f} MiB; outputs in {work / 'out'}")


if __name__ == "__main__":
    main()
