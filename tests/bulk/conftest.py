"""A tiny corpus for bulk prediction: a few dozen small noise images of three shapes and one broken file, run
through the reference weights (tests/fixtures/reference/artifact) at a small input size."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egtr.inference import Predictor

MODEL = Path(__file__).parents[1] / "fixtures" / "reference" / "artifact"
SIZES = {"size": 64, "max_size": 96}
SHAPES = [(48, 64), (64, 48), (56, 56)]  # (height, width): three resized sizes, so exact batching splits them


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        height, width = SHAPES[index % len(SHAPES)]
        path = folder / f"img{index:03d}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def predict_command(inputs: list[str], out: Path, *options: str) -> list[str]:
    sizes = ["--size", str(SIZES["size"]), "--max-size", str(SIZES["max_size"])]
    return [
        sys.executable, "-m", "egtr.cli", "predict", *inputs, "--model", str(MODEL), "--out", str(out), *sizes,
        "--top-k", "10", "--output-format", "parquet", "--device", "cpu", "--no-progress", *options,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    source = str(Path(__file__).parents[2] / "src")
    python_path = os.pathsep.join(filter(None, [source, str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}


def make_predictor(batch_size: int = 1) -> Predictor:
    return Predictor.from_pretrained(MODEL, device="cpu", top_k=10, batch_size=batch_size, **SIZES)


def read_records(out: Path) -> list[dict]:
    """Every record of a bulk output folder, shard after shard (Parquet or JSONL, gzip or not)."""
    import gzip
    import json

    import pyarrow.parquet as pq

    records = []
    for shard in sorted((out / "shards").iterdir()):
        if shard.name.endswith(".parquet"):
            records.extend(pq.read_table(shard).to_pylist())
        elif shard.name.endswith(".jsonl.gz"):
            with gzip.open(shard, "rt") as lines:
                records.extend(json.loads(line) for line in lines)
        elif shard.name.endswith(".jsonl"):
            with shard.open() as lines:
                records.extend(json.loads(line) for line in lines)
    return records


@contextlib.contextmanager
def one_thread():
    """One intra-op thread, as each process of the subprocess runs has: the same reduction order, so the same
    float bits, whatever the process; and these tiny forward passes gain nothing from two threads (on a busy
    machine two threads spin-wait for each other: 7x the CPU time per image)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory) -> list[Path]:
    """20 images and, at position 7, a file that is not an image."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = make_images(folder, 20)
    broken = folder / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    return [*paths[:7], broken, *paths[7:]]


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    return make_predictor()


@pytest.fixture(scope="session")
def single_process_run(corpus_files, predictor, tmp_path_factory) -> Path:
    """The uninterrupted single-process Parquet run that the other runs are compared with."""
    from egtr.bulk import BulkOptions, Corpus, predict_corpus

    out = tmp_path_factory.mktemp("single") / "out"
    corpus = Corpus(files=tuple(map(str, corpus_files)), shard_size=4)
    with one_thread():  # a session fixture is set up before the function-scoped `_one_thread`
        predict_corpus(predictor, corpus, BulkOptions(out=out, num_workers=1, progress=False))
    return out
