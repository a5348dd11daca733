"""Inference cost of SSAD's cell context on this CPU: images/s of the eval forward, ``context_cells`` 0 and 5.

Both networks are SSAD's defaults with ImageNet weights and no pretext training (training changes the weights,
not the amount of computation), each with its scorer fitted on the cells of the same normal images. The same
test images are scored by each network in turns, batch by batch; the median time per image is kept. The runner's
images/s (``benchmarks/results/ssad_context``) also count data loading, post-processing and metrics, and its rows
ran on whichever host ran them; this compares the two networks in one process.

Usage (from the project root)::

    python benchmarks/context_cost.py     # -> benchmarks/results/ssad_context/inference_cost.{csv,md}
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from tables import write_table

from anomalib_ssad import SSAD

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLUMNS = ("dataset", "context_cells", "scored_dim", "test_images", "batch_size", "seconds_per_image", "images_per_s")


def load_images(model: SSAD, loader: torch.utils.data.DataLoader, limit: int) -> torch.Tensor:
    """The first ``limit`` images of ``loader``, pre-processed as the model does (256 px, ImageNet statistics)."""
    images = []
    for batch in loader:
        images.append(model.pre_processor(batch.image).expand(-1, 3, -1, -1))
        if sum(len(chunk) for chunk in images) >= limit:
            break
    return torch.cat(images)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ssad_context"))
    parser.add_argument("--dataset", default="magnetic_tile")
    parser.add_argument("--normal-images", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    datamodule = MVTecAD(root=DATA / args.dataset, category=args.dataset, num_workers=0, eval_batch_size=32)
    datamodule.setup()
    models = {cells: SSAD(context_cells=cells, seed=0).eval() for cells in (0, 5)}
    normal = load_images(models[0], datamodule.train_dataloader(), args.normal_images)
    test = load_images(models[0], datamodule.test_dataloader(), args.test_images)
    with torch.no_grad():
        for model in models.values():
            model.model.scorer.fit(model.model.normal_embeddings(normal), torch.Generator().manual_seed(0))
        times: dict[int, list[float]] = {cells: [] for cells in models}
        for _ in range(args.repeats):
            for batch in test.split(args.batch_size):
                for cells, model in models.items():
                    start = time.perf_counter()
                    model.model(batch)
                    times[cells].append((time.perf_counter() - start) / len(batch))
    rows = []
    for cells, model in models.items():
        seconds = statistics.median(times[cells])
        rows.append(
            {
                "dataset": args.dataset,
                "context_cells": cells,
                "scored_dim": sum(model.model.scored_part_sizes),
                "test_images": len(test),
                "batch_size": args.batch_size,
                "seconds_per_image": round(seconds, 4),
                "images_per_s": round(1 / seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    command = (
        f"Command: `python benchmarks/context_cost.py` (2-core CPU, {torch.get_num_threads()} threads; "
        f"{args.normal_images} normal images fit each scorer; median of {args.repeats} passes over the test images)"
    )
    write_table(args.output / "inference_cost.csv", COLUMNS, rows, command)


if __name__ == "__main__":
    main()
