# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of SSAD: the shared pretext network (backbone, fusion, heads, classifier) and memory bank(s).

In training mode the model returns embeddings and pretext logits; in eval mode it returns an
``InferenceBatch`` with the image score (k-NN distance to normal embeddings) and an anomaly
map at input resolution, from scoring every cell of the feature grid (``localization="dense"``), from Grad-CAM
(``localization="image"``) or from scoring every ``patch_size`` window (``localization="patch"``).

Example:
    >>> import torch
    >>> from anomalib_ssad.models.ssad.torch_model import SSADModel
    >>> model = SSADModel(backbone="resnet18", pretrained=False, localization="image")
    >>> embeddings, logits = model(torch.rand(4, 3, 64, 64))
    >>> logits.shape
    torch.Size([4, 3])
    >>> model.fit_memory_banks([embeddings[0]])
    >>> model.eval()(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Sequence

import torch
from torch import nn

from anomalib_ssad.components import MemoryBank, knn_cosine_distance_gradient
from anomalib_ssad.components.memory_bank import CellDistance, CellScorer, Sampler, Search
from anomalib_ssad.components.pretext_network import (
    DenseFeatures,
    Fusion,
    Localization,
    PatchEmbedding,
    PretextNetwork,
)
from anomalib_ssad.validation import check_positive

__all__ = ["DenseFeatures", "Fusion", "Localization", "PatchEmbedding", "SSADModel"]


class SSADModel(PretextNetwork):
    """SSAD network: :class:`~anomalib_ssad.components.pretext_network.PretextNetwork` scored by k-NN.

    Args:
        backbone: Backbone name (see :data:`anomalib_ssad.components.BACKBONES`).
        pretrained: Load ImageNet weights into the backbone.
        weights_path: Optional weights file for the backbone.
        fusion: ``"concat"``: one head on the concatenated pooled stages, one bank; ``"multiply"``: one head
            and one bank per stage, the per-stage scores combined by their geometric mean (a product that
            stays in ``[0, 1]``).
        head_dims: Output sizes of the head's ``Linear -> BatchNorm -> ReLU`` blocks; the first is the
            fully-connected reduction (e.g. 896 -> 512), the last the embedding size.
        num_classes: Pretext classes (normal, big defect, small defect).
        memory_bank_size: Capacity of each memory bank (of each distance's bank in ``"dense"`` mode).
        num_neighbors: ``k`` of the k-NN score.
        localization: ``"dense"`` (cell scores), ``"image"`` (Grad-CAM on the last stage) or ``"patch"``
            (window scores).
        dense_features: ``"dense"`` mode: the scored embedding of a cell (see :class:`PretextNetwork`).
        cell_distance: ``"dense"`` mode: distance of a cell to the normal cells (see :class:`CellScorer`).
        patch_size: Window size in pixels for patch-level localization.
        patch_stride: Window stride in pixels.
        patch_embedding: ``"dense"`` (one backbone pass, pooled per window) or ``"crops"`` (each window
            embedded on its own, in batches of ``patch_batch_size``).
        patch_batch_size: Windows per backbone pass in ``"crops"`` mode.
        sigma: Gaussian smoothing of the patch-level map, in pixels (0 disables).
        knn_chunk_size: Rows per chunk of the k-NN search.
        knn_search: ``"exact"`` or ``"faiss"`` (approximate HNSW index; see
            :class:`~anomalib_ssad.components.MemoryBank`).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        weights_path: str | None = None,
        fusion: Fusion = "concat",
        head_dims: Sequence[int] = (512, 512, 128),
        num_classes: int = 3,
        memory_bank_size: int = 2048,
        num_neighbors: int = 3,
        localization: Localization = "dense",
        dense_features: DenseFeatures = "backbone",
        cell_distance: CellDistance = "cosine+euclidean",
        patch_size: int = 32,
        patch_stride: int = 8,
        patch_embedding: PatchEmbedding = "dense",
        patch_batch_size: int = 1024,
        sigma: float = 4.0,
        knn_chunk_size: int = 4096,
        knn_search: Search = "exact",
    ) -> None:
        super().__init__(
            backbone=backbone,
            pretrained=pretrained,
            weights_path=weights_path,
            fusion=fusion,
            head_dims=head_dims,
            num_classes=num_classes,
            localization=localization,
            dense_features=dense_features,
            patch_size=patch_size,
            patch_stride=patch_stride,
            patch_embedding=patch_embedding,
            patch_batch_size=patch_batch_size,
            sigma=sigma,
        )
        check_positive(memory_bank_size=memory_bank_size, num_neighbors=num_neighbors, knn_chunk_size=knn_chunk_size)
        # "dense" cells have their own scorer; "patch" windows and "image" embeddings one cosine bank per head.
        dense = localization == "dense"
        self.memory_banks = nn.ModuleList(
            () if dense else (MemoryBank(memory_bank_size, search=knn_search) for _ in self.heads)
        )
        self.cell_scorer = (
            CellScorer(
                self.dense_part_sizes, memory_bank_size, cell_distance, num_neighbors, knn_chunk_size, search=knn_search
            )
            if dense
            else None
        )
        self.num_neighbors = num_neighbors
        self.knn_chunk_size = knn_chunk_size

    def fit_memory_banks(
        self,
        embeddings: Sequence[torch.Tensor],
        generator: torch.Generator | None = None,
        sampler: Sampler = "random",
    ) -> None:
        """Fit the scorer on normal embeddings (``[N, D]`` per head): the cell scorer or the banks."""
        if self.cell_scorer is not None:
            self.cell_scorer.fit(embeddings[0], generator=generator, sampler=sampler)
            return
        for bank, embedding in zip(self.memory_banks, embeddings, strict=True):
            bank.fill(embedding, generator=generator, sampler=sampler)

    def _knn(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list]:
        """Combined k-NN score of flattened embeddings, with each head's scores and neighbours."""
        if self.cell_scorer is not None:
            score = self.cell_scorer(embeddings[0])
            return score, [score], []
        results = [
            bank.nearest(embedding, k=self.num_neighbors, chunk_size=self.knn_chunk_size)
            for embedding, bank in zip(embeddings, self.memory_banks, strict=True)
        ]
        head_scores = [score for score, _ in results]
        if len(head_scores) == 1:
            combined = head_scores[0]
        else:
            combined = torch.stack(head_scores).clamp_min(1e-12).log().mean(dim=0).exp()
        return combined, head_scores, [neighbours for _, neighbours in results]

    def score(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean cosine distance to the ``k`` nearest bank entries (geometric mean over heads), ``[N]``.

        ``"dense"`` cells are scored by the :class:`CellScorer` instead.
        """
        return self._knn(embeddings)[0]

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """k-NN score and its closed-form gradient with respect to the last head's embedding (fixed neighbours)."""
        score, head_scores, neighbours = self._knn(embeddings)
        head_index = len(self.heads) - 1
        gradient = knn_cosine_distance_gradient(
            embeddings[head_index], self.memory_banks[head_index].memory_bank, neighbours[head_index]
        )
        if len(self.heads) > 1:
            # d geometric_mean / d s_last = geometric_mean / (n * s_last)
            gradient = gradient * (score / (len(self.heads) * head_scores[head_index].clamp_min(1e-12)))[:, None]
        return score, gradient
