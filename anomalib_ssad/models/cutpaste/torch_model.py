# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of CutPaste: the shared pretext network scored by a Gaussian density of normal embeddings.

In training mode the model returns embeddings and pretext logits (binary or 3-way); in eval mode it returns an
``InferenceBatch`` with the Mahalanobis distance of the embedding to the Gaussian fitted on normal training
embeddings, and an anomaly map from closed-form Grad-CAM (``localization="image"``) or from scoring every
``patch_size`` window with the same Gaussian (``localization="patch"``).

Example:
    >>> import torch
    >>> from anomalib_ssad.models.cutpaste.torch_model import CutPasteModel
    >>> model = CutPasteModel(backbone="resnet18", pretrained=False, num_classes=2, localization="image")
    >>> embeddings, logits = model(torch.rand(4, 3, 64, 64))
    >>> logits.shape
    torch.Size([4, 2])
    >>> model.density.fit(torch.randn(32, 128))
    >>> model.eval()(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Sequence

import torch

from anomalib_ssad.components import GaussianDensity
from anomalib_ssad.components.pretext_network import Localization, PatchEmbedding, PretextNetwork


class CutPasteModel(PretextNetwork):
    """CutPaste network: backbone, MLP projection head, linear classifier and a Gaussian density.

    The pooled backbone stages are concatenated and embedded by one
    :class:`~anomalib_ssad.components.ProjectionHead`; the score is the Mahalanobis distance of that embedding
    under :class:`~anomalib_ssad.components.GaussianDensity`.

    Args:
        backbone: Backbone name (see :data:`anomalib_ssad.components.BACKBONES`).
        pretrained: Load ImageNet weights into the backbone.
        weights_path: Optional weights file for the backbone.
        head_dims: Output sizes of the head's ``Linear -> BatchNorm -> ReLU`` blocks; the last is the embedding.
        num_classes: Pretext classes: 2 (normal vs CutPaste or Scar) or 3 (normal / CutPaste / Scar).
        localization: ``"patch"`` (window scores, the default) or ``"image"`` (Grad-CAM on the last stage).
        patch_size: Window size in pixels for patch-level localization (the paper: 64 px at 256 px).
        patch_stride: Window stride in pixels (the paper: 4; 8 or 16 here for CPU budgets).
        patch_embedding: ``"dense"`` (one backbone pass, pooled per window) or ``"crops"`` (each window
            embedded on its own, as the paper does).
        patch_batch_size: Windows per backbone pass in ``"crops"`` mode.
        sigma: Gaussian smoothing of the patch-level map, in pixels (0 disables).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        weights_path: str | None = None,
        head_dims: Sequence[int] = (512, 512, 128),
        num_classes: int = 3,
        localization: Localization = "patch",
        patch_size: int = 64,
        patch_stride: int = 16,
        patch_embedding: PatchEmbedding = "crops",
        patch_batch_size: int = 256,
        sigma: float = 4.0,
    ) -> None:
        super().__init__(
            backbone=backbone,
            pretrained=pretrained,
            weights_path=weights_path,
            fusion="concat",
            head_dims=head_dims,
            num_classes=num_classes,
            localization=localization,
            patch_size=patch_size,
            patch_stride=patch_stride,
            patch_embedding=patch_embedding,
            patch_batch_size=patch_batch_size,
            sigma=sigma,
        )
        self.density = GaussianDensity()

    def score(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mahalanobis distance of the head's embeddings ``[N, D]`` to the fitted Gaussian, ``[N]``."""
        return self.density.score(embeddings[0])

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mahalanobis distance and its closed-form gradient ``P (z - mean) / distance``."""
        score = self.score(embeddings)
        return score, self.density.score_gradient(embeddings[0], score)
