# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Patch-GANomaly as an anomalib model: GANomaly trained on patches of normal images, scored window by window.

Every training step cuts ``crops_per_image`` random ``patch_size`` crops out of each normal image and trains
anomalib's GANomaly generator and discriminator on them with anomalib's losses (adversarial, contextual L1,
latent) and Adam, exactly as anomalib's :class:`~anomalib.models.Ganomaly` trains on whole images. At inference
every window of a sliding grid is scored (:class:`~.torch_model.PatchGanomalyModel`): the anomaly map interpolates
and smooths the window scores and the image score is its peak, so the model runs on images of any size
at least one patch wide. ``pretrained_encoder=True`` is the transfer-learning variant (ImageNet encoders).

Unlike anomalib's GANomaly, scores are not min-max normalised with the test set's own extremes: the
post-processor normalises them with statistics of the validation set, as for every other model.

Example:
    >>> from anomalib_ssad import PatchGanomaly
    >>> model = PatchGanomaly(patch_size=64, patch_stride=32, epochs=20)  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_ssad.PatchGanomaly --data anomalib.data.MVTecAD --data.category bottle``
"""

from typing import Any

import torch
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.image.ganomaly.loss import DiscriminatorLoss, GeneratorLoss
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn, optim

from anomalib_ssad.components.patch_grid import random_crops
from anomalib_ssad.models.base import PluginAnomalyModule, seeded
from anomalib_ssad.validation import check_positive

from .torch_model import PatchGanomalyModel, PatchScore


class PatchGanomaly(PluginAnomalyModule):
    """Patch-wise GANomaly: a comparison baseline with a patch-level anomaly map.

    Args:
        patch_size: Side of the training crops and scoring windows, in pixels (a power of two, >= 32).
        patch_stride: Stride of the scoring windows, in pixels.
        crops_per_image: Random crops per training image and epoch.
        batch_size: Crops per optimizer step.
        epochs: Training epochs (replaces ``trainer.max_epochs``).
        n_features: Feature maps of GANomaly's first convolution (anomalib's GANomaly: 64).
        latent_vec_size: Size of the latent vector.
        extra_layers: Extra convolution layers in encoders and decoder.
        wadv: Weight of the adversarial (feature-matching) loss.
        wcon: Weight of the contextual (L1 reconstruction) loss.
        wenc: Weight of the latent (encoder) loss.
        lr: Adam learning rate of generator and discriminator.
        beta1: Adam ``beta1``.
        beta2: Adam ``beta2``.
        pretrained_encoder: Transfer-learning variant: both encoders start from ImageNet weights.
        backbone: Backbone of those encoders (``efficientnet_lite0`` works offline).
        weights_path: Optional local weights file of that backbone.
        score: Window score: ``"latent"`` (GANomaly's) or ``"reconstruction"``.
        sigma: Gaussian smoothing of the anomaly map, in pixels (0 disables).
        seed: Seed of the networks' initialisation, the crops and, while fitting, the process.
        pre_processor: Pre-processor (``True``: resize to 256 px and ImageNet normalisation).
        post_processor: Post-processor (``True``: :class:`~anomalib_ssad.components.SubgridPostProcessor`).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).

    Raises:
        ValueError: For a value out of range (the message names the argument).
    """

    def __init__(
        self,
        patch_size: int = 32,
        patch_stride: int = 16,
        crops_per_image: int = 8,
        batch_size: int = 64,
        epochs: int = 10,
        n_features: int = 32,
        latent_vec_size: int = 100,
        extra_layers: int = 0,
        wadv: float = 1.0,
        wcon: float = 50.0,
        wenc: float = 1.0,
        lr: float = 0.0002,
        beta1: float = 0.5,
        beta2: float = 0.999,
        pretrained_encoder: bool = False,
        backbone: str = "efficientnet_lite0",
        weights_path: str | None = None,
        score: PatchScore = "latent",
        sigma: float = 4.0,
        seed: int = 0,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        check_positive(crops_per_image=crops_per_image, batch_size=batch_size, epochs=epochs, lr=lr)
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        with seeded(seed):
            self.model = PatchGanomalyModel(
                patch_size=patch_size,
                patch_stride=patch_stride,
                n_features=n_features,
                latent_vec_size=latent_vec_size,
                extra_layers=extra_layers,
                pretrained_encoder=pretrained_encoder,
                backbone=backbone,
                weights_path=weights_path,
                score=score,
                sigma=sigma,
            )
        self.generator_loss = GeneratorLoss(wadv, wcon, wenc)
        self.discriminator_loss = DiscriminatorLoss()
        self.automatic_optimization = False
        self.crops_per_image = crops_per_image
        self.batch_size = batch_size
        self.epochs = epochs
        self._crop_rng = torch.Generator().manual_seed(seed)

    @property
    def max_epochs(self) -> int:
        """Training epochs."""
        return self.epochs

    def on_fit_start(self) -> None:
        """Seed, align the epochs and check the images (see the base); restart the crop positions."""
        super().on_fit_start()
        self._crop_rng = torch.Generator().manual_seed(self.rank_seed())

    def configure_optimizers(self) -> list[optim.Optimizer]:
        """One Adam optimizer for the discriminator, one for the generator (GANomaly's)."""
        betas = (self.hparams.beta1, self.hparams.beta2)
        return [
            optim.Adam(self.model.discriminator.parameters(), lr=self.hparams.lr, betas=betas),
            optim.Adam(self.model.generator.parameters(), lr=self.hparams.lr, betas=betas),
        ]

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Crop random patches from the batch; one generator and one discriminator step per ``batch_size``."""
        del args, kwargs
        patches = random_crops(batch.image, self.crops_per_image, self.model.patch_size, self._crop_rng)
        order = torch.randperm(len(patches), generator=self._crop_rng).to(patches.device)
        d_opt, g_opt = self.optimizers()
        g_losses, d_losses = [], []
        for step in order.split(self.batch_size):
            padded, fake, latent_i, latent_o = self.model(patches[step])
            pred_real, _ = self.model.discriminator(padded)
            pred_fake, _ = self.model.discriminator(fake)
            g_loss = self.generator_loss(latent_i, latent_o, padded, fake, pred_real, pred_fake)
            g_opt.zero_grad()
            self.manual_backward(g_loss, retain_graph=True)
            g_opt.step()
            pred_fake, _ = self.model.discriminator(fake.detach())
            d_loss = self.discriminator_loss(pred_real, pred_fake)
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            d_opt.step()
            g_losses.append(g_loss.detach())
            d_losses.append(d_loss.detach())
        losses = {"generator_loss": torch.stack(g_losses).mean(), "discriminator_loss": torch.stack(d_losses).mean()}
        self.log_dict(losses, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(patches))
        return losses
