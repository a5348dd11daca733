# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Grad-CAM for networks whose head sees globally average-pooled stage features.

With ``g_c = mean_ij A_cij`` the gradient of a score ``S`` with respect to the activation ``A_cij`` is
``(1 / hw) dS/dg_c`` for every position, so the Grad-CAM channel weights are exactly the gradient with respect
to the pooled vector divided by ``hw``. Computing that gradient in closed form (see
:meth:`~anomalib_ssad.components.ProjectionHead.input_gradient`) makes Grad-CAM batched, hook-free and
exportable with ``torch.export``.

Example:
    >>> import torch
    >>> from anomalib_ssad.components import grad_cam
    >>> cam = grad_cam(torch.rand(2, 512, 8, 8), torch.rand(2, 512), image_size=(256, 256))
    >>> cam.shape
    torch.Size([2, 1, 256, 256])
"""

import torch
from torch.nn import functional as F  # noqa: N812


def grad_cam(
    feature_map: torch.Tensor,
    pooled_gradient: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Grad-CAM map ``ReLU(sum_c alpha_c A_c)`` upsampled to the image.

    Args:
        feature_map: Stage activations ``A``, ``[B, C, h, w]``.
        pooled_gradient: ``dS/dg`` for the globally pooled activations ``g``, ``[B, C]``.
        image_size: ``(H, W)`` of the output map.

    Returns:
        Non-negative map ``[B, 1, H, W]`` (not normalised).
    """
    height, width = feature_map.shape[-2:]
    channel_weights = pooled_gradient / (height * width)
    cam = F.relu((channel_weights[:, :, None, None] * feature_map).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=image_size, mode="bilinear", align_corners=False)
