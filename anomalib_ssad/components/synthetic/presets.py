# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""What a synthetic-anomaly generator draws: :class:`AnomalySpec`, a frozen dataclass, and its presets.

Example:
    >>> from anomalib_ssad.components.synthetic.presets import PATCH_LEVEL, cutpaste_spec
    >>> PATCH_LEVEL.patch_size, PATCH_LEVEL.big_area_ratio
    (32, (0.1, 0.2))
    >>> cutpaste_spec("cutpaste").classes
    (0, 1)
"""

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from anomalib_ssad.validation import check_choice

Fill = Literal["cut_paste", "mean_colour", "random_colour"]
BigDefect = Literal["polygon", "square_cutpaste", "cutpaste"]
SmallDefect = Literal["scar", "perlin", "cutpaste_scar"]
CutPasteVariant = Literal["cutpaste", "scar", "3way"]
# Labels drawn by each CutPaste variant: binary (normal vs one augmentation) or 3-way.
CUTPASTE_CLASSES: dict[str, tuple[int, ...]] = {"cutpaste": (0, 1), "scar": (0, 2), "3way": (0, 1, 2)}
FILLS: tuple[str, ...] = ("cut_paste", "mean_colour", "random_colour")


@dataclass(frozen=True)
class AnomalySpec:
    """The distribution of synthetic samples: labels, shapes, sizes, fills, placement and colour jitter.

    Labels are drawn uniformly from ``classes``: ``0`` normal (colour jitter only), ``1`` a big defect, ``2`` a
    small defect.

    Big defect: ``polygon`` (SSAD), a convex polygon with 1 or 2 vertices on each side of a rectangle (4-8
    vertices), scaled so that the polygon covers ``big_area_ratio`` of the image, the rectangle's aspect ratio
    (w / h) log-uniform in ``big_aspect_ratio`` minus ``big_aspect_excluded`` (clamped to the image at the same
    area); ``cutpaste`` (CutPaste), an axis-aligned whole-pixel rectangle of that area and aspect ratio, cut from
    elsewhere in the same image; ``square_cutpaste`` (SADSA), a square of side ``square_side_ratio`` x the shorter
    image side, cut from another image of the batch and centred in the ``central_region`` of the image.

    Small defect: ``scar`` (SSAD), a thin rectangle of area ``small_area_ratio``, aspect ratio in
    ``small_aspect_ratio`` minus ``small_aspect_excluded``, rotated within ``max_angle`` degrees; ``cutpaste_scar``,
    ``scar_width`` x ``scar_height`` pixels rotated within ``max_angle``, cut from elsewhere in the same image;
    ``perlin`` (SADSA), min-max normalised Perlin noise above ``perlin_threshold``, filled with another image of the
    batch rotated by a multiple of 90 degrees.

    Placement: centres uniform on the object mask, shifted so that the shape stays in the image, the mask cut to
    the object, up to ``max_placement_attempts`` tries while less than ``min_defect_fraction`` of it is kept.
    Polygon and scar fills are drawn uniformly from ``fills``; a fill that differs from what it covers by less than
    ``min_visible_difference`` (mean absolute difference) is shifted in brightness by ``visibility_shift`` (darker
    on bright regions). Cut-paste content gets ``patch_jitter``; every sample gets the colour jitter
    ``brightness``, ``contrast``, ``saturation``, ``hue`` after its defect (saturation and hue on RGB only).
    ``patch_size`` set: samples are random crops, those with less than ``min_foreground`` object labelled normal.

    Raises:
        ValueError: For an unknown shape or fill, an empty ``fills`` or ``classes``, or a range whose low end is
            above its high end.
    """

    big_defect: BigDefect = "polygon"
    small_defect: SmallDefect = "scar"
    big_area_ratio: tuple[float, float] = (0.03, 0.1)
    big_aspect_ratio: tuple[float, float] = (0.3, 3.3)
    big_aspect_excluded: tuple[float, float] = (1.0, 1.0)
    small_area_ratio: tuple[float, float] = (0.003, 0.007)
    small_aspect_ratio: tuple[float, float] = (0.05, 3.3)
    small_aspect_excluded: tuple[float, float] = (0.5, 2.5)
    max_angle: float = 45.0
    square_side_ratio: tuple[float, float] = (0.15, 0.2)
    central_region: float = 0.5
    perlin_threshold: float = 0.9
    fills: tuple[Fill, ...] = FILLS  # type: ignore[assignment]
    min_visible_difference: float = 0.05
    visibility_shift: tuple[float, float] = (0.2, 0.4)
    patch_size: int | None = None
    min_foreground: float = 0.5
    min_defect_fraction: float = 0.5
    max_placement_attempts: int = 5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.05
    scar_width: tuple[int, int] = (2, 16)
    scar_height: tuple[int, int] = (10, 25)
    patch_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    classes: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        """Store sequences as tuples (configs give lists) and check the options."""
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            if isinstance(value, list):
                object.__setattr__(self, spec_field.name, tuple(value))
        check_choice("big_defect", self.big_defect, BigDefect)
        check_choice("small_defect", self.small_defect, SmallDefect)
        if not self.classes or not set(self.classes) <= {0, 1, 2}:
            msg = f"classes must be a non-empty subset of (0, 1, 2); got {self.classes!r}."
            raise ValueError(msg)
        if not self.fills or set(self.fills) - set(FILLS):
            msg = f"fills must be a non-empty subset of {', '.join(FILLS)}; got {self.fills!r}."
            raise ValueError(msg)
        for name in ("big_area_ratio", "big_aspect_ratio", "small_area_ratio", "small_aspect_ratio",
                     "square_side_ratio", "visibility_shift", "scar_width", "scar_height"):  # fmt: skip
            low, high = getattr(self, name)
            if low > high:
                msg = f"{name} must be a (low, high) range with low <= high; got {getattr(self, name)!r}."
                raise ValueError(msg)
        if self.patch_size is not None and self.patch_size < 2:
            msg = f"patch_size must be at least 2 pixels, got {self.patch_size!r}."
            raise ValueError(msg)

    def with_overrides(self, **overrides: Any) -> "AnomalySpec":
        """A copy with some fields replaced (``None`` values keep the preset's)."""
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})


IMAGE_LEVEL = AnomalySpec()
"""SSAD image level: polygon and scar on the whole image."""

PATCH_LEVEL = AnomalySpec(patch_size=32, big_area_ratio=(0.1, 0.2), small_area_ratio=(0.01, 0.02))
"""SSAD patch level: random 32-px crops, area ranges [0.1, 0.2] and [0.01, 0.02]."""

SADSA = AnomalySpec(big_defect="square_cutpaste", small_defect="perlin")
"""SADSA: square cut-paste from another image (big) and a Perlin blob (small)."""


def cutpaste_spec(variant: CutPasteVariant = "3way") -> AnomalySpec:
    """CutPaste (Li et al., CVPR 2021): rectangle cut-paste (label 1) and CutPaste-Scar (label 2).

    Rectangles cover [0.02, 0.15] of the image, aspect ratio in [0.3, 3.3] (1 excluded); scars are 2-16 x 10-25 px
    rotated by up to 45 degrees; both cut from a random location of the same image, colour-jittered (0.1 each) and
    pasted anywhere in the image; normal samples are left untouched.

    Args:
        variant: ``"cutpaste"`` (normal vs rectangle), ``"scar"`` (normal vs scar) or ``"3way"`` (all three).

    Raises:
        ValueError: For an unknown variant.
    """
    check_choice("variant", variant, CutPasteVariant)
    return AnomalySpec(
        big_defect="cutpaste",
        small_defect="cutpaste_scar",
        big_area_ratio=(0.02, 0.15),
        patch_jitter=(0.1, 0.1, 0.1, 0.1),
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        min_visible_difference=0.0,
        classes=CUTPASTE_CLASSES[variant],
    )
