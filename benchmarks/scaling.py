"""Scaling with the training-set size: fit time, inference throughput and peak memory (issue #11).

Builds Magnetic Tile training sets of 100 and 300 images (random subsets of ``../shared/data``'s 761; the test
set is always the full one) and one of 2,283 (the 761 images plus their horizontal and vertical mirror images, a
light augmentation), then runs ``benchmarks/configs/scaling_magnetic_tile.yaml`` with the project's
runner (each job in its own process, so peak RSS is the job's) and writes
``benchmarks/results/scaling_magnetic_tile/scaling.md``: per model and size, fit seconds, fit seconds per
training image, inference images/s (batch 32, maps included) and peak RSS at the end of fitting and overall
(anomalib's pixel metrics over the 583 test images included). The 761-image rows come from
``compare_magnetic_tile`` (seed 0), the same data and settings.

The datasets are built under ``benchmarks/data/`` (ignored by git): the subsets and the test set are hard links
(copies across file systems; anomalib rejects symbolic links that leave the dataset root), the mirror images are
written as PNG files.

Usage: ``python benchmarks/scaling.py`` (from the project root; resumable like the runner)
"""

import csv
import os
import random
import shutil
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "magnetic_tile" / "magnetic_tile"
DATA = ROOT / "benchmarks" / "data" / "scaling"
CONFIG = ROOT / "benchmarks" / "configs" / "scaling_magnetic_tile.yaml"
OUTPUT = ROOT / "benchmarks" / "results" / "scaling_magnetic_tile"
SIZES = (100, 300)
COMPARE = ROOT / "benchmarks" / "results" / "compare_magnetic_tile" / "results.csv"
AUGMENTED = 2283  # 761 images and their two mirror images


def build_datasets() -> None:
    """Write the MVTec-layout training sets ``magnetic_tile_<n>`` under ``benchmarks/data/scaling``."""
    if not SOURCE.is_dir():
        sys.exit(f"{SOURCE}: Magnetic Tile not found (expected ../shared/data beside the project)")
    images = sorted((SOURCE / "train" / "good").glob("*.png"))
    for size in (*SIZES, AUGMENTED):
        category = DATA / f"magnetic_tile_{size}" / "magnetic_tile"
        good = category / "train" / "good"
        if good.is_dir() and len(list(good.iterdir())) == size:
            continue
        good.mkdir(parents=True, exist_ok=True)
        for name in ("test", "ground_truth"):
            for source in (SOURCE / name).rglob("*.png"):
                _link(source, category / name / source.relative_to(SOURCE / name))
        chosen = random.Random(0).sample(images, size) if size < len(images) else images
        for image in chosen:
            _link(image, good / image.name)
        if size == AUGMENTED:
            for image in images:
                pixels = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
                for code, suffix in ((1, "hflip"), (0, "vflip")):
                    cv2.imwrite(str(good / f"{image.stem}_{suffix}.png"), cv2.flip(pixels, code))


def _link(source: Path, target: Path) -> None:
    """A hard link of ``source`` at ``target`` (a copy across file systems); anomalib rejects symbolic links."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_table() -> str:
    """``scaling.md`` from the runner's ``results.csv``."""
    with (OUTPUT / "results.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    # All 761 images: the seed-0 rows of the side-by-side run (same data and settings).
    with COMPARE.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["model"] in {"ssad", "patchcore"} and row["seed"] == "0" and row["status"] == "ok":
                rows.append({**row, "dataset": "magnetic_tile_761"})
    lines = [
        f"Command: `python benchmarks/scaling.py` (config `{CONFIG.relative_to(ROOT)}`; 2 CPU cores, 256 px, "
        "efficientnet_lite0 ImageNet; test set: all 583 Magnetic Tile test images)",
        "",
        "| model | training images | status | fit s | fit s / image | inference images/s | fit peak RSS MB "
        "| peak RSS MB (with test metrics) | image AUROC | pixel AUROC | AUPRO |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda row: (row["model"], int(row["dataset"].rsplit("_", 1)[1]))):
        size = int(row["dataset"].rsplit("_", 1)[1])
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | {size} | {row['status']}: {row['error'][:80]} |" + " |" * 8)
            continue
        seconds = float(row["train_seconds"])
        metrics = " | ".join(f"{float(row[key]):.3f}" for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"))
        lines.append(
            f"| {row['model']} | {size} | ok | {seconds:.1f} | {seconds / size:.3f} | "
            f"{float(row['inference_images_per_second']):.1f} | {row.get('fit_peak_rss_mb') or '—'} | "
            f"{row['peak_rss_mb']} | {metrics} |"
        )
    text = "\n".join(lines) + "\n"
    (OUTPUT / "scaling.md").write_text(text)
    return text


def main() -> None:
    build_datasets()
    os.chdir(ROOT)
    from anomalib_ssad.benchmark import run_benchmark

    run_benchmark(CONFIG.relative_to(ROOT))
    print(write_table())


if __name__ == "__main__":
    main()
