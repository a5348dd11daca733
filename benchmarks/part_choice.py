"""Can synthetic defects on held-out normal images choose how a model weighs its two score parts (issue #8)?

SSAD scores a cell by the mean of two relative distances (cosine, Euclidean) and CutPaste a window by the mean of
two relative scores (k-NN of the pooled stages, Gaussian of the head): KolektorSDD's defects need the first part,
Magnetic Tile's the second, and normal data alone does not tell which (``benchmarks/results/ssad_ablation``,
``cutpaste_part_combine``). This probe asks whether synthetic defects with exact masks, drawn on training images
held out of the scorer's bank, rank the weights of the two parts as the real test set does.

Per dataset the model is fitted with its defaults (seed 0), its scorer refitted on four fifths of the training
images, and every test image and every held-out image (clean, and once per defect family with a defect drawn in)
is scored part by part; each weight of the first part (0, 0.25, ..., 1) then gives a map (maps are linear in the
cell scores) whose pixel AUROC, AUPRO and image AUROC (the map's peak, times the image scorer's factor where the
model has one) are computed here with anomalib's metrics. Defect families: ``polygon+scar`` (SSAD's pretext
defects), ``cutpaste`` (CutPaste's, rectangles and scars cut from the same image), ``sadsa`` (squares and Perlin
blobs from another image) and ``smooth`` (a polygon region brightened, darkened or blurred: a family neither model
trains on, closest to Magnetic Tile's uneven finish).

Usage (from the project root; one model and dataset per fit, rows appended as they come)::

    python benchmarks/part_choice.py                       # SSAD and CutPaste, every dataset
    python benchmarks/part_choice.py --models ssad --datasets kolektorsdd
"""

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from anomalib.metrics.aupro import _AUPRO
from cutpaste_features import DATASETS
from fitting import auroc, fit
from lightning.pytorch import seed_everything
from tables import read_rows, rerun_command, write_table
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import Compose, Normalize

from anomalib_ssad import SSAD, CutPaste
from anomalib_ssad.components import gaussian_blur
from anomalib_ssad.components.patch_grid import assemble_anomaly_map
from anomalib_ssad.components.scorers import ScorerBag
from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator

MODELS = {"ssad": (SSAD, "cosine", "euclidean"), "cutpaste": (CutPaste, "knn", "gaussian")}
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
FAMILIES = ("polygon+scar", "cutpaste", "sadsa", "smooth")
COLUMNS = ("dataset", "model", "images", "first_part_weight", "image_AUROC", "pixel_AUROC", "pixel_AUPRO")
IMAGE_SIZE = (256, 256)
OUTPUT = Path("benchmarks/results/part_choice")


@torch.no_grad()
def part_maps(model: SSAD | CutPaste, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each part's map ``[B, P, H, W]`` of normalised images, and the image scorer's factor ``[B]`` (ones if none)."""
    network = model.model
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    if network.localization == "dense":
        embedding = network.dense_embeddings(images)[0]
        rows, grid, window = [embedding.flatten(0, -2)], embedding.shape[:3], network.cell_stride
    else:
        embeddings = network.patch_embeddings(images)
        rows = [embedding.flatten(0, -2) for embedding in embeddings]
        grid, window = (images.shape[0], *embeddings[0].shape[1:3]), network.patch_size
    scorer = network.scorer
    members = scorer.members if isinstance(scorer, ScorerBag) else [scorer]
    relative = torch.stack([member.relative_scores(rows) for member in members]).mean(dim=0)
    size = (images.shape[-2], images.shape[-1])
    maps = [assemble_anomaly_map(part.reshape(grid), size, window, network.blur) for part in relative.unbind(1)]
    factor = (
        network.image_scorer([network.image_features(images)])
        if network.image_scorer is not None
        else images.new_ones(images.shape[0])
    )
    return torch.cat(maps, dim=1), factor


def smooth_defects(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The masked regions brightened or darkened by 20-40 %, or blurred (sigma 3), one at random per image."""
    n = images.shape[0]
    kind = torch.randint(3, (n,), generator=generator)
    amount = 0.2 + 0.2 * torch.rand(n, generator=generator)
    factor = torch.where(kind == 0, 1 + amount, 1 - amount)[:, None, None, None]
    blurred = gaussian_blur(3.0).to(images)(images.flatten(0, 1)[:, None]).reshape(images.shape)
    content = torch.where((kind == 2)[:, None, None, None], blurred, (images * factor).clamp(0, 1))
    return torch.where(masks > 0, content, images)


def draw(family: str, images: torch.Tensor, objects: torch.Tensor, generator: torch.Generator) -> tuple:
    """One defect of ``family`` per image (big and small alternating): images in ``[0, 1]`` and masks ``[B, H, W]``."""
    labels = 1 + torch.arange(images.shape[0]) % 2
    if family == "smooth":
        labels = torch.ones_like(labels)
    build: Callable[[], SyntheticAnomalyGenerator] = {
        "polygon+scar": SyntheticAnomalyGenerator.image_level,
        "smooth": SyntheticAnomalyGenerator.image_level,
        "cutpaste": SyntheticAnomalyGenerator.cutpaste,
        "sadsa": SyntheticAnomalyGenerator.sadsa,
    }[family]
    drawn, _, masks = build()(images, objects, generator=generator, labels=labels)
    if family == "smooth":
        drawn = smooth_defects(images, masks, generator)
    return drawn, masks[:, 0]


def score_sets(model: SSAD | CutPaste, datamodule, held: list[int]) -> dict[str, tuple]:
    """``{set: (part maps [N, P, H, W], factors [N], masks [N, H, W], labels [N])}`` for the test and synthetic sets."""
    pre = model.pre_processor
    resize = Compose([step for step in pre.transform.transforms if not isinstance(step, Normalize)])
    sets: dict[str, list] = {}

    def add(name: str, maps: torch.Tensor, factor: torch.Tensor, masks: torch.Tensor) -> None:
        store = sets.setdefault(name, [[], [], [], []])
        for store_list, value in zip(store, (maps, factor, masks, masks.flatten(1).amax(1) > 0), strict=True):
            store_list.append(value.cpu())

    for batch in DataLoader(datamodule.test_data, batch_size=16, collate_fn=datamodule.test_data.collate_fn):
        images, masks = pre.transform(batch.image, batch.gt_mask)
        add("test", *part_maps(model, images), masks.float())
    generator = torch.Generator().manual_seed(0)
    train = datamodule.train_data
    for batch in DataLoader(Subset(train, held), batch_size=16, collate_fn=train.collate_fn):
        clean = resize(batch.image).as_subclass(torch.Tensor).clamp(0, 1)  # as training draws on: not normalised
        objects = model.generator.object_masker(clean)
        add("held-out clean", *part_maps(model, pre.normalize(clean)), torch.zeros_like(clean[:, 0]))
        for family in FAMILIES:
            drawn, masks = draw(family, clean, objects, generator)
            add(family, *part_maps(model, pre.normalize(drawn)), masks)
    clean = sets.pop("held-out clean")
    out = {"test": tuple(torch.cat(part) for part in sets.pop("test"))}
    for family, parts in sets.items():
        out[f"synthetic {family}"] = tuple(torch.cat(a + b) for a, b in zip(parts, clean, strict=True))
    return out


def metrics(maps: torch.Tensor, factor: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, weight: float):
    """Image AUROC, pixel AUROC and AUPRO of the maps with the first part weighted ``weight``."""
    combined = weight * maps[:, 0] + (1 - weight) * maps[:, 1]
    image = auroc(combined.flatten(1).amax(1) * factor, labels.long())
    pixel = auroc(combined.flatten(), masks.flatten().long())
    aupro = _AUPRO(fpr_limit=0.3)
    aupro.update(combined, masks.long())
    return [round(float(value), 3) for value in (image, pixel, aupro.compute())]


def run(dataset: str, name: str, output: Path, command: str) -> None:
    if any(row["dataset"] == dataset and row["model"] == name for row in read_rows(output / "results.csv")):
        return
    model_class, first, second = MODELS[name]
    seed_everything(0)
    model, _, datamodule, _ = fit(model_class, {}, DATASETS[dataset], IMAGE_SIZE, output / "jobs")
    train = datamodule.train_data
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    held, rest = sorted(order[: math.ceil(len(train) / 5)]), sorted(order[math.ceil(len(train) / 5) :])
    model.fit_normal_model(DataLoader(Subset(train, rest), batch_size=32, collate_fn=train.collate_fn))
    model.eval()
    for images, (maps, factor, masks, labels) in score_sets(model, datamodule, held).items():
        for weight in WEIGHTS:
            values = metrics(maps, factor, masks, labels, weight)
            row = dict(
                zip(COLUMNS, (dataset, name, images, f"{weight} {first} + {1 - weight} {second}", *values), strict=True)
            )
            print(json.dumps(row), flush=True)
            rows = [*read_rows(output / "results.csv"), row]
            header = f"Command: `{command}` (seed 0, efficientnet_lite0 ImageNet, 256 px, this 2-core CPU)"
            write_table(output / "results.csv", COLUMNS, rows, header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    command = rerun_command("part_choice.py", models=(args.models, list(MODELS)), output=(args.output, OUTPUT))
    for name in args.models:
        for dataset in args.datasets:
            run(dataset, name, args.output, command)


if __name__ == "__main__":
    main()
