"""Per-defect-type breakdown (issue #8): which defect types a dataset's pooled pixel AUROC rests on, per model.

Pixel AUROC pools every pixel of every test image, so a defect type that covers a large share of the image
decides it. For every defect type this writes its share of all defect pixels, the pixel AUROC on its images plus
every defect-free test image, and the image AUROC of its images against the defect-free ones (every model's
image score taken as its map's maximum, so that models are compared alike): for SSAD with its default scoring
and with each of its two distances alone (same trained network, bank refitted), and, with ``--patchcore``, for
anomalib's PatchCore on the same backbone (slow on a CPU: about an hour on Magnetic Tile).
Maps are anomalib's post-processed ones (normalised over the whole test set), seed 0, 256 px.

Usage (from the project root; one table per dataset under ``--output``)::

    python benchmarks/defect_types.py --datasets magnetic_tile
    python benchmarks/defect_types.py --datasets magnetic_tile --patchcore
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from anomalib.models import AnomalibModule
from lightning.pytorch import seed_everything
from ssad_ablation import DATASETS, rescore
from tables import read_rows, write_table
from torchmetrics.functional.classification import binary_auroc

from anomalib_ssad import SSAD
from anomalib_ssad.baselines import OfflinePatchcore
from anomalib_ssad.benchmark.runner import shared_evaluator

SSAD_SCORINGS = [
    ("ssad (default: cosine + Euclidean)", {}),
    ("ssad, cosine only", {"cell_distance": "cosine"}),
    ("ssad, Euclidean only", {"cell_distance": "euclidean"}),
]
PATCHCORE = "patchcore (coreset 0.01)"
COLUMNS = ("model", "defect_type", "images", "defect_pixel_share", "pixel_AUROC", "image_AUROC")


def predictions(engine: Engine, model: AnomalibModule, datamodule: MVTecAD) -> dict[str, torch.Tensor | list[str]]:
    """Post-processed maps, masks, labels and defect types (the image's folder) of the whole test set."""
    maps, masks, labels, types = [], [], [], []
    for batch in engine.predict(model=model, datamodule=datamodule, return_predictions=True):
        maps.append(batch.anomaly_map.reshape(len(batch.gt_label), -1).float())
        masks.append(batch.gt_mask.reshape(len(batch.gt_label), -1).bool())
        labels.append(batch.gt_label.bool())
        types += [Path(path).parent.name for path in batch.image_path]
    return {"map": torch.cat(maps), "mask": torch.cat(masks), "label": torch.cat(labels), "type": types}


def breakdown(name: str, predicted: dict) -> list[dict]:
    """One row per defect type (and one for all of them) of one model's predictions."""
    by_type: dict[str, list[int]] = defaultdict(list)
    for index, defect_type in enumerate(predicted["type"]):
        by_type[defect_type].append(index)
    normal = torch.tensor([i for i, label in enumerate(predicted["label"]) if not label])
    defect_pixels = predicted["mask"].sum()
    scores = predicted["map"].amax(dim=1)
    groups = {t: torch.tensor(i) for t, i in sorted(by_type.items()) if predicted["label"][i[0]]}
    groups["all defect types"] = torch.cat(list(groups.values()))
    rows = []
    for defect_type, indices in groups.items():
        chosen = torch.cat([indices, normal])
        rows.append(
            {
                "model": name,
                "defect_type": defect_type,
                "images": len(indices),
                "defect_pixel_share": round(float(predicted["mask"][indices].sum() / defect_pixels), 3),
                "pixel_AUROC": round(
                    float(binary_auroc(predicted["map"][chosen].flatten(), predicted["mask"][chosen].flatten().long())),
                    3,
                ),
                "image_AUROC": round(float(binary_auroc(scores[chosen], predicted["label"][chosen].long())), 3),
            }
        )
    return rows


def run(dataset: str, output: Path, patchcore: bool) -> None:
    root, category, image_size = DATASETS[dataset]
    done = {row["model"] for row in _rows(output, dataset)}
    datamodule = MVTecAD(root=root, category=category, num_workers=0)
    if not all(name in done for name, _ in SSAD_SCORINGS):
        seed_everything(0)
        engine = _engine(output)
        model = SSAD(
            pre_processor=SSAD.configure_pre_processor(image_size=image_size),
            evaluator=shared_evaluator(),
            visualizer=False,
        )
        engine.fit(model=model, datamodule=datamodule)
        for name, scoring in SSAD_SCORINGS:
            if scoring:
                rescore(model, engine, datamodule, scoring)
            if name not in done:
                _write(output, dataset, breakdown(name, predictions(engine, model, datamodule)))
    if patchcore and PATCHCORE not in done:
        seed_everything(0)
        model = OfflinePatchcore(
            layers=["blocks.2", "blocks.4"],
            coreset_sampling_ratio=0.01,
            pre_processor=OfflinePatchcore.configure_pre_processor(image_size=image_size),
            evaluator=shared_evaluator(),
            visualizer=False,
        )
        # A fresh engine: a trainer keeps the settings (epochs) of the model it was first given.
        engine = _engine(output)
        engine.fit(model=model, datamodule=datamodule)
        _write(output, dataset, breakdown(PATCHCORE, predictions(engine, model, datamodule)))


def _engine(output: Path) -> Engine:
    return Engine(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=output / "jobs"
    )


def _rows(output: Path, dataset: str) -> list[dict[str, str]]:
    return read_rows(output / f"{dataset}.csv")


def _write(output: Path, dataset: str, new_rows: list[dict]) -> None:
    for row in new_rows:
        print(json.dumps(row), flush=True)
    rows = [*_rows(output, dataset), *({key: str(value) for key, value in row.items()} for row in new_rows)]
    command = (
        f"Command: `python benchmarks/defect_types.py --datasets {dataset}` (PatchCore rows: add `--patchcore`; "
        "seed 0, efficientnet_lite0 ImageNet, 256 px)"
    )
    write_table(output / f"{dataset}.csv", COLUMNS, rows, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile"], choices=list(DATASETS))
    parser.add_argument("--patchcore", action="store_true", help="also PatchCore (slow on a CPU)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/defect_types"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        run(dataset, args.output, args.patchcore)


if __name__ == "__main__":
    main()
