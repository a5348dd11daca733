"""Fitting for the ablation scripts: one plugin model on one MVTec-layout category, as the runner does."""

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from torchmetrics.functional.classification import binary_auroc

from anomalib_ssad.benchmark.runner import shared_evaluator
from anomalib_ssad.components.scorers import CellScorer, PartScorer, Scorer, _hold_out_rows


def fit(
    model_class: Any, init_args: dict[str, Any], data: tuple[Path, str], image_size: tuple[int, int], jobs: Path
) -> tuple[Any, Engine, MVTecAD, float]:
    """Fit ``model_class(**init_args)`` on the CPU with the runner's Evaluator and no visualizer.

    Args:
        model_class: A plugin model class (``SSAD``, ``CutPaste``).
        init_args: Its arguments (the caller seeds the process before).
        data: The dataset's root and category.
        image_size: Height and width the pre-processor resizes to.
        jobs: Directory for the engine's files.

    Returns:
        The fitted model, its engine, the datamodule and the fit's wall time in seconds.
    """
    model = model_class(
        **init_args,
        pre_processor=model_class.configure_pre_processor(image_size=image_size),
        evaluator=shared_evaluator(),
        visualizer=False,
    )
    datamodule = MVTecAD(root=data[0], category=data[1], num_workers=0)
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=jobs)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    return model, engine, datamodule, time.perf_counter() - start


def refit_scorer(model: Any, engine: Engine, datamodule: MVTecAD) -> None:
    """Refit the model's scorer on the clean training images, then the post-processor on the new scores.

    The post-processor normalises scores by the minimum, maximum and threshold of the validation scores and
    clips to [0, 1]: scores of another scorer or feature, on another scale, would be clipped by the old statistics
    (ties that distort AUROC) unless validation runs again, as fitting does after its last epoch.
    """
    model.fit_normal_model(datamodule.train_dataloader())
    engine.validate(model=model, datamodule=datamodule, verbose=False)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of raw scores, scaled to [0, 1] first (their order kept).

    torchmetrics takes scores outside [0, 1] for logits: its sigmoid rounds large scores to 1 in float32, ties
    that pull the AUROC towards 0.5.
    """
    scaled = (scores - scores.min()) / (scores.max() - scores.min()).clamp_min(1e-12)
    return float(binary_auroc(scaled.double(), labels))


class StandardizedScores(Scorer):
    """A two-part scorer whose parts' relative scores are standardised on held-out normal rows, then averaged.

    The wrapped scorer (CutPaste's :class:`PartScorer`, SSAD's :class:`CellScorer`) divides each part's score by
    its mean on held-out normal rows, which equalises the parts' level but not their spread, so in a mean the part
    that spreads wider on normal rows decides the ranking. Here each part's relative score is also shifted and
    scaled by its mean and standard deviation on a tenth of the normal rows (at most the scorer's ``holdout``)
    held out of its fitting; the measured means and spreads are printed (the probes' logs).
    """

    shift: torch.Tensor
    spread: torch.Tensor

    def __init__(self, scorer: PartScorer | CellScorer) -> None:
        super().__init__()
        self.scorer = scorer
        self.register_buffer("shift", torch.zeros_like(scorer.scale))
        self.register_buffer("spread", torch.ones_like(scorer.scale))

    @property
    def max_fit_rows(self) -> int | None:
        """The wrapped scorer's bound on fitted rows (``None``: no bound)."""
        return getattr(self.scorer, "max_fit_rows", None)

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit the wrapped scorer on normal rows ``[N, D]`` but a held-out tenth, whose scores set shift and spread."""
        rows = torch.cat(list(embeddings)).detach().float()
        held, rest = _hold_out_rows(rows.shape[0], self.scorer.holdout, generator, rows.device)
        self.scorer.fit([rows[rest]], generator)
        relative = self.scorer.relative_scores([rows[held]])
        self.shift, self.spread = relative.mean(dim=0), relative.std(dim=0).clamp_min(1e-12)
        print(json.dumps({"part_mean": self.shift.tolist(), "part_std": self.spread.tolist()}), flush=True)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over the parts of (relative score - shift) / spread, ``[N]``."""
        return ((self.scorer.relative_scores(embeddings) - self.shift) / self.spread).mean(dim=1)
