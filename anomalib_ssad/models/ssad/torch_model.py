# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of SSAD: the shared pretext network given a k-NN scorer.

:func:`build_ssad_network` builds a :class:`~anomalib_ssad.components.PretextNetwork` (backbone, fusion, heads,
classifier) scored by k-NN distances to normal embeddings: every cell of the feature grid by a
:class:`~anomalib_ssad.components.scorers.CellScorer` (``localization="dense"``), or image / window embeddings by
a :class:`~anomalib_ssad.components.scorers.KnnScorer` (one memory bank per head). In training mode the network
returns embeddings and pretext logits; in eval mode an ``InferenceBatch`` with the image score and an anomaly map
at input resolution (cell scores, window scores, or Grad-CAM for ``localization="image"``).

Example:
    >>> import torch
    >>> from anomalib_ssad.models.ssad.torch_model import build_ssad_network
    >>> model = build_ssad_network(backbone="resnet18", pretrained=False, localization="image")
    >>> embeddings, logits = model(torch.rand(4, 3, 64, 64))
    >>> logits.shape
    torch.Size([4, 3])
    >>> model.scorer.fit([embeddings[0]])
    >>> model.eval()(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Sequence

from torch import nn

from anomalib_ssad.components.memory_bank import Sampler, Search
from anomalib_ssad.components.pretext_network import (
    Fusion,
    Localization,
    PatchEmbedding,
    PretextNetwork,
    ScoredFeatures,
)
from anomalib_ssad.components.scorers import BankSource, CellDistance, CellScorer, KnnScorer, ScorerBag
from anomalib_ssad.validation import check_choice, check_positive

__all__ = ["Fusion", "Localization", "PatchEmbedding", "ScoredFeatures", "build_ssad_network"]


def build_ssad_network(
    backbone: str = "efficientnet_lite0",
    pretrained: bool = True,
    weights_path: str | None = None,
    fusion: Fusion = "concat",
    head_dims: Sequence[int] = (512, 512, 128),
    num_classes: int = 3,
    memory_bank_size: int = 2048,
    memory_bank_sampler: Sampler = "random",
    num_neighbors: int = 3,
    localization: Localization = "dense",
    dense_features: ScoredFeatures = "backbone",
    cell_distance: CellDistance = "cosine+euclidean",
    direction_weight: float = 0.5,
    patch_size: int = 32,
    patch_stride: int = 8,
    patch_embedding: PatchEmbedding = "dense",
    patch_batch_size: int = 1024,
    sigma: float = 4.0,
    knn_chunk_size: int = 4096,
    knn_search: Search = "exact",
    memory_bank_source: BankSource = "eval",
    memory_bank_draws: int = 3,
    context_cells: int = 0,
) -> PretextNetwork:
    """SSAD's network: a :class:`~anomalib_ssad.components.PretextNetwork` given SSAD's k-NN scorer.

    Args:
        backbone: Backbone name (see :data:`anomalib_ssad.components.BACKBONES`).
        pretrained: Load ImageNet weights into the backbone.
        weights_path: Optional weights file for the backbone.
        fusion: ``"concat"``: one head on the concatenated pooled stages, one bank; ``"multiply"``: one head
            and one bank per stage, the per-stage scores combined by their geometric mean.
        head_dims: Output sizes of the head's ``Linear -> BatchNorm -> ReLU`` blocks (the last: the embedding).
        num_classes: Pretext classes (normal, big defect, small defect).
        memory_bank_size: Capacity of each memory bank (of each distance's bank in ``"dense"`` mode).
        memory_bank_sampler: How a bank keeps ``memory_bank_size`` of more rows: ``"random"`` or ``"coreset"``.
        num_neighbors: ``k`` of the k-NN score.
        localization: ``"dense"`` (cell scores), ``"image"`` (Grad-CAM on the last stage) or ``"patch"``
            (window scores).
        dense_features: ``"dense"`` mode: the scored embedding of a cell (see :class:`PretextNetwork`).
        cell_distance: ``"dense"`` mode: distance of a cell to the normal cells (see :class:`CellScorer`).
        direction_weight: ``"dense"`` mode: weight of the cosine distance in the mean of two (see
            :class:`CellScorer`).
        patch_size: Window size in pixels for patch-level localization.
        patch_stride: Window stride in pixels.
        patch_embedding: ``"dense"`` (one backbone pass, pooled per window) or ``"crops"`` (each window
            embedded on its own, in batches of ``patch_batch_size``).
        patch_batch_size: Windows per backbone pass in ``"crops"`` mode.
        sigma: Gaussian smoothing of the patch-level map, in pixels (0 disables).
        knn_chunk_size: Rows per chunk of the k-NN search.
        knn_search: ``"exact"`` or ``"faiss"`` (approximate HNSW index; see
            :class:`~anomalib_ssad.components.MemoryBank`).
        memory_bank_source: ``"eval"`` or ``"train"`` (the paper's bank, filled while training; not in
            ``"dense"`` mode): see :class:`~anomalib_ssad.components.KnnScorer`.
        memory_bank_draws: ``"dense"`` mode: scorers, each with its own banks drawn from its own share of the
            normal cells, whose scores are averaged (:class:`~anomalib_ssad.components.scorers.ScorerBag`).
        context_cells: ``"dense"`` mode: each cell is scored beside its mean over ``context_cells`` x
            ``context_cells`` cells (``0``: alone; see :class:`PretextNetwork`). Other modes ignore it.

    Returns:
        The network; its ``scorer`` is fitted by ``scorer.fit(network.normal_embeddings(images))``.
    """
    check_positive(
        memory_bank_size=memory_bank_size,
        num_neighbors=num_neighbors,
        knn_chunk_size=knn_chunk_size,
        memory_bank_draws=memory_bank_draws,
    )
    check_choice("memory_bank_sampler", memory_bank_sampler, Sampler)
    check_choice("dense_features", dense_features, ScoredFeatures)

    if direction_weight != 0.5 and localization != "dense":
        msg = f"direction_weight weighs the distances of dense cells; localization={localization!r} has none."
        raise ValueError(msg)

    def scorer(network: PretextNetwork) -> nn.Module:
        if network.localization == "dense":

            def cell_scorer() -> CellScorer:
                return CellScorer(
                    network.scored_part_sizes,
                    memory_bank_size,
                    cell_distance,
                    num_neighbors,
                    knn_chunk_size,
                    search=knn_search,
                    sampler=memory_bank_sampler,
                    direction_weight=direction_weight,
                )

            return ScorerBag.of(cell_scorer, memory_bank_draws)
        return KnnScorer(
            len(network.heads),
            memory_bank_size,
            num_neighbors,
            knn_chunk_size,
            search=knn_search,
            sampler=memory_bank_sampler,
            source=memory_bank_source,
        )

    return PretextNetwork(
        backbone=backbone,
        pretrained=pretrained,
        weights_path=weights_path,
        fusion=fusion,
        head_dims=head_dims,
        num_classes=num_classes,
        localization=localization,
        # Patch and image modes score the head embedding (the paper's); dense_features is the dense cells' choice.
        scored_features=dense_features if localization == "dense" else "head",
        patch_size=patch_size,
        patch_stride=patch_stride,
        patch_embedding=patch_embedding,
        patch_batch_size=patch_batch_size,
        sigma=sigma,
        context_cells=context_cells if localization == "dense" else 0,
        scorer=scorer,
    )
