# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Network shared by SSAD and CutPaste: backbone, feature fusion, projection head(s), pretext classifier.

Three localization modes, each with the pretext task that matches what it scores:

- ``"dense"``: one backbone pass per image; every cell of the stride-8 grid gets a locally aware feature
  (:func:`~anomalib_ssad.components.patch_grid.local_cell_features` of the first two stages) and a head
  embedding. Training classifies every cell of images with synthetic defects (the labels come from the defects'
  masks); scoring embeds every cell of the test image the same way, optionally beside the cell's mean over a
  wider neighbourhood (``context_cells``: a coarser scale of the same embedding).
- ``"patch"``: the paper's patch level: training on ``patch_size`` crops, scoring every window of a sliding
  grid (windows pooled from one pass, or each window cropped and embedded alone).
- ``"image"``: whole-image embeddings; the anomaly map is Grad-CAM of the image score.

In every mode the scorer sees the backbone features (pooled per window or image; locally aware per cell), the
head's embedding of them, or both side by side (``scored_features``). The network is given its scorer
(:mod:`~anomalib_ssad.components.scorers`: k-NN memory bank, Gaussian, dense cells), built for it by a function
of the network (which may read its heads or cell embedding layout). Training mode returns the head embeddings and
the pretext logits (per cell in ``"dense"`` mode); eval mode returns an ``InferenceBatch``.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.pretext_network import PretextNetwork
    >>> from anomalib_ssad.components.scorers import GaussianScorer
    >>> model = PretextNetwork(
    ...     backbone="resnet18", pretrained=False, localization="image", scorer=lambda network: GaussianScorer()
    ... )
    >>> model.scorer.fit(model.eval().normal_embeddings(torch.rand(16, 3, 64, 64)))
    >>> model(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_ssad.validation import check_choice, check_non_negative, check_positive

from .backbone import build_backbone
from .grad_cam import grad_cam
from .patch_grid import (
    crop_patches,
    dense_patch_features,
    gaussian_blur,
    grid_inference_batch,
    local_cell_features,
    patch_grid_size,
    with_cell_context,
)
from .projection_head import ProjectionHead

Fusion = Literal["concat", "multiply"]
Localization = Literal["dense", "image", "patch"]
PatchEmbedding = Literal["dense", "crops"]
ScoredFeatures = Literal["backbone+head", "head", "backbone"]

# Stages of the locally aware cell features in "dense" mode: strides 8 and 16 (ResNet's layer2 and layer3,
# PatchCore's choice); the coarsest stage adds little but blur at the image sizes used here.
DENSE_STAGES = (0, 1)


class PretextNetwork(nn.Module):
    """Backbone, projection head(s), pretext classifier and the scorer it is given.

    Args:
        backbone: Backbone name (see :data:`anomalib_ssad.components.BACKBONES`).
        pretrained: Load ImageNet weights into the backbone.
        weights_path: Optional weights file for the backbone.
        fusion: ``"concat"``: one head on the concatenated pooled stages; ``"multiply"``: one head per stage.
        head_dims: Output sizes of the head's ``Linear -> BatchNorm -> ReLU`` blocks; the last is the embedding.
        num_classes: Pretext classes.
        localization: ``"dense"`` (cell scores), ``"image"`` (Grad-CAM on the last stage) or ``"patch"``
            (window scores).
        scored_features: What the scorer sees of a cell, window or image: the backbone feature the head takes
            (``"backbone"``: locally aware per cell, the pooled stages per window or image), the head's embedding
            of it (``"head"``) or both side by side (``"backbone+head"``).
        patch_size: Window size in pixels for patch-level localization.
        patch_stride: Window stride in pixels.
        patch_embedding: ``"dense"`` (one backbone pass, pooled per window) or ``"crops"`` (each window
            embedded on its own, in batches of ``patch_batch_size``).
        patch_batch_size: Windows per backbone pass in ``"crops"`` mode.
        sigma: Gaussian smoothing of the patch-level map, in pixels (0 disables).
        context_cells: ``"dense"`` mode: score each cell's embedding beside its mean over ``context_cells`` x
            ``context_cells`` cells (odd; :func:`~anomalib_ssad.components.patch_grid.with_cell_context`), or
            the cell alone (``0``).
        scorer: Builds the scorer from the finished network (e.g. ``lambda network: KnnScorer(len(network.heads))``;
            see :mod:`~anomalib_ssad.components.scorers`); it is kept as ``self.scorer``.
        image_scorer: ``"dense"`` and ``"patch"`` modes: builds a scorer of the whole image's max-pooled backbone
            stages (:meth:`image_features`), kept as ``self.image_scorer``; its (positive) score multiplies the
            map's peak to give the image score. ``None`` (the default): the image score is the map's peak.

    Raises:
        ValueError: For an unknown ``fusion``, ``localization`` or ``patch_embedding``, a size out of range, or
            ``context_cells`` outside ``"dense"`` mode.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        weights_path: str | None = None,
        fusion: Fusion = "concat",
        head_dims: Sequence[int] = (512, 512, 128),
        num_classes: int = 3,
        localization: Localization = "dense",
        scored_features: ScoredFeatures = "backbone",
        patch_size: int = 32,
        patch_stride: int = 8,
        patch_embedding: PatchEmbedding = "dense",
        patch_batch_size: int = 1024,
        sigma: float = 4.0,
        context_cells: int = 0,
        *,
        scorer: Callable[["PretextNetwork"], nn.Module],
        image_scorer: Callable[["PretextNetwork"], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_choice("fusion", fusion, Fusion)
        check_choice("localization", localization, Localization)
        check_choice("scored_features", scored_features, ScoredFeatures)
        check_choice("patch_embedding", patch_embedding, PatchEmbedding)
        check_positive(patch_size=patch_size, patch_stride=patch_stride, patch_batch_size=patch_batch_size)
        check_non_negative(sigma=sigma)
        if context_cells and (context_cells < 3 or context_cells % 2 == 0):
            msg = f"context_cells must be 0 (off) or an odd number >= 3 of cells, got {context_cells!r}."
            raise ValueError(msg)
        if context_cells and localization != "dense":
            msg = f"context_cells widens the cells of localization='dense'; localization={localization!r} has none."
            raise ValueError(msg)
        if image_scorer is not None and localization == "image":
            msg = "image_scorer multiplies the peak of a cell or window map; localization='image' scores images alone."
            raise ValueError(msg)
        if not head_dims or min(head_dims) < 1:
            msg = f"head_dims must be a non-empty list of positive sizes, got {list(head_dims)!r}."
            raise ValueError(msg)
        if num_classes < 2:
            msg = f"num_classes must be >= 2, got {num_classes!r}."
            raise ValueError(msg)
        self.backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
        self.fusion = fusion
        self.localization = localization
        self.heads = nn.ModuleList(ProjectionHead(sum(stages), head_dims) for stages in self._head_stages())
        self.classifier = nn.Linear(sum(head.out_features for head in self.heads), num_classes)
        self.scored_features = scored_features
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.patch_embedding = patch_embedding
        self.patch_batch_size = patch_batch_size
        self.blur = gaussian_blur(sigma)
        self.context_cells = context_cells
        self.scorer = scorer(self)
        self.image_scorer = image_scorer(self) if image_scorer is not None else None

    def _group_stages(self, pooled: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Head inputs from per-stage pooled features ``[..., C_i]``: one concatenation, or one per stage."""
        return [torch.cat(list(pooled), dim=-1)] if self.fusion == "concat" else list(pooled)

    def _embed_groups(self, groups: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run each head on its input ``[..., C]`` (any leading shape)."""
        return [
            head(group.reshape(-1, group.shape[-1])).reshape(*group.shape[:-1], head.out_features)
            for head, group in zip(self.heads, groups, strict=True)
        ]

    def _scored(self, groups: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What the scorer sees of head inputs ``[..., C]`` (one per head): see ``scored_features``."""
        if self.scored_features == "backbone":
            return list(groups)
        embeddings = self._embed_groups(groups)
        if self.scored_features == "head":
            return embeddings
        return [torch.cat([group, embedding], dim=-1) for group, embedding in zip(groups, embeddings, strict=True)]

    def _image_groups(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Head inputs of whole images (``[B, C]`` per head: pooled stages) and the backbone's stage maps."""
        stage_maps = self.backbone(images)
        return self._group_stages([feature_map.mean(dim=(2, 3)) for feature_map in stage_maps]), stage_maps

    def embed(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Image-level head embeddings (one per head, ``[B, D]``) and the backbone's stage maps.

        In ``"dense"`` mode the image embedding is the mean of the cells' head embeddings.
        """
        if self.localization == "dense":
            stage_maps = self.backbone(images)
            return [self.cell_embeddings(_cells(stage_maps)).mean(dim=(1, 2))], stage_maps
        groups, stage_maps = self._image_groups(images)
        return self._embed_groups(groups), stage_maps

    def freeze_unused_backbone(self) -> None:
        """Stop gradients of backbone parameters that the scored stages do not depend on.

        ``"dense"`` mode uses the first two stages only: the deepest stage's parameters get no gradient, which
        DDP rejects (it expects every trainable parameter in the loss). Found by one probe backward pass.
        """
        if self.localization != "dense":
            return
        parameters = [parameter for parameter in self.backbone.parameters() if parameter.requires_grad]
        device = parameters[0].device if parameters else torch.device("cpu")
        probe = torch.zeros(1, 3, 64, 64, device=device)
        with torch.enable_grad():
            stage_maps = self.backbone(probe)
            total = sum(stage_maps[index].sum() for index in DENSE_STAGES)
            gradients = torch.autograd.grad(total, parameters, allow_unused=True)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            if gradient is None:
                parameter.requires_grad_(False)

    @property
    def cell_stride(self) -> int:
        """Pixels per cell of the ``"dense"`` grid (the stride of the finest stage used)."""
        return self.backbone.strides[DENSE_STAGES[0]]

    def cell_features(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware backbone features of every cell, ``[B, Gh, Gw, C]``."""
        return _cells(self.backbone(images))

    def cell_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Head embeddings ``[..., D]`` of cell features ``[..., C]`` (any leading shape)."""
        return self._embed_groups([features])[0]

    def dense_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scored embedding of every cell, ``[B, Gh, Gw, D]`` (one tensor: ``"dense"`` mode has one head).

        ``"backbone+head"`` concatenates the locally aware backbone feature and the head embedding; with
        ``context_cells`` the whole is followed by its mean over the cell's neighbourhood. The scorer compares
        the parts (:attr:`scored_part_sizes`; :class:`~anomalib_ssad.components.scorers.CellScorer`).
        """
        embedding = self._scored([self.cell_features(images)])[0]
        return [with_cell_context(embedding, self.context_cells) if self.context_cells else embedding]

    @property
    def scored_part_sizes(self) -> tuple[int, ...]:
        """Sizes of the parts of the last head's scored embedding (backbone feature, head embedding).

        With ``context_cells`` the parts repeat for the cell's context. A scorer that compares the parts apart
        (:class:`~anomalib_ssad.components.scorers.CellScorer`) reads them.
        """
        head = self.heads[-1]
        parts = {
            "backbone": (head.in_features,),
            "head": (head.out_features,),
            "backbone+head": (head.in_features, head.out_features),
        }[self.scored_features]
        return parts * 2 if self.context_cells else parts

    def _head_stages(self) -> list[tuple[int, ...]]:
        """Channels of the backbone stages that feed each head, in order; a head's input is their concatenation.

        ``"dense"`` localization: one head on the locally aware features of every cell (the ``DENSE_STAGES``);
        otherwise one head on all stages (``"concat"`` fusion) or one head per stage (``"multiply"``).
        """
        channels = tuple(self.backbone.out_channels)
        if self.localization == "dense":
            return [tuple(channels[index] for index in DENSE_STAGES)]
        return [channels] if self.fusion == "concat" else [(size,) for size in channels]

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Channels of the backbone stages that make up the last head's input, in order (they sum to its size).

        A scorer that compares the stages apart (a cosine distance per stage, so the deepest and widest stage
        does not outweigh the finer ones) reads them.
        """
        return self._head_stages()[-1]

    def patch_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scored embeddings of every ``patch_size`` window, one ``[B, Gh, Gw, D]`` tensor per head."""
        image_size = (images.shape[-2], images.shape[-1])
        grid = patch_grid_size(image_size, self.patch_size, self.patch_stride)
        if self.patch_embedding == "dense":
            pooled = dense_patch_features(
                self.backbone(images), self.backbone.strides, image_size, self.patch_size, self.patch_stride
            )
            return self._scored(self._group_stages(pooled))
        patches = crop_patches(images, self.patch_size, self.patch_stride)
        # A loop over chunks would pin the batch size into an exported graph: exports embed all windows at once.
        batches = [patches] if torch.compiler.is_exporting() else patches.split(self.patch_batch_size)
        chunks = [self._scored(self._image_groups(chunk)[0]) for chunk in batches]
        return [
            torch.cat([chunk[index] for chunk in chunks]).reshape(images.shape[0], *grid, -1)
            for index in range(len(self.heads))
        ]

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Each backbone stage's channel maxima over the whole image, concatenated: ``[B, C]``.

        What :attr:`image_scorer` scores: a small defect raises a channel's maximum where it barely moves its mean.
        """
        return torch.cat([feature_map.amax(dim=(2, 3)) for feature_map in self.backbone(images)], dim=-1)

    def normal_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Scored embeddings of clean images to fit the normal model, ``[N, D]`` per head (cells, windows or images)."""
        if self.localization == "dense":
            return [embedding.flatten(0, -2) for embedding in self.dense_embeddings(images)]
        if self.localization == "patch":
            return [embedding.flatten(0, -2) for embedding in self.patch_embeddings(images)]
        groups, _ = self._image_groups(images)
        return self._scored(groups)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor] | InferenceBatch:
        """Training: ``(embeddings per head, pretext logits)``; eval: ``InferenceBatch`` with score and map.

        In ``"dense"`` mode the training outputs are per cell: embeddings ``[B, Gh, Gw, D]`` and logits
        ``[B, Gh, Gw, num_classes]``.
        """
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.training:
            if self.localization == "dense":
                embedding = self.cell_embeddings(self.cell_features(images))
                return [embedding], self.classifier(embedding)
            embeddings, _ = self.embed(images)
            return embeddings, self.classifier(torch.cat(embeddings, dim=-1))
        image_size = (images.shape[-2], images.shape[-1])
        if self.localization in {"dense", "patch"}:
            grid_scores, window = self._grid_scores(images)
            batch = grid_inference_batch(grid_scores, image_size, window, self.blur)
            if self.image_scorer is None:
                return batch
            return batch._replace(pred_score=batch.pred_score * self.image_scorer([self.image_features(images)]))
        groups, stage_maps = self._image_groups(images)
        score, embedding_gradient = self.scorer.score_with_gradient(self._scored(groups))
        anomaly_map = self._grad_cam(stage_maps, groups[-1], embedding_gradient, score, image_size)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)

    def _grid_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Scores ``[B, Gh, Gw]`` of the cells (dense) or windows (patch), and the window width that places them."""
        if self.localization == "dense":
            embedding = self.dense_embeddings(images)[0]
            # Scores sit at the cell centres; a window of one cell width makes assemble_anomaly_map put them there.
            return self.scorer([embedding.flatten(0, -2)]).reshape(embedding.shape[:3]), self.cell_stride
        patch_embeddings = self.patch_embeddings(images)
        scores = self.scorer([embedding.flatten(0, -2) for embedding in patch_embeddings])
        return scores.reshape(images.shape[0], *patch_embeddings[0].shape[1:3]), self.patch_size

    def _grad_cam(
        self,
        stage_maps: Sequence[torch.Tensor],
        head_input: torch.Tensor,
        embedding_gradient: torch.Tensor,
        score: torch.Tensor,
        image_size: tuple[int, int],
    ) -> torch.Tensor:
        """Grad-CAM of the image score on the last stage, scaled so its peak equals the image score.

        ``head_input`` is the last head's input (pooled stages) and ``embedding_gradient`` the score's gradient
        with respect to what the scorer saw of it (``scored_features``). Scaling by the score keeps maps
        comparable across images (a per-image [0, 1] normalisation would give every normal image a full-strength
        hot spot and ruin pixel-level metrics).
        """
        last = stage_maps[-1]
        head = self.heads[-1]
        if self.scored_features == "backbone":
            input_gradient = embedding_gradient
        elif self.scored_features == "head":
            input_gradient = head.input_gradient(head_input, embedding_gradient)
        else:
            size = head_input.shape[-1]
            input_gradient = embedding_gradient[:, :size] + head.input_gradient(
                head_input, embedding_gradient[:, size:]
            )
        cam = grad_cam(last, input_gradient[:, -last.shape[1] :], image_size)
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
        return cam / peak[:, None, None, None] * score[:, None, None, None]


def _cells(stage_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Locally aware ``"dense"``-mode features of every cell, channels last: ``[B, Gh, Gw, C]``."""
    return local_cell_features(stage_maps, DENSE_STAGES).permute(0, 2, 3, 1)
