# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of CutPaste: the shared pretext network given a Gaussian-density scorer.

:func:`build_cutpaste_network` builds a :class:`~anomalib_ssad.components.PretextNetwork` whose pooled backbone
stages are concatenated and embedded by one projection head for the pretext classifier. The head's embedding
(by default), the pooled stages (as the reference implementation's density estimator) or both are scored by the
Mahalanobis distance to a Gaussian of normal ones (:class:`~anomalib_ssad.components.scorers.GaussianScorer`;
or, ``scorer="knn"``, by their distance to the nearest normal windows: SSAD's
:class:`~anomalib_ssad.components.scorers.CellScorer`, each pooled stage compared apart). In training mode the
network returns embeddings and pretext logits (binary or 3-way); in eval mode an ``InferenceBatch`` with the score
and an anomaly map from closed-form Grad-CAM (``localization="image"``) or from scoring every ``patch_size``
window with the same scorer (``localization="patch"``). ``scorer="knn+gaussian"`` scores the two parts of
``"backbone+head"`` apart: the pooled stages by the k-NN (stage by stage), the head's embedding by the Gaussian,
each in units of a normal window's score; a window gets their mean or (``combine="min"``) the lower of the two
(:class:`~anomalib_ssad.components.scorers.PartScorer`).

Example:
    >>> import torch
    >>> from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network
    >>> model = build_cutpaste_network(backbone="resnet18", pretrained=False, num_classes=2, localization="image")
    >>> embeddings, logits = model(torch.rand(4, 3, 64, 64))
    >>> logits.shape
    torch.Size([4, 2])
    >>> model.eval().scorer.fit(model.normal_embeddings(torch.rand(8, 3, 64, 64)))
    >>> model(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Sequence
from functools import partial
from typing import Literal

from anomalib_ssad.components.pretext_network import Localization, PatchEmbedding, PretextNetwork, ScoredFeatures
from anomalib_ssad.components.scorers import CellScorer, GaussianScorer, PartCombine, PartScorer, Scorer
from anomalib_ssad.validation import check_choice

CutPasteScorer = Literal["gaussian", "knn", "knn+gaussian"]
ImageScore = Literal["peak", "peak*image_gaussian"]


def build_cutpaste_network(
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
    scored_features: ScoredFeatures = "head",
    scorer: CutPasteScorer = "gaussian",
    combine: PartCombine = "mean",
    image_score: ImageScore = "peak",
) -> PretextNetwork:
    """CutPaste's network: backbone, MLP projection head, linear classifier, given its scorer.

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
        scored_features: What the scorer sees: ``"head"`` (the head's embedding), ``"backbone"`` (the pooled
            stages the head takes) or ``"backbone+head"``. This builder defaults to the paper's scoring (a
            Gaussian of the head's embedding); :class:`~anomalib_ssad.CutPaste` defaults to ``"knn+gaussian"``
            on ``"backbone+head"``.
        scorer: ``"gaussian"`` (the paper's: Mahalanobis distance to one Gaussian of normal embeddings),
            ``"knn"`` (distance to the nearest normal windows, each part of ``"backbone+head"`` compared apart:
            SSAD's :class:`~anomalib_ssad.components.scorers.CellScorer`; ``localization="patch"`` only) or
            ``"knn+gaussian"`` (the k-NN of the pooled stages and the Gaussian of the head's embedding, each in
            units of a normal window's score, combined by ``combine``; ``scored_features="backbone+head"`` and
            patches only).
        combine: How ``scorer="knn+gaussian"`` combines its two relative scores: their ``"mean"`` or their
            ``"min"`` (a window is as anomalous as the part that finds it least so). Read by that scorer only.
        image_score: ``"peak"`` (the smoothed map's peak) or ``"peak*image_gaussian"`` (the peak times the
            Mahalanobis distance of the whole image's max-pooled backbone stages to a Gaussian of the training
            images'; ``localization="patch"`` only).

    Returns:
        The network; its ``scorer`` is fitted by ``scorer.fit(network.normal_embeddings(images))``.

    Raises:
        ValueError: For an unknown scorer or image score, a k-NN scorer or an image score other than the peak
            with image-level localization (Grad-CAM needs the Gaussian's gradient; the image is scored alone), or
            ``"knn+gaussian"`` without both backbone and head features.
    """
    check_choice("scorer", scorer, CutPasteScorer)
    check_choice("combine", combine, PartCombine)
    check_choice("image_score", image_score, ImageScore)
    if image_score != "peak" and localization != "patch":
        msg = f"image_score={image_score!r} multiplies the peak of the window map: it needs localization='patch'."
        raise ValueError(msg)
    if scorer != "gaussian" and localization != "patch":
        msg = (
            f"scorer={scorer!r} scores windows: it needs localization='patch', got {localization!r} "
            "(Grad-CAM needs scorer='gaussian')."
        )
        raise ValueError(msg)

    return PretextNetwork(
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
        scored_features=scored_features,
        scorer=partial(build_cutpaste_scorer, scorer, combine=combine),
        image_scorer=None if image_score == "peak" else lambda _: GaussianScorer(),
    )


def build_cutpaste_scorer(scorer: CutPasteScorer, network: PretextNetwork, combine: PartCombine = "mean") -> Scorer:
    """CutPaste's unfitted scorer of what ``network`` scores (its ``scored_features``).

    Args:
        scorer: ``"gaussian"`` (:class:`~anomalib_ssad.components.scorers.GaussianScorer`), ``"knn"``
            (:class:`~anomalib_ssad.components.scorers.CellScorer` on the network's scored parts, the
            backbone's stages apart: :func:`knn_part_sizes`) or
            ``"knn+gaussian"`` (:class:`~anomalib_ssad.components.scorers.PartScorer`: a ``CellScorer`` of the
            backbone part, its stages apart, a ``GaussianScorer`` of the head part).
        network: The network it scores for.
        combine: How ``"knn+gaussian"`` combines its two parts' relative scores (``"min"`` or ``"mean"``).

    Raises:
        ValueError: For ``"knn+gaussian"`` on a network that does not score ``"backbone+head"``.
    """
    if scorer == "knn":
        return CellScorer(knn_part_sizes(network))
    if scorer == "knn+gaussian":
        if network.scored_features != "backbone+head":
            msg = (
                "scorer='knn+gaussian' scores the backbone and head parts apart: it needs "
                f"scored_features='backbone+head', got {network.scored_features!r}."
            )
            raise ValueError(msg)
        backbone_size, head_size = network.scored_part_sizes
        return PartScorer(
            (backbone_size, head_size), [CellScorer(network.stage_sizes), GaussianScorer()], combine=combine
        )
    return GaussianScorer()


def knn_part_sizes(network: PretextNetwork) -> tuple[int, ...]:
    """Parts a k-NN scorer compares apart: each pooled backbone stage, then the head's embedding (as scored).

    Each part gets its own cosine distance, so the deepest stage, the widest, does not outweigh the finer ones.
    """
    if not compares_stages_apart("knn", network.scored_features):
        return network.scored_part_sizes
    return (*network.stage_sizes, *network.scored_part_sizes[1:])


def compares_stages_apart(scorer: CutPasteScorer, scored_features: ScoredFeatures) -> bool:
    """Whether :func:`build_cutpaste_scorer` compares the pooled backbone stages apart (anomalib-ssad 0.4 on).

    True for a k-NN of what holds the backbone's features: ``"knn"`` on anything but the head alone, and
    ``"knn+gaussian"``. A checkpoint of such a scorer saved by 0.3 or earlier holds a bank normalised as one part.
    """
    return scorer == "knn+gaussian" or (scorer == "knn" and scored_features != "head")
