"""Relation head benchmark: the factorised head against the original's materialised (B, N, N, L+1, 2D) tensor.

Times the head alone (forward, and forward + backward) at the paper's size (N=200 queries, 6 decoder layers,
d_model 256, 50 predicates) and reports each variant's peak memory: CUDA peak allocation on a GPU, otherwise the
peak resident memory of a subprocess that runs only that variant. Usage:

    python benchmarks/relation_head.py --device cpu --batch-size 1 --runs 5
    python benchmarks/relation_head.py --device cuda --dtype bf16 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from egtr import EGTR, EGTRConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def time_head(args: argparse.Namespace, dense: bool) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = EGTR(EGTRConfig(num_queries=args.queries)).to(device)
    config = model.config
    shape = (args.batch_size, config.decoder_layers, config.num_queries, config.d_model)
    queries = torch.randn(shape, device=device, requires_grad=args.backward)
    keys = torch.randn(shape, device=device, requires_grad=args.backward)
    hidden = torch.randn(
        args.batch_size, config.num_queries, config.d_model, device=device, requires_grad=args.backward
    )
    head = model.relation_head_dense if dense else model.relation_head
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "fp32")
    timings = []
    for index in range(args.runs + 2):  # two warm-up runs
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast, torch.set_grad_enabled(args.backward):
            relation_logits, connectivity_logits, _ = head(queries, keys, hidden)
            if args.backward:
                (relation_logits.float().mean() + connectivity_logits.float().mean()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            timings.append(time.perf_counter() - start)
    result = {"median_ms": 1000 * statistics.median(timings), "min_ms": 1000 * min(timings)}
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--variant", choices=["dense", "factorised"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.variant is not None:  # child process: one variant only, so its peak memory is its own
        print(json.dumps(time_head(args, dense=args.variant == "dense")))
        return
    results = {}
    for variant in ("dense", "factorised"):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        results[variant] = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    memory_key = "peak_memory_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    mode = "forward+backward" if args.backward else "forward"
    print(f"relation head, {mode}, B={args.batch_size}, N={args.queries}, {args.dtype}, {args.device}")
    for variant, result in results.items():
        print(
            f"  {variant:<11} median {result['median_ms']:9.1f} ms   min {result['min_ms']:9.1f} ms   "
            f"peak {result[memory_key]:8.0f} MiB"
        )
    print(f"  speed-up {results['dense']['median_ms'] / results['factorised']['median_ms']:.2f}x")


if __name__ == "__main__":
    main()
