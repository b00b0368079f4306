"""CPU forward-pass benchmark of the full VG model (ResNet-50, 200 queries) at 600x1000, batch 1.

Every variant runs in its own subprocess (so peak memory is that variant's alone), with warm-up runs excluded:
- `baseline`: the straightforward first implementation of the same model (git revision `--baseline-rev`, default
  764528b: the original's structure, unfused batch norm, dense relation head, grid_sample attention), checked out into
  a temporary worktree;
- `current`: this checkout (gather-form deformable attention, factorised relation head, folded batch norm, ...);
- `current-dense-head`: this checkout with the original's materialised relation tensor (`dense_relation_head=True`);
- `current-bf16`: this checkout under `torch.autocast("cpu", torch.bfloat16)`, as `egtr predict --dtype bfloat16`;
- `+malloc`: the same with freed memory kept for reuse (`egtr.tune_cpu_allocator`, which every `egtr` command
  applies; here through glibc's equivalent environment variables, so that the baseline gets it too).

Reports wall-clock median/min, CPU time (the sum over threads, less sensitive to other load on the machine),
the minor page faults per forward pass (what the `+malloc` variants remove) and the peak resident memory. Usage:

    python benchmarks/cpu_forward.py --runs 5 --threads 2 --out cpu_forward.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from egtr import EGTR, EGTRConfig
runs, threads, height, width = (int(argument) for argument in sys.argv[1:5])
dense, bf16 = sys.argv[5] == "1", sys.argv[6] == "1"
torch.set_num_threads(threads)
torch.manual_seed(0)
config = EGTRConfig(dense_relation_head=True) if dense else EGTRConfig()
model = EGTR(config).eval()
pixel_values = torch.randn(1, 3, height, width)
pixel_mask = torch.ones(1, height, width, dtype=torch.long)
wall, cpu, faults = [], [], []
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
    for index in range(runs + 2):  # two warm-up runs, excluded
        start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        model(pixel_values, pixel_mask)
        if index >= 2:
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
print(json.dumps({"wall_median_s": statistics.median(wall), "wall_min_s": min(wall),
                  "cpu_median_s": statistics.median(cpu), "page_faults_median": statistics.median(faults),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


MALLOC_REUSE = {
    "MALLOC_MMAP_THRESHOLD_": "1073741824",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
}  # = tune_cpu_allocator()


def run_variant(
    source_dir: Path, args: argparse.Namespace, dense: bool = False, bf16: bool = False, malloc_reuse: bool = False
) -> dict:
    environment = {name: value for name, value in os.environ.items() if name not in MALLOC_REUSE}
    environment.update(PYTHONPATH=str(source_dir / "src"), **(MALLOC_REUSE if malloc_reuse else {}))
    command = [
        sys.executable,
        "-c",
        CHILD,
        str(args.runs),
        str(args.threads),
        str(args.height),
        str(args.width),
        "1" if dense else "0",
        "1" if bf16 else "0",
    ]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--baseline-rev", default="764528b")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as worktree:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", worktree, args.baseline_rev],
            check=True,
            capture_output=True,
        )
        try:
            results["baseline"] = run_variant(Path(worktree), args)
            results["baseline+malloc"] = run_variant(Path(worktree), args, malloc_reuse=True)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", worktree], check=False, capture_output=True
            )
    results["current"] = run_variant(REPO, args)
    results["current+malloc"] = run_variant(REPO, args, malloc_reuse=True)
    results["current-dense-head+malloc"] = run_variant(REPO, args, dense=True, malloc_reuse=True)
    results["current-bf16+malloc"] = run_variant(REPO, args, bf16=True, malloc_reuse=True)

    baseline = results["baseline"]
    print(
        f"{'variant':<26} {'wall median':>12} {'wall min':>10} {'cpu median':>11} {'faults':>10} "
        f"{'peak RSS':>10} {'speed-up':>9}"
    )
    for name, result in results.items():
        speedup = baseline["wall_median_s"] / result["wall_median_s"]
        print(
            f"{name:<26} {result['wall_median_s']:>11.2f}s {result['wall_min_s']:>9.2f}s "
            f"{result['cpu_median_s']:>10.2f}s {result['page_faults_median']:>10,.0f} "
            f"{result['peak_rss_mib']:>8.0f}MiB {speedup:>8.2f}x"
        )
    if args.out:
        settings = {key: str(value) for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
