# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Placing a batch of shapes on the object: centres drawn on the object mask, masks cut to the object.

A centre is drawn uniformly among a sample's allowed pixels (the object, or all pixels when its mask is empty)
by inverting the cumulative count of allowed pixels, so the draw stays on the batch's device. The shape is shifted
so that it lies inside the image (which keeps its drawn area exact), rasterised, and intersected with the object
mask; samples that keep less than ``min_fraction`` of their shape are placed again, up to ``attempts`` times,
keeping each sample's best placement.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.synthetic.placement import place_polygons
    >>> from anomalib_ssad.components.synthetic.shapes import box_vertices
    >>> boxes = box_vertices(torch.full((2,), 6.0), torch.full((2,), 4.0), torch.zeros(2))
    >>> objects = torch.zeros(2, 32, 32, dtype=torch.bool)
    >>> objects[:, 8:24, 8:24] = True
    >>> masks = place_polygons(boxes, objects, objects, torch.Generator().manual_seed(0))
    >>> bool((masks & ~objects).any()), masks.shape
    (False, torch.Size([2, 32, 32]))
"""

from collections.abc import Callable

import torch
from torch import Tensor

from anomalib_ssad.components.synthetic.shapes import draw_segments, longest_chord, polygon_area, rasterise_convex


def sample_pixels(allowed: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One pixel ``(y, x)`` per sample, uniform among its ``allowed`` pixels (``[N, H, W]``; all if none)."""
    n, _, width = allowed.shape
    flat = allowed.flatten(1)
    flat = flat | ~flat.any(dim=1, keepdim=True)
    # Counts up to 2**24 are exact in float32, which cumsum and searchsorted handle faster than int64.
    cumulative = flat.to(torch.float32 if flat.shape[1] < 2**24 else torch.float64).cumsum(dim=1)
    draw = torch.rand(n, generator=generator, device=generator.device).to(allowed.device)
    target = torch.minimum((draw * cumulative[:, -1]).floor(), cumulative[:, -1] - 1)
    index = torch.searchsorted(cumulative, target[:, None].to(cumulative.dtype), right=True)[:, 0]
    return index // width, index % width


def _centred(vertices: Tensor, centre_y: Tensor, centre_x: Tensor, height: int, width: int) -> Tensor:
    """Vertices moved to the centre, shifted into the image, their bounding box's corner on a pixel centre."""
    low, high = vertices.amin(dim=1), vertices.amax(dim=1)
    x = torch.maximum(torch.minimum(centre_x.to(vertices.dtype), width - 1 - high[:, 0]), -low[:, 0])
    y = torch.maximum(torch.minimum(centre_y.to(vertices.dtype), height - 1 - high[:, 1]), -low[:, 1])
    placed = vertices + torch.stack([x, y], dim=-1)[:, None]
    # Whole-pixel boxes (CutPaste) then cover exactly their size in pixels.
    corner = placed.amin(dim=1)
    return placed + (corner.round() - corner)[:, None]


def place_shapes(
    draw: Callable[[Tensor], Tensor],
    objects: Tensor,
    min_fraction: float,
    attempts: int,
) -> Tensor:
    """Masks of shapes placed on the object, retried while too little of a shape lands on it.

    Args:
        draw: Draws the full shapes (before the object cut) ``[n, H, W]`` of the samples whose indices it is given.
        objects: Object masks ``[N, H, W]``.
        min_fraction: Fraction of a shape that must stay on the object.
        attempts: Maximum placements per sample; each sample keeps its best.

    Returns:
        Defect masks ``[N, H, W]``, inside the object masks.
    """
    n = objects.shape[0]
    best = torch.zeros_like(objects)
    best_kept = torch.full((n,), -1, dtype=torch.long, device=objects.device)
    pending = torch.arange(n, device=objects.device)
    for _ in range(max(attempts, 1)):
        drawn = draw(pending)
        masks = drawn & objects[pending]
        kept = masks.flatten(1).sum(1)
        better = kept > best_kept[pending]
        best[pending[better]] = masks[better]
        best_kept[pending[better]] = kept[better]
        enough = kept >= min_fraction * drawn.flatten(1).sum(1).clamp_min(1)
        pending = pending[~enough]
        if pending.numel() == 0:
            break
    return best


def place_polygons(
    vertices: Tensor,
    centres: Tensor,
    objects: Tensor,
    generator: torch.Generator,
    min_fraction: float = 0.5,
    attempts: int = 5,
) -> Tensor:
    """Place convex shapes ``[N, V, 2]`` (centred on 0) with their centre on ``centres`` (``[N, H, W]``).

    Returns:
        Defect masks ``[N, H, W]``: each shape rasterised where it was placed (pixel centres inside it; for shapes
        under two pixels wide, also the pixels along their longest chord, so that they are always drawn) and cut
        to ``objects``.
    """
    _, height, width = objects.shape

    def draw(indices: Tensor) -> Tensor:
        centre_y, centre_x = sample_pixels(centres[indices], generator)
        placed = _centred(vertices[indices], centre_y, centre_x, height, width)
        masks = rasterise_convex(placed, height, width)
        # Shapes under two pixels wide on average (thin scars) may miss most pixel centres: the pixels along
        # their longest chord keep them drawn and connected.
        start, end = longest_chord(placed)
        thin = polygon_area(placed) < 2 * (end - start).norm(dim=1)
        if thin.any():
            masks[thin] = draw_segments(masks[thin], start[thin], end[thin])
        return masks

    return place_shapes(draw, objects, min_fraction, attempts)
