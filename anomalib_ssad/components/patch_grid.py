# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Patch-level localization: patch features on a sliding-window grid, and grid scores back to an anomaly map.

Two ways to get one feature vector per ``patch_size`` window at ``stride``:

- :func:`crop_patches` cuts the windows out (``unfold``) so each is embedded on its own, exactly as the
  patch-level pretext task sees them (841 backbone passes per 256 px image at stride 8);
- :func:`dense_patch_features` runs the backbone once on the whole image and average-pools every stage over the
  window's footprint (``patch_size / stage_stride`` cells), sharing the computation between overlapping windows.

Example:
    >>> import torch
    >>> from anomalib_ssad.components import assemble_anomaly_map, dense_patch_features
    >>> maps = [torch.rand(1, 8, 32, 32), torch.rand(1, 16, 16, 16), torch.rand(1, 32, 8, 8)]
    >>> features = dense_patch_features(maps, strides=[8, 16, 32], image_size=(256, 256), patch_size=32, stride=8)
    >>> features[0].shape
    torch.Size([1, 29, 29, 8])
    >>> assemble_anomaly_map(torch.rand(1, 29, 29), (256, 256), patch_size=32).shape
    torch.Size([1, 1, 256, 256])
"""

from collections.abc import Sequence

import torch
from anomalib.models.components.filters import GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812


def patch_grid_size(image_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """Number of windows along height and width.

    Raises:
        ValueError: If the image is smaller than one patch.
    """
    height, width = image_size
    if height < patch_size or width < patch_size:
        msg = f"Image of {height}x{width} px is smaller than patch_size {patch_size}."
        raise ValueError(msg)
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


def crop_patches(images: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """Cut every window out of ``images [B, C, H, W]`` into ``[B * Gh * Gw, C, patch_size, patch_size]``."""
    batch, channels = images.shape[:2]
    patches = F.unfold(images, kernel_size=patch_size, stride=stride)  # [B, C*P*P, Gh*Gw]
    patches = patches.transpose(1, 2).reshape(batch, -1, channels, patch_size, patch_size)
    return patches.flatten(0, 1)


def dense_patch_features(
    stage_maps: Sequence[torch.Tensor],
    strides: Sequence[int],
    image_size: tuple[int, int],
    patch_size: int,
    stride: int,
) -> list[torch.Tensor]:
    """Average-pool each stage over every window's footprint and resample it to the window grid.

    Args:
        stage_maps: Backbone feature maps ``[B, C_i, H / s_i, W / s_i]``.
        strides: Stride ``s_i`` of each map in pixels.
        image_size: ``(H, W)`` of the input image.
        patch_size: Window size in pixels.
        stride: Window stride in pixels.

    Returns:
        One tensor ``[B, Gh, Gw, C_i]`` per stage.
    """
    grid = patch_grid_size(image_size, patch_size, stride)
    pooled = []
    for feature_map, stage_stride in zip(stage_maps, strides, strict=True):
        kernel = max(1, patch_size // stage_stride)
        window_means = F.avg_pool2d(feature_map, kernel_size=kernel, stride=1)
        # align_corners=True puts the first and last window centres of every stage on the grid's ends.
        window_means = F.interpolate(window_means, size=grid, mode="bilinear", align_corners=True)
        pooled.append(window_means.permute(0, 2, 3, 1))
    return pooled


def assemble_anomaly_map(
    grid_scores: torch.Tensor,
    image_size: tuple[int, int],
    patch_size: int,
    blur: nn.Module | None = None,
) -> torch.Tensor:
    """Turn window scores ``[B, Gh, Gw]`` into an anomaly map ``[B, 1, H, W]`` at image resolution.

    Each score is placed at its window's centre; the map is bilinearly interpolated between centres,
    replicated to the border (half a patch wide) and optionally smoothed by ``blur``.
    """
    height, width = image_size
    half = patch_size // 2
    inner = (height - 2 * half, width - 2 * half)
    score_map = F.interpolate(grid_scores.unsqueeze(1), size=inner, mode="bilinear", align_corners=True)
    score_map = F.pad(score_map, (half, width - inner[1] - half, half, height - inner[0] - half), mode="replicate")
    return blur(score_map) if blur is not None else score_map


def gaussian_blur(sigma: float) -> nn.Module | None:
    """A Gaussian smoothing module with kernel ``2 * ceil(4 sigma) + 1``, or ``None`` for ``sigma <= 0``."""
    if sigma <= 0:
        return None
    kernel_size = 2 * int(4.0 * sigma + 0.5) + 1
    return GaussianBlur2d(kernel_size=(kernel_size, kernel_size), sigma=(sigma, sigma), channels=1)
