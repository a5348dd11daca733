# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Lightning base of every plugin model: seeding, a fixed schedule, input checks and the shared evaluation.

:class:`PluginAnomalyModule` holds what SSAD, CutPaste and Patch-GANomaly have in common and nothing more: the
model's ``seed`` also seeds the process when fitting starts (anomalib's CLI never applies ``--seed_everything``),
the trainer runs the model's own number of epochs (:attr:`PluginAnomalyModule.max_epochs`), unusable training,
validation and test images fail early by name, and every model gets the same evaluator (image AUROC / F1 /
F1-max, pixel AUROC / AUPRO).

Example:
    >>> from anomalib_ssad import SSAD, CutPaste, PatchGanomaly
    >>> from anomalib_ssad.models.base import PluginAnomalyModule
    >>> all(issubclass(model, PluginAnomalyModule) for model in (SSAD, CutPaste, PatchGanomaly))
    True
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch import seed_everything
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from anomalib_ssad.components.post_processor import SubgridPostProcessor
from anomalib_ssad.data_checks import (
    check_evaluation_images,
    check_training_images,
    describe_problems,
    input_aspect_warning,
    unusable_images,
)

logger = logging.getLogger(__name__)

# Offset between the seeds of two DDP processes' own draws (synthetic anomalies, crops).
RANK_SEED_STRIDE = 1_000_003
# Saved in every checkpoint; bumped when a fitted scorer's saved state is read differently than before.
# 2 (anomalib-ssad 0.4): CutPaste's k-NN compares each pooled backbone stage apart. Absent: 0.3 or earlier.
# 3 (anomalib-ssad 0.5): SSAD's dense cells may be scored beside their context (``context_cells``).
# 4 (anomalib-ssad 0.7): CutPaste's ``knn+gaussian`` may combine its parts by their minimum (``combine``).
CHECKPOINT_FORMAT_KEY = "anomalib_ssad_checkpoint_format"
CHECKPOINT_FORMAT = 4


class PluginAnomalyModule(AnomalibModule):
    """Seeding, the model's own epoch count, early input checks and the shared evaluator.

    Subclasses define :attr:`max_epochs` (their schedule's length) and the training and scoring steps.

    Args:
        seed: Seed of everything the model draws; from the start of fitting also the process's generators (so
            the training loader's order repeats too; Lightning's ``seed_everything``).
        pre_processor: Pre-processor (``True``: the model's default).
        post_processor: Post-processor (``True``: anomalib's default).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).
    """

    def __init__(
        self,
        seed: int,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.seed = seed

    @property
    def max_epochs(self) -> int:
        """Length of the model's schedule in epochs."""
        raise NotImplementedError

    def on_fit_start(self) -> None:
        """Seed every generator from ``seed``, align the trainer's epochs with the schedule, check the images.

        Unusable training images fail; an input size that distorts their aspect ratio gets a warning.
        """
        if self.trainer.max_epochs != self.max_epochs:
            logger.warning(
                "%s trains for %d epochs (its schedule's arguments); trainer.max_epochs=%s is replaced.",
                type(self).__name__,
                self.max_epochs,
                self.trainer.max_epochs,
            )
            self.trainer.fit_loop.max_epochs = self.max_epochs
        # anomalib's CLI accepts --seed_everything but never applies it: the model's seed also fixes the
        # process's generators (the training loader's order, anything else drawn while fitting).
        seed_everything(self.seed, workers=True, verbose=False)
        datamodule = getattr(self.trainer, "datamodule", None)
        image_sizes = check_training_images(datamodule)
        if warning := input_aspect_warning(datamodule, self.pre_processor, image_sizes):
            logger.warning("%s: %s", type(self).__name__, warning)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save anomalib's component configuration and the plugin's checkpoint format."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_FORMAT_KEY] = CHECKPOINT_FORMAT

    def rank_seed(self) -> int:
        """Seed of this process's own draws: ``seed`` in a single process (and on rank 0), a distinct one per rank."""
        return self.seed + RANK_SEED_STRIDE * self.trainer.global_rank

    def on_validation_start(self) -> None:
        """Fail at once, naming them, on validation files that cannot be read."""
        check_evaluation_images(getattr(self.trainer, "datamodule", None), "val_data")

    def on_test_start(self) -> None:
        """Fail at once, naming them, on test files that cannot be read."""
        check_evaluation_images(getattr(self.trainer, "datamodule", None), "test_data")

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch; anomalib fits normalisation and thresholds on these outputs."""
        del args, kwargs
        self._warn_unusable(batch)
        return batch.update(**self.model(batch.image)._asdict())

    def test_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch, warning by name about images that cannot be real (blank, not 8-bit)."""
        return self.validation_step(batch, *args, **kwargs)

    def predict_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch, warning by name about images that cannot be real (blank, not 8-bit)."""
        return self.validation_step(batch, *args, **kwargs)

    @staticmethod
    def _warn_unusable(batch: Batch) -> None:
        problems = unusable_images(batch.image, getattr(batch, "image_path", None))
        if problems:
            logger.warning("Scoring images that are not real captures:\n%s", describe_problems(problems))

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping; validation only after the last epoch."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0, "check_val_every_n_epoch": self.max_epochs}

    @property
    def learning_type(self) -> LearningType:
        """The model trains on normal images only."""
        return LearningType.ONE_CLASS

    @classmethod
    def configure_post_processor(cls) -> PostProcessor:
        """The anomalib post-processor, its pixel threshold fitted on a 2x2 sub-grid of the validation pixels.

        See :mod:`anomalib_ssad.components.post_processor`: the same threshold on smooth maps, a quarter of the
        memory anomalib's full-resolution fit needs.
        """
        return SubgridPostProcessor(pixel_stride=2)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC / F1 / F1-max and pixel AUROC / AUPRO for validation and test."""
        metrics = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ]
        return Evaluator(test_metrics=metrics)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a network) with torch's global generator seeded, then restore its state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
