"""CutPaste ablation (issue #8): its training schedule, what its windows' scorer sees and which scorer, per dataset.

CutPaste is fitted once per dataset, seed and schedule; its scorer is then refitted for each scoring (a choice of
``scored_features``: the pooled backbone stages the projection head takes, the head's embedding, or both; and of
``scorer``: the paper's Gaussian, the k-NN of SSAD's cells, or the k-NN of the stages beside the Gaussian of the
head), the post-processor refitted on the new scores, and tested again, so the rows of one training differ only
in how windows are scored. The scoring does not change the training (the pretext classifier always reads the
head's embedding). Every row uses the runner's Evaluator and 256 px; the ``mean`` rows average the seeds run.

Usage (from the project root; results are appended as they come and the table is rewritten)::

    python benchmarks/cutpaste_features.py                       # every dataset and schedule, seeds 0, 1, 2
    python benchmarks/cutpaste_features.py --datasets kolektorsdd --seeds 0 \
        --trainings "2 head-only epochs (backbone frozen)"       # one schedule (the names are in ALL_TRAININGS)
    python benchmarks/cutpaste_features.py --trainings "2 head-only epochs (backbone frozen)" \
        --scorings backbone+head/knn+gaussian backbone+head/knn3+gaussian \
        --output benchmarks/results/cutpaste_bank_draws                # the bank-draws probe
    python benchmarks/cutpaste_features.py --seeds 0 --scorings backbone+head/knn+gaussian \
        --trainings "2 head-only epochs (backbone frozen)" "1 head-only epoch (backbone frozen)" \
        "8 head-only epochs (backbone frozen)" "2 head-only epochs, binary CutPaste (no scar class)" \
        "2 + 8 epochs, fine-tuning lr 0.003" --output benchmarks/results/cutpaste_training  # the training probe

``knn3+gaussian`` is not a package scorer: the default's k-NN half averaged over 3 bank draws, each fitted on its
own third of the normal windows (:class:`~anomalib_ssad.components.scorers.ScorerBag`, as SSAD's cells are).
Nor are ``geomean(knn, gaussian)``, the two relative scores of ``knn+gaussian`` (each in units of a held-out normal
window's) combined by their geometric mean, and ``zmean(knn, gaussian)``, their mean after standardising each by
its mean and spread on held-out normal windows (``fitting.StandardizedScores``). ``knn+gaussian`` is their mean (the
default, as every table here was measured), ``min(knn, gaussian)`` their minimum (the package's
``combine="min"``). The combined-scores probe::

    python benchmarks/cutpaste_features.py --trainings "2 head-only epochs (backbone frozen)" \
        --scorings backbone+head/knn+gaussian "backbone+head/min(knn, gaussian)" \
        "backbone+head/geomean(knn, gaussian)" "backbone+head/zmean(knn, gaussian)" backbone+head/knn \
        --output benchmarks/results/cutpaste_part_combine
"""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from fitting import StandardizedScores, fit, refit_scorer
from lightning.pytorch import seed_everything
from tables import read_rows, rerun_command, seed_mean, write_table

from anomalib_ssad import CutPaste
from anomalib_ssad.components.pretext_network import PretextNetwork
from anomalib_ssad.components.scorers import CellScorer, PartScorer, Scorer, ScorerBag
from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_scorer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "mvtec_bottle": (DATA / "mvtec_ad", "bottle"),
    "kolektorsdd": (DATA / "kolektorsdd", "kolektorsdd"),
    "magnetic_tile": (DATA / "magnetic_tile", "magnetic_tile"),
}
# (scored_features, scorer); the first is the default.
SCORINGS = (
    ("backbone+head", "knn+gaussian"),
    ("head", "gaussian"),
    ("backbone", "gaussian"),
    ("backbone+head", "gaussian"),
    ("backbone+head", "knn"),
)
# Scorings run only when named (--scorings): not package options.
EXTRA_SCORINGS = (
    ("backbone+head", "knn3+gaussian"),
    ("backbone+head", "min(knn, gaussian)"),
    ("backbone+head", "geomean(knn, gaussian)"),
    ("backbone+head", "zmean(knn, gaussian)"),
)
ALL_SCORINGS = (*SCORINGS, *EXTRA_SCORINGS)
BANK_DRAWS = 3
DEFAULT_OUTPUT = Path("benchmarks/results/cutpaste_features")
# (schedule name, CutPaste arguments); the first is the default.
TRAININGS = {
    "2 head-only epochs (backbone frozen)": {},
    "2 + 8 epochs, fine-tuning lr 0.03 (the paper's lr)": {"finetune_epochs": 8, "finetune_lr": 0.03},
    "2 + 8 epochs, fine-tuning lr 0.003": {"finetune_epochs": 8, "finetune_lr": 0.003},
}
# Schedules run only when named (--trainings): the training probe's.
EXTRA_TRAININGS = {
    "1 head-only epoch (backbone frozen)": {"warmup_epochs": 1},
    "8 head-only epochs (backbone frozen)": {"warmup_epochs": 8},
    "2 head-only epochs, binary CutPaste (no scar class)": {"variant": "cutpaste"},
}
ALL_TRAININGS = {**TRAININGS, **EXTRA_TRAININGS}
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")
COLUMNS = ("dataset", "training", "seed", "scored_features", "scorer", *METRICS, "fit_seconds")


class GeometricMeanParts(Scorer):
    """The default's :class:`PartScorer` with its parts' relative scores combined by their geometric mean."""

    def __init__(self, parts: PartScorer) -> None:
        super().__init__()
        self.parts = parts

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:  # noqa: D102
        self.parts.fit(embeddings, generator)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        return self.parts.relative_scores(embeddings).clamp_min(1e-12).log().mean(dim=1).exp()


def build_scorer(scorer: str, network: PretextNetwork) -> Scorer:
    """The scorer a scoring names: the package's, or a probe's.

    ``knn+gaussian`` is the mean of its parts' relative scores (the default), ``min(knn, gaussian)`` their
    minimum (``combine="min"``), ``geomean(knn, gaussian)`` their geometric mean (:class:`GeometricMeanParts`),
    ``zmean(knn, gaussian)`` the mean of their z-scores (``fitting.StandardizedScores``) and ``knn3+gaussian`` the
    mean with the k-NN part over :data:`BANK_DRAWS` bank draws.
    """
    if scorer == "min(knn, gaussian)":
        return build_cutpaste_scorer("knn+gaussian", network, combine="min")
    if scorer == "geomean(knn, gaussian)":
        return GeometricMeanParts(build_cutpaste_scorer("knn+gaussian", network, combine="mean"))
    if scorer == "zmean(knn, gaussian)":
        return StandardizedScores(build_cutpaste_scorer("knn+gaussian", network, combine="mean"))
    if scorer != "knn3+gaussian":
        return build_cutpaste_scorer(scorer, network, combine="mean")
    default = build_cutpaste_scorer("knn+gaussian", network, combine="mean")
    default.scorers[0] = ScorerBag.of(lambda: CellScorer(network.stage_sizes), BANK_DRAWS)
    return default


def run(
    dataset: str,
    training: str,
    seed: int,
    output: Path,
    scorings: tuple[tuple[str, str], ...] = SCORINGS,
    command: str = "python benchmarks/cutpaste_features.py",
) -> None:
    """Fit CutPaste once with a schedule, then test it with each scoring (scorer and post-processor refitted).

    ``command`` is the table's header: the command that reruns it.
    """
    key = (dataset, training, str(seed))
    done = {
        (row["scored_features"], row["scorer"])
        for row in _rows(output)
        if (row["dataset"], row["training"], row["seed"]) == key
    }
    if done >= set(scorings):
        return
    seed_everything(seed)
    # The image score its table was measured with (the default before peak*image_gaussian): scorings compare maps.
    # The fitted scorer is replaced by each scoring's; combine="mean" (the default) is the fit it was measured with.
    init_args = {**ALL_TRAININGS[training], "seed": seed, "image_score": "peak", "combine": "mean"}
    model, engine, datamodule, fit_seconds = fit(CutPaste, init_args, DATASETS[dataset], (256, 256), output / "jobs")
    for scored_features, scorer in scorings:
        if (scored_features, scorer) in done:
            continue
        model.model.scored_features = scored_features
        model.model.scorer = build_scorer(scorer, model.model)
        refit_scorer(model, engine, datamodule)
        metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        row = {
            "dataset": dataset,
            "training": training,
            "seed": seed,
            "scored_features": scored_features,
            "scorer": scorer,
            **{name: round(float(metrics[name]), 3) for name in METRICS},
            "fit_seconds": round(fit_seconds),
        }
        print(json.dumps(row), flush=True)
        _write(output, [*_rows(output), row], command)


def _rows(output: Path) -> list[dict[str, str]]:
    return [row for row in read_rows(output / "results.csv") if not row["seed"].startswith("mean")]


def _write(output: Path, rows: list[dict], command: str) -> None:
    """Per-seed rows, then one ``mean`` row per dataset, schedule and scoring with more than one seed."""
    means = []
    for dataset in DATASETS:
        for training in ALL_TRAININGS:
            for scored_features, scorer in ALL_SCORINGS:
                key = (dataset, training, scored_features, scorer)
                group = [
                    row
                    for row in rows
                    if (row["dataset"], row["training"], row["scored_features"], row["scorer"]) == key
                ]
                if len(group) > 1:
                    means.append(seed_mean(group, METRICS, seconds=("fit_seconds",)))
    header = f"Command: `{command}` (efficientnet_lite0 ImageNet, 256 px, 2-core CPU)"
    write_table(output / "results.csv", COLUMNS, [*rows, *means], header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--trainings", nargs="+", default=list(TRAININGS), choices=list(ALL_TRAININGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    names = {f"{scored}/{scorer}": (scored, scorer) for scored, scorer in ALL_SCORINGS}
    parser.add_argument(
        "--scorings",
        nargs="+",
        choices=list(names),
        help="scored_features/scorer pairs to test (default: every package scoring)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    scorings = tuple(names[name] for name in args.scorings) if args.scorings else SCORINGS
    command = rerun_command(
        "cutpaste_features.py",
        trainings=(args.trainings, list(TRAININGS)),
        scorings=(args.scorings or [], []),
        output=(args.output, DEFAULT_OUTPUT),
    )
    for dataset in args.datasets:
        for training in args.trainings:
            for seed in args.seeds:
                run(dataset, training, seed, args.output, scorings, command)


if __name__ == "__main__":
    main()
