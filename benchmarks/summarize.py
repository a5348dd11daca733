"""Summarise the side-by-side runs: SSAD, CutPaste (mean ± std over seeds), PatchCore, SuperSimpleNet, Patch-GANomaly.

Reads ``benchmarks/results/compare_*/results.csv`` (written by ``python -m anomalib_ssad.benchmark``) and writes
``benchmarks/results/summary.md``, the table the README quotes, with the targets of issue #8 checked for SSAD and
CutPaste: pixel AUROC and AUPRO >= PatchCore's, image AUROC >= PatchCore's - 0.01, pixel AUROC spread over seeds
<= 0.02.

Usage: ``python benchmarks/summarize.py``
"""

import statistics
from pathlib import Path

from tables import read_rows

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")
MODELS = ("ssad", "cutpaste", "patchcore", "supersimplenet", "patch_ganomaly")
COSTS = ("train_seconds", "inference_images_per_second", "fit_peak_rss_mb", "peak_rss_mb")


def _cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise() -> str:
    lines = [
        "Command: `python benchmarks/summarize.py` (from the `compare_*` tables; mean ± std over the seeds run)",
        "",
        "| dataset | model | seeds | image AUROC | pixel AUROC | AUPRO | train s | images/s | fit peak RSS MB "
        "| peak RSS MB (with test metrics) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    checks = []
    for path in sorted(RESULTS.glob("compare_*/results.csv")):
        rows = [row for row in read_rows(path) if row["status"] == "ok"]
        # A config may hold several datasets (e.g. one image size each): one group per dataset, in file order.
        by_dataset: dict[str, dict[str, list[dict[str, str]]]] = {}
        for row in rows:
            by_dataset.setdefault(row["dataset"], {}).setdefault(row["model"], []).append(row)
        for dataset, by_model in by_dataset.items():
            lines.extend(_rows(dataset, by_model))
            checks.extend(_checks(dataset, by_model, path.parent.name))
    return "\n".join([*lines, "", "Targets of issue #8 (SSAD and CutPaste against PatchCore):", "", *checks]) + "\n"


def _rows(dataset: str, by_model: dict[str, list[dict[str, str]]]) -> list[str]:
    """Table rows of one dataset: each model's metrics and costs, mean ± std over its seeds."""
    lines = []
    for model in MODELS:
        group = by_model.get(model, [])
        if not group:
            continue
        cells = [_cell([float(row[key]) for row in group]) for key in METRICS]
        costs = [
            _cell([float(row[key]) for row in group if row.get(key)], 0 if key.endswith("rss_mb") else 1)
            for key in COSTS
        ]
        lines.append(f"| {dataset} | {model} | {len(group)} | " + " | ".join(cells + costs) + " |")
    return lines


def _checks(dataset: str, by_model: dict[str, list[dict[str, str]]], folder: str) -> list[str]:
    """The targets of SSAD and CutPaste on one dataset, or why they cannot be checked."""
    checks = []
    patchcore = by_model.get("patchcore", [])
    for model in ("ssad", "cutpaste"):
        group = by_model.get(model, [])
        if group and patchcore:
            checks.append(f"- {dataset}, {model}: {_verdicts(group, patchcore[0])}")
        elif group:
            checks.append(f"- {dataset}, {model}: no finished PatchCore row to check against (see {folder}/results.md)")
    return checks


def _verdicts(group: list[dict[str, str]], patchcore: dict[str, str]) -> str:
    """The targets, met or not, for one model's rows (means over its seeds) against PatchCore's row."""
    mean = {key: statistics.mean(float(row[key]) for row in group) for key in METRICS}
    reference = {key: float(patchcore[key]) for key in METRICS}
    spread = max(float(row["pixel_AUROC"]) for row in group) - min(float(row["pixel_AUROC"]) for row in group)
    verdicts = {
        "image AUROC >= PatchCore - 0.01": mean["image_AUROC"] >= reference["image_AUROC"] - 0.01,
        "pixel AUROC >= PatchCore": mean["pixel_AUROC"] >= reference["pixel_AUROC"],
        "AUPRO >= PatchCore": mean["pixel_AUPRO"] >= reference["pixel_AUPRO"],
        "pixel AUROC spread <= 0.02": spread <= 0.02,
    }
    return ", ".join(f"{name}: {'yes' if ok else '**no**'}" for name, ok in verdicts.items())


def main() -> None:
    text = summarise()
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
