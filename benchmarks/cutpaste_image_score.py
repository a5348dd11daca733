"""CutPaste's image score (issue #8): the map's peak against image-level alternatives, per dataset.

CutPaste scores an image by the peak of its smoothed window map. A large, faint defect (Magnetic Tile's
``uneven`` band) raises many windows a little rather than one a lot, so the peak may miss it. This fits CutPaste
once per dataset and seed with its default arguments but ``image_score="peak"`` (and ``combine="mean"``, the
window score it was measured with), then scores every test image in
several ways, all from the same fitted network and the same maps (so only the image AUROC can differ; pixel
metrics are the package's):

- ``peak of the smoothed map``: its maximum (the package's image score before ``peak*image_gaussian``);
- ``top q of map``: the mean of the map's highest ``q`` share of pixels;
- ``image Gaussian, mean-pooled stages``: the Mahalanobis distance of the whole image's backbone stages (one
  256-px pass), each averaged over the image and concatenated, to a Ledoit-Wolf Gaussian of the training
  images' (the paper's image-level density, on the head's input);
- ``image Gaussian, max-pooled stages``: the same with each channel's maximum over the image instead of its
  mean, which a small defect can raise where it barely moves the mean;
- ``peak + image Gaussian, ...``: the peak and a Gaussian added, each in units of a normal image's score: the
  training images' mean peak, and the Gaussian's mean score on training images held out of its fit (10 folds).

AUROCs are computed on the raw scores, min-max scaled (the Evaluator's image AUROC of ``image_score="peak"``
equals the peak's). The package's default, the peak times the max-pooled Gaussian, is measured by the runner
config ``benchmarks/configs/cutpaste_image_gaussian.yaml``.

Usage (from the project root; results are appended as they come and the table is rewritten)::

    python benchmarks/cutpaste_image_score.py --seeds 0 1 2   # the mean rows average the seeds run
"""

import argparse
import json
import math
from pathlib import Path

import torch
from cutpaste_features import DATASETS
from fitting import auroc, fit
from lightning.pytorch import seed_everything
from tables import read_rows, rerun_command, seed_mean, write_table

from anomalib_ssad import CutPaste
from anomalib_ssad.components.scorers import GaussianScorer

OUTPUT = Path("benchmarks/results/cutpaste_image_score")
TOP_SHARES = (0.01, 0.05, 0.2)
FOLDS = 10
POOLINGS = ("mean", "max")
IMAGE_SCORES = (
    "peak of the smoothed map",
    *(f"top {share:.0%} of map" for share in TOP_SHARES),
    *(f"image Gaussian, {pooling}-pooled stages" for pooling in POOLINGS),
    *(f"peak + image Gaussian, {pooling}-pooled" for pooling in POOLINGS),
)
COLUMNS = ("dataset", "seed", "image_score", "image_AUROC", "fit_seconds")


def collect(model: CutPaste, dataset: torch.utils.data.Dataset) -> dict[str, torch.Tensor]:
    """Per image of ``dataset``: map peak, top-share means, mean- and max-pooled backbone stages, and label."""
    network, transform = model.model.eval(), model.pre_processor.transform
    values: dict[str, list[torch.Tensor]] = {"peak": [], "top": [], "mean": [], "max": [], "label": []}
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            image = transform(item.image[None].float())
            if image.shape[1] == 1:
                image = image.expand(-1, 3, -1, -1)
            pixels = network(image).anomaly_map.flatten()
            ranked = pixels.sort(descending=True).values
            values["peak"].append(ranked[0])
            values["top"].append(torch.stack([ranked[: math.ceil(share * len(ranked))].mean() for share in TOP_SHARES]))
            stage_maps = network.backbone(image)
            values["mean"].append(torch.cat([stage.mean(dim=(2, 3))[0] for stage in stage_maps]))
            values["max"].append(torch.cat([stage.amax(dim=(2, 3))[0] for stage in stage_maps]))
            values["label"].append(torch.as_tensor(int(item.gt_label)))
    return {key: torch.stack(value) for key, value in values.items()}


def held_out_gaussian_scores(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each row's Gaussian score from a fit on the other folds' rows (:data:`FOLDS` folds)."""
    scores = torch.empty(len(rows))
    order = torch.randperm(len(rows), generator=generator)
    for fold in order.chunk(FOLDS):
        rest = order[~torch.isin(order, fold)]
        scorer = GaussianScorer()
        scorer.fit([rows[rest]])
        scores[fold] = scorer([rows[fold]])
    return scores


def image_scores(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every :data:`IMAGE_SCORES` entry's scores of the test images."""
    scores = {"peak of the smoothed map": test["peak"]}
    scores |= {name: test["top"][:, index] for index, name in enumerate(IMAGE_SCORES[1 : 1 + len(TOP_SHARES)])}
    for pooling in POOLINGS:
        gaussian = GaussianScorer()
        gaussian.fit([train[pooling]])
        test_gaussian = gaussian([test[pooling]])
        unit = held_out_gaussian_scores(train[pooling], torch.Generator().manual_seed(0)).mean()
        scores[f"image Gaussian, {pooling}-pooled stages"] = test_gaussian
        scores[f"peak + image Gaussian, {pooling}-pooled"] = test["peak"] / train["peak"].mean() + test_gaussian / unit
    return {name: scores[name] for name in IMAGE_SCORES}


def run(dataset: str, seed: int, output: Path, command: str) -> None:
    """Fit CutPaste (defaults, the peak as image score) once, then add one row per image score (unless there)."""
    rows = [row for row in read_rows(output / "results.csv") if not row["seed"].startswith("mean")]
    if any((row["dataset"], row["seed"]) == (dataset, str(seed)) for row in rows):
        return
    seed_everything(seed)
    model, _, datamodule, fit_seconds = fit(
        CutPaste,
        {"seed": seed, "image_score": "peak", "combine": "mean"},
        DATASETS[dataset],
        (256, 256),
        output / "jobs",
    )
    train, test = collect(model, datamodule.train_data), collect(model, datamodule.test_data)
    for name, scores in image_scores(train, test).items():
        row = {
            "dataset": dataset,
            "seed": seed,
            "image_score": name,
            "image_AUROC": round(auroc(scores, test["label"]), 3),
            "fit_seconds": round(fit_seconds),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    header = f"Command: `{command}` (CutPaste defaults but image_score peak, 2-core CPU)"
    write_table(output / "results.csv", COLUMNS, with_means(rows), header)


def with_means(rows: list[dict]) -> list[dict]:
    """Rows by dataset, image score and seed, each group of more than one seed followed by its ``mean`` row."""
    table = []
    for dataset in DATASETS:
        for name in IMAGE_SCORES:
            group = [row for row in rows if (row["dataset"], row["image_score"]) == (dataset, name)]
            group.sort(key=lambda row: int(row["seed"]))
            table += group
            if len(group) > 1:
                table.append(seed_mean(group, ("image_AUROC",), seconds=("fit_seconds",)))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    command = rerun_command("cutpaste_image_score.py", seeds=(args.seeds, None), output=(args.output, OUTPUT))
    for dataset in args.datasets:
        for seed in args.seeds:
            run(dataset, seed, args.output, command)


if __name__ == "__main__":
    main()
