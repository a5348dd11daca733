# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of SSAD: backbone, feature fusion, projection head(s), pretext classifier and memory bank(s).

In training mode the model returns embeddings and pretext logits; in eval mode it returns an
``InferenceBatch`` with the image score (mean cosine distance to the ``k`` nearest bank entries) and an anomaly
map at input resolution, from Grad-CAM (``localization="image"``) or from scoring every ``patch_size`` window
(``localization="patch"``).

Example:
    >>> import torch
    >>> from anomalib_ssad.models.ssad.torch_model import SSADModel
    >>> model = SSADModel(backbone="resnet18", pretrained=False, localization="image")
    >>> embeddings, logits = model(torch.rand(4, 3, 64, 64))
    >>> logits.shape
    torch.Size([4, 3])
    >>> model.memory_banks[0].fill(embeddings[0])
    >>> model.eval()(torch.rand(2, 3, 64, 64)).anomaly_map.shape
    torch.Size([2, 1, 64, 64])
"""

from collections.abc import Sequence
from typing import Literal

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_ssad.components import (
    MemoryBank,
    ProjectionHead,
    assemble_anomaly_map,
    build_backbone,
    crop_patches,
    dense_patch_features,
    gaussian_blur,
    grad_cam,
    knn_cosine_distance,
    knn_cosine_distance_gradient,
    patch_grid_size,
)

Fusion = Literal["concat", "multiply"]
Localization = Literal["image", "patch"]
PatchEmbedding = Literal["dense", "crops"]


class SSADModel(nn.Module):
    """SSAD network.

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
        memory_bank_size: Capacity of each memory bank.
        num_neighbors: ``k`` of the k-NN score.
        localization: ``"image"`` (Grad-CAM on the last stage) or ``"patch"`` (window scores).
        patch_size: Window size in pixels for patch-level localization.
        patch_stride: Window stride in pixels.
        patch_embedding: ``"dense"`` (one backbone pass, pooled per window) or ``"crops"`` (each window
            embedded on its own, in batches of ``patch_batch_size``).
        patch_batch_size: Windows per backbone pass in ``"crops"`` mode.
        sigma: Gaussian smoothing of the patch-level map, in pixels (0 disables).
        knn_chunk_size: Rows per chunk of the k-NN search.
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
        localization: Localization = "patch",
        patch_size: int = 32,
        patch_stride: int = 8,
        patch_embedding: PatchEmbedding = "dense",
        patch_batch_size: int = 1024,
        sigma: float = 4.0,
        knn_chunk_size: int = 4096,
    ) -> None:
        super().__init__()
        if fusion not in {"concat", "multiply"}:
            msg = f"fusion must be 'concat' or 'multiply', got {fusion!r}."
            raise ValueError(msg)
        if localization not in {"image", "patch"}:
            msg = f"localization must be 'image' or 'patch', got {localization!r}."
            raise ValueError(msg)
        if patch_embedding not in {"dense", "crops"}:
            msg = f"patch_embedding must be 'dense' or 'crops', got {patch_embedding!r}."
            raise ValueError(msg)
        self.backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
        self.fusion = fusion
        channels = list(self.backbone.out_channels)
        head_inputs = [sum(channels)] if fusion == "concat" else channels
        self.heads = nn.ModuleList(ProjectionHead(size, head_dims) for size in head_inputs)
        self.classifier = nn.Linear(sum(head.out_features for head in self.heads), num_classes)
        self.memory_banks = nn.ModuleList(MemoryBank(memory_bank_size) for _ in self.heads)
        self.num_neighbors = num_neighbors
        self.localization = localization
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.patch_embedding = patch_embedding
        self.patch_batch_size = patch_batch_size
        self.knn_chunk_size = knn_chunk_size
        self.blur = gaussian_blur(sigma)

    def _group_stages(self, pooled: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Head inputs from per-stage pooled features ``[..., C_i]``: one concatenation, or one per stage."""
        return [torch.cat(list(pooled), dim=-1)] if self.fusion == "concat" else list(pooled)

    def _embed_groups(self, groups: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Run each head on its input ``[..., C]`` (any leading shape)."""
        return [
            head(group.reshape(-1, group.shape[-1])).reshape(*group.shape[:-1], head.out_features)
            for head, group in zip(self.heads, groups, strict=True)
        ]

    def embed(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Image-level embeddings (one per head, ``[B, D]``) and the backbone's stage maps."""
        stage_maps = self.backbone(images)
        pooled = [feature_map.mean(dim=(2, 3)) for feature_map in stage_maps]
        return self._embed_groups(self._group_stages(pooled)), stage_maps

    def patch_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings of every ``patch_size`` window, one ``[B, Gh, Gw, D]`` tensor per head."""
        image_size = (images.shape[-2], images.shape[-1])
        grid = patch_grid_size(image_size, self.patch_size, self.patch_stride)
        if self.patch_embedding == "dense":
            pooled = dense_patch_features(
                self.backbone(images), self.backbone.strides, image_size, self.patch_size, self.patch_stride
            )
            return self._embed_groups(self._group_stages(pooled))
        patches = crop_patches(images, self.patch_size, self.patch_stride)
        chunks = [self.embed(chunk)[0] for chunk in patches.split(self.patch_batch_size)]
        return [
            torch.cat([chunk[index] for chunk in chunks]).reshape(images.shape[0], *grid, -1)
            for index in range(len(self.heads))
        ]

    def bank_embeddings(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings of clean images for the memory banks, ``[N, D]`` per head, matching the scored unit."""
        if self.localization == "patch":
            return [embedding.flatten(0, -2) for embedding in self.patch_embeddings(images)]
        return self.embed(images)[0]

    def _score(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list]:
        """Combined k-NN score of flattened embeddings, with each head's scores and neighbours."""
        results = [
            knn_cosine_distance(embedding, bank.memory_bank, k=self.num_neighbors, chunk_size=self.knn_chunk_size)
            for embedding, bank in zip(embeddings, self.memory_banks, strict=True)
        ]
        head_scores = [score for score, _ in results]
        if len(head_scores) == 1:
            combined = head_scores[0]
        else:
            combined = torch.stack(head_scores).clamp_min(1e-12).log().mean(dim=0).exp()
        return combined, head_scores, [neighbours for _, neighbours in results]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor] | InferenceBatch:
        """Training: ``(embeddings per head, pretext logits)``; eval: ``InferenceBatch`` with score and map."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.training:
            embeddings, _ = self.embed(images)
            return embeddings, self.classifier(torch.cat(embeddings, dim=-1))
        image_size = (images.shape[-2], images.shape[-1])
        if self.localization == "patch":
            patch_embeddings = self.patch_embeddings(images)
            grid = patch_embeddings[0].shape[1:3]
            scores, _, _ = self._score([embedding.flatten(0, -2) for embedding in patch_embeddings])
            grid_scores = scores.reshape(images.shape[0], *grid)
            anomaly_map = assemble_anomaly_map(grid_scores, image_size, self.patch_size, self.blur)
            return InferenceBatch(pred_score=grid_scores.flatten(1).amax(dim=1), anomaly_map=anomaly_map)
        embeddings, stage_maps = self.embed(images)
        score, head_scores, neighbours = self._score(embeddings)
        anomaly_map = self._grad_cam(stage_maps, embeddings, score, head_scores, neighbours, image_size)
        return InferenceBatch(pred_score=score, anomaly_map=anomaly_map)

    def _grad_cam(
        self,
        stage_maps: Sequence[torch.Tensor],
        embeddings: Sequence[torch.Tensor],
        score: torch.Tensor,
        head_scores: Sequence[torch.Tensor],
        neighbours: Sequence[torch.Tensor],
        image_size: tuple[int, int],
    ) -> torch.Tensor:
        """Grad-CAM of the image score on the last stage, scaled so its peak equals the image score.

        Scaling by the score keeps maps comparable across images (a per-image [0, 1] normalisation would give
        every normal image a full-strength hot spot and ruin pixel-level metrics).
        """
        last = stage_maps[-1]
        head_index = len(self.heads) - 1
        head = self.heads[head_index]
        pooled = [feature_map.mean(dim=(2, 3)) for feature_map in stage_maps]
        head_input = self._group_stages(pooled)[head_index]
        embedding_gradient = knn_cosine_distance_gradient(
            embeddings[head_index], self.memory_banks[head_index].memory_bank, neighbours[head_index]
        )
        input_gradient = head.input_gradient(head_input, embedding_gradient)[:, -last.shape[1] :]
        if len(self.heads) > 1:
            # d geometric_mean / d s_last = geometric_mean / (n * s_last)
            chain = score / (len(self.heads) * head_scores[head_index].clamp_min(1e-12))
            input_gradient = input_gradient * chain[:, None]
        cam = grad_cam(last, input_gradient, image_size)
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
        return cam / peak[:, None, None, None] * score[:, None, None, None]
