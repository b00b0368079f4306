"""Bulk prediction speed and memory (not a test; docs/bulk.md has the numbers and the commands).

throughput: generated images of a typical mix of shapes (4:3 and 3:4 photos at several resolutions, 16:9, and a
few odd ratios) through the paper's VG model (random weights unless --model; speed does not depend on them) at
600/1000, one after the other in this process:

  * loop      today's `egtr predict --no-draw` loop (`predict_files`: one JSON per image, batch 1, 2 decode threads)
  * bulk      `egtr predict --output-format parquet` (`predict_corpus`), exact batching, batch 1 and --batch-size
  * bucket    the same with --bucket (aspect-ratio buckets, padded)

and compares each variant's records with the loop's: images whose ranked triplets are identical, and the largest
score difference among them.

memory: the peak RSS of this process and its DataLoader workers while --memory-images small images (the tiny
reference model at 64/96) go through `predict_corpus`, sampled every 0.2 s; growth = RSS at the end minus RSS after
the first tenth of the images.

    python benchmarks/bulk.py --images 500                        # throughput + memory, as the issue asks
    python benchmarks/bulk.py --images 40 --memory-images 5000 --out bulk.json
    python benchmarks/bulk.py --model /work/demo_model/model --size 192 --max-size 320 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from egtr import EGTR
from egtr.bulk import BulkOptions, Corpus, predict_corpus
from egtr.config import EGTRConfig
from egtr.inference import Predictor
from egtr.inference.files import predict_files

REFERENCE = Path(__file__).parents[1] / "tests" / "fixtures" / "reference" / "artifact"
# (width, height, share): what a photo collection looks like; 4:3 at three resolutions resizes to one size
# (816, 600) is within --bucket's 5 % of 4:3 but resizes to 816 x 600, not 800 x 600: its batches are padded.
SHAPES = [(640, 480, 0.2), (1024, 768, 0.15), (800, 600, 0.15), (480, 640, 0.2), (1280, 720, 0.15), (500, 333, 0.05)]
SHAPES += [(816, 600, 0.1)]


def make_images(folder: Path, count: int, seed: int = 0, small: bool = False) -> list[Path]:
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([share for *_, share in SHAPES] + [0.1])
    paths = []
    for index in range(count):
        choice = generator.choice(len(weights), p=weights / weights.sum())
        if small:
            width, height = int(generator.integers(48, 128)), int(generator.integers(48, 128))
        elif choice == len(SHAPES):
            width, height = int(generator.integers(300, 1200)), int(generator.integers(300, 1200))
        else:
            width, height = SHAPES[choice][:2]
        # smooth noise compresses like a photo (a JPEG of white noise would be 10x larger than real ones)
        coarse = generator.integers(0, 255, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
        path = folder / f"image{index:05d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    return paths


def records_by_key(out: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    return {record["key"]: record for record in pq.read_table(out / "shards").to_pylist()}


def compare(records: dict[str, dict], reference: dict[str, dict]) -> dict[str, float]:
    """Share of images with the same ranked triplets (labels and predicates) and the largest score difference."""

    def triplets(record: dict) -> list[tuple]:
        names = [item["label"] for item in record["objects"]]
        return [(names[r["subject"]], r["predicate"], names[r["object"]]) for r in record["relations"]]

    same, largest, changed = 0, 0.0, 0
    for key, expected in reference.items():
        got = records[key]
        if triplets(got) == triplets(expected):
            same += 1
            differences = [abs(a["score"] - b["score"]) for a, b in zip(got["relations"], expected["relations"])]
            largest = max([largest, *differences])
            changed += max(differences, default=0.0) > 1e-4
        else:
            changed += 1
    return {
        "identical_triplets": same / len(reference),
        "max_score_difference_when_identical": largest,
        "images_changed_by_more_than_1e-4": changed,
    }


def throughput(arguments: argparse.Namespace, work: Path) -> dict:
    if arguments.model:
        model_path = Path(arguments.model)
    else:
        model_path = work / "vg-random"
        torch.manual_seed(0)
        EGTR(EGTRConfig()).save_pretrained(model_path)
    paths = make_images(work / "images", arguments.images)
    sizes = {"size": arguments.size, "max_size": arguments.max_size}
    options = {"device": arguments.device, "dtype": arguments.dtype, "top_k": 20, **sizes}
    results: dict[str, dict] = {}

    predictor = Predictor.from_pretrained(model_path, **options)
    predictor([paths[0]])  # warm-up (allocator, first-call costs), as for every variant below
    start = time.perf_counter()
    predict_files(predictor, paths, work / "loop", draw_formats=[], progress=False, decode_workers=2)
    elapsed = time.perf_counter() - start
    results["loop (egtr predict --no-draw)"] = {"seconds": elapsed, "images_per_s": len(paths) / elapsed}
    loop_records = {
        str(path): {"key": str(path), **json.loads((work / "loop" / f"{path.stem}.json").read_text())} for path in paths
    }

    variants = [("bulk, batch 1", 1, False), (f"bulk, batch {arguments.batch_size}", arguments.batch_size, False)]
    variants.append((f"bulk --bucket, batch {arguments.batch_size}", arguments.batch_size, True))
    for name, batch_size, bucket in variants:
        predictor = Predictor.from_pretrained(model_path, batch_size=batch_size, **options)
        predictor([paths[0]])
        out = work / name.replace(" ", "_").replace(",", "")
        accelerator = "gpu" if predictor.device.type == "cuda" else "cpu"
        bulk = BulkOptions(out=out, accelerator=accelerator, num_workers=2, bucket=bucket, progress=False)
        start = time.perf_counter()
        predict_corpus(predictor, Corpus(files=tuple(map(str, paths)), shard_size=100), bulk)
        elapsed = time.perf_counter() - start
        results[name] = {"seconds": elapsed, "images_per_s": len(paths) / elapsed}
        results[name].update(compare(records_by_key(out), {key: loop_records[key] for key in loop_records}))
    return {"images": len(paths), "model": str(arguments.model or "VG configuration, random weights"), **results}


def _rss_bytes(with_children: bool) -> int:
    """RSS of this process, plus its children (the DataLoader workers) if asked, from /proc. Pages a worker still
    shares with its parent after fork count in both, so the sum overstates the memory in use."""
    total = 0
    pids = [os.getpid()]
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if with_children and children.exists():
        pids += [int(pid) for pid in children.read_text().split()]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass  # a worker that just exited
    return total


def memory(arguments: argparse.Namespace, work: Path) -> dict:
    paths = make_images(work / "small", arguments.memory_images, seed=1, small=True)
    predictor = Predictor.from_pretrained(REFERENCE, device="cpu", size=64, max_size=96)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_bytes(False), _rss_bytes(True)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    corpus = Corpus(files=tuple(map(str, paths)), shard_size=250)
    options = BulkOptions(out=work / "memory", accelerator="cpu", num_workers=2, progress=False)
    predict_corpus(predictor, corpus, options)
    stop.set()
    sampler.join()
    elapsed = time.perf_counter() - start
    tenth = next(sample for sample in samples if sample[0] - start >= elapsed / 10)
    last = samples[-1]
    mib = 1 << 20
    result: dict[str, float] = {"images": len(paths), "seconds": elapsed}
    for column, scope in ((1, "main"), (2, "main_and_workers")):
        result[f"{scope}_peak_rss_mib"] = max(sample[column] for sample in samples) / mib
        result[f"{scope}_rss_after_first_tenth_mib"] = tenth[column] / mib
        result[f"{scope}_rss_at_end_mib"] = last[column] / mib
        result[f"{scope}_growth_mib"] = (last[column] - tenth[column]) / mib
        # the curve: a plateau (allocator caches filling up) and a leak (steady growth) differ here
        result[f"{scope}_rss_by_tenth_mib"] = [
            round(next(sample for sample in samples if sample[0] - start >= elapsed * k / 10)[column] / mib, 1)
            for k in range(1, 10)
        ] + [round(last[column] / mib, 1)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="images of the throughput comparison")
    parser.add_argument("--memory-images", type=int, default=5000, help="small images of the memory run")
    parser.add_argument("--model", default=None, help="model directory (default: the VG model, random weights)")
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    arguments = parser.parse_args()
    from egtr import tune_cpu_allocator

    tune_cpu_allocator()  # as every egtr command does
    result: dict[str, object] = {"torch_threads": torch.get_num_threads(), "dtype": arguments.dtype}
    with tempfile.TemporaryDirectory() as folder:
        if not arguments.skip_throughput:
            result["throughput"] = throughput(arguments, Path(folder))
            print(json.dumps(result["throughput"], indent=2), flush=True)
        if not arguments.skip_memory:
            result["memory"] = memory(arguments, Path(folder))
            print(json.dumps(result["memory"], indent=2), flush=True)
    if arguments.out:
        Path(arguments.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
