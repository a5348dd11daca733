# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Backbone throughput on the CPU against the micro-batch size (``CPU_MICRO_BATCH_PIXELS``, ``CPU_TRAIN_...``).

On a CPU the backbone splits a batch into micro-batches of a fixed pixel budget, so that the activations stay in
cache. This times the efficientnet_lite0 backbone (ImageNet weights, eval mode) with each budget, in units of one
256x256 image, on what the models feed it: CutPaste's 64-px windows, SSAD's 256-px images, KolektorSDD's full
pixel count (256 high, 640 wide: its portrait images transposed), and one fine-tuning step of SSAD (eval-mode
backbone with gradients: forward and backward through the recomputed chunks). The outputs do not depend on the
budget (convolutions are per image); only the time does.

Example:
    From the repository root::

        python benchmarks/micro_batch.py
        python benchmarks/micro_batch.py --budgets 1 2 8 --repeats 3

    Results go to ``benchmarks/results/micro_batch.csv`` and ``.md``.
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tables import write_table

from anomalib_ssad.components import backbone as backbone_module
from anomalib_ssad.components.backbone import CPU_MICRO_BATCH_PIXELS, CPU_TRAIN_MICRO_BATCH_PIXELS, build_backbone

RESULTS = Path(__file__).parent / "results"
WORKLOADS: dict[str, tuple[int, int, int, bool]] = {
    # name: (batch, height, width, with gradients)
    "CutPaste windows 64x64, inference": (1024, 64, 64, False),
    "SSAD images 256x256, inference": (32, 256, 256, False),
    "KolektorSDD's pixel count transposed, 256x640 (height x width), inference": (16, 256, 640, False),
    "SSAD fine-tuning step 256x256 (forward + backward)": (32, 256, 256, True),
}


def workload(extractor: torch.nn.Module, images: torch.Tensor, gradients: bool) -> Callable[[], object]:
    """One pass of ``images`` through ``extractor``: inference, or forward and backward of a feature loss."""

    def infer() -> None:
        with torch.inference_mode():
            extractor(images)

    def step() -> None:
        extractor.zero_grad()
        sum(feature.square().mean() for feature in extractor(images)).backward()

    return step if gradients else infer


def main() -> None:
    """Time every workload with every budget and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4, 8], help="256x256 images per micro-batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    extractor = build_backbone("efficientnet_lite0").eval()
    defaults = [budget // 256**2 for budget in (CPU_MICRO_BATCH_PIXELS, CPU_TRAIN_MICRO_BATCH_PIXELS)]
    rows = []
    for name, (batch, height, width, gradients) in WORKLOADS.items():
        run = workload(extractor, torch.randn(batch, 3, height, width), gradients)
        setting = "CPU_TRAIN_MICRO_BATCH_PIXELS" if gradients else "CPU_MICRO_BATCH_PIXELS"
        times: dict[int, list[float]] = {budget: [] for budget in args.budgets}
        for _ in range(args.repeats + 1):  # the first round warms up
            for budget in args.budgets:  # interleaved, so that drifts of the machine's speed hit every budget
                setattr(backbone_module, setting, budget * 256 * 256)
                start = time.perf_counter()
                run()
                times[budget].append(time.perf_counter() - start)
        for budget in args.budgets:
            seconds = statistics.median(times[budget][1:])
            rows.append(
                {
                    "workload": name,
                    "budget_256px_images": budget,
                    "inputs_per_micro_batch": max(1, budget * 256 * 256 // (height * width)),
                    "seconds_per_batch": round(seconds, 3),
                    "inputs_per_s": round(batch / seconds, 1),
                }
            )
            print(rows[-1], flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    heading = "\n".join(
        [
            "# Backbone throughput against the CPU micro-batch size",
            "",
            f"Command: `{shlex.join(['python', *sys.argv])}`  ",
            f"Machine: {platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); efficientnet_lite0, ImageNet weights, eval mode; median of "
            f"{args.repeats} batches per budget after a warm-up, the budgets interleaved. "
            f"The default budgets: {defaults[0]} images of 256x256 for inference (`CPU_MICRO_BATCH_PIXELS`), "
            f"{defaults[1]} with gradients or a train-mode backbone (`CPU_TRAIN_MICRO_BATCH_PIXELS`).",
        ]
    )
    write_table(RESULTS / "micro_batch.csv", list(rows[0]), rows, heading)


if __name__ == "__main__":
    main()
