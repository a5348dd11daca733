# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""What fills a batch of defects: content cut from an image, region means, random colours, colour jitter.

Every function works on the whole batch at once, with per-sample parameters as tensors; random draws take a
``torch.Generator`` and happen on its device.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.synthetic.fills import rotate90
    >>> image = torch.arange(4.0).view(1, 1, 2, 2)
    >>> torch.equal(rotate90(image, torch.tensor([1])), torch.rot90(image, 1, dims=(2, 3)))
    True
"""

import kornia.enhance
import torch
from torch import Tensor

from anomalib_ssad.components.synthetic.shapes import uniform

# Channel orders of the texture fallback's colour change (every permutation but the identity).
_PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def gather_window(
    pool: Tensor, top: Tensor, left: Tensor, height: int, width: int, index: Tensor | None = None
) -> Tensor:
    """``pool[index[b], :, top[b] : top[b] + height, left[b] : left[b] + width]`` per sample (indices clamped).

    ``index`` (default: ``0 .. n-1``) picks each sample's image of ``pool`` without copying the images.
    """
    n = top.shape[0]
    rows = (top.view(n, 1) + torch.arange(height, device=pool.device)).clamp(0, pool.shape[2] - 1)
    cols = (left.view(n, 1) + torch.arange(width, device=pool.device)).clamp(0, pool.shape[3] - 1)
    batch = (torch.arange(n, device=pool.device) if index is None else index.to(pool.device)).view(n, 1, 1)
    return pool[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def rotate90(images: Tensor, turns: Tensor) -> Tensor:
    """Rotate every image by its own number of quarter turns (as :func:`torch.rot90` on the last two dims).

    Non-square images only keep their shape for even ``turns``.
    """
    n, _, height, width = images.shape
    rows = torch.arange(height, device=images.device).view(1, height, 1).expand(n, height, width)
    cols = torch.arange(width, device=images.device).view(1, 1, width).expand(n, height, width)
    turns = (turns % 4).view(n, 1, 1).to(images.device)
    # Source pixel of output (i, j) for k counter-clockwise quarter turns (square images for odd k).
    src_rows = torch.where(
        turns == 0, rows, torch.where(turns == 1, cols, torch.where(turns == 2, height - 1 - rows, width - 1 - cols))
    )
    src_cols = torch.where(
        turns == 0, cols, torch.where(turns == 1, width - 1 - rows, torch.where(turns == 2, width - 1 - cols, rows))
    )
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return images[batch, :, src_rows, src_cols].permute(0, 3, 1, 2)


def random_turns(n: int, square: bool, allow_identity: Tensor, generator: torch.Generator) -> Tensor:
    """Quarter turns per sample, uniform among the allowed ones.

    Any multiple of 90 degrees (only 0 or 180 if not ``square``), never 0 where ``allow_identity`` is unset.
    """
    choices = 4 if square else 2
    step = 1 if square else 2
    allow = allow_identity.to(generator.device)
    # Draw uniformly among the allowed turns: 0..choices-1, or 1..choices-1.
    draw = torch.rand(n, generator=generator, device=generator.device)
    options = torch.where(allow, torch.full_like(draw, choices), torch.full_like(draw, choices - 1))
    index = (draw * options).floor().long() + (~allow).long()
    return index * step


def foreign_content(sources: Tensor, allow_identity: Tensor, generator: torch.Generator) -> Tensor:
    """Content that does not blend into a texture: a rotated source with permuted channels (inverted if grey)."""
    n, channels, height, width = sources.shape
    turns = random_turns(n, height == width, allow_identity, generator)
    rotated = rotate90(sources, turns.to(sources.device))
    permutation = torch.randint(len(_PERMUTATIONS), (n,), generator=generator, device=generator.device)
    if channels == 1:
        return 1 - rotated
    orders = torch.tensor(_PERMUTATIONS, device=sources.device)[permutation.to(sources.device)]
    permuted = rotated.gather(1, orders.view(n, 3, 1, 1).expand_as(rotated))
    # Permuting equal channels would change nothing: grey content is inverted instead.
    grey = (rotated - rotated.mean(dim=1, keepdim=True)).abs().flatten(1).amax(1) < 0.02
    return torch.where(grey.view(n, 1, 1, 1), 1 - rotated, permuted)


def masked_mean(images: Tensor, masks: Tensor) -> Tensor:
    """Per-channel mean of every image over its mask, ``[N, C, 1, 1]`` (0 for an empty mask)."""
    weights = masks[:, None].to(images.dtype)
    return (images * weights).sum((2, 3), keepdim=True) / weights.sum((2, 3), keepdim=True).clamp_min(1)


def make_visible(
    new: Tensor,
    old: Tensor,
    masks: Tensor,
    min_difference: float,
    shift: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Shift the brightness of fills that differ from what they cover by less than ``min_difference``.

    Darker on bright regions (mean above 0.5), brighter on dark ones, by a draw from ``shift``.
    """
    n = new.shape[0]
    weights = masks[:, None].to(new.dtype)
    area = weights.sum((1, 2, 3)).clamp_min(1) * new.shape[1]
    difference = ((new - old).abs() * weights).sum((1, 2, 3)) / area
    old_mean = (old * weights).sum((1, 2, 3)) / area
    amount = uniform(n, shift, generator).to(new.device, new.dtype)
    signed = torch.where(old_mean > 0.5, -amount, amount)
    signed = torch.where(difference < min_difference, signed, torch.zeros_like(signed))
    return (new + signed.view(n, 1, 1, 1)).clamp(0, 1)


def colour_jitter(images: Tensor, strengths: tuple[float, ...], generator: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and hue jitter with one factor per image, as torchvision's ColorJitter.

    Factors are drawn from ``[1 - s, 1 + s]`` (hue: ``[-h, h]`` of a full turn); a strength of 0 skips that
    adjustment. Saturation and hue are applied to RGB images only.
    """
    brightness, contrast, saturation, hue = strengths
    n = images.shape[0]

    def factors(low: float, high: float) -> Tensor:
        return uniform(n, (low, high), generator).to(images.device, images.dtype)

    if brightness > 0:
        images = (images * factors(1 - brightness, 1 + brightness).view(n, 1, 1, 1)).clamp(0, 1)
    if contrast > 0:
        images = kornia.enhance.adjust_contrast_with_mean_subtraction(images, factors(1 - contrast, 1 + contrast))
    if images.shape[1] == 3 and saturation > 0:
        images = kornia.enhance.adjust_saturation_with_gray_subtraction(images, factors(1 - saturation, 1 + saturation))
    if images.shape[1] == 3 and hue > 0:
        images = shift_hue(images, factors(-hue, hue))
    return images


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of RGB images by ``shift`` turns per image (torchvision's ``adjust_hue``, batched).

    Saturation and value stay as they are: each channel is rebuilt from the value (maximum), the chroma
    (maximum - minimum) and the shifted hue, in place where it can, with no HSV image held in memory.
    """
    maximum, argmax = images.max(dim=1)
    chroma = maximum - images.amin(dim=1)
    red, green, blue = images.unbind(dim=1)
    # Hue in sixths of a turn; ties go to red, then green (as torchvision's), each sector offset by 2.
    numerator = torch.where(argmax == 0, green - blue, torch.where(argmax == 1, blue - red, red - green))
    hue = numerator.div_(torch.where(chroma > 0, chroma, torch.ones_like(chroma)))
    hue.add_(2.0 * argmax).add_(6.0 * shift.view(-1, 1, 1))
    output = torch.empty_like(images)
    for channel, offset in enumerate((5, 3, 1)):
        sector = torch.remainder(hue + offset, 6)
        torch.minimum(sector, 4 - sector, out=sector).clamp_(0, 1)
        torch.sub(maximum, sector.mul_(chroma), out=output[:, channel])
    return output
