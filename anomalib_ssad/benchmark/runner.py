# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Side-by-side benchmark of anomalib models from one YAML file (``anomalib benchmark`` refuses plugin models).

Every job is one model x dataset x seed. All models get the same datamodule settings, the same image size
(their own ``configure_pre_processor(image_size)``) and the same :class:`~anomalib.metrics.Evaluator`
(image AUROC, image F1, pixel AUROC, pixel AUPRO; pixel metrics are empty for models without anomaly maps, such
as GANomaly). Each job runs in its own process, so a failing job is recorded with its error and the run goes on,
and peak RSS is the job's own: at the end of fitting (``fit_peak_rss_mb``) and overall, test metrics included.
Finished jobs are skipped when the command is run again (resumable); results are appended to ``results.csv`` as
they come and summarised in ``results.md``, and the figures of :mod:`anomalib_ssad.benchmark.figures` are redrawn
at the end of every run.

Each job also saves ``jobs/<job>/predictions.npz``: image scores and labels of the whole test set, anomaly maps
of a fixed selection of test images (the same for every model: see :func:`example_indices`) and, for models
whose torch model has an ``embed`` method (SSAD), image embeddings of the whole test set.

Config::

    output: benchmarks/results/bottle       # folder for results.csv, results.md, figures, jobs/<job>/
    seeds: [0, 1, 2]                        # each job seeds Lightning and the model's own `seed`
    image_size: 256                         # or [height, width], e.g. [640, 256]
    accelerator: cpu
    datasets:
      - name: mvtec_bottle
        class_path: anomalib.data.MVTecAD
        init_args: {root: ../shared/data/mvtec_ad, category: bottle, num_workers: 0}
    models:
      - name: ssad
        class_path: anomalib_ssad.SSAD
        init_args: {localization: {grid: [patch, image]}}   # a grid expands into one job per value
      - name: ganomaly
        class_path: anomalib.models.Ganomaly
        trainer: {max_epochs: 1}                             # Engine / Lightning Trainer arguments
        seeds: [0]                                           # a model's own seeds replace the config's
        datasets: [mvtec_bottle]                             # only these datasets (default: all of them)

Example:
    ``python -m anomalib_ssad.benchmark benchmarks/configs/compare_bottle.yaml``
"""

import argparse
import csv
import importlib
import inspect
import itertools
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .figures import write_figures

logger = logging.getLogger(__name__)

COLUMNS = (
    "job",
    "model",
    "dataset",
    "seed",
    "status",
    "image_AUROC",
    "image_F1Score",
    "pixel_AUROC",
    "pixel_AUPRO",
    "train_seconds",
    "inference_images_per_second",
    "latency_ms_batch1",
    "fit_peak_rss_mb",
    "peak_rss_mb",
    "error",
)
METRICS = COLUMNS[5:9]
RESULT_PREFIX = "BENCHMARK_RESULT "
ERROR_PREFIX = "BENCHMARK_ERROR "
# Test images whose anomaly maps each job keeps for the figures.
NUM_EXAMPLES = 8


@dataclass
class Job:
    """One model x dataset x seed."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    seed: int
    image_size: int | list[int] = 256
    accelerator: str = "cpu"
    output: str = "results"
    grid_values: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """Model name with its grid values, e.g. ``ssad[localization=patch]``."""
        if not self.grid_values:
            return self.model["name"]
        values = ",".join(f"{key}={value}" for key, value in self.grid_values.items())
        return f"{self.model['name']}[{values}]"

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        height, width = self.image_size
        return int(height), int(width)

    @property
    def job_id(self) -> str:
        """Unique, filesystem-safe id."""
        raw = f"{self.model_name}__{self.dataset['name']}__seed{self.seed}"
        return "".join(char if char.isalnum() or char in "-_.=," else "_" for char in raw)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a benchmark config.

    Raises:
        ValueError: Naming the file and the problem, for a malformed config.
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        msg = f"{path}: cannot read benchmark config ({error})"
        raise ValueError(msg) from error
    if not isinstance(config, dict):
        msg = f"{path}: expected a mapping with 'models' and 'datasets'"
        raise ValueError(msg)
    for key in ("models", "datasets"):
        entries = config.get(key)
        if not isinstance(entries, list) or not entries:
            msg = f"{path}: '{key}' must be a non-empty list"
            raise ValueError(msg)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "name" not in entry or "class_path" not in entry:
                msg = f"{path}: {key}[{index}] needs 'name' and 'class_path'"
                raise ValueError(msg)
    names = [model["name"] for model in config["models"]]
    if len(set(names)) != len(names):
        msg = f"{path}: model names must be unique, got {names}"
        raise ValueError(msg)
    config.setdefault("output", str(path.with_suffix("")))
    return config


def _grid_items(init_args: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    return [(key, value["grid"]) for key, value in init_args.items() if isinstance(value, dict) and "grid" in value]


def expand_jobs(config: dict[str, Any]) -> list[Job]:
    """All jobs of a config: models (with grids expanded) x datasets x seeds."""
    jobs = []
    for model in config["models"]:
        init_args = dict(model.get("init_args") or {})
        grid = _grid_items(init_args)
        combinations = itertools.product(*(values for _, values in grid)) if grid else [()]
        for values in combinations:
            grid_values = dict(zip((key for key, _ in grid), values, strict=True))
            variant = {**model, "init_args": {**init_args, **grid_values}}
            for dataset in config["datasets"]:
                if "datasets" in model and dataset["name"] not in model["datasets"]:
                    continue  # the model runs on the datasets it names only
                for seed in model.get("seeds", config.get("seeds", [0])):
                    jobs.append(
                        Job(
                            model=variant,
                            dataset=dataset,
                            seed=int(seed),
                            image_size=_image_size(dataset.get("image_size", config.get("image_size", 256))),
                            accelerator=str(config.get("accelerator", "cpu")),
                            output=str(config["output"]),
                            grid_values=grid_values,
                        ),
                    )
    return jobs


def _image_size(value: Any) -> int | list[int]:
    """An image size from a config: one int (square) or ``[height, width]``.

    Raises:
        ValueError: For anything else.
    """
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return [int(value[0]), int(value[1])]
    msg = f"image_size must be a positive int or [height, width], got {value!r}"
    raise ValueError(msg)


def shared_evaluator() -> Any:
    """The Evaluator every benchmarked model gets."""
    from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Score

    return Evaluator(
        test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ],
    )


def _load_class(class_path: str) -> type:
    """Import ``package.module.Class``.

    Raises:
        ValueError: If it cannot be imported.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        msg = f"cannot import {class_path!r}: {error}"
        raise ValueError(msg) from error


def run_job(job: Job) -> dict[str, Any]:
    """Train and test one job in this process; returns a result row (without ``status``/``error``)."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(job.seed, workers=True)
    job_dir = Path(job.output) / "jobs" / job.job_id
    model_cls = _load_class(job.model["class_path"])
    init_args = dict(job.model.get("init_args") or {})
    if "seed" in inspect.signature(model_cls).parameters:
        # The model's own random draws (synthetic anomalies, bank subset) vary with the job's seed too.
        init_args.setdefault("seed", job.seed)
    model = model_cls(
        **init_args,
        pre_processor=model_cls.configure_pre_processor(image_size=job.image_hw),
        evaluator=shared_evaluator(),
        visualizer=False,
    )
    datamodule_cls = _load_class(job.dataset["class_path"])
    datamodule_args = dict(job.dataset.get("init_args") or {})
    if "seed" in inspect.signature(datamodule_cls).parameters:
        datamodule_args.setdefault("seed", job.seed)
    datamodule = datamodule_cls(**datamodule_args)
    engine = Engine(
        accelerator=job.accelerator,
        devices=1,
        default_root_dir=str(job_dir),
        logger=False,
        enable_progress_bar=False,
        **job.model.get("trainer", {}),
    )
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    train_seconds = time.perf_counter() - start
    # Peak memory of training alone; the job's peak below adds the test metrics (anomalib's pixel AUROC and
    # AUPRO keep every test pixel, which dominates on large test sets).
    fit_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    examples = example_indices(datamodule.test_data.samples.label_index.to_numpy())
    # After engine.test Lightning leaves the model on the CPU: time it on the job's accelerator.
    device = inference_device(job.accelerator)
    model.eval().to(device)
    images_per_second, predictions = _timed_inference(model, datamodule.test_dataloader(), examples, device)
    latency_ms = batch1_latency_ms(model, datamodule.test_dataloader(), device)
    np.savez_compressed(job_dir / "predictions.npz", **predictions)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "job": job.job_id,
        "model": job.model_name,
        "dataset": job.dataset["name"],
        "seed": job.seed,
        # Metrics a model cannot compute (pixel metrics without anomaly maps) are missing: NaN.
        **{key: float(metrics.get(key, math.nan)) for key in METRICS},
        "train_seconds": round(train_seconds, 1),
        "inference_images_per_second": round(images_per_second, 2),
        "latency_ms_batch1": round(latency_ms, 2),
        "fit_peak_rss_mb": round(fit_peak_kb / 1024),
        "peak_rss_mb": round(peak_kb / 1024),
    }


def example_indices(labels: np.ndarray, count: int = NUM_EXAMPLES) -> np.ndarray:
    """Test-set indices of the images whose anomaly maps are kept: the same for every model on a dataset.

    Half defective, half good (as far as there are), spread evenly over each group so that several defect types
    show up (MVTec test sets are sorted by defect type).

    Args:
        labels: Image labels of the test set in loader order (0 good, 1 defective).
        count: Number of images.

    Returns:
        Sorted indices into the test set.
    """
    defective, good = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    num_defective = min(len(defective), max(count - len(good), count // 2))
    num_good = min(len(good), count - num_defective)
    chosen = [
        group[np.linspace(0, len(group) - 1, num).round().astype(int)]
        for group, num in ((defective, num_defective), (good, num_good))
        if num > 0
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def inference_device(accelerator: str) -> Any:
    """The ``torch.device`` a job's model runs on at inference: CUDA for ``gpu``/``cuda`` (and ``auto`` with one)."""
    import torch

    if accelerator in {"gpu", "cuda"} or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_inference(
    model: Any,
    dataloader: Any,
    examples: np.ndarray,
    device: Any = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """Images/s of the eval forward (pre-processing, score and anomaly map) on ``device``, and the predictions.

    Every batch is moved to ``device``, where the model must already be; the first batch is a warm-up run
    outside the timing, and CUDA is synchronised around every timing (:func:`_timed_forward`).

    Args:
        model: Trained anomalib model in eval mode.
        dataloader: Test loader (not shuffled, so positions match :func:`example_indices`).
        examples: Test-set indices whose images, ground-truth masks and anomaly maps are kept.
        device: Where to run (default: CPU).

    Returns:
        Throughput, and arrays ``pred_score``, ``gt_label``, ``example_index``, ``image`` (``[N, 3, H, W]`` in
        [0, 1] at the model's input size), ``gt_mask`` if the dataset has masks, ``anomaly_map`` if the model
        returns one, and ``embedding`` (whole test set) if its torch model has an ``embed`` method.
    """
    import torch
    from torch.nn.functional import interpolate

    device = device if device is not None else torch.device("cpu")
    columns: dict[str, list[torch.Tensor]] = {}
    elapsed, start_index, warm = 0.0, 0, False
    with torch.no_grad():
        for batch in dataloader:
            images = batch.image.to(device)
            if not warm:
                _forward(model, images)  # warm-up: allocator, kernels, lazy initialisation
                warm = True
            seconds, inputs, output = _timed_forward(model, images, device)
            elapsed += seconds
            size = len(batch.image)
            columns.setdefault("pred_score", []).append(output.pred_score.flatten().cpu())
            columns.setdefault("gt_label", []).append(batch.gt_label.flatten().cpu())
            embedding = image_embedding(model.model, inputs)
            if embedding is not None:
                columns.setdefault("embedding", []).append(embedding.cpu())
            keep = torch.as_tensor(examples[(examples >= start_index) & (examples < start_index + size)] - start_index)
            start_index += size
            if not len(keep):
                continue
            input_size = inputs.shape[-2:]
            columns.setdefault("image", []).append(interpolate(batch.image[keep], size=input_size, mode="bilinear"))
            if batch.gt_mask is not None:  # a Folder dataset without mask_dir has none
                mask = batch.gt_mask.reshape(size, 1, *batch.gt_mask.shape[-2:])[keep].float()
                columns.setdefault("gt_mask", []).append(interpolate(mask, size=input_size, mode="nearest")[:, 0])
            if output.anomaly_map is not None:
                anomaly_map = output.anomaly_map.reshape(size, *output.anomaly_map.shape[-2:])[keep]
                columns.setdefault("anomaly_map", []).append(anomaly_map.cpu())
    predictions = {key: torch.cat(values).numpy() for key, values in columns.items()}
    predictions["example_index"] = examples
    predictions["image"] = predictions["image"].clip(0, 1).astype(np.float16)
    if "gt_mask" in predictions:
        predictions["gt_mask"] = predictions["gt_mask"].astype(np.uint8)
    return start_index / max(elapsed, 1e-9), predictions


def batch1_latency_ms(model: Any, dataloader: Any, device: Any = None, repeats: int = 20) -> float:
    """Median time of one single-image eval forward on ``device``, in milliseconds (after two warm-up runs).

    Args:
        model: Trained anomalib model in eval mode, on ``device``.
        dataloader: Loader whose first image is used.
        device: Where to run (default: CPU).
        repeats: Timed runs.
    """
    import torch

    device = device if device is not None else torch.device("cpu")
    image = next(iter(dataloader)).image[:1].to(device)
    with torch.no_grad():
        times = [_timed_forward(model, image, device)[0] for _ in range(repeats + 2)][2:]
    return 1000.0 * float(np.median(times))


def _timed_forward(model: Any, images: Any, device: Any) -> tuple[float, Any, Any]:
    """:func:`_forward` timed on ``device`` (CUDA synchronised before and after): ``(seconds, inputs, output)``."""
    _synchronize(device)
    start = time.perf_counter()
    inputs, output = _forward(model, images)
    _synchronize(device)
    return time.perf_counter() - start, inputs, output


def _forward(model: Any, images: Any) -> tuple[Any, Any]:
    """Pre-process and score a batch: ``(model inputs, InferenceBatch)``."""
    inputs = model.pre_processor(images) if model.pre_processor else images
    return inputs, model.model(inputs)


def image_embedding(torch_model: Any, inputs: Any) -> Any:
    """Image-level embeddings ``[B, D]`` for the t-SNE figure, or ``None`` if the model has no ``embed`` method.

    ``embed`` may return nested tuples/lists (SSAD: ``(per-head embeddings, stage maps)``); the first tensor is
    used (SSAD: the first head's embedding).
    """
    embed = getattr(torch_model, "embed", None)
    if not callable(embed):
        return None
    embedding = embed(inputs)
    while isinstance(embedding, tuple | list):
        embedding = embedding[0]
    return embedding.flatten(1)


def read_results(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``results.csv`` (empty if none)."""
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_markdown(rows: list[dict[str, str]], path: Path, command: str) -> None:
    """Summarise result rows as a markdown table."""
    header = ["model", "dataset", "seed", "status", *COLUMNS[COLUMNS.index("image_AUROC") : COLUMNS.index("error")]]
    lines = [
        f"Command: `{command}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = []
        for key in header:
            value = row.get(key, "")
            try:
                number = float(value)
            except ValueError:
                cells.append(str(value))
                continue
            if math.isnan(number):
                cells.append("n/a")  # a metric the model cannot compute, e.g. GANomaly's pixel metrics
            else:
                cells.append(f"{number:.3f}" if key.startswith(("image_", "pixel_")) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    failed = [row for row in rows if row.get("status") != "ok"]
    lines += ["", *[f"- {row['job']} failed: {row.get('error', '')}" for row in failed]]
    path.write_text("\n".join(lines) + "\n")


def run_benchmark(config_path: str | Path, rerun_failed: bool = False) -> list[dict[str, str]]:
    """Run every unfinished job of a config, each in a subprocess, then redraw the figures.

    Args:
        config_path: Benchmark YAML.
        rerun_failed: Run jobs recorded as failed again (finished ones are always skipped).

    Returns:
        All result rows, earlier runs' included.
    """
    config = load_config(config_path)
    output = Path(config["output"])
    output.mkdir(parents=True, exist_ok=True)
    csv_path = output / "results.csv"
    rows = read_results(csv_path)
    done = {row["job"] for row in rows if row["status"] == "ok" or not rerun_failed}
    rows = [row for row in rows if row["job"] in done]
    for job in expand_jobs(config):
        if job.job_id in done:
            logger.info("skip %s (finished)", job.job_id)
            continue
        logger.info("run %s", job.job_id)
        rows.append(run_in_subprocess(job))
        with csv_path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        write_markdown(rows, output / "results.md", f"python -m anomalib_ssad.benchmark {config_path}")
    write_markdown(rows, output / "results.md", f"python -m anomalib_ssad.benchmark {config_path}")
    write_figures(rows, output)
    return rows


def run_in_subprocess(job: Job, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one job in a fresh Python process (its own peak RSS); returns its row with ``status`` and ``error``.

    Args:
        job: The job.
        env: Environment variables added to this process's for the job (e.g. allocator settings).
    """
    job_dir = Path(job.output) / "jobs" / job.job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    log_path = job_dir / "log.txt"
    command = [sys.executable, "-m", "anomalib_ssad.benchmark", "--run-job", json.dumps(job.__dict__)]
    with log_path.open("w") as log:
        completed = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=log, text=True, check=False, env={**os.environ, **(env or {})}
        )
        log.write(completed.stdout)
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "status": "ok", "error": ""}
    # The job's own exception if it reported one; otherwise (killed, crashed) the last line of its log.
    reported = [line for line in completed.stdout.splitlines() if line.startswith(ERROR_PREFIX)]
    error_lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    if reported:
        error = json.loads(reported[-1][len(ERROR_PREFIX) :])
    elif completed.returncode < 0:
        # SIGKILL is what the kernel's out-of-memory killer sends.
        error = f"killed by signal {-completed.returncode}" + (
            " (out of memory?)" if completed.returncode == -9 else ""
        )
    else:
        error = error_lines[-1] if error_lines else f"exit code {completed.returncode}"
    return {
        "job": job.job_id,
        "model": job.model_name,
        "dataset": job.dataset["name"],
        "seed": job.seed,
        "status": "failed",
        "error": f"{error[:300]} (log: {log_path})",
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m anomalib_ssad.benchmark CONFIG [--rerun-failed]``."""
    parser = argparse.ArgumentParser(description="Benchmark anomalib models side by side from a YAML config.")
    parser.add_argument("config", nargs="?", help="benchmark YAML")
    parser.add_argument("--rerun-failed", action="store_true", help="run failed jobs again")
    parser.add_argument("--run-job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.run_job:
        try:
            result = run_job(Job(**json.loads(args.run_job)))
        except Exception as error:
            traceback.print_exc()
            print(ERROR_PREFIX + json.dumps(f"{type(error).__name__}: {error}"), flush=True)
            raise SystemExit(1) from None
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if not args.config:
        parser.error("a benchmark config is required")
    try:
        rows = run_benchmark(args.config, rerun_failed=args.rerun_failed)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(Path(load_config(args.config)["output"]) / "results.md")
    print(f"{sum(row['status'] == 'ok' for row in rows)} ok, {sum(row['status'] != 'ok' for row in rows)} failed")
