# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Gaussian density estimation of normal embeddings: Ledoit-Wolf covariance and the Mahalanobis score.

CutPaste scores an embedding by its Mahalanobis distance to a Gaussian fitted on normal training embeddings;
the covariance is shrunk towards a scaled identity with the Ledoit-Wolf coefficient, which keeps it invertible
with fewer samples than dimensions. Mean and precision matrix are buffers, saved in the checkpoint; the score
and its closed-form gradient (for Grad-CAM) are plain tensor algebra, so the model stays exportable.

Example:
    >>> import torch
    >>> from anomalib_ssad.components import GaussianDensity
    >>> density = GaussianDensity()
    >>> density.fit(torch.randn(200, 16))
    >>> scores = density.score(torch.randn(5, 16))
    >>> scores.shape, bool((scores >= 0).all())
    (torch.Size([5]), True)
"""

import torch
from anomalib.models.components import DynamicBufferMixin
from torch import nn

_EPS = 1e-12


def ledoit_wolf(embeddings: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance of ``embeddings [N, D]`` (centred on their mean).

    Same estimator as ``sklearn.covariance.LedoitWolf`` (``assume_centered=False``): with the empirical covariance
    ``S`` and ``mu = trace(S) / D``, the result is ``(1 - a) S + a mu I`` with the shrinkage ``a`` that minimises
    the expected squared Frobenius error (Ledoit & Wolf, 2004). Computed in float64.

    Args:
        embeddings: Samples ``[N, D]`` with ``N >= 1``.

    Returns:
        ``(covariance [D, D], shrinkage)``, the covariance in the input's dtype.

    Raises:
        ValueError: If there are no samples.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        msg = f"Need a non-empty [N, D] sample matrix, got shape {tuple(embeddings.shape)}."
        raise ValueError(msg)
    samples = embeddings.detach().double()
    samples = samples - samples.mean(dim=0)
    num_samples, num_features = samples.shape
    empirical = samples.T @ samples / num_samples
    squared = samples**2
    variances = squared.sum(dim=0) / num_samples
    mu = variances.sum() / num_features
    # beta: variance of the entries of the empirical covariance; delta: its squared distance to mu * I.
    beta_sum = (squared.T @ squared).sum()
    delta_sum = (empirical**2).sum()
    beta = (beta_sum / num_samples - delta_sum) / (num_features * num_samples)
    delta = (delta_sum - 2.0 * mu * variances.sum() + num_features * mu**2) / num_features
    beta = torch.minimum(beta, delta)
    shrinkage = 0.0 if float(beta) == 0.0 else float(beta / delta)
    covariance = (1.0 - shrinkage) * empirical
    covariance.diagonal().add_(shrinkage * mu)
    return covariance.to(embeddings.dtype), shrinkage


class GaussianDensity(DynamicBufferMixin, nn.Module):
    """Multivariate Gaussian of normal embeddings, scored by the Mahalanobis distance.

    ``score(z) = sqrt((z - mean)^T P (z - mean))`` with the precision ``P`` the inverse of the Ledoit-Wolf
    covariance. Buffers start empty and take their size when fitted or loaded from a checkpoint.
    """

    mean: torch.Tensor
    precision: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("precision", torch.empty(0, 0))

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or a checkpoint) has set the mean and precision."""
        return self.mean.numel() > 0

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor) -> None:
        """Fit mean and Ledoit-Wolf precision to normal embeddings ``[N, D]``."""
        covariance, _ = ledoit_wolf(embeddings.double())
        self.mean = embeddings.detach().double().mean(dim=0).float()
        precision = torch.linalg.inv(covariance)
        self.precision = ((precision + precision.T) / 2).float()

    def _check(self, embeddings: torch.Tensor) -> None:
        if not self.is_fitted:
            msg = "The Gaussian density is not fitted: train the model (or call fit) before scoring."
            raise ValueError(msg)
        if embeddings.shape[-1] != self.mean.shape[0]:
            msg = f"Embedding dimension {embeddings.shape[-1]} differs from the fitted {self.mean.shape[0]}."
            raise ValueError(msg)

    def score(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each embedding ``[N, D]`` to the fitted Gaussian, ``[N]``.

        Raises:
            ValueError: If the density is not fitted or the dimension differs.
        """
        self._check(embeddings)
        centred = embeddings - self.mean
        return ((centred @ self.precision) * centred).sum(dim=-1).clamp_min(0.0).sqrt()

    def score_gradient(self, embeddings: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Closed-form gradient of :meth:`score` with respect to the embeddings: ``P (z - mean) / score``.

        Args:
            embeddings: Embeddings ``[N, D]``.
            scores: Their scores ``[N]`` from :meth:`score`.

        Returns:
            ``d score / d z``, ``[N, D]``.
        """
        self._check(embeddings)
        # P is symmetric, so (z - mean) @ P is P (z - mean) row-wise.
        return (embeddings - self.mean) @ self.precision / scores.clamp_min(_EPS)[:, None]
