"""Deformable-attention sampling benchmark: `grid_sample` per level against the one-gather form (the CPU path).

One encoder layer of the paper's model at 600x1000 (4 levels, 12,537 queries, 8 heads x 32 channels, 4 points),
random inputs with some points outside their level; reports the median over `--runs` after two warm-up calls, and
checks that both forms agree. Usage:

    python benchmarks/deformable_attention.py --runs 10 [--backward]
    python benchmarks/deformable_attention.py --device cuda --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from egtr import tune_cpu_allocator
from egtr.models.deformable_detr import (
    multi_scale_deformable_attention,
    multi_scale_deformable_attention_gather,
)

SPATIAL_SHAPES = [(75, 125), (38, 63), (19, 32), (10, 16)]  # 600x1000 input: strides 8, 16, 32, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backward", action="store_true", help="time forward + backward (training)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    queries = sum(height * width for height, width in SPATIAL_SHAPES)
    value = torch.randn(args.batch_size, queries, 8, 32, generator=generator).to(device)
    locations = (torch.rand(args.batch_size, queries, 8, 4, 4, 2, generator=generator) * 1.2 - 0.1).to(device)
    weights = torch.rand(args.batch_size, queries, 8, 4, 4, generator=generator).to(device)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    inputs = [tensor.requires_grad_(args.backward) for tensor in (value, locations, weights)]

    results = {}
    with torch.set_grad_enabled(args.backward):
        for name, attend in (
            ("grid_sample", multi_scale_deformable_attention),
            ("gather", multi_scale_deformable_attention_gather),
        ):
            times = []
            for index in range(args.runs + 2):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                output = attend(inputs[0], SPATIAL_SHAPES, inputs[1], inputs[2])
                if args.backward:
                    output.sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if index >= 2:
                    times.append(time.perf_counter() - start)
            results[name] = (statistics.median(times), output.detach())
    difference = (results["gather"][1] - results["grid_sample"][1]).abs().max().item()
    for name, (median, _) in results.items():
        scope = "forward + backward" if args.backward else "forward"
        print(f"{name:<12} {1000 * median:8.2f} ms  ({scope}, batch {args.batch_size}, {args.device})")
    print(f"speed-up {results['grid_sample'][0] / results['gather'][0]:.2f}x, max abs difference {difference:.1e}")


if __name__ == "__main__":
    main()
