# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Defect shapes for a batch: convex polygons and rotated boxes as vertex tensors, Perlin blobs, rasterisation.

Every polygonal shape is a ``[N, V, 2]`` tensor of ``(x, y)`` vertices centred on 0, in cyclic order; polygons with
fewer vertices repeat their last one, which adds zero-length edges that constrain nothing.
:func:`rasterise_convex` turns placed vertices into masks by evaluating every edge's half-plane on the pixel-centre
grid, so a whole batch is drawn in ``V`` tensor operations with no per-sample loop. All draws take a
``torch.Generator`` and happen on its device.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.synthetic.shapes import box_vertices, rasterise_convex
    >>> box = box_vertices(torch.tensor([4.0]), torch.tensor([2.0]), torch.tensor([0.0]))
    >>> int(rasterise_convex(box + torch.tensor([5.0, 5.0]), 12, 12).sum())  # a 4 x 2 box: 5 x 3 pixel centres
    15
"""

import math

import torch
from torch import Tensor

# Tolerance of the half-plane test: pixel centres on an edge belong to the shape.
_EDGE_TOLERANCE = 1e-4
MAX_POLYGON_VERTICES = 8


def uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    """``n`` draws uniform in ``bounds``, on the generator's device."""
    return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=generator, device=generator.device)


def log_uniform_excluding(
    n: int, bounds: tuple[float, float], excluded: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """Draws log-uniform over ``bounds`` minus the open interval ``excluded``.

    The two sub-intervals are chosen in proportion to their log-length, so the draw is log-uniform over the union
    (an aspect ratio and its inverse are equally likely when the bounds are symmetric).
    """
    low, high = math.log(bounds[0]), math.log(bounds[1])
    gap_low, gap_high = math.log(max(excluded[0], bounds[0])), math.log(min(excluded[1], bounds[1]))
    if gap_low >= gap_high:
        return torch.exp(uniform(n, (low, high), generator))
    left, right = max(gap_low - low, 0.0), max(high - gap_high, 0.0)
    value = uniform(n, (0.0, left + right), generator)
    return torch.exp(torch.where(value < left, low + value, gap_high + value - left))


def unit_convex_polygons(n: int, generator: torch.Generator, margin: float = 0.1) -> tuple[Tensor, Tensor]:
    """Convex polygons inscribed in the unit square: 1 or 2 vertices per side, in cyclic order.

    Points on the sides of a convex shape, taken in their order around it, always form a convex polygon; the
    ``margin`` keeps them off the corners so that no two vertices coincide.

    Returns:
        Vertices ``[n, 8, 2]`` (a side with one vertex repeats it) and the number of distinct vertices ``[n]``.
    """
    device = generator.device
    counts = torch.randint(1, 3, (n, 4), generator=generator, device=device)
    positions = margin + (1 - 2 * margin) * torch.rand(n, 4, 2, generator=generator, device=device)
    positions = torch.where((counts == 1)[..., None], positions[..., :1].expand(-1, -1, 2), positions)
    positions = positions.sort(dim=-1).values  # along the side, in increasing coordinate
    zeros, ones = torch.zeros_like(positions[:, 0]), torch.ones_like(positions[:, 0])
    sides = [
        torch.stack([positions[:, 0], zeros], dim=-1),  # top, left to right
        torch.stack([ones, positions[:, 1]], dim=-1),  # right, top to bottom
        torch.stack([positions[:, 2].flip(-1), ones], dim=-1),  # bottom, right to left
        torch.stack([zeros, positions[:, 3].flip(-1)], dim=-1),  # left, bottom to top
    ]
    return torch.cat(sides, dim=1), counts.sum(dim=1)


def polygon_area(vertices: Tensor) -> Tensor:
    """Unsigned area of polygons ``[..., V, 2]`` (shoelace formula)."""
    x, y = vertices[..., 0], vertices[..., 1]
    return (x * y.roll(-1, dims=-1) - y * x.roll(-1, dims=-1)).sum(-1).abs() / 2


def box_vertices(width: Tensor, height: Tensor, angle: Tensor) -> Tensor:
    """Boxes centred on 0, ``width`` along ``(cos angle, sin angle)`` (degrees), ``[N, 4, 2]``."""
    radians = torch.deg2rad(angle)
    along = torch.stack([torch.cos(radians), torch.sin(radians)], dim=-1) * (width / 2)[:, None]
    across = torch.stack([-torch.sin(radians), torch.cos(radians)], dim=-1) * (height / 2)[:, None]
    return torch.stack([-along - across, along - across, along + across, -along + across], dim=1)


def rasterise_convex(vertices: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks ``[N, height, width]`` of convex polygons in pixel coordinates (pixel centres at integers).

    A pixel is inside when it lies on the inner side of every edge (or on it). The half-planes are evaluated in
    the smallest window that holds every polygon's bounding box, then written into the full masks.
    """
    n = vertices.shape[0]
    low = vertices.amin(dim=1).floor().clamp_min(0)
    high = vertices.amax(dim=1).ceil()
    size = (high - low + 1).amax(dim=0) if n else torch.ones(2)
    window_w, window_h = min(int(size[0]), width), min(int(size[1]), height)
    # Window corners: inside the image and holding the polygon's bounding box.
    corner_x = torch.minimum(low[:, 0], torch.full_like(low[:, 0], width - window_w)).long()
    corner_y = torch.minimum(low[:, 1], torch.full_like(low[:, 1], height - window_h)).long()
    local = vertices - torch.stack([corner_x, corner_y], dim=-1)[:, None].to(vertices.dtype)
    window = _half_planes(local, window_h, window_w)
    masks = torch.zeros(n, height, width, dtype=torch.bool, device=vertices.device)
    rows = corner_y[:, None] + torch.arange(window_h, device=vertices.device)
    cols = corner_x[:, None] + torch.arange(window_w, device=vertices.device)
    masks[torch.arange(n, device=vertices.device)[:, None, None], rows[:, :, None], cols[:, None, :]] = window
    return masks


def longest_chord(vertices: Tensor) -> tuple[Tensor, Tensor]:
    """The two vertices farthest apart of every polygon, ``[N, 2]`` each (a box's diagonal)."""
    distances = torch.cdist(vertices, vertices)
    flat = distances.flatten(1).argmax(dim=1)
    count = vertices.shape[1]
    batch = torch.arange(vertices.shape[0], device=vertices.device)
    return vertices[batch, flat // count], vertices[batch, flat % count]


def draw_segments(masks: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Masks ``[N, H, W]`` with the pixels along each segment ``start -> end`` (``[N, 2]``, x/y) set.

    Points every half pixel along the segment are rounded to their pixel, so the line is connected.
    """
    n, height, width = masks.shape
    steps = int(torch.ceil(2 * (end - start).norm(dim=1).amax()).item()) + 1 if n else 1
    fractions = torch.linspace(0, 1, steps, device=masks.device, dtype=start.dtype)
    points = start[:, None] + fractions[None, :, None] * (end - start)[:, None]
    cols = points[..., 0].round().long().clamp(0, width - 1)
    rows = points[..., 1].round().long().clamp(0, height - 1)
    batch = torch.arange(n, device=masks.device)[:, None].expand_as(rows)
    masks = masks.clone()
    masks[batch, rows, cols] = True
    return masks


def _half_planes(vertices: Tensor, height: int, width: int) -> Tensor:
    """Pixels of a ``height x width`` grid on the inner side of every edge of the polygons."""
    ys = torch.arange(height, device=vertices.device, dtype=vertices.dtype).view(1, height, 1)
    xs = torch.arange(width, device=vertices.device, dtype=vertices.dtype).view(1, 1, width)
    edges = vertices.roll(-1, dims=1) - vertices
    # Orientation of each polygon, so that "inside" is the same side of every edge whatever the vertex order.
    orientation = torch.sign((vertices[..., 0] * edges[..., 1] - vertices[..., 1] * edges[..., 0]).sum(1))
    orientation = torch.where(orientation == 0, torch.ones_like(orientation), orientation).view(-1, 1, 1)
    inside = torch.ones(vertices.shape[0], height, width, dtype=torch.bool, device=vertices.device)
    for index in range(vertices.shape[1]):
        vx, vy = vertices[:, index, 0].view(-1, 1, 1), vertices[:, index, 1].view(-1, 1, 1)
        ex, ey = edges[:, index, 0].view(-1, 1, 1), edges[:, index, 1].view(-1, 1, 1)
        # orientation * cross(edge, pixel - vertex) >= -tolerance, split into a row term and a column term.
        rows = orientation * ex * (ys - vy) + _EDGE_TOLERANCE
        cols = orientation * ey * (xs - vx)
        inside &= rows >= cols
    return inside


def _fade(t: Tensor) -> Tensor:
    """Perlin's quintic fade curve, which makes the noise's derivative continuous across cells."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    height: int, width: int, res_y: Tensor, res_x: Tensor, generator: torch.Generator, device: torch.device | str
) -> Tensor:
    """2-D gradient (Perlin) noise ``[N, height, width]``, roughly in ``[-1, 1]``.

    Args:
        height: Output height; need not be a multiple of the cell counts.
        width: Output width.
        res_y: Noise cells along the height, one count per sample ``[N]`` (larger: finer blobs).
        res_x: Noise cells along the width ``[N]``.
        generator: Draws the lattice gradients, on its device.
        device: Where the noise is computed.
    """
    n = res_y.shape[0]
    lattice = int(max(res_y.max(), res_x.max())) + 1
    angles = 2 * math.pi * torch.rand(n, lattice, lattice, generator=generator, device=generator.device)
    gradients = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).to(device)
    # Continuous lattice coordinates of every pixel: the integer part picks the cell, the rest is the offset.
    ys = torch.arange(height, device=device) * (res_y.to(device)[:, None] / height)
    xs = torch.arange(width, device=device) * (res_x.to(device)[:, None] / width)
    cell_y, cell_x = ys.floor().long(), xs.floor().long()
    off_y, off_x = (ys - cell_y)[:, :, None], (xs - cell_x)[:, None, :]
    batch = torch.arange(n, device=device).view(n, 1, 1)

    def corner(dy: int, dx: int) -> Tensor:
        grad = gradients[batch, (cell_y + dy)[:, :, None], (cell_x + dx)[:, None, :]]
        return grad[..., 0] * (off_y - dy) + grad[..., 1] * (off_x - dx)

    fade_y, fade_x = _fade(off_y), _fade(off_x)
    top = corner(0, 0) * (1 - fade_x) + corner(0, 1) * fade_x
    bottom = corner(1, 0) * (1 - fade_x) + corner(1, 1) * fade_x
    return math.sqrt(2) * (top * (1 - fade_y) + bottom * fade_y)


def perlin_masks(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    threshold: float = 0.9,
    device: torch.device | str = "cpu",
    scale_exponents: tuple[int, int] = (1, 4),
) -> Tensor:
    """Binary Perlin blobs ``[n, height, width]``: noise min-max normalised per sample, at or above ``threshold``.

    The cell count per axis is ``2**k``, ``k`` drawn from ``scale_exponents`` (inclusive) for each axis. Never
    empty: the normalised maximum is 1. Computed on ``device``, drawn on the generator's.
    """
    exponents = torch.randint(
        scale_exponents[0], scale_exponents[1] + 1, (2, n), generator=generator, device=generator.device
    )
    noise = perlin_noise(height, width, 2 ** exponents[0], 2 ** exponents[1], generator, device)
    flat = noise.flatten(1)
    low, high = flat.min(1).values.view(n, 1, 1), flat.max(1).values.view(n, 1, 1)
    return (noise - low) / (high - low).clamp_min(1e-12) >= threshold
