# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Comparison figures of a benchmark run, one set per dataset.

Drawn from the ``results.csv`` rows and each job's ``predictions.npz``:

- ``roc_<dataset>.png``: image-level ROC curve of every model.
- ``metrics_<dataset>.png``: image AUROC, image F1, pixel AUROC and pixel AUPRO per model (mean over seeds).
- ``anomaly_maps_<dataset>.png``: the same test images (with ground truth) and every model's anomaly maps.
- ``tsne_<dataset>.png``: t-SNE of the image embeddings of models that save them (SSAD), good vs defective.

Figures are drawn with matplotlib's object API on the Agg canvas, so no display or global backend is involved.

Example:
    >>> from anomalib_ssad.benchmark.figures import write_figures
    >>> write_figures(rows, Path("benchmarks/results/compare_bottle"))  # doctest: +SKIP
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score, roc_curve
from threadpoolctl import threadpool_limits

METRIC_LABELS = {
    "image_AUROC": "image AUROC",
    "image_F1Score": "image F1",
    "pixel_AUROC": "pixel AUROC",
    "pixel_AUPRO": "pixel AUPRO",
}


def write_figures(rows: list[dict[str, str]], output: Path) -> list[Path]:
    """Draw every figure for every dataset with finished jobs.

    Args:
        rows: Result rows (``results.csv``); only ``status == "ok"`` rows are drawn.
        output: Benchmark output folder, holding ``jobs/<job>/predictions.npz``.

    Returns:
        The written PNG files.
    """
    finished = [row for row in rows if row.get("status") == "ok"]
    written = []
    for dataset in dict.fromkeys(row["dataset"] for row in finished):
        dataset_rows = [row for row in finished if row["dataset"] == dataset]
        runs = _load_runs(dataset_rows, output)
        figures = {
            "roc": roc_figure(runs, dataset),
            "metrics": metrics_figure(dataset_rows, dataset),
            "anomaly_maps": anomaly_map_figure(runs, dataset),
            "tsne": tsne_figure(runs, dataset),
        }
        for kind, figure in figures.items():
            if figure is not None:
                path = output / f"{kind}_{dataset}.png"
                FigureCanvasAgg(figure).print_png(path)
                written.append(path)
    return written


def _load_runs(rows: list[dict[str, str]], output: Path) -> dict[str, dict[str, np.ndarray]]:
    """Predictions of each finished job of one dataset, keyed by a legend label (model, plus seed if several)."""
    seeds = {row["seed"] for row in rows}
    runs = {}
    for row in rows:
        path = output / "jobs" / row["job"] / "predictions.npz"
        if path.is_file():
            label = row["model"] if len(seeds) == 1 else f"{row['model']} seed {row['seed']}"
            with np.load(path) as predictions:
                runs[label] = dict(predictions)
    return runs


def roc_figure(runs: dict[str, dict[str, np.ndarray]], dataset: str) -> Figure | None:
    """Image-level ROC curves, one per run, or ``None`` without runs."""
    if not runs:
        return None
    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.add_subplot()
    for label, predictions in runs.items():
        labels, scores = predictions["gt_label"], predictions["pred_score"].astype(np.float64)
        false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
        axes.plot(false_positive_rate, true_positive_rate, label=f"{label} (AUROC {roc_auc_score(labels, scores):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=f"Image-level ROC, {dataset}")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def metrics_figure(rows: list[dict[str, str]], dataset: str) -> Figure | None:
    """Grouped bars of the four metrics per model (mean over seeds); missing metrics are left out."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    if not models:
        return None
    figure = Figure(figsize=(2 + 1.5 * len(METRIC_LABELS), 4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(models)
    positions = np.arange(len(METRIC_LABELS))
    for index, model in enumerate(models):
        values = np.array([_mean_metric(rows, model, key) for key in METRIC_LABELS])
        offset = (index - (len(models) - 1) / 2) * width
        bars = axes.bar(positions + offset, np.nan_to_num(values), width, label=model)
        labels = ["n/a" if np.isnan(value) else f"{value:.2f}" for value in values]
        axes.bar_label(bars, labels=labels, fontsize="x-small")
    axes.set_xticks(positions, list(METRIC_LABELS.values()))
    axes.set(ylim=(0, 1.08), title=f"Test metrics, {dataset}")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return figure


def _mean_metric(rows: list[dict[str, str]], model: str, key: str) -> float:
    """Mean of a metric over a model's rows, NaN where the model has none (e.g. GANomaly's pixel metrics)."""
    values = []
    for row in rows:
        try:
            value = float(row[key]) if row["model"] == model else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isnan(value):
            values.append(value)
    return float(np.mean(values)) if values else math.nan


def anomaly_map_figure(runs: dict[str, dict[str, np.ndarray]], dataset: str) -> Figure | None:
    """Test images, their ground-truth masks, and each run's anomaly maps of them (columns: images).

    Every job keeps the same test images (``example_index``); each run's maps are scaled to [0, 1] by its own
    minimum and maximum over these images, since models score on different scales.
    """
    if not runs:
        return None
    reference = next(iter(runs.values()))
    images, masks = reference["image"].astype(np.float32), reference.get("gt_mask")
    columns = len(images)
    if columns == 0:
        return None
    figure = Figure(figsize=(1.6 * columns, 1.6 * (2 + len(runs))), layout="constrained")
    grid = figure.subplots(2 + len(runs), columns, squeeze=False)
    for column in range(columns):
        image = images[column].transpose(1, 2, 0)
        grid[0, column].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        if masks is not None:
            grid[1, column].imshow(masks[column], cmap="gray", vmin=0, vmax=1)
        else:
            grid[1, column].text(0.5, 0.5, "no mask", ha="center", va="center", fontsize="small")
    grid[0, 0].set_ylabel("image", fontsize="small")
    grid[1, 0].set_ylabel("ground truth", fontsize="small")
    for row, (label, predictions) in enumerate(runs.items(), start=2):
        grid[row, 0].set_ylabel(label, fontsize="small")
        maps = predictions.get("anomaly_map")
        same_images = np.array_equal(predictions["example_index"], reference["example_index"])
        for column in range(columns):
            if maps is None or not same_images:
                grid[row, column].text(0.5, 0.5, "no map", ha="center", va="center", fontsize="small")
                continue
            scaled = (maps - maps.min()) / max(float(maps.max() - maps.min()), 1e-12)
            grid[row, column].imshow(scaled[column].astype(np.float32), cmap="jet", vmin=0, vmax=1)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"Anomaly maps, {dataset} (each model scaled to its own range)")
    return figure


def tsne_figure(runs: dict[str, dict[str, np.ndarray]], dataset: str) -> Figure | None:
    """t-SNE of each run's test-image embeddings, good vs defective, or ``None`` if no run saved embeddings."""
    embedded = {label: run for label, run in runs.items() if "embedding" in run and len(run["embedding"]) > 2}
    if not embedded:
        return None
    figure = Figure(figsize=(4.5 * len(embedded), 4.5), layout="constrained")
    panels = figure.subplots(1, len(embedded), squeeze=False)[0]
    for axes, (label, predictions) in zip(panels, embedded.items(), strict=True):
        embeddings = predictions["embedding"].astype(np.float32)
        perplexity = min(30.0, len(embeddings) - 1.0)
        # One thread: on a busy shared CPU (and next to torch's OpenMP pool) sklearn's threads took 50 s instead
        # of 0.6 s for 160 points.
        with threadpool_limits(limits=1):
            points = TSNE(perplexity=perplexity, init="pca", random_state=0).fit_transform(embeddings)
        for value, name, color in ((0, "good", "tab:blue"), (1, "defective", "tab:red")):
            selected = predictions["gt_label"] == value
            axes.scatter(*points[selected].T, s=12, color=color, label=name)
        axes.set(title=label, xticks=[], yticks=[])
        axes.legend(fontsize="small")
    figure.suptitle(f"t-SNE of test-image embeddings, {dataset}")
    return figure
