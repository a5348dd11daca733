"""Fitting for the ablation scripts: one plugin model on one MVTec-layout category, as the runner does."""

import time
from pathlib import Path
from typing import Any

from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_ssad.benchmark.runner import shared_evaluator


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
