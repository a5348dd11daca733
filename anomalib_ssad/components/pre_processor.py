# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib's pre-processor with training batches left un-normalised, for models that draw synthetic anomalies.

Pretext models draw defects on images as captured (values in ``[0, 1]``: colours, brightness shifts, jitter), so
:class:`PretextPreProcessor` applies its transform without the final ``Normalize`` to training batches and the
model normalises the drawn batch with :meth:`PretextPreProcessor.normalize`. Validation, test, predict and export
use the whole transform, as anomalib's :class:`~anomalib.pre_processing.PreProcessor` does.

Example:
    >>> import torch
    >>> from torchvision.transforms.v2 import Compose, Normalize, Resize
    >>> from anomalib_ssad.components.pre_processor import PretextPreProcessor
    >>> pre = PretextPreProcessor(Compose([Resize((8, 8)), Normalize([0.5] * 3, [0.5] * 3)]))
    >>> pre.normalize(torch.ones(1, 3, 8, 8)).max().item()
    1.0
"""

from typing import Any

from anomalib.pre_processing import PreProcessor
from torch import Tensor, nn
from torchvision.transforms.v2 import Compose, Normalize, Resize, Transform


def _steps(transform: Transform | None) -> list[Transform]:
    """The steps of ``transform``: a ``Compose``'s transforms, a single transform, or none."""
    return list(transform.transforms) if isinstance(transform, Compose) else [transform] if transform else []


def resize_size(transform: Transform | None) -> tuple[int, int] | None:
    """``(height, width)`` of the last ``Resize`` to a fixed size in ``transform``, or ``None`` if there is none.

    A ``Resize`` to one number scales the shorter side and keeps the aspect ratio: it has no fixed size.
    """
    items = _steps(transform)
    for item in reversed(items):
        if isinstance(item, Resize) and isinstance(item.size, list | tuple) and len(item.size) == 2:
            return int(item.size[0]), int(item.size[1])
    return None


def _split(transform: Transform | None) -> tuple[Transform | None, Transform | None]:
    """The transform before its trailing ``Normalize`` steps, and those steps (``None`` where empty).

    Raises:
        ValueError: If a ``Normalize`` is followed by another transform (it must come last).
    """
    items = _steps(transform)
    first = next((index for index, item in enumerate(items) if isinstance(item, Normalize)), len(items))
    if not all(isinstance(item, Normalize) for item in items[first:]):
        msg = f"The pre-processor's Normalize must be its last transform(s); got {transform!r}."
        raise ValueError(msg)
    head, tail = items[:first], items[first:]
    return (Compose(head) if head else None), (Compose(tail) if tail else None)


class PretextPreProcessor(PreProcessor):
    """:class:`~anomalib.pre_processing.PreProcessor` whose training batches skip the trailing ``Normalize``.

    Args:
        transform: The full transform (e.g. resize, then ImageNet normalisation); ``Normalize`` must come last.
        **kwargs: Arguments of :class:`~anomalib.pre_processing.PreProcessor`.

    Raises:
        ValueError: If a ``Normalize`` is not at the end of ``transform``.
    """

    def __init__(self, transform: Transform | None = None, **kwargs: Any) -> None:
        _split(transform)
        super().__init__(transform=transform, **kwargs)

    @classmethod
    def wrap(cls, pre_processor: nn.Module | None) -> "PretextPreProcessor | nn.Module | None":
        """The same transform as anomalib's ``pre_processor``, training batches left un-normalised.

        ``None`` and modules that are not anomalib pre-processors are returned as they are.
        """
        if isinstance(pre_processor, cls) or not isinstance(pre_processor, PreProcessor):
            return pre_processor
        return cls(transform=pre_processor.transform)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Apply the transform without its ``Normalize`` to the training batch."""
        del trainer, pl_module, batch_idx
        head, _ = _split(self.transform)
        if head is not None:
            batch.image, batch.gt_mask = head(batch.image, batch.gt_mask)

    def normalize(self, images: Tensor) -> Tensor:
        """The transform's trailing ``Normalize`` (identity when it has none)."""
        _, tail = _split(self.transform)
        return tail(images) if tail is not None else images
