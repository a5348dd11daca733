# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Checks of the images a model is given, so that nothing unusable is trained on or scored silently.

anomalib reads every image with ``PIL.Image.open(path).convert("RGB")``: a 16-bit grayscale PNG becomes an
all-white image, a blank capture a constant one, and a truncated file fails deep in a data loader without its
name. :func:`check_training_images` (called when fitting starts) fails at once naming every such training file;
:func:`unusable_images` flags the images of a test or predict batch, which the models log as warnings by name.
:func:`aspect_warning` says when the model's fixed input size distorts the training images' shape (e.g. portrait
strips squeezed into a square) and which ``[height, width]`` would keep it.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "blank.png"
    >>> Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    >>> image_problem(path)
    'constant image (every pixel 0): a blank or failed capture'
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from anomalib_ssad.components.pre_processor import resize_size

# PIL modes that anomalib's 8-bit RGB conversion clips (16-bit and 32-bit integer, float).
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_MAX_LISTED = 5
# Input and training images whose aspect ratios (height / width) differ by more than this factor get a warning.
ASPECT_TOLERANCE = 1.5
# Suggested input sizes are multiples of the backbone's coarsest stride.
SIZE_MULTIPLE = 32


def image_problem(path: str | Path, decode: bool = True) -> str | None:
    """What makes an image file unusable, or ``None`` if it reads as a real image.

    Args:
        path: Image file.
        decode: Decode the pixels (finds truncated and constant images); ``False`` reads the header only.
    """
    return _inspect_image(path, decode)[0]


def _inspect_image(path: str | Path, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    """:func:`image_problem` and the image's ``(height, width)`` (``None`` if unreadable), from one read."""
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            if image.mode in HIGH_BIT_DEPTH_MODES:
                return (
                    f"{image.mode} (more than 8 bits per pixel) image: anomalib reads it as 8-bit RGB and clips it "
                    "(a 16-bit grayscale image turns all white); convert it to 8-bit first"
                ), size
            if not decode:
                return None, size
            image.load()
            extrema = image.getextrema()
    except (OSError, SyntaxError, ValueError) as error:
        return f"unreadable image ({error})", None
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):
        values = ", ".join(str(low) for low, _ in bands)
        return f"constant image (every pixel {values}): a blank or failed capture", size
    return None, size


def describe_problems(problems: Sequence[tuple[str, str]]) -> str:
    """One line per file (at most five, then a count): ``path: problem``."""
    lines = [f"  {path}: {problem}" for path, problem in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)


def check_training_images(datamodule: Any) -> list[tuple[int, int]] | None:
    """Fail before training if the datamodule has no training image or any is unusable (:func:`image_problem`).

    Args:
        datamodule: An anomalib datamodule after ``setup`` (its ``train_data.samples`` lists the files).

    Returns:
        The training images' ``(height, width)``, read in the same pass (for :func:`input_aspect_warning`), or
        ``None`` where the datamodule lists no files.

    Raises:
        ValueError: Naming the data folder when there is no training image, or every unusable file.
    """
    samples = _samples(datamodule, "train_data")
    if samples is None:
        return None
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
    problems, sizes = [], []
    for path in samples["image_path"]:
        problem, size = _inspect_image(path, decode=True)
        if problem:
            problems.append((path, problem))
        sizes.append(size)
    if problems:
        msg = (
            f"{len(problems)} of {len(samples)} training images cannot be used; fix or remove them:\n"
            + describe_problems(problems)
        )
        raise ValueError(msg)
    return sizes


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


def aspect_warning(image_sizes: Sequence[tuple[int, int]], input_size: tuple[int, int]) -> str | None:
    """A warning when resizing to ``input_size`` distorts the median training image's aspect ratio over 1.5 times.

    The warning gives the ``[height, width]`` that keeps the median aspect ratio at about the input's pixel count
    (multiples of 32).

    Args:
        image_sizes: ``(height, width)`` of the training images.
        input_size: ``(height, width)`` the pre-processor resizes every image to.

    Example:
        >>> print(aspect_warning([(640, 253)] * 3, (256, 256)).split(": ")[0])
        The training images are portrait (median 640x253, height / width 2.53) but the model resizes them to 256x256
    """
    if not image_sizes:
        return None
    ratio, (height, width) = sorted((height / width, (height, width)) for height, width in image_sizes)[
        len(image_sizes) // 2
    ]
    input_ratio = input_size[0] / input_size[1]
    distortion = ratio / input_ratio
    factor = max(distortion, 1 / distortion)
    if factor <= ASPECT_TOLERANCE:
        return None
    pixels = input_size[0] * input_size[1]
    suggested = [
        max(SIZE_MULTIPLE, round(math.sqrt(pixels * r) / SIZE_MULTIPLE) * SIZE_MULTIPLE) for r in (ratio, 1 / ratio)
    ]
    shape = "portrait" if ratio > 1 else "landscape" if ratio < 1 else "square"
    side, other = ("height", "width") if distortion > 1 else ("width", "height")
    opposite = (
        " (the opposite orientation: are height and width swapped?)" if (ratio - 1) * (input_ratio - 1) < 0 else ""
    )
    return (
        f"The training images are {shape} (median {height}x{width}, height / width {ratio:.2f}) but the model resizes "
        f"them to {input_size[0]}x{input_size[1]}{opposite}: that squeezes their {side} "
        f"{factor:.1f} times relative to their {other}, blurring detail along it. To keep "
        f"their shape at about the same pixel count, resize to [height, width] = {suggested}: the benchmark "
        "runner's image_size, or in an anomalib config the size of the Resize in the model's pre_processor "
        "(configs/ssad/kolektorsdd_aspect.yaml)."
    )


def input_aspect_warning(
    datamodule: Any, pre_processor: Any, image_sizes: Sequence[tuple[int, int]] | None = None
) -> str | None:
    """:func:`aspect_warning` for a datamodule's training images and a pre-processor's fixed ``Resize``.

    ``None`` where either is unknown: no ``train_data.samples``, no pre-processor transform or no fixed size.

    Args:
        datamodule: An anomalib datamodule after ``setup``.
        pre_processor: The model's pre-processor.
        image_sizes: The training images' ``(height, width)`` if already read (:func:`check_training_images`
            returns them); otherwise their headers are read.
    """
    samples = _samples(datamodule, "train_data")
    input_size = resize_size(getattr(pre_processor, "transform", None))
    if samples is None or input_size is None:
        return None
    if image_sizes is None:
        # Unreadable files have no size; check_training_images reports them.
        headers = (_inspect_image(path, decode=False)[1] for path in samples["image_path"])
        image_sizes = [size for size in headers if size is not None]
    return aspect_warning(image_sizes, input_size)
