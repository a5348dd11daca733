# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of the synthetic-anomaly generator (METHOD.md §1.1 and §2)."""

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anomalib_ssad.components.anomaly_generator import SyntheticAnomalyGenerator, polygon_area


def _textured(channels: int = 3, height: int = 128, width: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth random image; textured enough that fills are visible, deterministic."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(1, channels, height // 8, width // 8, generator=generator)
    return torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]


def _disc(height: int = 128, width: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright disc on a dark background, and its mask."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    mask = (ys - height / 2) ** 2 + (xs - width / 2) ** 2 <= (min(height, width) / 3) ** 2
    image = 0.1 + 0.6 * mask.float() + 0.2 * _textured(1, height, width)
    return image.expand(3, -1, -1).clone(), mask


def test_label_frequencies_are_uniform() -> None:
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture", fills=("mean_colour",), seed=0)
    _, labels, _ = generator.generate_batch(torch.rand(600, 1, 32, 32))
    counts = torch.bincount(labels, minlength=3).numpy()
    chi_square = float((((counts - 200) ** 2) / 200).sum())
    # 13.8 is the 0.999 quantile of chi-square with 2 degrees of freedom.
    assert chi_square < 13.8, counts


def test_normal_sample_is_unchanged_without_jitter() -> None:
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture", brightness=0, contrast=0, saturation=0, hue=0)
    image = _textured(3, 96, 80)
    sample = generator(image, np.random.default_rng(0), label=0)
    assert sample.label == 0
    assert sample.image.shape == image.shape
    assert torch.equal(sample.image, image)
    assert sample.mask.shape == (96, 80)
    assert not sample.mask.any()


def test_jitter_is_applied_to_normal_samples() -> None:
    image = _textured()
    sample = SyntheticAnomalyGenerator(object_mask_mode="texture")(image, np.random.default_rng(0), label=0)
    assert not torch.equal(sample.image, image)
    assert set(sample.info["jitter"]) == {"brightness", "contrast", "saturation", "hue"}


def test_big_polygon_area_and_convexity() -> None:
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture")
    rng = np.random.default_rng(1)
    image = _textured(3, 128, 128)
    for _ in range(40):
        sample = generator(image, rng, label=1)
        vertices = sample.info["vertices"]
        assert 4 <= len(vertices) <= 8
        hull = cv2.convexHull(vertices.astype(np.float32))
        assert len(hull) == len(vertices), "every vertex must be on the convex hull"
        assert polygon_area(vertices) / 128**2 == pytest.approx(sample.info["area_ratio"], rel=1e-6)
        # Rasterisation adds up to about half a pixel along the perimeter.
        perimeter = cv2.arcLength(vertices.astype(np.float32), closed=True)
        area = float(sample.mask.sum())
        assert 0.03 * 128**2 - perimeter <= area <= 0.1 * 128**2 + perimeter
        assert 0.3 <= sample.info["aspect_ratio"] <= 3.3
        assert sample.info["aspect_ratio"] != 1.0


def test_scar_is_thin_and_rotated_within_range() -> None:
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture")
    rng = np.random.default_rng(2)
    image = _textured(3, 256, 256)
    for _ in range(40):
        sample = generator(image, rng, label=2)
        angle = sample.info["angle"]
        assert -45 <= angle <= 45
        aspect = sample.info["aspect_ratio"]
        assert 0.05 <= aspect < 0.5 or 2.5 < aspect <= 3.3
        mask = sample.mask.numpy().astype(np.uint8)
        assert 0.003 * 256**2 <= mask.sum() <= 0.007 * 256**2 * 1.6
        (_, _), (side_a, side_b), _ = cv2.minAreaRect(cv2.findNonZero(mask))
        assert min(side_a, side_b) / max(side_a, side_b) <= 0.55
        # The mask's major axis must follow the drawn angle: the width axis is (cos, sin) of the angle.
        moments = cv2.moments(mask, binaryImage=True)
        major = 0.5 * math.degrees(math.atan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
        expected = angle if aspect > 1 else angle + 90
        difference = (major - expected + 90) % 180 - 90
        assert abs(difference) < 12, (major, expected)


def test_defects_stay_on_the_object() -> None:
    image, object_mask = _disc()
    generator = SyntheticAnomalyGenerator(seed=3)
    for label in (1, 2, 1, 2, 1, 2):
        sample = generator(image, label=label, object_mask=object_mask)
        assert sample.mask.any()
        assert not (sample.mask.bool() & ~object_mask).any()


def test_batch_computes_object_masks_and_places_defects_on_object() -> None:
    image, object_mask = _disc()
    generator = SyntheticAnomalyGenerator(seed=4)
    _, labels, masks = generator.generate_batch(image.expand(8, -1, -1, -1), labels=[1, 2] * 4)
    assert generator.object_masker.resolved_mode == "fixed"
    assert labels.tolist() == [1, 2] * 4
    inside = (masks[:, 0].bool() & object_mask).sum()
    assert inside >= 0.95 * masks.sum()


def test_same_seed_same_output_different_seed_different_output() -> None:
    images = torch.stack([_textured(3, 64, 64, seed) for seed in range(6)])
    first = SyntheticAnomalyGenerator(object_mask_mode="texture", seed=7).generate_batch(images)
    second = SyntheticAnomalyGenerator(object_mask_mode="texture", seed=7).generate_batch(images)
    third = SyntheticAnomalyGenerator(object_mask_mode="texture", seed=8).generate_batch(images)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], third[0])
    explicit = SyntheticAnomalyGenerator(object_mask_mode="texture").generate_batch(images, np.random.default_rng(7))
    assert torch.equal(explicit[0], first[0])


@pytest.mark.parametrize("fill", ["cut_paste", "mean_colour", "random_colour"])
@pytest.mark.parametrize("shape", [(1, 70, 130), (3, 130, 70)])
def test_grayscale_and_non_square_inputs(fill: str, shape: tuple[int, int, int]) -> None:
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture", fills=(fill,), seed=5)
    images = torch.stack([_textured(*shape, seed) for seed in range(4)])
    for label in (0, 1, 2):
        out, labels, masks = generator.generate_batch(images, labels=[label] * 4)
        assert out.shape == images.shape
        assert masks.shape == (4, 1, *shape[1:])
        assert (labels == label).all()
        assert bool(masks.flatten(1).any(1).all()) == (label != 0)
        assert out.min() >= 0 and out.max() <= 1
        changed = (out - images).abs().sum(1) > 0
        if label:
            assert changed.any()


def test_invisible_fill_gets_a_brightness_change() -> None:
    image = torch.full((3, 64, 64), 0.3)
    generator = SyntheticAnomalyGenerator(
        object_mask_mode="texture", fills=("mean_colour",), brightness=0, contrast=0, saturation=0, hue=0
    )
    sample = generator(image, np.random.default_rng(0), label=1)
    assert sample.info["brightness_shift"] > 0
    inside = sample.image[:, sample.mask.bool()]
    assert (inside - 0.3).abs().mean() >= 0.2 - 1e-6


def test_image_smaller_than_patch_is_rejected() -> None:
    generator = SyntheticAnomalyGenerator.patch_level(patch_size=32)
    with pytest.raises(ValueError, match=r"20x40.*32"):
        generator(torch.rand(3, 20, 40), np.random.default_rng(0))


def test_patch_mode_output_size_and_background_crops() -> None:
    generator = SyntheticAnomalyGenerator.patch_level(object_mask_mode="texture", seed=0)
    out, labels, masks = generator.generate_batch(torch.rand(12, 3, 100, 90), labels=[1, 2, 0] * 4)
    assert out.shape == (12, 3, 32, 32)
    assert masks.shape == (12, 1, 32, 32)
    assert labels.tolist() == [1, 2, 0] * 4

    background = torch.zeros(100, 90, dtype=torch.bool)
    rng = np.random.default_rng(0)
    for label in (1, 2):
        sample = generator(torch.rand(3, 100, 90), rng, object_mask=background, label=label)
        assert sample.label == 0
        assert sample.info["background_crop"]
        assert not sample.mask.any()
    x0, y0, width, height = sample.info["crop_box"]
    assert (width, height) == (32, 32)
    assert 0 <= x0 <= 90 - 32 and 0 <= y0 <= 100 - 32


def test_patch_mode_area_ranges() -> None:
    generator = SyntheticAnomalyGenerator.patch_level(object_mask_mode="texture")
    rng = np.random.default_rng(6)
    for _ in range(20):
        sample = generator(_textured(3, 64, 64), rng, label=1)
        assert 0.1 <= sample.info["area_ratio"] <= 0.2
        assert sample.mask.mean() >= 0.1 * 0.8


@pytest.mark.parametrize("channels", [1, 3])
def test_sadsa_variants_produce_masks(channels: int) -> None:
    generator = SyntheticAnomalyGenerator.sadsa(object_mask_mode="texture", seed=0)
    images = torch.stack([_textured(channels, 128, 128, seed) for seed in range(4)])
    out, _, masks = generator.generate_batch(images, labels=[1, 2, 1, 2])
    assert masks.flatten(1).any(1).all()
    assert not torch.equal(out, images)
    rng = np.random.default_rng(1)
    square = generator(images[0], rng, source=images[1], label=1)
    assert square.info["shape"] == "square"
    side = math.sqrt(float(square.mask.sum()))
    assert 0.15 * 128 - 2 <= side <= 0.2 * 128 + 2
    centre_x, centre_y = square.info["center"]
    assert 32 <= centre_x <= 96 and 32 <= centre_y <= 96
    perlin = generator(images[0], rng, source=images[1], label=2)
    assert perlin.info["shape"] == "perlin"
    assert perlin.info["source_rotation"] in {0, 90, 180, 270}
    assert perlin.mask.any()


def test_foreign_images(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((50, 40, 3), 255, dtype=np.uint8))
    generator = SyntheticAnomalyGenerator(object_mask_mode="texture", fills=("cut_paste",), foreign_images=str(folder))
    image = torch.zeros(3, 64, 64)
    sample = generator(image, np.random.default_rng(0), label=1)
    inside = sample.image[:, sample.mask.bool()]
    assert sample.info["foreign_image"] == 0
    assert inside.min() > 0.8  # white foreign content, only jittered

    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png"):
        SyntheticAnomalyGenerator(foreign_images=str(folder))


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="fills"):
        SyntheticAnomalyGenerator(fills=("glitter",))
    with pytest.raises(ValueError, match="big_defect"):
        SyntheticAnomalyGenerator(big_defect="circle")


def test_empty_object_mask_gives_a_normal_sample() -> None:
    generator = SyntheticAnomalyGenerator(seed=0)
    sample = generator(_textured(), object_mask=torch.zeros(128, 128, dtype=torch.bool), label=1)
    assert sample.label == 0
    assert not sample.mask.any()
