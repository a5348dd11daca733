"""Exact vs FAISS (HNSW) k-NN on real cell features: recall, score error, search and build time per bank size.

Cell features are SSAD's default (locally aware efficientnet_lite0 features of every stride-8 cell at 256 px,
centred and unit-normalised for the cosine bank) of Magnetic Tile's 761 training images; banks are random
subsets of them, queries are the cells of test images. Recall@k is the fraction of the exact k nearest
neighbours that the index returns.

Usage (from the project root)::

    python benchmarks/knn_index.py            # -> benchmarks/results/knn_index/results.{csv,md}
"""

import argparse
import time
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from tables import write_table

from anomalib_ssad import SSAD
from anomalib_ssad.components import MemoryBank
from anomalib_ssad.components.memory_bank import CentredParts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLUMNS = (
    "metric",
    "bank_rows",
    "queries",
    "recall_at_3",
    "mean_relative_score_error",
    "exact_seconds",
    "faiss_seconds",
    "faiss_build_seconds",
)


@torch.no_grad()
def cell_features(model: SSAD, loader: torch.utils.data.DataLoader, limit: int | None = None) -> torch.Tensor:
    """Cell features ``[N, C]`` of the loader's images (pre-processed as the model does)."""
    rows, seen = [], 0
    for batch in loader:
        images = model.pre_processor(batch.image)
        rows.append(model.model.cell_features(images.expand(-1, 3, -1, -1)).flatten(0, 2))
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    return torch.cat(rows)


def measure(metric: str, bank_rows: torch.Tensor, queries: torch.Tensor, k: int = 3) -> dict[str, float]:
    exact, approximate = MemoryBank(len(bank_rows), metric=metric), MemoryBank(len(bank_rows), metric, "faiss")
    exact.fill(bank_rows)
    approximate.fill(bank_rows)
    start = time.perf_counter()
    exact_scores, exact_neighbours = exact.nearest(queries, k=k)
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    approximate.nearest(queries[:1], k=k)  # builds the index
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores, neighbours = approximate.nearest(queries, k=k)
    faiss_seconds = time.perf_counter() - start
    found = (neighbours[:, :, None] == exact_neighbours[:, None, :]).any(dim=1).float().mean()
    error = ((scores - exact_scores).abs() / exact_scores.clamp_min(1e-6)).mean()
    return {
        "metric": metric,
        "bank_rows": len(bank_rows),
        "queries": len(queries),
        "recall_at_3": round(float(found), 4),
        "mean_relative_score_error": round(float(error), 5),
        "exact_seconds": round(exact_seconds, 2),
        "faiss_seconds": round(faiss_seconds, 2),
        "faiss_build_seconds": round(build_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/knn_index"))
    parser.add_argument("--bank-rows", type=int, nargs="+", default=[16384, 65536, 262144])
    parser.add_argument("--queries", type=int, default=20000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = SSAD().eval()
    datamodule = MVTecAD(root=DATA / "magnetic_tile", category="magnetic_tile", num_workers=0, eval_batch_size=32)
    datamodule.setup()
    train = cell_features(model, datamodule.train_dataloader())
    test = cell_features(model, datamodule.test_dataloader(), limit=64)
    queries = test[torch.randperm(len(test))[: args.queries]]
    centred = CentredParts((train.shape[1],))
    centred.fit(train)
    rows = []
    for size in args.bank_rows:
        subset = train[torch.randperm(len(train))[:size]]
        rows.append(measure("cosine", centred(subset), centred(queries)))
        rows.append(measure("euclidean", subset, queries))
        print(rows[-2], rows[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    command = (
        "Command: `python benchmarks/knn_index.py` (2-core CPU; Magnetic Tile cell features; k = 3; HNSW M = 32, "
        "efSearch = 128)"
    )
    write_table(args.output / "results.csv", COLUMNS, rows, command)


if __name__ == "__main__":
    main()
