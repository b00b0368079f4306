"""Every runtime side by side on this machine: the full VG model (ResNet-50, 200 queries) at 600x1000, batch 1 and 8.

What it does, in one run:
1. builds the VG configuration with random weights (speed does not depend on them) and saves it;
2. exports it with `egtr export` (ONNX, then converted to OpenVINO IR) and records export time and size;
3. runs each variant in its own process, with the same number of threads: PyTorch eager float32 and bfloat16
   autocast, PyTorch `torch.compile` (batch 1; compile time reported apart), ONNX Runtime float32, OpenVINO f32 and
   bf16 inference precision;
4. in every one of those processes, right before and after its timed runs, measures this machine's matmul
   throughput (the "floor": the best GFLOP/s of a 2048^3 float32 and bfloat16 `torch.mm` over several repetitions),
   so that each time is also a share of what the cores can do: share = model GFLOP / time / floor GFLOP/s. The model's
   GFLOP are counted by `torch.utils.flop_counter` (matmuls and convolutions; the deformable sampling is not a matmul
   and counts as 0).

    python benchmarks/runtimes.py --out runtimes.json             # ~10-15 minutes on 2 cores
    python benchmarks/runtimes.py --variants torch-fp32 openvino-bf16 --batches 1

Not a test: numbers depend on the machine; run it with nothing else on the cores and name the CPU (lscpu).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from egtr.benchmark import cpu_name

REPO = Path(__file__).resolve().parents[1]

# name: (runtime, dtype, compile mode)
VARIANTS = {
    "torch-fp32": ("torch", "float32", None),
    "torch-bf16": ("torch", "bfloat16", None),
    "torch-compile-fp32": ("torch", "float32", "default"),
    "onnxruntime-fp32": ("onnxruntime", "float32", None),
    "openvino-fp32": ("openvino", "float32", None),
    "openvino-bf16": ("openvino", "bfloat16", None),
}

CHILD = r"""
import json, resource, statistics, sys, time
import torch
settings = json.loads(sys.argv[1])
torch.set_num_threads(settings["threads"])
from egtr.benchmark import matmul_floor_gflops
from egtr.inference.loading import load_runtime
from egtr.inference.processor import ModelInputs


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def floors():
    return {"float32": matmul_floor_gflops(torch.float32), "bfloat16": matmul_floor_gflops(torch.bfloat16)}


floors_before = floors()
started = time.perf_counter()
loaded = load_runtime(settings["model"], settings["runtime"], device="cpu", dtype=settings["dtype"],
                      threads=settings["threads"], compile_mode=settings["compile"])
load_s = time.perf_counter() - started
batch, height, width = settings["batch"], settings["height"], settings["width"]
generator = torch.Generator().manual_seed(0)
inputs = ModelInputs(torch.randn(batch, 3, height, width, generator=generator),
                     torch.ones(batch, height, width, dtype=torch.int64))
started = time.perf_counter()
loaded.runtime(inputs)  # the first call: compilation, graph optimisation, allocator growth
first_s = time.perf_counter() - started
for _ in range(settings["warmup"] - 1):
    loaded.runtime(inputs)
times = [_timed(lambda: loaded.runtime(inputs)) for _ in range(settings["runs"])]
floors_after = floors()
print(json.dumps({
    "median_s": statistics.median(times), "min_s": min(times), "times_s": times, "first_call_s": first_s,
    "load_s": load_s, "floor_gflops_before": floors_before, "floor_gflops_after": floors_after,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "describe": loaded.runtime.describe(),
}))
"""


def model_gflop(height: int, width: int) -> float:
    """Matmul + convolution GFLOP of one forward of the VG configuration (`egtr.benchmark.forward_gflop`)."""
    import torch

    from egtr import EGTR, EGTRConfig
    from egtr.benchmark import forward_gflop

    model = EGTR(EGTRConfig()).eval()
    return forward_gflop(model, torch.randn(1, 3, height, width), torch.ones(1, height, width, dtype=torch.long))


def prepare_models(folder: Path) -> dict[str, object]:
    """The random-weight VG model saved, exported to ONNX and converted to OpenVINO: paths, times, sizes."""
    import torch

    from egtr import EGTR, EGTRConfig
    from egtr.inference.export import export_model

    torch.manual_seed(0)
    EGTR(EGTRConfig()).save_pretrained(folder / "model")
    started = time.perf_counter()
    onnx = export_model(folder / "model", folder / "onnx")
    onnx_s = time.perf_counter() - started
    started = time.perf_counter()
    openvino = export_model(onnx.directory, folder / "openvino", format="openvino")
    openvino_s = time.perf_counter() - started
    return {
        "model": str(folder / "model"),
        "onnx": str(onnx.directory),
        "openvino": str(openvino.directory),
        "export": {
            "onnx": {"seconds": round(onnx_s, 1), "size_mib": round(onnx.manifest["size_bytes"] / 2**20, 1)},
            "openvino": {
                "seconds": round(openvino_s, 1),
                "size_mib": round(openvino.manifest["size_bytes"] / 2**20, 1),
            },
            "pytorch_safetensors_mib": round((folder / "model" / "model.safetensors").stat().st_size / 2**20, 1),
        },
    }


def run_variant(name: str, models: dict, args: argparse.Namespace, batch: int) -> dict:
    runtime, dtype, compile_mode = VARIANTS[name]
    model = {"torch": models["model"], "onnxruntime": models["onnx"], "openvino": models["openvino"]}[runtime]
    settings = {
        "model": model,
        "runtime": runtime,
        "dtype": dtype,
        "compile": compile_mode,
        "threads": args.threads,
        "batch": batch,
        "height": args.height,
        "width": args.width,
        "warmup": 2 if batch == 1 else 1,
        "runs": args.runs if batch == 1 else max(2, args.runs // 2),
    }
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)], env=environment, capture_output=True, text=True
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=5, help="timed runs at batch 1 (half as many at larger batches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    gflop = model_gflop(args.height, args.width)
    with tempfile.TemporaryDirectory() as folder:
        models = prepare_models(Path(folder))
        results: dict[str, dict] = {}
        for batch in args.batches:
            for name in args.variants:
                if VARIANTS[name][2] and batch != 1:
                    continue  # torch.compile: batch 1 only (its compile time is the point to see)
                print(f"running {name} batch {batch} ...", file=sys.stderr, flush=True)
                results[f"{name}/batch{batch}"] = run_variant(name, models, args, batch)
    print(f"CPU: {cpu_name()}, {args.threads} threads; model {gflop:.0f} GFLOP per image at {args.height}x{args.width}")
    print(f"export: {json.dumps(models['export'])}")
    header = f"{'variant':<30} {'median s/img':>12} {'images/s':>9} {'floor GF/s':>11} {'share':>6} {'1st call s':>10}"
    print(header)
    for key, result in results.items():
        if "error" in result:
            print(f"{key:<30} error: {result['error']}")
            continue
        batch = int(key.rsplit("batch", 1)[1])
        dtype = VARIANTS[key.split("/")[0]][1]
        floor = max(result["floor_gflops_before"][dtype], result["floor_gflops_after"][dtype])
        per_image = result["median_s"] / batch
        result["share_of_floor"] = gflop / per_image / floor
        print(
            f"{key:<30} {per_image:>12.3f} {1 / per_image:>9.2f} {floor:>11.0f} {result['share_of_floor']:>6.0%} "
            f"{result['first_call_s']:>10.1f}"
        )
    if args.out:
        document = {
            "cpu": cpu_name(),
            "settings": vars(args) | {"out": str(args.out)},
            "model_gflop": gflop,
            "export": models["export"],
            "results": results,
        }
        args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
