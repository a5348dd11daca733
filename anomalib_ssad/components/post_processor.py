# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's post-processor with a pixel threshold fitted on a regular sub-grid of the validation pixels.

anomalib's :class:`~anomalib.post_processing.PostProcessor` fits its pixel threshold (F1-optimal) on every pixel
of every validation map: an unbinned precision-recall curve over ``N x H x W`` values, whose sort dominates the
fitting memory on large validation sets (Magnetic Tile validates on 583 maps of 256 px: about 1.8 GB above the
model's own peak, see ``benchmarks/metric_memory.py``). Anomaly maps are smooth at the scale of a few pixels
(upsampled from a coarse grid and blurred), so the threshold is fitted here on the centre pixel of every
``pixel_stride x pixel_stride`` block: ``pixel_stride**2`` times less memory, the same threshold on maps that are
constant over such blocks. Normalisation (min / max over all pixels), the image threshold and everything at test,
predict and export time are anomalib's, unchanged.

Example:
    >>> from anomalib_ssad.components.post_processor import SubgridPostProcessor
    >>> SubgridPostProcessor(pixel_stride=2).pixel_stride
    2
"""

from types import SimpleNamespace
from typing import Any

from anomalib.metrics import F1AdaptiveThreshold
from anomalib.post_processing import PostProcessor
from torch import Tensor


def subgrid(values: Tensor, stride: int) -> Tensor:
    """The centre pixel of every ``stride x stride`` block of the last two dimensions."""
    offset = stride // 2
    return values[..., offset::stride, offset::stride]


def _checked_stride(stride: int) -> int:
    if not isinstance(stride, int) or stride < 1:
        msg = f"pixel_stride must be a positive integer, got {stride!r}."
        raise ValueError(msg)
    return stride


class SubgridF1AdaptiveThreshold(F1AdaptiveThreshold):
    """anomalib's F1-adaptive threshold on maps and masks reduced to their :func:`subgrid`.

    Args:
        stride: Block size of the sub-grid (1 keeps every pixel).
        **kwargs: Arguments of :class:`~anomalib.metrics.F1AdaptiveThreshold` (``fields``, ``strict``, ...).
    """

    def __init__(self, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = _checked_stride(stride)

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        """Update with the sub-grid of the batch's fields (a missing field stays missing)."""
        values = {field: getattr(batch, field, None) for field in self.fields}
        reduced = {key: None if value is None else subgrid(value, self.stride) for key, value in values.items()}
        super().update(SimpleNamespace(**reduced), *args, **kwargs)


class SubgridPostProcessor(PostProcessor):
    """:class:`~anomalib.post_processing.PostProcessor` whose pixel threshold is fitted on a pixel sub-grid.

    Args:
        pixel_stride: Keep one validation pixel per ``pixel_stride x pixel_stride`` block for the pixel threshold
            (1: every pixel, as anomalib does).
        **kwargs: Arguments of :class:`~anomalib.post_processing.PostProcessor`.
    """

    def __init__(self, pixel_stride: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pixel_threshold_metric = SubgridF1AdaptiveThreshold(
            pixel_stride, fields=["anomaly_map", "gt_mask"], strict=False
        )

    @property
    def pixel_stride(self) -> int:
        """Block size of the sub-grid the pixel threshold is fitted on."""
        return self._pixel_threshold_metric.stride

    @pixel_stride.setter
    def pixel_stride(self, stride: int) -> None:
        self._pixel_threshold_metric.stride = _checked_stride(stride)

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        return (*super()._checkpoint_config_keys, "pixel_stride")
