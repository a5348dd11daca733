# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Synthetic anomalies for the SSAD and CutPaste pretext tasks (normal / big defect / small defect).

Every sample gets a label drawn uniformly from ``{0, 1, 2}`` (or a chosen subset, e.g. ``(0, 1)`` for a binary
task): ``0`` normal (colour jitter only), ``1`` a big defect (a convex irregular polygon, SADSA's square
cut-paste, or CutPaste's rectangle), ``2`` a small defect (a thin rotated scar, SADSA's Perlin blob, or
CutPaste-Scar). Defects are placed on the object (see :mod:`anomalib_ssad.components.object_mask`) and the
exact pixel mask of each drawn defect is returned with the image. All randomness comes from a
``np.random.Generator``, so a seed reproduces a sample exactly.

Example:
    >>> import numpy as np
    >>> import torch
    >>> from anomalib_ssad.components.anomaly_generator import SyntheticAnomalyGenerator
    >>> generator = SyntheticAnomalyGenerator.image_level(object_mask_mode="texture")
    >>> sample = generator(torch.rand(3, 64, 64), rng=np.random.default_rng(0), label=1)
    >>> sample.label, sample.image.shape, bool(sample.mask.any())
    (1, torch.Size([3, 64, 64]), True)
    >>> images, labels, masks = generator.generate_batch(torch.rand(4, 3, 64, 64), rng=np.random.default_rng(0))
    >>> images.shape, labels.shape, masks.shape
    (torch.Size([4, 3, 64, 64]), torch.Size([4]), torch.Size([4, 1, 64, 64]))
    >>> binary = SyntheticAnomalyGenerator.cutpaste(variant="cutpaste")  # CutPaste: normal vs rectangle
    >>> sorted(set(binary.generate_batch(torch.rand(8, 3, 64, 64), rng=np.random.default_rng(0))[1].tolist()))
    [0, 1]
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812 - the usual alias of torchvision's functional API
from torch import Tensor

from anomalib_ssad.components.object_mask import MaskMode, ObjectMasker
from anomalib_ssad.components.perlin import perlin_mask

Fill = Literal["cut_paste", "mean_colour", "random_colour"]
BigDefect = Literal["polygon", "square_cutpaste", "cutpaste"]
SmallDefect = Literal["scar", "perlin", "cutpaste_scar"]
CutPasteVariant = Literal["cutpaste", "scar", "3way"]
# Labels drawn by each CutPaste variant: binary (normal vs one augmentation) or 3-way.
CUTPASTE_CLASSES: dict[str, tuple[int, ...]] = {"cutpaste": (0, 1), "scar": (0, 2), "3way": (0, 1, 2)}
# Shapes whose content is always cut from the same image (CutPaste), whatever ``fills`` says.
_SAME_IMAGE_SHAPES = ("cutpaste", "cutpaste_scar")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# fillConvexPoly takes fixed-point coordinates: 4 fractional bits keep the rasterised area close to the exact one.
_SUBPIXEL_BITS = 4


@dataclass
class SyntheticSample:
    """One generated sample.

    Attributes:
        image: ``[C, h, w]`` float image in ``[0, 1]`` (``h = w = patch_size`` in patch mode).
        label: ``0`` normal, ``1`` big defect, ``2`` small defect.
        mask: ``[h, w]`` float mask in ``{0, 1}`` of the drawn defect; all zeros for label 0.
        info: How the sample was drawn: ``shape``, ``vertices`` (output pixel coordinates), ``angle``,
            ``area_ratio``, ``aspect_ratio``, ``fill``, ``crop_box`` (x, y, w, h), ``jitter`` factors, ...
    """

    image: Tensor
    label: int
    mask: Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _sample_ratio(rng: np.random.Generator, bounds: tuple[float, float], excluded: tuple[float, float]) -> float:
    """Draw log-uniformly from ``bounds`` minus the open interval ``excluded``.

    The two sub-intervals are chosen in proportion to their log-length, so the draw is log-uniform over the union
    (an aspect ratio and its inverse are then equally likely when the bounds are symmetric).
    """
    low, high = np.log(bounds[0]), np.log(bounds[1])
    gap_low, gap_high = np.log(max(excluded[0], bounds[0])), np.log(min(excluded[1], bounds[1]))
    if gap_low >= gap_high:
        return float(np.exp(rng.uniform(low, high)))
    left, right = max(gap_low - low, 0.0), max(high - gap_high, 0.0)
    value = rng.uniform(0.0, left + right)
    return float(np.exp(low + value if value < left else gap_high + value - left))


def _random_convex_polygon(rng: np.random.Generator, margin: float = 0.1) -> np.ndarray:
    """Vertices of a convex polygon inscribed in the unit square, 1 or 2 per side, in cyclic order.

    Points on the sides of a convex shape, taken in their order around it, always form a convex polygon. The
    ``margin`` keeps them off the corners so that no two vertices coincide.
    """
    sides = []
    for side in range(4):
        positions = np.sort(rng.uniform(margin, 1 - margin, size=int(rng.integers(1, 3))))
        if side == 0:  # top, left to right
            sides.append(np.stack([positions, np.zeros_like(positions)], axis=1))
        elif side == 1:  # right, top to bottom
            sides.append(np.stack([np.ones_like(positions), positions], axis=1))
        elif side == 2:  # bottom, right to left
            sides.append(np.stack([positions[::-1], np.ones_like(positions)], axis=1))
        else:  # left, bottom to top
            sides.append(np.stack([np.zeros_like(positions), positions[::-1]], axis=1))
    return np.concatenate(sides)


def polygon_area(vertices: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula).

    Args:
        vertices: ``[N, 2]`` vertices in order.

    Returns:
        The (unsigned) area.
    """
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _rasterise(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a convex polygon given in pixel coordinates (pixel centres at integers)."""
    mask = np.zeros(shape, dtype=np.uint8)
    points = np.round(vertices * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillConvexPoly(mask, points, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask.astype(bool)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a non-empty mask, end-exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous count afterwards.

    The per-sample tensors are small: with several threads every op waits for all of them, which on a busy CPU
    costs far more than the op itself (measured on 2 shared cores: 0.15 s with one thread, up to 20 s with two,
    for a batch of 32 at 256x256).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def _load_images(foreign_images: str | Path | list[str] | list[Path]) -> list[np.ndarray]:
    """Read foreign images as RGB uint8 arrays; a folder means every image file in it."""
    if isinstance(foreign_images, str | Path):
        paths = list_image_files(foreign_images)
    else:
        paths = [Path(path) for path in foreign_images]
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            msg = f"Cannot read foreign image {path}"
            raise ValueError(msg)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return images


class SyntheticAnomalyGenerator:
    """Generate SSAD pretext samples: normal, big defect, small defect (uniformly), with their pixel masks.

    Big defect (label 1), ``polygon``: a convex irregular polygon with 1 or 2 vertices on each side of a rectangle
    (4-8 vertices). The rectangle is scaled so that the *polygon's* area is ``big_area_ratio`` of the image; its
    aspect ratio (w/h) is drawn log-uniformly from ``big_aspect_ratio`` minus ``big_aspect_excluded``. If the
    rectangle would be wider (taller) than the image, it is clamped to the image width (height) at the same area.
    ``cutpaste`` (CutPaste): an axis-aligned rectangle of area ``big_area_ratio`` and aspect ratio drawn the same
    way, cut from another location of the same image. ``square_cutpaste`` (SADSA): a square of side
    ``square_side_ratio`` x the image's shorter side, cut from
    another normal image (``source``; the same image, elsewhere, when there is none) and pasted with its centre
    in the central ``central_region`` fraction of the image.

    Small defect (label 2), ``scar``: a thin rectangle, area ``small_area_ratio``, aspect ``small_aspect_ratio``
    minus ``small_aspect_excluded``, rotated by an angle in ``[-max_angle, max_angle]`` degrees. ``perlin``
    (SADSA): Perlin noise min-max normalised to ``[0, 1]`` and thresholded at ``perlin_threshold``, filled with
    another normal image (``source``) rotated by a multiple of 90 degrees (the image itself, rotated by a
    non-zero multiple, when there is none). ``cutpaste_scar`` (CutPaste-Scar): a rectangle of ``scar_width`` x
    ``scar_height`` pixels (integers), rotated by an angle in ``[-max_angle, max_angle]`` degrees, cut from another
    location of the same image.

    Placement: the centre is drawn uniformly from the object mask's pixels, then shifted so the whole shape lies
    inside the image; the drawn mask is intersected with the object mask, and placement is retried (up to
    ``max_placement_attempts``) while less than ``min_defect_fraction`` of the shape remains.

    Fills of polygon and scar, drawn uniformly from ``fills``: ``cut_paste`` (the same-shaped region from another
    location of the same image), ``mean_colour`` (the region's mean colour), ``random_colour`` (a flat random
    colour). If the fill differs from what it replaces by less than ``min_visible_difference`` (mean absolute
    difference), its brightness is shifted by ``visibility_shift`` (darker on bright regions, brighter on dark
    ones) so that the defect is visible. Cut-paste content gets its own colour jitter, ``patch_jitter`` (CutPaste's
    jitter of the patch; off by default).

    Textures (an all-ones object mask) take cut-paste content from a foreign image, so that the paste does not
    blend into the texture: one of ``foreign_images`` (resized to the input's size) if given; otherwise the
    fallback is the ``source`` image (another image of the batch in :meth:`generate_batch`; the image itself
    when there is none) rotated by a random multiple of 90 degrees (180 only for non-square images; never 0 for
    the image itself), with its RGB channels permuted, or inverted when it is grayscale. CutPaste's shapes always
    cut from the same image, as in the paper.

    Patch-level mode (``patch_size`` set): the image is first cropped at random to ``patch_size``; a crop whose
    object-mask fraction is below ``min_foreground`` is labelled normal.

    Colour jitter (``brightness``, ``contrast``, ``saturation``, ``hue``; 0 disables one) is applied in the same
    way to all three classes, after the defect; saturation and hue are skipped for grayscale images.

    Labels are drawn uniformly from ``classes`` (default all three; ``(0, 1)`` or ``(0, 2)`` for a 2-class task).

    Args:
        big_defect: ``polygon`` (SSAD), ``square_cutpaste`` (SADSA) or ``cutpaste`` (CutPaste).
        small_defect: ``scar`` (SSAD), ``perlin`` (SADSA) or ``cutpaste_scar`` (CutPaste-Scar).
        big_area_ratio: Range of the polygon's area over the image (or patch) area.
        big_aspect_ratio: Range of the rectangle's width / height.
        big_aspect_excluded: Open interval excluded from ``big_aspect_ratio`` (``(1, 1)``: only exactly 1).
        small_area_ratio: Range of the scar's area over the image (or patch) area.
        small_aspect_ratio: Range of the scar's width / height.
        small_aspect_excluded: Open interval excluded from ``small_aspect_ratio``, which keeps scars thin.
        max_angle: Scar rotation range, degrees.
        square_side_ratio: Range of the SADSA square's side over the image's shorter side.
        central_region: Fraction of each image dimension, centred, in which the SADSA square's centre lies.
        perlin_threshold: Threshold of the normalised Perlin noise.
        fills: Enabled fills of polygon and scar.
        min_visible_difference: Mean absolute difference below which a fill counts as invisible.
        visibility_shift: Range of the brightness shift applied to an invisible fill.
        patch_size: Crop size of the patch-level mode; ``None`` for image level.
        min_foreground: Minimum object-mask fraction of a crop for it to get a defect.
        min_defect_fraction: Minimum fraction of a shape that must remain on the object.
        max_placement_attempts: Placement attempts before keeping the best one.
        brightness: Brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: Contrast factor drawn from ``[1 - c, 1 + c]``.
        saturation: Saturation factor drawn from ``[1 - s, 1 + s]``.
        hue: Hue shift drawn from ``[-h, h]``.
        object_mask_mode: Mode of the :class:`ObjectMasker` used when no object mask is given.
        foreign_images: Folder or list of image files for texture cut-paste. Unreadable file: ``ValueError``.
        seed: Seed of the generator's own random generator, used when no ``rng`` is passed to a call.
        scar_width: Range of the CutPaste-Scar width in pixels (inclusive integers).
        scar_height: Range of the CutPaste-Scar height in pixels (inclusive integers).
        patch_jitter: Brightness, contrast, saturation and hue jitter of cut-paste content (0 disables one).
        classes: Labels to draw from, uniformly: a non-empty subset of ``(0, 1, 2)``.

    Raises:
        ValueError: For an unknown option, an empty ``fills`` or ``classes``, or unreadable ``foreign_images``.
    """

    def __init__(
        self,
        big_defect: BigDefect = "polygon",
        small_defect: SmallDefect = "scar",
        big_area_ratio: tuple[float, float] = (0.03, 0.1),
        big_aspect_ratio: tuple[float, float] = (0.3, 3.3),
        big_aspect_excluded: tuple[float, float] = (1.0, 1.0),
        small_area_ratio: tuple[float, float] = (0.003, 0.007),
        small_aspect_ratio: tuple[float, float] = (0.05, 3.3),
        small_aspect_excluded: tuple[float, float] = (0.5, 2.5),
        max_angle: float = 45.0,
        square_side_ratio: tuple[float, float] = (0.15, 0.2),
        central_region: float = 0.5,
        perlin_threshold: float = 0.9,
        fills: tuple[Fill, ...] = ("cut_paste", "mean_colour", "random_colour"),
        min_visible_difference: float = 0.05,
        visibility_shift: tuple[float, float] = (0.2, 0.4),
        patch_size: int | None = None,
        min_foreground: float = 0.5,
        min_defect_fraction: float = 0.5,
        max_placement_attempts: int = 5,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.05,
        object_mask_mode: MaskMode = "auto",
        foreign_images: str | Path | list[str] | list[Path] | None = None,
        seed: int | None = None,
        scar_width: tuple[int, int] = (2, 16),
        scar_height: tuple[int, int] = (10, 25),
        patch_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        classes: tuple[int, ...] = (0, 1, 2),
    ) -> None:
        if big_defect not in {"polygon", "square_cutpaste", "cutpaste"}:
            msg = f"Unknown big_defect {big_defect!r}; expected 'polygon', 'square_cutpaste' or 'cutpaste'."
            raise ValueError(msg)
        if small_defect not in {"scar", "perlin", "cutpaste_scar"}:
            msg = f"Unknown small_defect {small_defect!r}; expected 'scar', 'perlin' or 'cutpaste_scar'."
            raise ValueError(msg)
        if not classes or not set(classes) <= {0, 1, 2}:
            msg = f"classes must be a non-empty subset of (0, 1, 2); got {classes!r}."
            raise ValueError(msg)
        unknown = set(fills) - {"cut_paste", "mean_colour", "random_colour"}
        if not fills or unknown:
            msg = f"fills must be a non-empty subset of cut_paste, mean_colour, random_colour; got {fills!r}."
            raise ValueError(msg)
        self.big_defect = big_defect
        self.small_defect = small_defect
        self.big_area_ratio = tuple(big_area_ratio)
        self.big_aspect_ratio = tuple(big_aspect_ratio)
        self.big_aspect_excluded = tuple(big_aspect_excluded)
        self.small_area_ratio = tuple(small_area_ratio)
        self.small_aspect_ratio = tuple(small_aspect_ratio)
        self.small_aspect_excluded = tuple(small_aspect_excluded)
        self.max_angle = max_angle
        self.square_side_ratio = tuple(square_side_ratio)
        self.central_region = central_region
        self.perlin_threshold = perlin_threshold
        self.fills = tuple(fills)
        self.min_visible_difference = min_visible_difference
        self.visibility_shift = tuple(visibility_shift)
        self.patch_size = patch_size
        self.min_foreground = min_foreground
        self.min_defect_fraction = min_defect_fraction
        self.max_placement_attempts = max_placement_attempts
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.object_masker = ObjectMasker(object_mask_mode)
        self.foreign_images = _load_images(foreign_images) if foreign_images is not None else []
        self._foreign_cache: dict[tuple[int, int, int, int], Tensor] = {}
        self.scar_width = tuple(scar_width)
        self.scar_height = tuple(scar_height)
        self.patch_jitter = tuple(patch_jitter)
        self.classes = tuple(int(label) for label in classes)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def image_level(cls, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SSAD image-level preset: polygon and scar on the whole image (the constructor's defaults)."""
        return cls(**kwargs)

    @classmethod
    def patch_level(cls, patch_size: int = 32, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SSAD patch-level preset: random ``patch_size`` crops, area ranges [0.1, 0.2] and [0.01, 0.02]."""
        kwargs.setdefault("big_area_ratio", (0.1, 0.2))
        kwargs.setdefault("small_area_ratio", (0.01, 0.02))
        return cls(patch_size=patch_size, **kwargs)

    @classmethod
    def sadsa(cls, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SADSA preset: square cut-paste from another image (big) and a Perlin blob (small)."""
        kwargs.setdefault("big_defect", "square_cutpaste")
        kwargs.setdefault("small_defect", "perlin")
        return cls(**kwargs)

    @classmethod
    def cutpaste(cls, variant: CutPasteVariant = "3way", **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """CutPaste preset (Li et al., CVPR 2021): rectangle cut-paste (label 1) and CutPaste-Scar (label 2).

        Rectangles cover [0.02, 0.15] of the image with an aspect ratio in [0.3, 3.3] (1 excluded), scars are
        2-16 x 10-25 px rotated by up to 45 degrees; both are cut from a random location of the same image,
        colour-jittered (0.1 each) and pasted anywhere in the image. Normal samples are left untouched.

        Args:
            variant: ``"cutpaste"`` (normal vs rectangle), ``"scar"`` (normal vs scar) or ``"3way"`` (all three).
            **kwargs: Overrides of any constructor argument.

        Returns:
            The generator.

        Raises:
            ValueError: For an unknown variant.
        """
        if variant not in CUTPASTE_CLASSES:
            msg = f"Unknown CutPaste variant {variant!r}; expected one of {sorted(CUTPASTE_CLASSES)}."
            raise ValueError(msg)
        defaults: dict[str, Any] = {
            "big_defect": "cutpaste",
            "small_defect": "cutpaste_scar",
            "big_area_ratio": (0.02, 0.15),
            "big_aspect_ratio": (0.3, 3.3),
            "big_aspect_excluded": (1.0, 1.0),
            "max_angle": 45.0,
            "patch_jitter": (0.1, 0.1, 0.1, 0.1),
            "brightness": 0.0,
            "contrast": 0.0,
            "saturation": 0.0,
            "hue": 0.0,
            "min_visible_difference": 0.0,
            "object_mask_mode": "texture",
            "classes": CUTPASTE_CLASSES[variant],
        }
        return cls(**{**defaults, **kwargs})

    def __call__(
        self,
        image: Tensor,
        rng: np.random.Generator | None = None,
        source: Tensor | None = None,
        object_mask: Tensor | None = None,
        label: int | None = None,
    ) -> SyntheticSample:
        """Generate one sample.

        Args:
            image: ``[C, H, W]`` float image in ``[0, 1]``, C = 1 or 3, at least ``patch_size`` on each side.
            rng: Random generator; the generator's own (from ``seed``) when ``None``.
            source: Another normal image of the same shape, for SADSA's fills and the texture fallback.
            object_mask: ``[H, W]`` boolean foreground mask; computed with ``object_masker`` when ``None`` (in
                ``auto`` mode the masker then resolves on this one image: prefer :meth:`generate_batch`).
            label: Force the label (0, 1 or 2) instead of drawing it from ``classes``; a background patch, or a
                defect with no pixel on the object, still gives a normal sample.

        Returns:
            The generated sample.

        Raises:
            ValueError: If the image is not ``[C, H, W]`` with C in {1, 3}, or smaller than the patch.
        """
        rng = self.rng if rng is None else rng
        if image.ndim != 3 or image.shape[0] not in {1, 3}:
            msg = f"Expected an image of shape [C, H, W] with C = 1 or 3, got {tuple(image.shape)}."
            raise ValueError(msg)
        _, height, width = image.shape
        if self.patch_size is not None and (height < self.patch_size or width < self.patch_size):
            msg = f"Image of size {height}x{width} is smaller than the patch size {self.patch_size}."
            raise ValueError(msg)
        if object_mask is None:
            object_mask = self.object_masker(image[None])[0]
        object_np = object_mask.detach().cpu().numpy().astype(bool)
        # Textures have no background; cut-paste from the same texture would blend in.
        texture = bool(object_np.all())
        label = self.classes[int(rng.integers(len(self.classes)))] if label is None else int(label)
        info: dict[str, Any] = {"crop_box": None, "shape": None, "fill": None}

        target, origin = image, (0, 0)
        if self.patch_size is not None:
            y0 = int(rng.integers(height - self.patch_size + 1))
            x0 = int(rng.integers(width - self.patch_size + 1))
            target = image[:, y0 : y0 + self.patch_size, x0 : x0 + self.patch_size]
            object_np = object_np[y0 : y0 + self.patch_size, x0 : x0 + self.patch_size]
            origin = (y0, x0)
            info["crop_box"] = (x0, y0, self.patch_size, self.patch_size)
            info["foreground_fraction"] = float(object_np.mean())
            info["background_crop"] = info["foreground_fraction"] < self.min_foreground
            if info["background_crop"]:
                label = 0

        mask = np.zeros(target.shape[1:], dtype=bool)
        if label == 0:
            output = target.clone()
        else:
            output, mask = self._draw_defect(target, label, object_np, image, origin, source, texture, rng, info)
            # Nothing of the defect landed on the object (an empty object mask): the sample is normal.
            if not mask.any():
                label = 0
        output, info["jitter"] = self._jitter(output, rng, (self.brightness, self.contrast, self.saturation, self.hue))
        info["label"] = label
        return SyntheticSample(output, label, torch.from_numpy(mask.astype(np.float32)), info)

    def generate_batch(
        self,
        images: Tensor,
        rng: np.random.Generator | None = None,
        object_masks: Tensor | None = None,
        labels: Tensor | list[int] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Generate one sample per image of a batch (the training hot path).

        Each image's ``source`` is another image of the batch, drawn at random (none for a batch of one).

        Args:
            images: ``[B, C, H, W]`` float images in ``[0, 1]``.
            rng: Random generator; the generator's own when ``None``.
            object_masks: ``[B, H, W]`` boolean masks; computed with ``object_masker`` when ``None``.
            labels: Labels to force, one per image; drawn uniformly when ``None``.

        Returns:
            Images ``[B, C, h, w]``, labels (long ``[B]``) and defect masks ``[B, 1, h, w]`` (float), on the
            device of ``images``.
        """
        rng = self.rng if rng is None else rng
        device = images.device
        images = images.detach().cpu()
        batch = images.shape[0]
        with _single_torch_thread():
            object_masks = self.object_masker(images) if object_masks is None else object_masks.cpu()
            samples = []
            for index in range(batch):
                source = images[(index + int(rng.integers(1, batch))) % batch] if batch > 1 else None
                label = None if labels is None else int(labels[index])
                samples.append(self(images[index], rng, source, object_masks[index], label))
            output = torch.stack([sample.image for sample in samples])
            masks = torch.stack([sample.mask for sample in samples])[:, None]
        labels_out = torch.tensor([sample.label for sample in samples], dtype=torch.long)
        return output.to(device), labels_out.to(device), masks.to(device)

    def _draw_defect(
        self,
        target: Tensor,
        label: int,
        object_np: np.ndarray,
        full_image: Tensor,
        origin: tuple[int, int],
        source: Tensor | None,
        texture: bool,
        rng: np.random.Generator,
        info: dict[str, Any],
    ) -> tuple[Tensor, np.ndarray]:
        """Draw the defect of ``label`` on ``target`` (the image or its crop at ``origin`` of ``full_image``)."""
        shape = target.shape[1:]
        shape_name = self.big_defect if label == 1 else self.small_defect
        if shape_name == "perlin":
            mask = self._place_perlin(shape, object_np, rng, info)
            fill = self._rotated(full_image if source is None else source, rng, info, allow_identity=source is not None)
            fill = fill[:, origin[0] : origin[0] + shape[0], origin[1] : origin[1] + shape[1]]
            info["fill"] = "rotated_source"
            return self._paste(target, mask, fill, rng, info), mask

        if shape_name == "square_cutpaste":
            vertices, centres = self._square(shape, object_np, rng, info)
            fill_name: str = "cut_paste"
        elif shape_name in _SAME_IMAGE_SHAPES:
            vertices = self._rectangle(shape, rng, info) if label == 1 else self._cutpaste_scar(shape, rng, info)
            centres = object_np
            fill_name = "cut_paste"
        else:
            vertices = self._polygon(shape, rng, info) if label == 1 else self._scar(shape, rng, info)
            centres = object_np
            fill_name = str(rng.choice(self.fills))
        mask, info["vertices"], info["center"] = self._place(vertices, centres, object_np, rng)
        info["fill"] = fill_name
        if not mask.any():
            return target, mask

        y0, y1, x0, x1 = _bounding_box(mask)
        region = target[:, y0:y1, x0:x1]
        box_mask = torch.from_numpy(mask[y0:y1, x0:x1])
        if fill_name == "cut_paste":
            if shape_name == "square_cutpaste":
                pool, avoid = (full_image, (origin[0] + y0, origin[1] + x0)) if source is None else (source, None)
            elif texture and shape_name not in _SAME_IMAGE_SHAPES:
                pool, avoid = self._foreign(full_image, source, rng, info), None
            else:
                pool, avoid = full_image, (origin[0] + y0, origin[1] + x0)
            content = self._cut(pool, y1 - y0, x1 - x0, avoid, rng, info)
            content, info["patch_jitter"] = self._jitter(content, rng, self.patch_jitter)
        elif fill_name == "mean_colour":
            content = region[:, box_mask].mean(dim=1)[:, None, None].expand_as(region)
        else:
            content = torch.from_numpy(rng.uniform(0, 1, size=(target.shape[0], 1, 1)).astype(np.float32))
            content = content.to(target.dtype).expand_as(region)
        full_content = target.clone()
        full_content[:, y0:y1, x0:x1] = content
        return self._paste(target, mask, full_content, rng, info), mask

    def _polygon(self, shape: tuple[int, int], rng: np.random.Generator, info: dict[str, Any]) -> np.ndarray:
        """Polygon vertices centred on 0, scaled so that the polygon's area hits the drawn area ratio."""
        height, width = shape
        unit = _random_convex_polygon(rng)
        area_ratio = float(rng.uniform(*self.big_area_ratio))
        aspect = _sample_ratio(rng, self.big_aspect_ratio, self.big_aspect_excluded)
        rect_area = area_ratio * height * width / polygon_area(unit)
        rect_w, rect_h = np.sqrt(rect_area * aspect), np.sqrt(rect_area / aspect)
        # Too wide/tall for the image (only possible with the patch-level ranges): keep the area, clamp the side.
        if rect_w > width - 1:
            rect_w, rect_h = width - 1, rect_area / (width - 1)
        if rect_h > height - 1:
            rect_w, rect_h = rect_area / (height - 1), height - 1
        info.update(shape="polygon", area_ratio=area_ratio, aspect_ratio=float(rect_w / rect_h))
        return (unit - 0.5) * np.array([rect_w, rect_h])

    def _scar(self, shape: tuple[int, int], rng: np.random.Generator, info: dict[str, Any]) -> np.ndarray:
        """Rotated thin rectangle centred on 0; its width axis points along ``(cos angle, sin angle)``."""
        height, width = shape
        area_ratio = float(rng.uniform(*self.small_area_ratio))
        aspect = _sample_ratio(rng, self.small_aspect_ratio, self.small_aspect_excluded)
        angle = float(rng.uniform(-self.max_angle, self.max_angle))
        area = area_ratio * height * width
        rect_w, rect_h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        info.update(shape="scar", area_ratio=area_ratio, aspect_ratio=aspect, angle=angle, size=(rect_w, rect_h))
        return cv2.boxPoints(((0.0, 0.0), (rect_w, rect_h), angle)).astype(np.float64)

    def _rectangle(self, shape: tuple[int, int], rng: np.random.Generator, info: dict[str, Any]) -> np.ndarray:
        """CutPaste rectangle centred on 0: whole pixels, area ``big_area_ratio``, aspect from ``big_aspect_ratio``."""
        height, width = shape
        area_ratio = float(rng.uniform(*self.big_area_ratio))
        aspect = _sample_ratio(rng, self.big_aspect_ratio, self.big_aspect_excluded)
        area = area_ratio * height * width
        rect_w = int(np.clip(round(np.sqrt(area * aspect)), 1, width))
        rect_h = int(np.clip(round(np.sqrt(area / aspect)), 1, height))
        info.update(shape="cutpaste", area_ratio=area_ratio, aspect_ratio=aspect, size=(rect_w, rect_h))
        # Vertices on the outermost pixel centres: the rasterised rectangle is about rect_w x rect_h pixels.
        half_w, half_h = (rect_w - 1) / 2, (rect_h - 1) / 2
        return np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])

    def _cutpaste_scar(self, shape: tuple[int, int], rng: np.random.Generator, info: dict[str, Any]) -> np.ndarray:
        """CutPaste-Scar centred on 0: ``scar_width x scar_height`` pixels, rotated within ``max_angle``."""
        height, width = shape
        rect_w = int(rng.integers(self.scar_width[0], self.scar_width[1] + 1))
        rect_h = int(rng.integers(self.scar_height[0], self.scar_height[1] + 1))
        angle = float(rng.uniform(-self.max_angle, self.max_angle))
        info.update(
            shape="cutpaste_scar",
            area_ratio=rect_w * rect_h / (height * width),
            aspect_ratio=rect_w / rect_h,
            angle=angle,
            size=(rect_w, rect_h),
        )
        return cv2.boxPoints(((0.0, 0.0), (rect_w, rect_h), angle)).astype(np.float64)

    def _square(
        self, shape: tuple[int, int], object_np: np.ndarray, rng: np.random.Generator, info: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """SADSA square centred on 0, and the allowed centres: object pixels in the central region."""
        height, width = shape
        side = float(rng.uniform(*self.square_side_ratio)) * min(height, width)
        margin_y = round(height * (1 - self.central_region) / 2)
        margin_x = round(width * (1 - self.central_region) / 2)
        central = np.zeros(shape, dtype=bool)
        central[margin_y : height - margin_y, margin_x : width - margin_x] = True
        centres = central & object_np
        info.update(shape="square", area_ratio=side * side / (height * width), aspect_ratio=1.0)
        half = side / 2
        vertices = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return vertices, centres if centres.any() else central

    def _place(
        self, vertices: np.ndarray, centres: np.ndarray, object_np: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Place a shape on the object; returns its mask (on the object only), vertices and centre."""
        height, width = object_np.shape
        candidates = np.flatnonzero(centres)
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        best = (np.zeros_like(object_np), vertices, (0.0, 0.0))
        best_kept = -1
        for _ in range(self.max_placement_attempts):
            index = (
                int(candidates[rng.integers(candidates.size)]) if candidates.size else int(rng.integers(height * width))
            )
            centre_y, centre_x = divmod(index, width)
            # Shift the centre so the whole shape stays inside the image, which keeps the drawn area exact.
            centre_x = float(np.clip(centre_x, -low[0], max(-low[0], width - 1 - high[0])))
            centre_y = float(np.clip(centre_y, -low[1], max(-low[1], height - 1 - high[1])))
            placed = vertices + np.array([centre_x, centre_y])
            drawn = _rasterise(placed, (height, width))
            mask = drawn & object_np
            kept = int(mask.sum())
            if kept > best_kept:
                best, best_kept = (mask, placed, (centre_x, centre_y)), kept
            if kept >= self.min_defect_fraction * max(int(drawn.sum()), 1):
                break
        return best

    def _place_perlin(
        self, shape: tuple[int, int], object_np: np.ndarray, rng: np.random.Generator, info: dict[str, Any]
    ) -> np.ndarray:
        """Perlin blob on the object, redrawn while too little of it lands on the object."""
        best, best_kept = np.zeros(shape, dtype=bool), -1
        for _ in range(self.max_placement_attempts):
            drawn = perlin_mask(shape, rng, self.perlin_threshold)
            mask = drawn & object_np
            kept = int(mask.sum())
            if kept > best_kept:
                best, best_kept = mask, kept
            if kept >= self.min_defect_fraction * drawn.sum():
                break
        info.update(shape="perlin", area_ratio=float(best.mean()))
        return best

    def _cut(
        self,
        pool: Tensor,
        box_h: int,
        box_w: int,
        avoid: tuple[int, int] | None,
        rng: np.random.Generator,
        info: dict[str, Any],
    ) -> Tensor:
        """Cut a ``box_h x box_w`` region from ``pool``, at least half a box away from ``avoid`` (if given)."""
        _, height, width = pool.shape
        for _ in range(10):
            y = int(rng.integers(height - box_h + 1))
            x = int(rng.integers(width - box_w + 1))
            if avoid is None or abs(y - avoid[0]) >= box_h / 2 or abs(x - avoid[1]) >= box_w / 2:
                break
        info["cut_from"] = (x, y)
        return pool[:, y : y + box_h, x : x + box_w]

    def _rotated(self, image: Tensor, rng: np.random.Generator, info: dict[str, Any], allow_identity: bool) -> Tensor:
        """Rotate by a random multiple of 90 degrees (only 180 keeps a non-square image's shape)."""
        turns = [0, 1, 2, 3] if image.shape[1] == image.shape[2] else [0, 2]
        if not allow_identity:
            turns.remove(0)
        info["source_rotation"] = 90 * int(rng.choice(turns))
        return torch.rot90(image, info["source_rotation"] // 90, dims=(1, 2))

    def _foreign(self, image: Tensor, source: Tensor | None, rng: np.random.Generator, info: dict[str, Any]) -> Tensor:
        """Foreign content for texture cut-paste: a foreign image, else the documented fallback."""
        channels, height, width = image.shape
        if self.foreign_images:
            index = int(rng.integers(len(self.foreign_images)))
            key = (index, channels, height, width)
            if key not in self._foreign_cache:
                array = cv2.resize(self.foreign_images[index], (width, height), interpolation=cv2.INTER_AREA)
                if channels == 1:
                    array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)[..., None]
                self._foreign_cache[key] = torch.from_numpy(array).permute(2, 0, 1).float().div(255)
            info["foreign_image"] = index
            return self._foreign_cache[key].to(image.dtype)
        rotated = self._rotated(image if source is None else source, rng, info, allow_identity=source is not None)
        # Permuting equal channels would change nothing: grey content is inverted instead.
        if channels == 1 or float((rotated - rotated.mean(dim=0)).abs().max()) < 0.02:
            info["foreign_transform"] = "inverted"
            return 1 - rotated
        permutations = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        permutation = permutations[int(rng.integers(len(permutations)))]
        info["foreign_transform"] = f"channels {permutation}"
        return rotated[list(permutation)]

    def _paste(
        self, target: Tensor, mask: np.ndarray, content: Tensor, rng: np.random.Generator, info: dict[str, Any]
    ) -> Tensor:
        """Paste ``content`` (same shape as ``target``) inside ``mask``, brightening or darkening it if invisible."""
        if not mask.any():
            return target
        mask_t = torch.from_numpy(mask)
        new, old = content[:, mask_t], target[:, mask_t]
        info["brightness_shift"] = 0.0
        if float((new - old).abs().mean()) < self.min_visible_difference:
            shift = float(rng.uniform(*self.visibility_shift))
            info["brightness_shift"] = -shift if float(old.mean()) > 0.5 else shift
            new = (new + info["brightness_shift"]).clamp(0, 1)
        output = target.clone()
        output[:, mask_t] = new.to(target.dtype)
        return output

    @staticmethod
    def _jitter(
        image: Tensor, rng: np.random.Generator, strengths: tuple[float, ...]
    ) -> tuple[Tensor, dict[str, float]]:
        """Colour jitter of (brightness, contrast, saturation, hue) strengths, factors from ``rng``; 0 skips one.

        Saturation and hue are applied to RGB images only.
        """
        brightness, contrast, saturation, hue = strengths
        factors: dict[str, float] = {}
        if brightness > 0:
            factors["brightness"] = float(rng.uniform(1 - brightness, 1 + brightness))
            image = TF.adjust_brightness(image, factors["brightness"])
        if contrast > 0:
            factors["contrast"] = float(rng.uniform(1 - contrast, 1 + contrast))
            image = TF.adjust_contrast(image, factors["contrast"])
        if image.shape[0] == 3 and saturation > 0:
            factors["saturation"] = float(rng.uniform(1 - saturation, 1 + saturation))
            image = TF.adjust_saturation(image, factors["saturation"])
        if image.shape[0] == 3 and hue > 0:
            factors["hue"] = float(rng.uniform(-hue, hue))
            image = TF.adjust_hue(image, factors["hue"])
        return image, factors
