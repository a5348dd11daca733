# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Checks of the images a model is given, so that nothing unusable is trained on or scored silently.

anomalib reads every image with ``PIL.Image.open(path).convert("RGB")``: a 16-bit grayscale PNG becomes an
all-white image, a blank capture a constant one, and a truncated file fails deep in a data loader without its
name. :func:`check_training_images` (called when fitting starts) fails at once naming every such training file;
:func:`unusable_images` flags the images of a test or predict batch, which the models log as warnings by name.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "blank.png"
    >>> Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    >>> image_problem(path)
    'constant image (every pixel 0): a blank or failed capture'
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

# PIL modes that anomalib's 8-bit RGB conversion clips (16-bit and 32-bit integer, float).
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_MAX_LISTED = 5


def image_problem(path: str | Path, decode: bool = True) -> str | None:
    """What makes an image file unusable, or ``None`` if it reads as a real image.

    Args:
        path: Image file.
        decode: Decode the pixels (finds truncated and constant images); ``False`` reads the header only.
    """
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_BIT_DEPTH_MODES:
                return (
                    f"{image.mode} (more than 8 bits per pixel) image: anomalib reads it as 8-bit RGB and clips it "
                    "(a 16-bit grayscale image turns all white); convert it to 8-bit first"
                )
            if not decode:
                return None
            image.load()
            extrema = image.getextrema()
    except (OSError, SyntaxError, ValueError) as error:
        return f"unreadable image ({error})"
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):
        values = ", ".join(str(low) for low, _ in bands)
        return f"constant image (every pixel {values}): a blank or failed capture"
    return None


def describe_problems(problems: Sequence[tuple[str, str]]) -> str:
    """One line per file (at most five, then a count): ``path: problem``."""
    lines = [f"  {path}: {problem}" for path, problem in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)


def check_training_images(datamodule: Any) -> None:
    """Fail before training if the datamodule has no training image or any is unusable (:func:`image_problem`).

    Args:
        datamodule: An anomalib datamodule after ``setup`` (its ``train_data.samples`` lists the files).

    Raises:
        ValueError: Naming the data folder when there is no training image, or every unusable file.
    """
    dataset = getattr(datamodule, "train_data", None)
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return
    if len(samples) == 0:
        where = ", ".join(
            f"{name}={getattr(datamodule, name)}"
            for name in ("root", "category", "normal_dir")
            if hasattr(datamodule, name)
        )
        msg = (
            f"{type(datamodule).__name__} found no training images ({where}): check --data.root and --data.category "
            "(normal images go in <root>/<category>/train/good for MVTec-layout data)."
        )
        raise ValueError(msg)
    problems = [(path, problem) for path in samples["image_path"] if (problem := image_problem(path))]
    if problems:
        msg = (
            f"{len(problems)} of {len(samples)} training images cannot be used; fix or remove them:\n"
            + describe_problems(problems)
        )
        raise ValueError(msg)


def check_evaluation_images(datamodule: Any, split: str) -> None:
    """Fail before evaluating if a file of ``split`` (``"val_data"`` or ``"test_data"``) cannot be read.

    Images that read but cannot be real (constant, more than 8 bits) are scored, with a warning per batch
    (:func:`unusable_images`).

    Raises:
        ValueError: Naming every unreadable (e.g. truncated) file.
    """
    samples = _samples(datamodule, split)
    if samples is None:
        return
    problems = [
        (path, problem)
        for path in samples["image_path"]
        if (problem := image_problem(path)) is not None and problem.startswith("unreadable")
    ]
    if problems:
        msg = f"{len(problems)} {split.removesuffix('_data')} images cannot be read:\n" + describe_problems(problems)
        raise ValueError(msg)


def _samples(datamodule: Any, split: str) -> Any:
    """The ``samples`` table of a datamodule's split, or ``None`` if it has none."""
    return getattr(getattr(datamodule, split, None), "samples", None)


def unusable_images(images: torch.Tensor, paths: Sequence[str] | None) -> list[tuple[str, str]]:
    """``(path, problem)`` for each image of a batch that is constant or whose file is not 8-bit.

    Args:
        images: Batch ``[B, C, H, W]`` as the model gets it (after pre-processing).
        paths: The images' files, if known.
    """
    constant = images.flatten(2).std(dim=2).amax(dim=1) < 1e-6
    paths = list(paths) if paths is not None else [f"image {index} of the batch" for index in range(len(images))]
    problems = []
    for index, path in enumerate(paths):
        problem = image_problem(path, decode=False) if Path(path).is_file() else None
        if problem is None and bool(constant[index]):
            problem = "constant image: a blank or failed capture"
        if problem is not None:
            problems.append((path, problem))
    return problems
