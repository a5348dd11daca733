# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Patch-level localization: features on a grid of image cells or windows, and grid scores back to an anomaly map.

Locally aware cell features (the default, ``localization="dense"``): :func:`local_cell_features` averages every
chosen backbone stage over a 3x3 neighbourhood of cells and resamples it onto the finest stage's grid (one cell
per ``stride`` pixels), as PatchCore does; :func:`with_cell_context` sets each cell's mean over a wider
neighbourhood beside it (a coarser scale, scored with it); :func:`cell_labels` labels every cell of an image with
a synthetic defect from the defect's exact mask, so the pretext task trains on exactly the cells that are scored.

Two ways to get one feature vector per ``patch_size`` window at ``stride`` (the paper's crop-based task):

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
from anomalib.data import InferenceBatch
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


def random_crops(images: torch.Tensor, count: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` crops of ``size`` px at uniform random positions of every image: ``[B * count, C, size, size]``.

    Raises:
        ValueError: If the images are smaller than one crop.
    """
    batch, channels, height, width = images.shape
    if height < size or width < size:
        msg = f"Images of {height}x{width} px are smaller than the {size}-px patches to crop from them."
        raise ValueError(msg)
    tops = torch.randint(height - size + 1, (batch, count, 1, 1), generator=generator)
    lefts = torch.randint(width - size + 1, (batch, count, 1, 1), generator=generator)
    offsets = torch.arange(size)
    rows = (tops + offsets[:, None]).to(images.device)  # [B, count, size, 1]
    cols = (lefts + offsets[None, :]).to(images.device)  # [B, count, 1, size]
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    crops = images[index, :, rows, cols]  # advanced indices first: [B, count, size, size, C]
    return crops.permute(0, 1, 4, 2, 3).reshape(batch * count, channels, size, size)


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


def local_cell_features(
    stage_maps: Sequence[torch.Tensor],
    stages: Sequence[int] = (0, 1),
    neighbourhood: int = 3,
) -> torch.Tensor:
    """Locally aware features of every cell of the finest chosen stage, ``[B, sum(C_i), Gh, Gw]``.

    Each stage is averaged over a ``neighbourhood`` x ``neighbourhood`` window of its own cells (windows that
    overlap the border average only the cells inside the image, so border cells are not diluted by zero padding)
    and bilinearly resampled onto the grid of ``stage_maps[stages[0]]``.

    Args:
        stage_maps: Backbone feature maps ``[B, C_i, H_i, W_i]``, finest first.
        stages: Indices of the stages to use; the first sets the grid.
        neighbourhood: Side of the averaging window, in cells (odd).
    """
    grid = stage_maps[stages[0]].shape[-2:]
    features = []
    for index in stages:
        feature_map = neighbourhood_mean(stage_maps[index], neighbourhood)
        if feature_map.shape[-2:] != grid:
            feature_map = F.interpolate(feature_map, size=grid, mode="bilinear", align_corners=False)
        features.append(feature_map)
    return torch.cat(features, dim=1)


def neighbourhood_mean(feature_map: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of every cell's ``size`` x ``size`` neighbourhood (odd ``size``) of ``feature_map [B, C, H, W]``.

    Windows that overlap the border average only the cells inside the grid, so border cells are not diluted by
    zero padding.
    """
    return F.avg_pool2d(feature_map, size, stride=1, padding=size // 2, count_include_pad=False)


def with_cell_context(cells: torch.Tensor, size: int) -> torch.Tensor:
    """Every cell's feature beside its mean over ``size`` x ``size`` cells: ``[B, Gh, Gw, C]`` to ``[..., 2C]``.

    The second part is a coarser scale of the same feature. Its normal variation is lower than a single cell's,
    so a faint change that covers a region (a band of another brightness or finish) stands out in it, while the
    first part keeps the detail of thin defects.

    Example:
        >>> import torch
        >>> with_cell_context(torch.rand(1, 32, 32, 8), size=5).shape
        torch.Size([1, 32, 32, 16])
    """
    context = neighbourhood_mean(cells.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    return torch.cat([cells, context], dim=-1)


def cell_labels(
    defect_masks: torch.Tensor,
    labels: torch.Tensor,
    grid_size: tuple[int, int],
    min_fraction: float = 0.25,
) -> torch.Tensor:
    """Pretext label of every grid cell from the exact synthetic-defect masks, ``[B, Gh, Gw]`` (long).

    A cell is labelled with its image's defect class when at least ``min_fraction`` of its pixels are defective,
    normal (0) when no pixel of it or of its 8 neighbours is (the cell's locally aware feature sees them), and
    ``-1`` (ignored by the loss) in between: cells that merely touch a defect are neither clearly normal nor
    clearly defective.

    Args:
        defect_masks: Defect masks ``[B, 1, H, W]`` in ``{0, 1}``.
        labels: Image labels ``[B]`` (0 normal, 1 big defect, 2 small defect).
        grid_size: ``(Gh, Gw)`` of the feature grid; cell ``(i, j)`` covers pixels
            ``[i H / Gh, (i + 1) H / Gh) x [j W / Gw, (j + 1) W / Gw)``.
        min_fraction: Defective fraction from which a cell takes the defect's label.
    """
    fraction = F.adaptive_avg_pool2d(defect_masks.float(), grid_size)[:, 0]
    touched = F.max_pool2d(fraction[:, None], kernel_size=3, stride=1, padding=1)[:, 0] > 0
    defect_label = labels.long().view(-1, 1, 1).expand_as(fraction)
    ignored = torch.full_like(defect_label, -1)
    return torch.where(fraction >= min_fraction, defect_label, torch.where(touched, ignored, 0))


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
    # An image exactly one window wide has a single centre: a 1-pixel core replicated to the border.
    inner = (max(1, height - 2 * half), max(1, width - 2 * half))
    score_map = F.interpolate(grid_scores.unsqueeze(1), size=inner, mode="bilinear", align_corners=True)
    score_map = F.pad(score_map, (half, width - inner[1] - half, half, height - inner[0] - half), mode="replicate")
    return blur(score_map) if blur is not None else score_map


def grid_inference_batch(
    grid_scores: torch.Tensor,
    image_size: tuple[int, int],
    patch_size: int,
    blur: nn.Module | None = None,
) -> InferenceBatch:
    """Window scores ``[B, Gh, Gw]`` as an ``InferenceBatch``: their anomaly map and its peak as image score.

    The peak of the smoothed map rather than the highest window score: one noisy cell or window does not decide
    the image score (see :func:`assemble_anomaly_map` for the map).
    """
    anomaly_map = assemble_anomaly_map(grid_scores, image_size, patch_size, blur)
    return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(dim=1), anomaly_map=anomaly_map)


def gaussian_blur(sigma: float) -> nn.Module | None:
    """A Gaussian smoothing module with kernel ``2 * ceil(4 sigma) + 1``, or ``None`` for ``sigma <= 0``."""
    if sigma <= 0:
        return None
    kernel_size = 2 * int(4.0 * sigma + 0.5) + 1
    return GaussianBlur2d(kernel_size=(kernel_size, kernel_size), sigma=(sigma, sigma), channels=1)
