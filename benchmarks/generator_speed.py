# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Speed of the synthetic-anomaly generator against one ResNet-18 training step (the training hot path).

For each preset (image level, patch level, SADSA, CutPaste), the generator's time for one batch of images at
256x256 (real MVTec AD bottle images if available, else random ones) on the chosen device is compared with one
ResNet-18 training step (torchvision, ``weights=None``; forward, backward and SGD) on a 256x256 batch of the same
size there. The step on the preset's own output (32x32 patches for the patch level) is reported as well. On CUDA
both are timed after ``torch.cuda.synchronize``.

Example:
    From the repository root::

        python benchmarks/generator_speed.py
        python benchmarks/generator_speed.py --repeats 3 --data /path/to/mvtec_ad/bottle/train/good
        python benchmarks/generator_speed.py --device cuda --batch-size 96     # on a GPU

    Results go to ``benchmarks/results/generator_speed_<device>.csv`` and ``.md``.
"""

import argparse
import csv
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator

IMAGE_SIZE = 256
DEFAULT_DATA = Path("/work/shared/data/mvtec_ad/bottle/train/good")
RESULTS = Path(__file__).parent / "results"


def load_batch(folder: Path, batch_size: int) -> tuple[torch.Tensor, str]:
    """The first ``batch_size`` images of ``folder`` at 256x256 (cycled if fewer), or random images if none."""
    paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not paths:
        return torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), "random"
    paths = [paths[index % len(paths)] for index in range(batch_size)]
    arrays = [cv2.resize(cv2.imread(str(path))[..., ::-1], (IMAGE_SIZE, IMAGE_SIZE)) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255, str(folder)


def median_seconds(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call (synchronised on CUDA)."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    function()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step_seconds(images: torch.Tensor, labels: torch.Tensor, repeats: int) -> float:
    """Median time of one ResNet-18 training step (3-way head, as in the pretext task)."""
    model = torchvision.models.resnet18(weights=None, num_classes=3).to(images.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> None:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return median_seconds(step, repeats, images.device)


def main() -> None:
    parser = argparse.ArgumentParser(description="Synthetic-anomaly generator speed benchmark")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of normal images (png)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(2)
    load_at_start = os.getloadavg()[0]

    images, data = load_batch(args.data, args.batch_size)
    images = images.to(device)
    presets = {
        "image_level": SyntheticAnomalyGenerator.image_level,
        "patch_level": SyntheticAnomalyGenerator.patch_level,
        "sadsa": SyntheticAnomalyGenerator.sadsa,
        "cutpaste": SyntheticAnomalyGenerator.cutpaste,
    }
    rows = []
    step_256 = None
    for name, preset in presets.items():
        generator = preset()
        # Draws on the batch's device; the first batch resolves the object mask mode (the steady state follows).
        rng = torch.Generator(device=device).manual_seed(0)
        generator(images, generator=rng)
        seconds = median_seconds(
            lambda generator=generator, rng=rng: generator(images, generator=rng), args.repeats, device
        )
        output, labels, _ = generator(images, generator=rng)
        step_output = training_step_seconds(output, labels, max(1, args.repeats // 2))
        if output.shape[-1] == IMAGE_SIZE:
            step_256 = step_output if step_256 is None else step_256
        rows.append(
            {
                "preset": name,
                "object_mask_mode": generator.object_masker.resolved_mode,
                "output_size": output.shape[-1],
                "generator_ms_per_batch": round(seconds * 1000, 1),
                "samples_per_s": round(args.batch_size / seconds, 1),
                "step_on_output_ms": round(step_output * 1000, 1),
            }
        )
    for row in rows:
        row["resnet18_step_256_ms"] = round(step_256 * 1000, 1)
        row["ratio_to_step_256_pct"] = round(100 * row["generator_ms_per_batch"] / row["resnet18_step_256_ms"], 2)
        row["ratio_to_step_on_output_pct"] = round(100 * row["generator_ms_per_batch"] / row["step_on_output_ms"], 2)

    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU used"
    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {accelerator}; 1-min load average at the "
        f"start {load_at_start:.2f} (other processes on the machine inflate both the generator and the step times)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"generator_speed_{device.type}"
    with (RESULTS / f"{stem}.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Synthetic-anomaly generator speed",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}  ",
        f"Input: batch {args.batch_size} at {IMAGE_SIZE}x{IMAGE_SIZE} on {device}, images: {data}. Median of "
        f"{args.repeats} batches after a warm-up batch; ResNet-18 (weights=None) step = forward + backward + SGD, "
        "3-way head.",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(str(value) for value in row.values()) + " |" for row in rows),
        "",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
