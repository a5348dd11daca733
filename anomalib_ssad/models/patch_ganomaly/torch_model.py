# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""PyTorch model of Patch-GANomaly: anomalib's GANomaly networks on ``patch_size`` windows of an image.

The generator (encoder, decoder, second encoder) and the discriminator are anomalib's
:class:`~anomalib.models.image.ganomaly.torch_model.GanomalyModel`, built for ``patch_size`` inputs. Training
mode runs them on patches (random crops of normal images); eval mode cuts every window of a sliding grid out of
the image, scores each window, and turns the window scores into an anomaly map with the project's patch-grid
code, so the model works on any image at least one patch wide. The image score is the peak of that (smoothed)
map, as for SSAD and CutPaste. A window's score is GANomaly's latent distance
``mean((z - z')^2)`` (``score="latent"``) or its reconstruction error ``mean((x - G(x))^2)``
(``score="reconstruction"``).

The transfer-learning variant (``pretrained_encoder=True``) replaces both encoders by an ImageNet backbone
(:func:`~anomalib_ssad.components.build_backbone`) whose deepest stage is averaged and projected to the latent
vector.

Example:
    >>> import torch
    >>> from anomalib_ssad.models.patch_ganomaly.torch_model import PatchGanomalyModel
    >>> model = PatchGanomalyModel(patch_size=32, patch_stride=16, n_features=16)
    >>> padded, fake, latent_i, latent_o = model(torch.rand(4, 3, 32, 32))
    >>> fake.shape, latent_i.shape
    (torch.Size([4, 3, 32, 32]), torch.Size([4, 100, 1, 1]))
    >>> model.eval()(torch.rand(2, 3, 80, 112)).anomaly_map.shape
    torch.Size([2, 1, 80, 112])
"""

from typing import Literal

import torch
from anomalib.data import InferenceBatch
from anomalib.models.image.ganomaly.torch_model import GanomalyModel
from torch import nn

from anomalib_ssad.components.backbone import build_backbone
from anomalib_ssad.components.patch_grid import crop_patches, gaussian_blur, grid_inference_batch, patch_grid_size
from anomalib_ssad.validation import check_choice, check_non_negative, check_positive

PatchScore = Literal["latent", "reconstruction"]


class ImageNetEncoder(nn.Module):
    """GANomaly encoder from an ImageNet backbone: the deepest stage, averaged, projected to the latent vector.

    Args:
        latent_vec_size: Size of the latent vector.
        backbone: Backbone name (see :data:`anomalib_ssad.components.BACKBONES`).
        weights_path: Optional local weights file of the backbone.
    """

    def __init__(
        self, latent_vec_size: int, backbone: str = "efficientnet_lite0", weights_path: str | None = None
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained=True, weights_path=weights_path)
        self.projection = nn.Conv2d(self.backbone.out_channels[-1], latent_vec_size, kernel_size=1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Latent vectors ``[B, latent_vec_size, 1, 1]`` of images ``[B, 3, H, W]``."""
        return self.projection(self.backbone(images)[-1].mean(dim=(2, 3), keepdim=True))


class PatchGanomalyModel(nn.Module):
    """GANomaly generator and discriminator on patches; window scores assembled into an anomaly map.

    Args:
        patch_size: Side of the patches the networks see, in pixels: a power of two, at least 32.
        patch_stride: Stride of the scoring windows, in pixels.
        n_features: Feature maps of the first convolution (doubled at every stride-2 layer).
        latent_vec_size: Size of the latent vector.
        extra_layers: Extra convolution layers in encoders and decoder.
        pretrained_encoder: Transfer-learning variant: both encoders start from an ImageNet backbone.
        backbone: Backbone of the transfer-learning encoders.
        weights_path: Optional local weights file of that backbone.
        score: ``"latent"`` (GANomaly's ``mean((z - z')^2)``) or ``"reconstruction"`` (``mean((x - G(x))^2)``).
        patch_batch_size: Windows per generator pass at inference.
        sigma: Gaussian smoothing of the anomaly map, in pixels (0 disables).

    Raises:
        ValueError: For an unknown ``score`` or a size out of range.
    """

    def __init__(
        self,
        patch_size: int = 32,
        patch_stride: int = 16,
        n_features: int = 64,
        latent_vec_size: int = 100,
        extra_layers: int = 0,
        pretrained_encoder: bool = False,
        backbone: str = "efficientnet_lite0",
        weights_path: str | None = None,
        score: PatchScore = "latent",
        patch_batch_size: int = 1024,
        sigma: float = 4.0,
    ) -> None:
        super().__init__()
        check_positive(
            patch_stride=patch_stride,
            n_features=n_features,
            latent_vec_size=latent_vec_size,
            patch_batch_size=patch_batch_size,
        )
        check_non_negative(extra_layers=extra_layers, sigma=sigma)
        if patch_size < 32 or patch_size & (patch_size - 1):
            msg = f"patch_size must be a power of two >= 32 (GANomaly's encoders end at 1 x 1), got {patch_size!r}."
            raise ValueError(msg)
        check_choice("score", score, PatchScore)
        self.ganomaly = GanomalyModel(
            input_size=(patch_size, patch_size),
            num_input_channels=3,
            n_features=n_features,
            latent_vec_size=latent_vec_size,
            extra_layers=extra_layers,
        )
        if pretrained_encoder:
            generator = self.ganomaly.generator
            generator.encoder1 = ImageNetEncoder(latent_vec_size, backbone, weights_path)
            generator.encoder2 = ImageNetEncoder(latent_vec_size, backbone, weights_path)
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.score = score
        self.patch_batch_size = patch_batch_size
        self.blur = gaussian_blur(sigma)

    @property
    def generator(self) -> nn.Module:
        """Encoder-decoder-encoder generator."""
        return self.ganomaly.generator

    @property
    def discriminator(self) -> nn.Module:
        """Real/fake discriminator (with its intermediate features)."""
        return self.ganomaly.discriminator

    def window_scores(self, patches: torch.Tensor) -> torch.Tensor:
        """Anomaly score ``[N]`` of patches ``[N, 3, patch_size, patch_size]``."""
        fake, latent_i, latent_o = self.generator(patches)
        if self.score == "latent":
            return (latent_i - latent_o).pow(2).flatten(1).mean(dim=1)
        return (patches - fake).pow(2).flatten(1).mean(dim=1)

    def forward(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | InferenceBatch:
        """Training: GANomaly's ``(input, fake, latent_i, latent_o)`` on patches; eval: score and map of images.

        Raises:
            ValueError: In eval mode, for an image smaller than one patch.
        """
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.training:
            return self.ganomaly(images)
        image_size = (images.shape[-2], images.shape[-1])
        grid = patch_grid_size(image_size, self.patch_size, self.patch_stride)
        patches = crop_patches(images, self.patch_size, self.patch_stride)
        # A loop over chunks would pin the batch size into an exported graph: exports score all windows at once.
        chunks = [patches] if torch.compiler.is_exporting() else patches.split(self.patch_batch_size)
        grid_scores = torch.cat([self.window_scores(chunk) for chunk in chunks]).reshape(images.shape[0], *grid)
        return grid_inference_batch(grid_scores, image_size, self.patch_size, self.blur)
