# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of the object (foreground) mask."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anomalib_ssad.components.object_mask import ObjectMasker, compute_object_mask

BOTTLE = Path("/work/shared/data/mvtec_ad/bottle/train/good")
KOLEKTOR = Path("/work/shared/data/kolektorsdd/kolektorsdd/train/good")


def _discs(centres: list[tuple[int, int]], size: int = 96, radius: int = 24) -> torch.Tensor:
    """Bright discs (one per image) with a dark hole, on a dark noisy background."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = []
    for cy, cx in centres:
        distance = ((ys - cy) ** 2 + (xs - cx) ** 2).float().sqrt()
        image = 0.1 + 0.7 * ((distance <= radius) & (distance > radius / 4)).float()
        images.append(image + 0.05 * torch.rand(size, size, generator=generator))
    return torch.stack(images)[:, None].expand(-1, 3, -1, -1).clamp(0, 1)


def _load(folder: Path, count: int, size: tuple[int, int]) -> torch.Tensor:
    paths = sorted(folder.glob("*.png"))[:count]
    arrays = [cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), size) for path in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def test_disc_mask_covers_disc_and_fills_hole() -> None:
    image = _discs([(48, 48)])[0]
    mask = compute_object_mask(image)
    ys, xs = np.mgrid[:96, :96]
    disc = (ys - 48) ** 2 + (xs - 48) ** 2 <= 24**2
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.9
    assert mask[48, 48], "the hole in the middle must be filled"


def test_polarity_follows_the_border() -> None:
    image = 1 - _discs([(48, 48)])[0]  # dark disc on a bright background
    mask = compute_object_mask(image)
    assert mask[48, 30] and not mask[2, 2]


def test_texture_mode_is_all_ones() -> None:
    masks = ObjectMasker("texture")(_discs([(48, 48)] * 2))
    assert masks.dtype == torch.bool and masks.all()


def test_auto_resolves_fixed_for_a_static_object() -> None:
    masker = ObjectMasker("auto")
    masks = masker(_discs([(48, 48), (49, 47), (47, 48)]))
    assert masker.resolved_mode == "fixed"
    assert torch.equal(masks[0], masks[1])
    # The cached mask is reused for later batches, wherever their object is.
    later = masker(_discs([(30, 30)]))
    assert torch.equal(later[0], masks[0])


def test_auto_resolves_per_image_for_a_moving_object() -> None:
    masker = ObjectMasker("auto")
    masks = masker(_discs([(30, 30), (66, 66), (30, 66), (66, 30)]))
    assert masker.resolved_mode == "per_image"
    assert masks[0, 30, 30] and not masks[1, 30, 30]


def test_auto_resolves_texture_for_noise() -> None:
    masker = ObjectMasker("auto")
    masks = masker(torch.rand(4, 3, 64, 64))
    assert masker.resolved_mode == "texture"
    assert masks.all()


def test_fixed_and_per_image_modes() -> None:
    fixed = ObjectMasker("fixed")
    first = fixed(_discs([(48, 48)]))
    assert torch.equal(fixed(_discs([(30, 30)]))[0], first[0])
    per_image = ObjectMasker("per_image")
    masks = per_image(_discs([(30, 30), (66, 66)]))
    assert masks[0, 30, 30] and masks[1, 66, 66] and not masks[0, 66, 66]


def test_uniform_image_gets_a_usable_mask() -> None:
    masks = ObjectMasker("per_image")(torch.full((1, 3, 32, 32), 0.5))
    assert masks.all()


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        ObjectMasker("sometimes")


@pytest.mark.skipif(not BOTTLE.is_dir(), reason="MVTec AD bottle not available")
def test_real_bottle_mask_covers_the_bottle() -> None:
    masker = ObjectMasker("auto")
    masks = masker(_load(BOTTLE, 8, (256, 256)))
    assert masker.resolved_mode == "fixed"
    mask = masks[0].numpy()
    # The bottle is a disc centred in the image, about 0.9 of its width across; corners are background.
    assert mask[128, 128] and mask[128, 30] and mask[30, 128]
    assert not mask[:8, :8].any() and not mask[-8:, -8:].any()
    assert 0.5 < mask.mean() < 0.75


@pytest.mark.skipif(not KOLEKTOR.is_dir(), reason="KolektorSDD not available")
def test_real_kolektor_resolves_to_texture() -> None:
    masker = ObjectMasker("auto")
    masker(_load(KOLEKTOR, 8, (128, 320)))
    assert masker.resolved_mode == "texture"
