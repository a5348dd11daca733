# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""The synthetic-anomaly generator: a batched torch module that draws normal, big- and small-defect samples.

``forward(images [B, C, H, W], object_masks) -> images, labels, masks`` runs on the images' device with no
per-sample Python loop: labels are drawn for the batch, each defect kind is drawn for all samples that get it at
once (:mod:`.shapes`), placed on the object (:mod:`.placement`), filled and colour-jittered (:mod:`.fills`). What
is drawn is an :class:`~.presets.AnomalySpec`; the presets are its named instances. Every random draw comes from
the ``torch.Generator`` passed in (on its device), so a seed reproduces a batch exactly.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator
    >>> generator = SyntheticAnomalyGenerator.image_level(object_mask_mode="texture")
    >>> images, labels, masks = generator(torch.rand(4, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    >>> images.shape, labels.shape, masks.shape
    (torch.Size([4, 3, 64, 64]), torch.Size([4]), torch.Size([4, 1, 64, 64]))
"""

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import Tensor, nn

from anomalib_ssad.components.object_mask import MaskMode, ObjectMasker
from anomalib_ssad.components.synthetic.fills import (
    colour_jitter,
    foreign_content,
    gather_window,
    make_visible,
    masked_mean,
    random_turns,
    rotate90,
)
from anomalib_ssad.components.synthetic.placement import place_polygons, place_shapes
from anomalib_ssad.components.synthetic.presets import (
    IMAGE_LEVEL,
    PATCH_LEVEL,
    SADSA,
    AnomalySpec,
    CutPasteVariant,
    cutpaste_spec,
)
from anomalib_ssad.components.synthetic.shapes import (
    box_vertices,
    log_uniform_excluding,
    perlin_masks,
    polygon_area,
    uniform,
    unit_convex_polygons,
)
from anomalib_ssad.image_files import read_rgb_images

# Shapes whose content is always cut from the same image (CutPaste), whatever ``fills`` says.
_SAME_IMAGE_SHAPES = ("cutpaste", "cutpaste_scar")
# Source positions tried per sample for a cut that does not overlap the place it is pasted to.
_CUT_CANDIDATES = 10


class SyntheticAnomalyGenerator(nn.Module):
    """Draw pretext samples for a batch: label 0 normal, 1 big defect, 2 small defect, with exact pixel masks.

    See :class:`~anomalib_ssad.components.synthetic.presets.AnomalySpec` for what is drawn. Cut-paste content of
    polygons and scars on textures (an all-ones object mask) comes from ``foreign_images`` (resized to the input)
    if given, else from another image of the batch (the image itself when the batch has one image) rotated by a
    multiple of 90 degrees (180 only for non-square images; never 0 for the image itself), its RGB channels
    permuted (inverted when grey), so that the paste does not blend into the texture.

    Args:
        spec: What to draw (default: SSAD's image level).
        object_mask_mode: Mode of the :class:`ObjectMasker` used when no object masks are given.
        foreign_images: Folder or files of foreign images for texture cut-paste, or the images as ``[3, H, W]``
            tensors in ``[0, 1]``.
        seed: Seed of the module's own ``torch.Generator`` (``rng``), used when ``forward`` gets none.

    Raises:
        ValueError: For unreadable ``foreign_images``.
    """

    def __init__(
        self,
        spec: AnomalySpec = IMAGE_LEVEL,
        object_mask_mode: MaskMode = "auto",
        foreign_images: str | Path | list[str] | list[Path] | list[Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.object_masker = ObjectMasker(object_mask_mode)
        if foreign_images is None or (isinstance(foreign_images, list) and not foreign_images):
            self.foreign_images: list[Tensor] = []
        elif isinstance(foreign_images, list) and isinstance(foreign_images[0], Tensor):
            self.foreign_images = list(foreign_images)  # type: ignore[arg-type]
        else:
            self.foreign_images = read_rgb_images(foreign_images)  # type: ignore[arg-type]
        self._foreign_cache: dict[tuple[int, int, int], Tensor] = {}
        self.rng = torch.Generator().manual_seed(seed)

    @classmethod
    def image_level(cls, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SSAD image level (:data:`~.presets.IMAGE_LEVEL`); keyword arguments override the spec or the module."""
        return cls._from_preset(IMAGE_LEVEL, kwargs)

    @classmethod
    def patch_level(cls, patch_size: int = 32, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SSAD patch level (:data:`~.presets.PATCH_LEVEL`) on ``patch_size`` crops."""
        return cls._from_preset(PATCH_LEVEL, {"patch_size": patch_size, **kwargs})

    @classmethod
    def sadsa(cls, **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """SADSA (:data:`~.presets.SADSA`): square cut-paste from another image and a Perlin blob."""
        return cls._from_preset(SADSA, kwargs)

    @classmethod
    def cutpaste(cls, variant: CutPasteVariant = "3way", **kwargs: Any) -> "SyntheticAnomalyGenerator":
        """CutPaste (:func:`~.presets.cutpaste_spec`), pasted anywhere in the image (texture object mask)."""
        return cls._from_preset(cutpaste_spec(variant), {"object_mask_mode": "texture", **kwargs})

    @classmethod
    def _from_preset(cls, preset: AnomalySpec, kwargs: dict[str, Any]) -> "SyntheticAnomalyGenerator":
        module_args = {key: kwargs.pop(key) for key in ("object_mask_mode", "foreign_images", "seed") if key in kwargs}
        return cls(preset.with_overrides(**kwargs), **module_args)

    def forward(
        self,
        images: Tensor,
        object_masks: Tensor | None = None,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Draw one sample per image.

        Args:
            images: ``[B, C, H, W]`` float images in ``[0, 1]``, C = 1 or 3, at least ``patch_size`` on each side.
            object_masks: ``[B, H, W]`` boolean foreground masks; computed with ``object_masker`` when ``None``.
            generator: Random generator (its device holds the draws); the module's own when ``None``.
            labels: Labels to force, ``[B]``; drawn uniformly from ``spec.classes`` when ``None``. A background
                crop, or a defect with no pixel on the object, still gives a normal sample.

        Returns:
            Images ``[B, C, h, w]`` (``h = w = patch_size`` in patch mode), labels (long ``[B]``) and defect masks
            ``[B, 1, h, w]`` (float, exactly the pixels the defect replaced), on the device of ``images``.

        Raises:
            ValueError: If the images are not ``[B, C, H, W]`` with C in {1, 3}, or smaller than the patch.
        """
        spec, device = self.spec, images.device
        generator = self.rng if generator is None else generator
        if images.ndim != 4 or images.shape[1] not in {1, 3}:
            msg = f"Expected images of shape [B, C, H, W] with C = 1 or 3, got {tuple(images.shape)}."
            raise ValueError(msg)
        batch, _, height, width = images.shape
        if spec.patch_size is not None and (height < spec.patch_size or width < spec.patch_size):
            msg = f"Images of size {height}x{width} are smaller than the patch size {spec.patch_size}."
            raise ValueError(msg)
        images = images.detach()
        objects = self.object_masker(images) if object_masks is None else object_masks.to(device, torch.bool)
        if labels is None:
            choice = torch.randint(len(spec.classes), (batch,), generator=generator, device=generator.device)
            labels = torch.tensor(spec.classes, device=generator.device)[choice]
        labels = labels.to(device, torch.long).clone()
        texture = objects.flatten(1).all(dim=1)

        # Crop origin of every sample (0, 0 at image level), and the crops it draws on.
        size_h, size_w = (spec.patch_size, spec.patch_size) if spec.patch_size is not None else (height, width)
        top = self._integers(batch, height - size_h + 1, generator).to(device)
        left = self._integers(batch, width - size_w + 1, generator).to(device)
        targets = gather_window(images, top, left, size_h, size_w) if spec.patch_size else images
        crop_objects = gather_window(objects[:, None], top, left, size_h, size_w)[:, 0] if spec.patch_size else objects
        if spec.patch_size is not None:
            labels[crop_objects.float().flatten(1).mean(1) < spec.min_foreground] = 0

        # Every image's source is another image of the batch, drawn at random (itself in a batch of one).
        offset = self._integers(batch, max(batch - 1, 1), generator).to(device) + 1
        source_index = (torch.arange(batch, device=device) + offset) % batch if batch > 1 else torch.zeros(1)
        context = _Context(
            images, source_index.long().to(device), texture, top, left, torch.arange(batch, device=device)
        )

        outputs, masks = targets.clone(), torch.zeros_like(crop_objects)
        for label, shape in ((1, spec.big_defect), (2, spec.small_defect)):
            indices = (labels == label).nonzero()[:, 0]
            if indices.numel() == 0:
                continue
            sub = context.select(indices)
            defect_masks = self._place(shape, targets[indices], crop_objects[indices], sub, generator)
            content = self._fill(shape, targets[indices], defect_masks, sub, generator)
            outputs[indices] = torch.where(defect_masks[:, None], content, targets[indices])
            masks[indices] = defect_masks
        # Nothing of the defect landed on the object (an empty object mask): the sample is normal.
        labels[~masks.flatten(1).any(dim=1)] = 0
        strengths = (spec.brightness, spec.contrast, spec.saturation, spec.hue)
        outputs = colour_jitter(outputs, strengths, generator)
        return outputs, labels, masks[:, None].to(images.dtype)

    @staticmethod
    def _integers(n: int, high: int, generator: torch.Generator) -> Tensor:
        return torch.randint(high, (n,), generator=generator, device=generator.device)

    def _place(
        self, shape: str, targets: Tensor, objects: Tensor, context: "_Context", generator: torch.Generator
    ) -> Tensor:
        """Masks ``[n, h, w]`` of one defect kind, drawn for all its samples and placed on the object."""
        spec, device = self.spec, targets.device
        n, _, height, width = targets.shape
        attempts, fraction = spec.max_placement_attempts, spec.min_defect_fraction
        if shape == "perlin":
            return place_shapes(
                lambda indices: perlin_masks(indices.numel(), height, width, generator, spec.perlin_threshold, device),
                objects,
                fraction,
                attempts,
            )
        centres = objects
        if shape == "polygon":
            unit, _ = unit_convex_polygons(n, generator)
            vertices = scale_polygons(unit.to(device), height, width, spec, generator)
        elif shape == "scar":
            area = uniform(n, spec.small_area_ratio, generator) * height * width
            aspect = log_uniform_excluding(n, spec.small_aspect_ratio, spec.small_aspect_excluded, generator)
            angle = uniform(n, (-spec.max_angle, spec.max_angle), generator)
            vertices = box_vertices((area * aspect).sqrt(), (area / aspect).sqrt(), angle).to(device)
        elif shape == "cutpaste":
            area = uniform(n, spec.big_area_ratio, generator) * height * width
            aspect = log_uniform_excluding(n, spec.big_aspect_ratio, spec.big_aspect_excluded, generator)
            box_w = (area * aspect).sqrt().round().clamp(1, width)
            box_h = (area / aspect).sqrt().round().clamp(1, height)
            # Vertices on the outermost pixel centres: the rasterised rectangle is box_w x box_h pixels.
            vertices = box_vertices(box_w - 1, box_h - 1, torch.zeros_like(box_w)).to(device)
        elif shape == "cutpaste_scar":
            box_w = torch.randint(spec.scar_width[0], spec.scar_width[1] + 1, (n,), generator=generator,
                                  device=generator.device).float()  # fmt: skip
            box_h = torch.randint(spec.scar_height[0], spec.scar_height[1] + 1, (n,), generator=generator,
                                  device=generator.device).float()  # fmt: skip
            angle = uniform(n, (-spec.max_angle, spec.max_angle), generator)
            vertices = box_vertices(box_w, box_h, angle).to(device)
        else:  # square_cutpaste
            side = uniform(n, spec.square_side_ratio, generator) * min(height, width)
            vertices = box_vertices(side, side, torch.zeros_like(side)).to(device)
            margin_y = round(height * (1 - spec.central_region) / 2)
            margin_x = round(width * (1 - spec.central_region) / 2)
            central = torch.zeros_like(objects)
            central[:, margin_y : height - margin_y, margin_x : width - margin_x] = True
            centres = central & objects
            centres = torch.where(centres.flatten(1).any(1).view(n, 1, 1), centres, central)
        return place_polygons(vertices, centres, objects, generator, fraction, attempts)

    def _fill(
        self, shape: str, targets: Tensor, masks: Tensor, context: "_Context", generator: torch.Generator
    ) -> Tensor:
        """Content ``[n, C, h, w]`` pasted inside the masks of one defect kind."""
        spec = self.spec
        n, _, height, width = targets.shape
        if shape == "perlin":
            turns = random_turns(n, context.images.shape[2] == context.images.shape[3],
                                 torch.full((n,), context.has_sources), generator)  # fmt: skip
            pool = rotate90(context.images[context.sources], turns.to(targets.device))
            content = gather_window(pool, context.top, context.left, height, width)
            return make_visible(content, targets, masks, spec.min_visible_difference, spec.visibility_shift, generator)
        if shape in _SAME_IMAGE_SHAPES:
            content = self._cut(
                context.images,
                context.index,
                masks,
                context,
                avoid=torch.ones(n, dtype=torch.bool),
                generator=generator,
            )
        elif shape == "square_cutpaste":
            avoid = torch.full((n,), not context.has_sources)
            content = self._cut(context.images, context.sources, masks, context, avoid=avoid, generator=generator)
        else:
            fills = torch.randint(len(spec.fills), (n,), generator=generator, device=generator.device).to(
                targets.device
            )
            content = torch.empty_like(targets)
            for index, fill in enumerate(spec.fills):
                chosen = (fills == index).nonzero()[:, 0]
                if chosen.numel() == 0:
                    continue
                sub = context.select(chosen)
                if fill == "cut_paste":
                    pool, pool_index = sub.images, sub.index
                    if sub.texture.any():
                        own = sub.images[sub.index]
                        pool = torch.where(sub.texture.view(-1, 1, 1, 1), self._foreign(sub, generator), own)
                        pool_index = torch.arange(chosen.numel(), device=pool.device)
                    avoid = ~sub.texture.cpu()
                    content[chosen] = self._cut(pool, pool_index, masks[chosen], sub, avoid, generator)
                elif fill == "mean_colour":
                    content[chosen] = masked_mean(targets[chosen], masks[chosen]).expand_as(targets[chosen])
                else:
                    colour = torch.rand(chosen.numel(), targets.shape[1], 1, 1, generator=generator,
                                        device=generator.device)  # fmt: skip
                    content[chosen] = colour.to(targets.device, targets.dtype).expand_as(targets[chosen])
        return make_visible(content, targets, masks, spec.min_visible_difference, spec.visibility_shift, generator)

    def _cut(
        self,
        pool: Tensor,
        pool_index: Tensor,
        masks: Tensor,
        context: "_Context",
        avoid: Tensor,
        generator: torch.Generator,
    ) -> Tensor:
        """Content cut from ``pool[pool_index]`` (full images): each mask's bounding box from a random position.

        Where ``avoid`` is set, the position is at least half a box away from where the box is pasted.
        """
        n, height, width = masks.shape
        _, _, pool_h, pool_w = pool.shape
        device = masks.device
        rows, cols = masks.any(dim=2), masks.any(dim=1)
        y0, x0 = rows.int().argmax(1), cols.int().argmax(1)
        box_h = (height - rows.flip(1).int().argmax(1) - y0).clamp_min(1)
        box_w = (width - cols.flip(1).int().argmax(1) - x0).clamp_min(1)
        draws = torch.rand(2, n, _CUT_CANDIDATES, generator=generator, device=generator.device).to(device)
        source_y = (draws[0] * (pool_h - box_h + 1)[:, None]).floor().long()
        source_x = (draws[1] * (pool_w - box_w + 1)[:, None]).floor().long()
        pasted_y, pasted_x = (context.top + y0)[:, None], (context.left + x0)[:, None]
        apart = ((source_y - pasted_y).abs() >= box_h[:, None] / 2) | (
            (source_x - pasted_x).abs() >= box_w[:, None] / 2
        )
        apart |= ~avoid.to(device)[:, None]
        pick = torch.where(apart.any(1), apart.int().argmax(1), torch.full_like(y0, _CUT_CANDIDATES - 1))
        sy = source_y.gather(1, pick[:, None])[:, 0]
        sx = source_x.gather(1, pick[:, None])[:, 0]
        content = gather_window(pool, sy - y0, sx - x0, height, width, pool_index)
        if any(strength > 0 for strength in self.spec.patch_jitter):
            content = colour_jitter(content, self.spec.patch_jitter, generator)
        return content

    def _foreign(self, context: "_Context", generator: torch.Generator) -> Tensor:
        """Foreign content for texture cut-paste: a foreign image, else a transformed source (see the class)."""
        n, (_, channels, height, width) = context.index.numel(), context.images.shape
        if not self.foreign_images:
            allow = torch.full((n,), context.has_sources)
            return foreign_content(context.images[context.sources], allow, generator)
        key = (channels, height, width)
        if key not in self._foreign_cache:
            resized = [
                F.interpolate(image[None], size=(height, width), mode="area")[0] for image in self.foreign_images
            ]
            stack = torch.stack(resized)
            if channels == 1:
                stack = (stack * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            self._foreign_cache[key] = stack
        choice = torch.randint(len(self.foreign_images), (n,), generator=generator, device=generator.device)
        return self._foreign_cache[key][choice.cpu()].to(context.images.device, context.images.dtype)


def scale_polygons(unit: Tensor, height: int, width: int, spec: AnomalySpec, generator: torch.Generator) -> Tensor:
    """Unit-square polygons centred on 0 and scaled so that each covers its drawn area ratio of the image.

    The bounding rectangle's aspect ratio is drawn from ``spec.big_aspect_ratio``; a rectangle wider (taller)
    than the image is clamped to it at the same area.
    """
    n = unit.shape[0]
    area_ratio = uniform(n, spec.big_area_ratio, generator).to(unit.device)
    aspect = log_uniform_excluding(n, spec.big_aspect_ratio, spec.big_aspect_excluded, generator).to(unit.device)
    rect_area = area_ratio * height * width / polygon_area(unit)
    rect_w, rect_h = (rect_area * aspect).sqrt(), (rect_area / aspect).sqrt()
    wide = rect_w > width - 1
    rect_w, rect_h = torch.where(wide, width - 1, rect_w), torch.where(wide, rect_area / (width - 1), rect_h)
    tall = rect_h > height - 1
    rect_w, rect_h = torch.where(tall, rect_area / (height - 1), rect_w), torch.where(tall, height - 1, rect_h)
    return (unit - 0.5) * torch.stack([rect_w, rect_h], dim=-1)[:, None]


class _Context:
    """Where the samples being drawn come from: indices into the full batch, not copies of its images.

    Attributes:
        images: The full-size images of the whole batch ``[B, C, H, W]``.
        index: The batch index of each sample being drawn ``[n]``.
        sources: The batch index of each sample's source image ``[n]`` (another image of the batch).
        texture: Whether each sample's object mask covers the whole image ``[n]``.
        top: Row of each sample's crop in its image ``[n]`` (0 at image level).
        left: Column of each sample's crop ``[n]``.
        has_sources: Whether the batch has more than one image (else sources are the images themselves).
    """

    def __init__(
        self, images: Tensor, source_index: Tensor, texture: Tensor, top: Tensor, left: Tensor, index: Tensor
    ) -> None:
        self.images, self._source_index, self._texture, self._top, self._left = (
            images, source_index, texture, top, left
        )  # fmt: skip
        self.index = index
        self.has_sources = images.shape[0] > 1

    @property
    def sources(self) -> Tensor:
        return self._source_index[self.index] if self.has_sources else self.index

    @property
    def texture(self) -> Tensor:
        return self._texture[self.index]

    @property
    def top(self) -> Tensor:
        return self._top[self.index]

    @property
    def left(self) -> Tensor:
        return self._left[self.index]

    def select(self, indices: Tensor) -> "_Context":
        return _Context(self.images, self._source_index, self._texture, self._top, self._left, self.index[indices])
