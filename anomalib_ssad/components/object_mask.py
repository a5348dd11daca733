# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Foreground (object) mask, so that synthetic defects land on the object and not on the background.

The mask of one image is computed with OpenCV: Otsu's threshold on a blurred grayscale image, polarity chosen so
that the image border is background, morphological opening/closing, holes filled, and only the largest connected
component(s) kept. Textures get an all-ones mask. Objects that never move (e.g. ``bottle``) get one mask computed
once and reused (``fixed``); objects that rotate or move get a mask per image (``per_image``). ``auto`` decides
between the three on the first batch it sees.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.object_mask import ObjectMasker
    >>> images = torch.zeros(2, 3, 64, 64)
    >>> images[:, :, 16:48, 16:48] = 0.9
    >>> masker = ObjectMasker(mode="auto")
    >>> masks = masker(images)
    >>> masks.shape, masker.resolved_mode
    (torch.Size([2, 64, 64]), 'fixed')
"""

from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from anomalib_ssad.validation import check_choice

MaskMode = Literal["auto", "texture", "fixed", "per_image"]


def _to_gray_uint8(image: Tensor) -> np.ndarray:
    """Convert a ``[C, H, W]`` float image in ``[0, 1]`` to an ``[H, W]`` uint8 grayscale array."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if array.shape[0] == 1:
        return np.ascontiguousarray(array[0])
    return cv2.cvtColor(np.ascontiguousarray(array[:3].transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)


def _odd(value: float) -> int:
    """Round up to an odd integer >= 3 (kernel sizes)."""
    size = max(3, round(value))
    return size if size % 2 else size + 1


def compute_object_mask(image: Tensor, keep_ratio: float = 0.25, max_border_minority: float = 0.2) -> np.ndarray:
    """Compute the foreground mask of one image.

    Args:
        image: ``[C, H, W]`` float image in ``[0, 1]`` (C = 1 or 3).
        keep_ratio: Connected components at least this fraction of the largest one are kept, so an object made
            of a few separate parts keeps them all while speckle is dropped.
        max_border_minority: If more than this fraction of the border falls in its minority class, the border is
            not a uniform background (a texture, e.g. KolektorSDD: 0.3-0.5; an object on a background: ~0) and
            the whole image is foreground.

    Returns:
        Boolean ``[H, W]`` array; may be empty when the image has no clear object.
    """
    gray = _to_gray_uint8(image)
    height, width = gray.shape
    side = min(height, width)
    blurred = cv2.GaussianBlur(gray, (_odd(side / 50), _odd(side / 50)), 0)
    _, binary = cv2.threshold(blurred, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)

    # The object is whatever differs from the border: if most of the border is "on", the threshold picked the
    # background as the bright class.
    band = max(1, side // 50)
    border = np.concatenate(
        [binary[:band].ravel(), binary[-band:].ravel(), binary[:, :band].ravel(), binary[:, -band:].ravel()]
    )
    if min(border.mean(), 1 - border.mean()) > max_border_minority:
        return np.ones((height, width), dtype=bool)
    if border.mean() > 0.5:
        binary = 1 - binary

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(side / 64), _odd(side / 64)))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)

    # Drawing only the filled external contours fills the holes (e.g. the bottle's dark mouth) in the same pass.
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros_like(binary)
    if contours:
        areas = np.array([cv2.contourArea(contour) for contour in contours])
        kept = [contour for contour, area in zip(contours, areas, strict=True) if area >= keep_ratio * areas.max()]
        cv2.drawContours(mask, kept, -1, 1, thickness=cv2.FILLED)
    return mask.astype(bool)


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 1.0


class ObjectMasker:
    """Foreground masks for a stream of batches, with the mode resolved once per run.

    Args:
        mode: ``texture``: all ones. ``fixed``: the majority vote of the first batch's masks, cached per image
            size and reused. ``per_image``: every image gets its own mask. ``auto``: resolved on the first batch
            (see ``resolved_mode``): texture if the typical mask covers more than ``texture_coverage`` or less
            than ``min_coverage`` of the image, fixed if the masks of the batch agree (mean IoU with their
            majority vote >= ``agreement_iou``), else per_image.
        texture_coverage: Coverage above which an image counts as a texture.
        min_coverage: Coverage below which no object was found (also treated as texture).
        agreement_iou: Mean IoU above which the first batch's masks count as one fixed mask.

    Degenerate masks (less than ``min_coverage`` of the image, e.g. a uniform image) are replaced by all ones,
    so that a defect can always be placed.

    Attributes:
        resolved_mode: The mode in use; equals ``mode`` unless ``mode="auto"``, then ``None`` until the first
            batch.
    """

    def __init__(
        self,
        mode: MaskMode = "auto",
        texture_coverage: float = 0.9,
        min_coverage: float = 0.01,
        agreement_iou: float = 0.8,
    ) -> None:
        check_choice("object_mask_mode", mode, MaskMode)
        self.mode = mode
        self.texture_coverage = texture_coverage
        self.min_coverage = min_coverage
        self.agreement_iou = agreement_iou
        self.resolved_mode: str | None = None if mode == "auto" else mode
        self._fixed_masks: dict[tuple[int, int], np.ndarray] = {}

    def _usable(self, mask: np.ndarray) -> np.ndarray:
        return mask if mask.mean() >= self.min_coverage else np.ones_like(mask)

    def _resolve(self, masks: list[np.ndarray]) -> str:
        coverage = float(np.median([mask.mean() for mask in masks]))
        if coverage > self.texture_coverage or coverage < self.min_coverage:
            return "texture"
        vote = np.mean(masks, axis=0) >= 0.5
        agreement = float(np.mean([_iou(mask, vote) for mask in masks]))
        return "fixed" if agreement >= self.agreement_iou else "per_image"

    def __call__(self, images: Tensor) -> Tensor:
        """Compute the object masks of a batch.

        Args:
            images: ``[B, C, H, W]`` float images in ``[0, 1]``.

        Returns:
            Boolean ``[B, H, W]`` masks on the images' device.
        """
        batch, _, height, width = images.shape
        if self.resolved_mode == "texture":
            return torch.ones(batch, height, width, dtype=torch.bool, device=images.device)
        fixed = self._fixed_masks.get((height, width))
        if self.resolved_mode == "fixed" and fixed is not None:
            masks = [fixed] * batch
        else:
            masks = [compute_object_mask(image) for image in images]
            if self.resolved_mode is None:
                self.resolved_mode = self._resolve(masks)
                if self.resolved_mode == "texture":
                    return self(images)
            if self.resolved_mode == "fixed":
                self._fixed_masks[(height, width)] = self._usable(np.mean(masks, axis=0) >= 0.5)
                masks = [self._fixed_masks[(height, width)]] * batch
            else:
                masks = [self._usable(mask) for mask in masks]
        return torch.from_numpy(np.stack(masks)).to(images.device)
