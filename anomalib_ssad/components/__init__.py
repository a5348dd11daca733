# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Building blocks shared by the plugin's models (SSAD, CutPaste).

- synthetic anomalies for the pretext task: the :mod:`~anomalib_ssad.components.synthetic` package
  (:class:`SyntheticAnomalyGenerator`), on object masks (:class:`ObjectMasker`), on training batches the
  :class:`PretextPreProcessor` leaves un-normalised;
- backbones with offline-capable ImageNet weights: :func:`build_backbone`;
- the projection head: :class:`ProjectionHead`;
- the memory bank and its chunked k-NN search: :class:`MemoryBank`, :func:`knn_cosine_distance`;
- the Gaussian density (Mahalanobis distance): :class:`GaussianDensity`, :func:`ledoit_wolf`;
- the scorers a network is given: :class:`KnnScorer`, :class:`GaussianScorer`, :class:`CellScorer`,
  :class:`PartScorer` (one scorer per part of an embedding) and :class:`ScorerBag` (the mean of several, each
  fitted on its own share of the rows);
- the network both models share (backbone, fusion, heads, classifier, localization): :class:`PretextNetwork`;
- localization: :func:`local_cell_features`, :func:`with_cell_context` and :func:`cell_labels` (dense, the default),
  :func:`grad_cam` (image level), :func:`dense_patch_features` / :func:`crop_patches` (windows) and
  :func:`assemble_anomaly_map`;
- anomalib's post-processor with a memory-bounded pixel threshold: :class:`SubgridPostProcessor`.
"""

from .backbone import BACKBONES, DOWNLOAD_TIMEOUT_SECONDS, BackboneWeightsError, FeatureExtractor, build_backbone
from .gaussian_density import GaussianDensity, ledoit_wolf
from .grad_cam import grad_cam
from .memory_bank import MemoryBank, knn_cosine_distance, knn_cosine_distance_gradient
from .object_mask import ObjectMasker, compute_object_mask
from .patch_grid import (
    assemble_anomaly_map,
    cell_labels,
    crop_patches,
    dense_patch_features,
    gaussian_blur,
    local_cell_features,
    patch_grid_size,
    with_cell_context,
)
from .post_processor import SubgridPostProcessor
from .pre_processor import PretextPreProcessor
from .pretext_network import PretextNetwork
from .projection_head import ProjectionHead
from .scorers import CellScorer, GaussianScorer, KnnScorer, PartScorer, ScorerBag
from .synthetic import SyntheticAnomalyGenerator

__all__ = [
    "BACKBONES",
    "DOWNLOAD_TIMEOUT_SECONDS",
    "BackboneWeightsError",
    "CellScorer",
    "FeatureExtractor",
    "GaussianDensity",
    "GaussianScorer",
    "KnnScorer",
    "MemoryBank",
    "ObjectMasker",
    "PartScorer",
    "PretextNetwork",
    "PretextPreProcessor",
    "ProjectionHead",
    "ScorerBag",
    "SubgridPostProcessor",
    "SyntheticAnomalyGenerator",
    "assemble_anomaly_map",
    "build_backbone",
    "cell_labels",
    "compute_object_mask",
    "crop_patches",
    "dense_patch_features",
    "gaussian_blur",
    "grad_cam",
    "knn_cosine_distance",
    "knn_cosine_distance_gradient",
    "ledoit_wolf",
    "local_cell_features",
    "patch_grid_size",
    "with_cell_context",
]
