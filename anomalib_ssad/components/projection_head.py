# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Projection head: a stack of ``Linear -> BatchNorm -> ReLU`` blocks that turns pooled features into embeddings.

The first block is the method's fully-connected reduction of the fused backbone features (e.g. 896 -> 512); the
following blocks form the projection head proper. :meth:`ProjectionHead.input_gradient` back-propagates a
gradient through the head in closed form (eval mode), which is what Grad-CAM needs without autograd.

Example:
    >>> import torch
    >>> from anomalib_ssad.components import ProjectionHead
    >>> head = ProjectionHead(896, (512, 512, 128)).eval()
    >>> head(torch.rand(4, 896)).shape
    torch.Size([4, 128])
"""

from collections.abc import Sequence

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP of ``Linear -> BatchNorm1d -> ReLU`` blocks.

    Args:
        in_features: Size of the input vector.
        hidden_dims: Output size of each block; the last one is the embedding size.
    """

    def __init__(self, in_features: int, hidden_dims: Sequence[int] = (512, 512, 128)) -> None:
        super().__init__()
        if not hidden_dims:
            msg = "hidden_dims must name at least one block size."
            raise ValueError(msg)
        self.in_features = in_features
        layers: list[nn.Module] = []
        for out_features in hidden_dims:
            layers += [nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU(inplace=False)]
            in_features = out_features
        self.layers = nn.Sequential(*layers)
        self.out_features = in_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Embed pooled features ``[N, in_features]`` into ``[N, out_features]``."""
        return self.layers(features)

    def input_gradient(self, features: torch.Tensor, output_gradient: torch.Tensor) -> torch.Tensor:
        """Vector-Jacobian product of the head in eval mode: ``d(output . output_gradient) / d features``.

        Args:
            features: Head inputs ``[N, in_features]``.
            output_gradient: Gradient with respect to the head outputs ``[N, out_features]``.

        Returns:
            Gradient with respect to ``features``, ``[N, in_features]``.

        Raises:
            RuntimeError: In training mode, where batch statistics couple the samples.
        """
        if self.training:
            msg = "ProjectionHead.input_gradient is defined for eval mode only."
            raise RuntimeError(msg)
        inputs = []
        hidden = features
        for layer in self.layers:
            inputs.append(hidden)
            hidden = layer(hidden)
        gradient = output_gradient
        for layer, layer_input in zip(reversed(self.layers), reversed(inputs), strict=True):
            if isinstance(layer, nn.ReLU):
                gradient = gradient * (layer_input > 0)
            elif isinstance(layer, nn.BatchNorm1d):
                gradient = gradient * layer.weight / torch.sqrt(layer.running_var + layer.eps)
            else:
                gradient = gradient @ layer.weight
        return gradient
