"""CPU forward-pass benchmark of the full VG model (ResNet-50, 200 queries) at 600x1000, batch 1, as a share of
this machine's matmul floor, with an op-by-op profile of where the time goes.

Every variant runs in its own subprocess (so peak memory is that variant's alone), with warm-up runs excluded:
- `baseline`: the straightforward first implementation of the same model (git revision `--baseline-rev`, default
  764528b: the original's structure, unfused batch norm, dense relation head, grid_sample attention), checked out into
  a temporary worktree;
- `current`: this checkout (gather-form deformable attention, factorised relation head, folded batch norm, ...);
- `current-dense-head`: this checkout with the original's materialised relation tensor (`dense_relation_head=True`);
- `current-bf16`: this checkout under `torch.autocast("cpu", torch.bfloat16)`, as `egtr predict --dtype bfloat16`;
- `+malloc`: the same with freed memory kept for reuse (`egtr.tune_cpu_allocator`, which every `egtr` command
  applies; here through glibc's equivalent environment variables, so that the baseline gets it too).

In every variant's process, right before and after its timed runs, the matmul floor is measured
(`egtr.benchmark.matmul_floor_gflops`: the best of 7 timed 2048^3 `torch.mm` calls in the variant's precision), and
the share = model GFLOP (`egtr.benchmark.forward_gflop`: matmuls + convolutions) / median time / the better floor.

With `--profile`, each `current*` variant also runs one more forward under `torch.profiler` (self time per op,
FLOP-counted ops with their own GFLOP/s and share of the floor) and one with oneDNN's verbose log (time per oneDNN
primitive kind and implementation, e.g. `brg_conv_fwd:avx512_core_amx`), so that the time not spent at the floor
is named op by op. Reports wall-clock median/min, CPU time (the sum over threads, less sensitive to other load on
the machine), the minor page faults per forward pass (what the `+malloc` variants remove) and the peak memory.

    python benchmarks/cpu_forward.py --runs 5 --threads 2 --out cpu_forward.json
    python benchmarks/cpu_forward.py --variants current+malloc current-bf16+malloc --profile --out profile.json

Not a test: run it with nothing else on the cores and name the CPU (it prints `lscpu`'s model name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from egtr.benchmark import cpu_name

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, statistics, sys, tempfile, time
import torch
from egtr import EGTR, EGTRConfig
settings = json.loads(sys.argv[1])
torch.set_num_threads(settings["threads"])
torch.manual_seed(0)
config = EGTRConfig(dense_relation_head=True) if settings["dense"] else EGTRConfig()
model = EGTR(config).eval()
height, width, bf16 = settings["height"], settings["width"], settings["bf16"]
dtype = torch.bfloat16 if bf16 else torch.float32
pixel_values = torch.randn(1, 3, height, width)
pixel_mask = torch.ones(1, height, width, dtype=torch.long)
try:
    from egtr.benchmark import matmul_floor_gflops
except ImportError:  # the baseline revision predates it: the same measurement
    def matmul_floor_gflops(dtype, size=2048, repeats=7):
        left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(left, right)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(left, right)
            best = min(best, time.perf_counter() - started)
        return 2 * size**3 / best / 1e9


def forward():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(pixel_values, pixel_mask)


floors = [matmul_floor_gflops(dtype)]
wall, cpu, faults = [], [], []
for index in range(settings["runs"] + 2):  # two warm-up runs, excluded
    start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    forward()
    if index >= 2:
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
floors.append(matmul_floor_gflops(dtype))
result = {"wall_median_s": statistics.median(wall), "wall_min_s": min(wall), "cpu_median_s": statistics.median(cpu),
          "page_faults_median": statistics.median(faults), "floor_gflops": floors,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if settings["profile"]:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        forward()
    events = profiler.key_averages()
    total_us = sum(event.self_cpu_time_total for event in events)
    result["profile"] = {"self_cpu_total_ms": total_us / 1000, "ops": sorted(
        ({"op": event.key, "calls": event.count, "self_ms": event.self_cpu_time_total / 1000,
          "total_ms": event.cpu_time_total / 1000, "gflop": event.flops / 1e9} for event in events
         if event.self_cpu_time_total > 0 or event.flops > 0),
        key=lambda op: -op["self_ms"])}
    # oneDNN writes its log to file descriptor 1: into a temporary file for the time of one forward pass
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile("w+") as log:
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                forward()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
        log.seek(0)
        lines = log.read().splitlines()
    kernels = {}
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        key = f"{fields[at + 2]} {fields[at + 3]} {fields[at + 4]}"  # kind, implementation, propagation
        entry = kernels.setdefault(key, {"calls": 0, "ms": 0.0})
        entry["calls"] += 1
        entry["ms"] += float(fields[-1])
    result["onednn"] = dict(sorted(kernels.items(), key=lambda item: -item[1]["ms"]))
print(json.dumps(result))
"""

MALLOC_REUSE = {
    "MALLOC_MMAP_THRESHOLD_": "1073741824",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
}  # = tune_cpu_allocator()

# name: (source, dense relation head, bf16 autocast, freed memory reused)
VARIANTS = {
    "baseline": ("baseline", False, False, False),
    "baseline+malloc": ("baseline", False, False, True),
    "current": ("current", False, False, False),
    "current+malloc": ("current", False, False, True),
    "current-dense-head+malloc": ("current", True, False, True),
    "current-bf16+malloc": ("current", False, True, True),
}


def run_variant(source_dir: Path, args: argparse.Namespace, dense: bool, bf16: bool, malloc_reuse: bool) -> dict:
    environment = {name: value for name, value in os.environ.items() if name not in MALLOC_REUSE}
    environment.update(PYTHONPATH=str(source_dir / "src"), **(MALLOC_REUSE if malloc_reuse else {}))
    settings = {
        "runs": args.runs,
        "threads": args.threads,
        "height": args.height,
        "width": args.width,
        "dense": dense,
        "bf16": bf16,
        "profile": args.profile and source_dir == REPO,
    }
    command = [sys.executable, "-c", CHILD, json.dumps(settings)]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


# The ops whose FLOP the profiler counts and that do the model's matmul work; a convolution's time is that of
# `aten::conv2d` including the oneDNN call under it (the FLOP are counted on the outer op).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::conv2d")


def print_profile(name: str, result: dict, gflop: float, top: int) -> None:
    profile, floor = result["profile"], max(result["floor_gflops"])
    total = profile["self_cpu_total_ms"]
    print(f"\n{name}: one forward's {total:.0f} ms of op time (torch.profiler, self time; floor {floor:.0f} GF/s)")
    print(f"{'op (by self time)':<44} {'calls':>6} {'self ms':>8} {'% time':>7}")
    for op in profile["ops"][:top]:
        print(f"{op['op'][:44]:<44} {op['calls']:>6} {op['self_ms']:>8.1f} {op['self_ms'] / total:>7.1%}")
    matmuls = [op for op in profile["ops"] if op["op"] in MATMUL_OPS and op["gflop"] > 0]
    print(f"{'matmul / convolution op':<44} {'calls':>6} {'ms':>8} {'GFLOP':>7} {'GF/s':>7} {'% floor':>8}")
    for op in matmuls:
        rate = op["gflop"] / (op["total_ms"] / 1000)
        print(
            f"{op['op']:<44} {op['calls']:>6} {op['total_ms']:>8.1f} {op['gflop']:>7.1f} {rate:>7.0f} "
            f"{rate / floor:>8.0%}"
        )
    matmul_ms = sum(op["total_ms"] for op in matmuls)
    print(
        f"matmuls and convolutions: {matmul_ms:.0f} of {total:.0f} ms ({matmul_ms / total:.0%}); the other "
        f"{total - matmul_ms:.0f} ms are memory-bound ops (the model: {gflop:.0f} GFLOP)"
    )
    if result.get("onednn"):
        print(f"{name}: oneDNN primitives (ONEDNN_VERBOSE, one forward)")
        for key, entry in list(result["onednn"].items())[:top]:
            print(f"  {key:<70} {entry['calls']:>5} calls {entry['ms']:>9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baseline-rev", default="764528b")
    parser.add_argument("--profile", action="store_true", help="op-by-op profile of the current* variants")
    parser.add_argument("--top", type=int, default=20, help="rows of each profile table")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from egtr import EGTR, EGTRConfig
    from egtr.benchmark import forward_gflop

    torch.manual_seed(0)
    example = torch.randn(1, 3, args.height, args.width), torch.ones(1, args.height, args.width, dtype=torch.long)
    gflop = forward_gflop(EGTR(EGTRConfig()).eval(), *example)
    results = {}
    with tempfile.TemporaryDirectory() as worktree:
        if any(VARIANTS[name][0] == "baseline" for name in args.variants):
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", worktree, args.baseline_rev],
                check=True,
                capture_output=True,
            )
        try:
            for name in args.variants:
                source, dense, bf16, malloc_reuse = VARIANTS[name]
                print(f"running {name} ...", file=sys.stderr, flush=True)
                source_dir = Path(worktree) if source == "baseline" else REPO
                results[name] = run_variant(source_dir, args, dense, bf16, malloc_reuse)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", worktree], check=False, capture_output=True
            )

    print(f"CPU: {cpu_name()}, {args.threads} threads; model {gflop:.0f} GFLOP at {args.height}x{args.width}")
    first = next(iter(results.values()))
    print(
        f"{'variant':<26} {'wall median':>12} {'wall min':>10} {'cpu median':>11} {'faults':>10} "
        f"{'peak RSS':>10} {'floor GF/s':>11} {'share':>6} {'speed-up':>9}"
    )
    for name, result in results.items():
        result["share_of_floor"] = gflop / result["wall_median_s"] / max(result["floor_gflops"])
        speedup = first["wall_median_s"] / result["wall_median_s"]
        print(
            f"{name:<26} {result['wall_median_s']:>11.2f}s {result['wall_min_s']:>9.2f}s "
            f"{result['cpu_median_s']:>10.2f}s {result['page_faults_median']:>10,.0f} "
            f"{result['peak_rss_mib']:>8.0f}MiB {max(result['floor_gflops']):>11.0f} {result['share_of_floor']:>6.0%} "
            f"{speedup:>8.2f}x"
        )
    for name, result in results.items():
        if "profile" in result:
            print_profile(name, result, gflop, args.top)
    if args.out:
        settings = {key: str(value) for key, value in vars(args).items()}
        document = {"cpu": cpu_name(), "model_gflop": gflop, "settings": settings, "results": results}
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
