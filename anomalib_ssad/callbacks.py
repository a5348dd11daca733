# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

r"""Lightning callbacks for users of any anomalib model.

:class:`PredictionTable` writes what ``anomalib predict`` (or ``test``) decided about every image to a CSV file,
one row per image, with the anomaly map saved beside it, so scores can be read by a script or a spreadsheet.

CLI (``anomalib predict`` accepts callbacks like ``train`` does)::

    anomalib predict --model model.yaml --ckpt_path model.ckpt --data images/ \
        --trainer.callbacks+=anomalib_ssad.callbacks.PredictionTable --trainer.callbacks.output_dir predictions

Example:
    >>> from anomalib_ssad.callbacks import PredictionTable
    >>> PredictionTable(output_dir="predictions").csv_path.name
    'predictions.csv'
"""

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

COLUMNS = ("image_path", "pred_score", "pred_label", "anomaly_map")


class PredictionTable(Callback):
    """Write ``predictions.csv`` (image path, score, label, anomaly-map file) for ``predict`` and ``test``.

    Scores and labels are the post-processed ones (normalised to ``[0, 1]``, label = score above the threshold
    fitted on validation data). Each anomaly map is written as an 8-bit grayscale PNG (``0..255`` for the
    normalised ``[0, 1]`` map) under ``<output_dir>/anomaly_maps/``; the same file name in two folders gets the
    folder name as a prefix so no map overwrites another. Paths in the table are absolute. The table is
    rewritten at the start of every predict or test run.

    Args:
        output_dir: Folder of ``predictions.csv`` and ``anomaly_maps/`` (created if needed).
    """

    def __init__(self, output_dir: str | Path = "predictions") -> None:
        self.output_dir = Path(output_dir).resolve()
        self.csv_path = self.output_dir / "predictions.csv"
        self._written: set[str] = set()
        self._pending: list[Any] = []

    def _start(self) -> None:
        (self.output_dir / "anomaly_maps").mkdir(parents=True, exist_ok=True)
        with self.csv_path.open("w", newline="") as file:
            csv.writer(file).writerow(COLUMNS)
        self._written = set()
        self._pending = []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new table."""
        del trainer, pl_module
        self._start()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new table."""
        del trainer, pl_module
        self._start()

    # Batches are written one hook later: anomalib's post-processor (a callback of the model, run after this
    # one) normalises and labels each batch in place after the batch-end hooks.
    def on_predict_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, *_: Any) -> None:
        """Hold the batch until it is post-processed; write the batches held before."""
        del trainer, module
        self._flush()
        self._pending.append(outputs)

    def on_test_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, *_: Any) -> None:
        """Hold the batch until it is post-processed; write the batches held before."""
        del trainer, module
        self._flush()
        self._pending.append(outputs)

    def on_predict_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Write the last batch."""
        del trainer, module
        self._flush()

    def on_test_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Write the last batch."""
        del trainer, module
        self._flush()

    def _flush(self) -> None:
        for batch in self._pending:
            self._write(batch)
        self._pending = []

    def _map_file(self, image_path: str) -> Path:
        path = Path(image_path)
        name = f"{path.stem}.png"
        if name in self._written:
            name = f"{path.parent.name}_{name}"
        self._written.add(name)
        return self.output_dir / "anomaly_maps" / name

    def _write(self, batch: Any) -> None:
        paths = list(batch.image_path) if batch.image_path is not None else []
        scores = _as_list(batch.pred_score, len(paths))
        labels = _as_list(batch.pred_label, len(paths))
        maps = batch.anomaly_map
        rows = []
        for index, image_path in enumerate(paths):
            map_file = ""
            if maps is not None:
                target = self._map_file(str(image_path))
                anomaly_map = maps[index].detach().float().cpu().squeeze().clamp(0, 1).numpy()
                Image.fromarray((anomaly_map * 255).round().astype(np.uint8)).save(target)
                map_file = str(target)
            label = "" if labels[index] is None else int(labels[index])
            score = "" if scores[index] is None else f"{float(scores[index]):.6f}"
            rows.append((str(image_path), score, label, map_file))
        with self.csv_path.open("a", newline="") as file:
            csv.writer(file).writerows(rows)


def _as_list(values: torch.Tensor | None, length: int) -> list:
    """A batch field as one Python value per image (``None`` when the field is missing)."""
    if values is None:
        return [None] * length
    return values.detach().cpu().reshape(length, -1)[:, 0].tolist()
