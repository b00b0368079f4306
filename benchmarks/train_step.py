"""Training-step throughput: forward + EGTR loss (matching, sampled relation loss) + backward + AdamW step.

Random images with random targets (10 objects, 8 relations each) at a fixed size; warm-up steps excluded;
reports images/s and, on CUDA, the peak memory. Usage:

    python benchmarks/train_step.py --device cpu --batch-size 2 --height 512 --width 672 --steps 3
    python benchmarks/train_step.py --device cuda --batch-size 4 --dtype bf16 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from egtr import EGTR, EGTRConfig, LossConfig, tune_cpu_allocator
from egtr.losses import EGTRCriterion

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def random_targets(batch_size: int, config: EGTRConfig, device: torch.device, generator: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch_size):
        centres = torch.rand(10, 2, generator=generator) * 0.6 + 0.2
        sizes = torch.rand(10, 2, generator=generator) * 0.3 + 0.05
        relations = torch.stack(
            [
                torch.randperm(10, generator=generator)[:8],
                torch.randperm(10, generator=generator)[:8],
                torch.randint(config.num_rel_labels, (8,), generator=generator),
            ],
            dim=1,
        )
        targets.append(
            {
                "boxes": torch.cat([centres, sizes], 1).to(device),
                "class_labels": torch.randint(config.num_labels, (10,), generator=generator).to(device),
                "relations": relations[relations[:, 0] != relations[:, 1]].to(device),
            }
        )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=672)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dense-relation-head", action="store_true", help="the original's materialised pair tensor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as every `egtr` command (egtr train included) does
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)

    config = EGTRConfig(dense_relation_head=args.dense_relation_head)
    model = EGTR(config).to(device).train()
    criterion = EGTRCriterion(
        LossConfig(), config.num_labels, config.num_rel_labels, num_decoder_layers=config.decoder_layers
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-4)
    pixel_values = torch.randn(args.batch_size, 3, args.height, args.width, device=device)
    pixel_mask = torch.ones(args.batch_size, args.height, args.width, dtype=torch.long, device=device)
    targets = random_targets(args.batch_size, config, device, generator)
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "fp32")

    timings = []
    for step in range(args.steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            outputs = model(pixel_values, pixel_mask)
        losses = criterion(outputs, targets, training=True)  # the loss itself runs in float32
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            timings.append(time.perf_counter() - start)
    median = statistics.median(timings)
    line = (
        f"train step B={args.batch_size} {args.height}x{args.width} {args.dtype} {args.device}: "
        f"{1000 * median:.0f} ms/step, {args.batch_size / median:.2f} images/s"
    )
    if device.type == "cuda":
        line += f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    print(line)


if __name__ == "__main__":
    main()
