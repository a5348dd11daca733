# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Listing and reading image files (foreign images for texture defects, preview inputs).

Example:
    >>> from pathlib import Path
    >>> import anomalib_ssad
    >>> from anomalib_ssad.image_files import list_image_files
    >>> folder = Path(anomalib_ssad.__file__).parent / "demo/mvtec_ad/bottle/train/good"
    >>> len(list_image_files(folder)) > 0
    True
"""

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files (``IMAGE_EXTENSIONS``) of a folder, sorted.

    Raises:
        ValueError: Naming the folder, if it does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"Image folder not found: {folder}"
        raise ValueError(msg)
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        msg = f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}"
        raise ValueError(msg)
    return paths


def read_uint8(path: str | Path) -> np.ndarray:
    """One image file as 8-bit: ``[H, W]`` for single-channel files, ``[H, W, 3]`` RGB otherwise.

    Images of another depth (e.g. 16-bit) are min-max scaled to 0-255; an alpha channel is dropped.

    Raises:
        ValueError: Naming the file, if it cannot be read as an image.
    """
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        msg = f"Cannot read image {path}"
        raise ValueError(msg)
    if array.dtype != np.uint8:
        array = cv2.normalize(array, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array if array.ndim == 2 else cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB)


def read_rgb_images(images: str | Path | list[str] | list[Path]) -> list[Tensor]:
    """Read images as RGB float tensors ``[3, H, W]`` in ``[0, 1]``; a folder means every image file in it.

    Raises:
        ValueError: Naming the file, if one cannot be read as an image.
    """
    paths = list_image_files(images) if isinstance(images, str | Path) else [Path(path) for path in images]
    tensors = []
    for path in paths:
        array = read_uint8(path)
        array = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB) if array.ndim == 2 else array
        tensors.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255)
    return tensors
