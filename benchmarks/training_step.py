"""Seconds per training step of the demo's network, to compare machines and commits. Not a test.

One step = forward, a sum of the outputs as the loss, backward and an Adam update, on a fixed batch of 8 random
128 x 128 images (the demo's batch and image size; `egtr.demo.DemoSettings.full`). 3 warm-up steps, then the mean
of `--steps`. Run it with another commit's sources to compare code on one machine:

    python benchmarks/training_step.py
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/training_step.py
"""

from __future__ import annotations

import argparse
import time

import torch

from egtr.demo import DemoSettings
from egtr.models import EGTR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    model = EGTR(DemoSettings.full().model_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    pixel_values, pixel_mask = torch.randn(8, 3, 128, 128), torch.ones(8, 128, 128, dtype=torch.long)

    def step() -> None:
        output = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        loss = output.logits.sum() + output.pred_boxes.sum() + output.pred_rel.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(arguments.steps):
        step()
    seconds = (time.perf_counter() - start) / arguments.steps
    print(f"{seconds:.3f} s per step ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
