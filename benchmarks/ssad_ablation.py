"""SSAD ablation (issue #8): what limits SSAD on real data, one row per hypothesis, on every dataset.

Each training variant is fitted once per dataset; scoring variants (what a cell's embedding holds, how the
memory bank is subsampled and with which seed, map smoothing, neighbours, a cell's context) then only refill the
bank from the same trained network and test again, so the rows of one training differ in exactly one scoring
choice. Every row uses the runner's Evaluator, 256 px (or the dataset's own size), seed 0.

Usage (from the project root; results are appended as they come and the table is rewritten)::

    python benchmarks/ssad_ablation.py                       # every dataset
    python benchmarks/ssad_ablation.py --datasets kolektorsdd
"""

import argparse
import json
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from fitting import StandardizedScores, fit, refit_scorer
from lightning.pytorch import seed_everything
from tables import read_rows, write_table

from anomalib_ssad import SSAD
from anomalib_ssad.components import gaussian_blur
from anomalib_ssad.components.memory_bank import CentredParts
from anomalib_ssad.components.scorers import CellScorer, PartScorer, Scorer, ScorerBag

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "mvtec_bottle": (DATA / "mvtec_ad", "bottle", (256, 256)),
    "kolektorsdd": (DATA / "kolektorsdd", "kolektorsdd", (256, 256)),
    "kolektorsdd_640x256": (DATA / "kolektorsdd", "kolektorsdd", (640, 256)),  # portrait: [H, W]
    "magnetic_tile": (DATA / "magnetic_tile", "magnetic_tile", (256, 256)),
}
DEFAULT = {}
HEAD_ONLY = {"warmup_epochs": 4, "finetune_epochs": 0}  # the default before fine-tuning
ONE_DRAW = {"memory_bank_draws": 1}  # the default before 3 bank draws
# (hypothesis, training arguments, [(row name, scoring overrides), ...]); the first scoring row is the trained
# model as it comes out of fitting.
TRAININGS = [
    (
        "dense pretext + fine-tuning (2 + 4 epochs, backbone lr 0.01; default)",
        DEFAULT,
        [
            ("default", {}),
            ("cells alone (rerun beside the context rows)", {"context_cells": 0}),
            ("cell + its 5x5-cell mean, one k-NN", {"context_cells": 5}),
            ("cell + its 5x5-cell mean, a k-NN each", {"context_cells": 5, "scales": "apart"}),
            ("3 bank draws, bank seed 1", {"bank_seed": 1}),
            ("3 bank draws, bank seed 2", {"bank_seed": 2}),
            ("one bank draw, bank seed 0 (previous default)", {**ONE_DRAW, "bank_seed": 0}),
            ("one bank draw, bank seed 1", {**ONE_DRAW, "bank_seed": 1}),
            ("one bank draw, bank seed 2", {**ONE_DRAW, "bank_seed": 2}),
            ("one bank draw, map smoothing sigma 2", {**ONE_DRAW, "sigma": 2.0}),
            ("one bank draw, map smoothing sigma 8", {**ONE_DRAW, "sigma": 8.0}),
            ("one bank draw, 1 nearest neighbour", {**ONE_DRAW, "num_neighbors": 1}),
            ("one bank draw, distance: 0.4 cosine + 0.6 Euclidean", {**ONE_DRAW, "direction_weight": 0.4}),
            ("one bank draw, H3: 16,384-row bank", {**ONE_DRAW, "memory_bank_size": 16384}),
            ("distance: cosine + Euclidean, each standardised on held-out normal cells", {"units": "standardized"}),
            (
                "one bank draw, backbone feature + the same minus its image's mean cell",
                {**ONE_DRAW, "image_centred": True},
            ),
        ],
    ),
    (
        "dense pretext + fine-tuning (2 + 2 epochs, backbone lr 0.01; previous default)",
        {"warmup_epochs": 2, "finetune_epochs": 2},
        [("default", {})],
    ),
    (
        "dense pretext, head only (4 epochs; default before 2 + 2)",
        HEAD_ONLY,
        [
            ("default", {}),
            ("H2: backbone feature + head embedding", {"dense_features": "backbone+head"}),
            ("H2: head embedding only", {"dense_features": "head"}),
            ("distance: cosine only", {"cell_distance": "cosine"}),
            ("distance: Euclidean only", {"cell_distance": "euclidean"}),
            ("distance: cosine about the origin + Euclidean", {"centring": False}),
            ("H3: random bank", {"memory_bank_sampler": "random"}),
            ("distance: max(cosine, Euclidean)", {"combine": "max"}),
            ("H3: 16,384-row bank", {"memory_bank_size": 16384}),
            ("distance: standardized Euclidean only", {"cell_distance": "standardized"}),
            ("distance: cosine + standardized Euclidean", {"cell_distance": "cosine+standardized"}),
            ("distance: 0.4 cosine + 0.6 Euclidean", {"direction_weight": 0.4}),
            ("distance: 0.3 cosine + 0.7 Euclidean", {"direction_weight": 0.3}),
            (
                "cosine only, random bank (earlier default)",
                {"cell_distance": "cosine", "memory_bank_sampler": "random"},
            ),
        ],
    ),
    (
        "dense pretext + fine-tuning (2 + 2 epochs, backbone lr 0.001)",
        {"warmup_epochs": 2, "finetune_epochs": 2, "finetune_lr": 0.001},
        [
            ("default", {}),
            ("distance: cosine only", {"cell_distance": "cosine"}),
            ("distance: Euclidean only", {"cell_distance": "euclidean"}),
            ("H2: backbone feature + head embedding", {"dense_features": "backbone+head"}),
        ],
    ),
    (
        "dense pretext + fine-tuning (2 + 6 epochs, backbone lr 0.003)",
        {"warmup_epochs": 2, "finetune_epochs": 6, "finetune_lr": 0.003},
        [("default", {})],
    ),
    (
        "dense pretext + fine-tuning (2 + 6 epochs, backbone lr 0.01)",
        {"warmup_epochs": 2, "finetune_epochs": 6},
        [("default", {})],
    ),
    (
        "dense pretext + fine-tuning (2 + 4 epochs, backbone lr 0.01, 32-sample SGD steps)",
        {"batch_size": 32},
        [("default", {})],
    ),
    (
        "H1: crop pretext, pooled windows (earlier default)",
        {"localization": "patch", "memory_bank_size": 16384, **HEAD_ONLY},
        [("", {})],
    ),
]
COLUMNS = ("dataset", "training", "scoring", "image_AUROC", "pixel_AUROC", "pixel_AUPRO", "fit_seconds")


def run(dataset: str, output: Path) -> None:
    root, category, image_size = DATASETS[dataset]
    # A non-square input (the aspect-ratio hypothesis) is measured with the first training only.
    trainings = TRAININGS if image_size[0] == image_size[1] else TRAININGS[:1]
    for training, init_args, scorings in trainings:
        done = {(row["training"], row["scoring"]) for row in _rows(output) if row["dataset"] == dataset}
        if all((training, name) in done for name, _ in scorings):
            continue
        seed_everything(0)
        model, engine, datamodule, fit_seconds = fit(SSAD, init_args, (root, category), image_size, output / "jobs")
        for name, scoring in scorings:
            if (training, name) in done:
                continue
            if scoring:
                rescore(model, engine, datamodule, scoring)
            metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
            row = {
                "dataset": dataset,
                "training": training,
                "scoring": name,
                **{key: round(float(metrics[key]), 3) for key in COLUMNS[3:6]},
                "fit_seconds": round(fit_seconds),
            }
            print(json.dumps(row), flush=True)
            _append(output, row)


DEFAULT_SCORING = {
    "dense_features": "backbone",
    "cell_distance": "cosine+euclidean",
    "memory_bank_sampler": "coreset",
    "centring": True,
    "combine": "mean",
    "memory_bank_size": None,
    "direction_weight": 0.5,
    "num_neighbors": 3,
    "sigma": 4.0,
    "image_centred": False,
    "bank_seed": None,
    "memory_bank_draws": None,
    "context_cells": None,
    "scales": "joint",
    "units": "mean",
}


def rescore(model: SSAD, engine: Engine, datamodule: MVTecAD, scoring: dict) -> None:
    """Give a trained dense SSAD a new scorer (``scoring`` overrides ``DEFAULT_SCORING``) and refit it."""
    scoring = {**DEFAULT_SCORING, **scoring}
    model.model.scored_features = scoring["dense_features"]
    model.model.__dict__.pop("dense_embeddings", None)
    if scoring["context_cells"] is not None:
        model.model.context_cells = scoring["context_cells"]
    part_sizes = model.model.scored_part_sizes
    if scoring["image_centred"]:
        part_sizes = _image_centred(model.model)

    def cell_scorer(part_sizes: tuple[int, ...] = part_sizes) -> Scorer:
        scorer = CellScorer(
            part_sizes,
            scoring["memory_bank_size"] or model.hparams.memory_bank_size,
            scoring["cell_distance"],
            sampler=scoring["memory_bank_sampler"],
            combine=scoring["combine"],
            num_neighbors=scoring["num_neighbors"],
            direction_weight=scoring["direction_weight"],
        )
        if not scoring["centring"]:
            scorer.centred_parts = _Uncentred(model)
        return StandardizedScores(scorer) if scoring["units"] == "standardized" else scorer

    draws = scoring["memory_bank_draws"] or model.hparams.memory_bank_draws
    build = cell_scorer
    if scoring["scales"] == "apart":
        # The cell and its context each by its own k-NN (own banks, own nearest normal cells), scores averaged.
        def build() -> PartScorer:
            half = len(part_sizes) // 2
            return PartScorer(
                (sum(part_sizes[:half]), sum(part_sizes[half:])),
                [cell_scorer(part_sizes[:half]), cell_scorer(part_sizes[half:])],
            )

    model.model.scorer = ScorerBag.of(build, draws)
    model.model.blur = gaussian_blur(scoring["sigma"])
    # The bank's random draws (row subset, holdout, coreset candidates) follow the model's seed.
    trained_seed = model.seed
    model.seed = trained_seed if scoring["bank_seed"] is None else scoring["bank_seed"]
    refit_scorer(model, engine, datamodule)
    model.seed = trained_seed


def _image_centred(network: torch.nn.Module) -> tuple[int, ...]:
    """Score each cell's backbone feature beside the same feature minus its image's mean cell; the part sizes.

    The second part asks whether a cell differs from the rest of its own image (a band of another surface
    finish), which a bank of normal cells from every image cannot tell when such cells occur elsewhere.
    """

    def dense_embeddings(images: torch.Tensor) -> list[torch.Tensor]:
        features = type(network).dense_embeddings(network, images)[0]
        return [torch.cat([features, features - features.mean(dim=(1, 2), keepdim=True)], dim=-1)]

    network.dense_embeddings = dense_embeddings
    return (*network.scored_part_sizes, *network.scored_part_sizes)


class _Uncentred(CentredParts):
    """Part-wise unit normalisation about the origin (the mean stays zero): the scoring before centring."""

    def __init__(self, model: SSAD) -> None:
        super().__init__(model.model.scored_part_sizes)

    def fit(self, embeddings: torch.Tensor) -> None:
        del embeddings


def _rows(output: Path) -> list[dict[str, str]]:
    return read_rows(output / "results.csv")


def _append(output: Path, row: dict) -> None:
    rows = [*_rows(output), {key: str(value) for key, value in row.items()}]
    command = "Command: `python benchmarks/ssad_ablation.py` (seed 0, efficientnet_lite0 ImageNet, this 2-core CPU)"
    write_table(output / "results.csv", COLUMNS, rows, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/ssad_ablation"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        run(dataset, args.output)


if __name__ == "__main__":
    main()
