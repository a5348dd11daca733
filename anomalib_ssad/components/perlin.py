# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Perlin noise in numpy, driven by an explicit random generator.

The SADSA small defect is a Perlin-noise blob: smooth noise, min-max normalised to ``[0, 1]`` and thresholded.
Everything random comes from the ``np.random.Generator`` passed in, so a seed reproduces the mask exactly.

Example:
    >>> import numpy as np
    >>> from anomalib_ssad.components.perlin import perlin_mask, perlin_noise
    >>> noise = perlin_noise((64, 48), (4, 2), np.random.default_rng(0))
    >>> noise.shape
    (64, 48)
    >>> mask = perlin_mask((64, 64), np.random.default_rng(0), threshold=0.9)
    >>> bool(mask.any())
    True
"""

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve, which makes the noise's derivative continuous across cells."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Generate 2-D gradient (Perlin) noise.

    Args:
        shape: Output ``(height, width)``; it need not be a multiple of ``res``.
        res: Number of noise cells along ``(height, width)``; larger means finer blobs.
        rng: Random generator for the lattice gradients.

    Returns:
        Float32 array of ``shape`` with values roughly in ``[-1, 1]``.
    """
    height, width = shape
    res_y, res_x = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0.0, 2 * np.pi, size=(res_y + 1, res_x + 1))
    # float32 halves the cost of the per-pixel arithmetic below (this runs in the training hot path).
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32)

    # Continuous lattice coordinates of every pixel; the integer part picks the cell, the rest is the offset.
    ys = np.linspace(0, res_y, height, endpoint=False, dtype=np.float32)
    xs = np.linspace(0, res_x, width, endpoint=False, dtype=np.float32)
    cell_y, cell_x = ys.astype(int), xs.astype(int)
    off_y, off_x = np.meshgrid(ys - np.floor(ys), xs - np.floor(xs), indexing="ij")
    iy, ix = np.meshgrid(cell_y, cell_x, indexing="ij")

    def corner(dy: int, dx: int) -> np.ndarray:
        grad = gradients[iy + dy, ix + dx]
        return grad[..., 0] * (off_y - dy) + grad[..., 1] * (off_x - dx)

    fade_y, fade_x = _fade(off_y), _fade(off_x)
    top = corner(0, 0) * (1 - fade_x) + corner(0, 1) * fade_x
    bottom = corner(1, 0) * (1 - fade_x) + corner(1, 1) * fade_x
    return np.float32(np.sqrt(2)) * (top * (1 - fade_y) + bottom * fade_y)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.9,
    scale_exponents: tuple[int, int] = (1, 4),
) -> np.ndarray:
    """Draw a binary Perlin blob mask.

    Args:
        shape: Mask ``(height, width)``.
        rng: Random generator.
        threshold: Threshold on the min-max normalised noise; pixels at or above it are in the mask.
        scale_exponents: Inclusive range of exponents ``k``; the cell count per axis is ``2**k``, drawn
            independently for both axes.

    Returns:
        Boolean array of ``shape``. Never empty: the normalised maximum is 1, which is above any threshold <= 1.
    """
    res = tuple(2 ** int(rng.integers(scale_exponents[0], scale_exponents[1] + 1)) for _ in range(2))
    noise = perlin_noise(shape, res, rng)
    low, high = float(noise.min()), float(noise.max())
    normalised = (noise - low) / max(high - low, 1e-12)
    return normalised >= threshold
