# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Scorers a :class:`~anomalib_ssad.components.PretextNetwork` is given: the fitted normal model and its score.

Every scorer is a :class:`Scorer` (an ``nn.Module``: its fitted state lives in buffers, so checkpoints hold it)
with the same methods, each taking the network's embeddings as one ``[N, D]`` tensor per head:

- ``fit(embeddings, generator=None)``: fit on the embeddings of clean training images (before every validation,
  unless ``learns_in_training``);
- ``forward(embeddings)``: anomaly scores ``[N]``;
- ``score_with_gradient(embeddings)``: scores and their closed-form gradient with respect to the last head's
  embedding (image-level Grad-CAM; only scorers of pooled image embeddings need it);
- ``observe(embeddings, logits, labels)`` and ``end_epoch(gather)``: what a scorer that ``learns_in_training``
  (the paper's ``"train"`` memory bank) takes from each pretext step and keeps at the end of each epoch; nothing
  for the others.

:class:`KnnScorer` (SSAD's memory bank: cosine k-NN), :class:`GaussianScorer` (CutPaste: Mahalanobis distance)
and :class:`CellScorer` (SSAD's dense cells) are the three; :class:`PartScorer` gives each part of an embedding
its own scorer, and :class:`ScorerBag` averages several of one kind, each fitted on its own share of the rows.

Example:
    >>> import torch
    >>> from anomalib_ssad.components.scorers import KnnScorer
    >>> scorer = KnnScorer(num_heads=1, capacity=16)
    >>> scorer.fit([torch.rand(100, 8)])
    >>> scorer([torch.rand(5, 8)]).shape
    torch.Size([5])
"""

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from anomalib.models.components import DynamicBufferMixin
from torch import nn

from anomalib_ssad.validation import check_choice, check_fraction, check_positive

from .gaussian_density import GaussianDensity
from .memory_bank import (
    _EPS,
    CORESET_CANDIDATES,
    CentredParts,
    MemoryBank,
    Sampler,
    Search,
    knn_cosine_distance_gradient,
)

CellDistance = Literal["cosine", "euclidean", "standardized", "cosine+euclidean", "cosine+standardized"]
Combine = Literal["mean", "max"]
PartCombine = Literal["mean", "min"]
BankSource = Literal["eval", "train"]


class Scorer(nn.Module):
    """Base of the scorers: fitted on clean training images, nothing learnt from the pretext steps."""

    learns_in_training = False

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit the normal model on the embeddings of clean training images."""
        raise NotImplementedError

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and their gradient with respect to the last head's embedding."""
        msg = f"{type(self).__name__} scores cells, not pooled image embeddings: it has no image-level gradient."
        raise NotImplementedError(msg)

    def observe(self, embeddings: Sequence[torch.Tensor], logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Take what the scorer learns from one pretext step's train-mode outputs (nothing by default)."""

    def end_epoch(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Settle what was observed during a training epoch; ``gather`` concatenates every process's rows."""


class KnnScorer(Scorer):
    """Mean cosine distance to the ``k`` nearest normal embeddings, one memory bank per head.

    With several heads (one per backbone stage) the per-head scores are combined by their geometric mean.

    Args:
        num_heads: Number of heads, hence of banks.
        capacity: Rows kept in each bank.
        num_neighbors: ``k`` of the k-NN distance.
        chunk_size: Rows per chunk of the k-NN search.
        search: ``"exact"`` or ``"faiss"`` (see :class:`~anomalib_ssad.components.MemoryBank`).
        sampler: How a bank keeps ``capacity`` of more rows: ``"random"`` or ``"coreset"``.
        source: ``"eval"``: banks fitted on clean training images before every validation; ``"train"`` (the
            paper's): banks filled during training with the embeddings of normal samples the classifier also
            predicts normal, keeping the newest ``capacity`` at the end of every epoch.
    """

    def __init__(
        self,
        num_heads: int = 1,
        capacity: int = 2048,
        num_neighbors: int = 3,
        chunk_size: int = 4096,
        search: Search = "exact",
        sampler: Sampler = "random",
        source: BankSource = "eval",
    ) -> None:
        super().__init__()
        check_choice("memory_bank_source", source, BankSource)
        self.banks = nn.ModuleList(MemoryBank(capacity, search=search) for _ in range(num_heads))
        self.num_neighbors = num_neighbors
        self.chunk_size = chunk_size
        self.sampler = sampler
        self.learns_in_training = source == "train"

    def observe(self, embeddings: Sequence[torch.Tensor], logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``"train"`` banks collect the embeddings of normal samples the classifier also predicts normal."""
        if self.learns_in_training:
            normal = (labels == 0) & (logits.argmax(dim=1) == 0)
            for bank, embedding in zip(self.banks, embeddings, strict=True):
                bank.add(embedding[normal])

    def end_epoch(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """``"train"`` banks gather every process's entries (the checkpoint holds them all), then keep the newest."""
        if self.learns_in_training:
            for bank in self.banks:
                bank.memory_bank = gather(bank.memory_bank)
                bank.truncate()

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fill every bank with its head's normal embeddings (a ``sampler`` subset of ``capacity`` rows)."""
        for bank, embedding in zip(self.banks, embeddings, strict=True):
            bank.fill(embedding, generator=generator, sampler=self.sampler)

    def _knn(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Combined score, each head's scores and each head's neighbour indices."""
        results = [
            bank.nearest(embedding, k=self.num_neighbors, chunk_size=self.chunk_size)
            for embedding, bank in zip(embeddings, self.banks, strict=True)
        ]
        head_scores = [score for score, _ in results]
        if len(head_scores) == 1:
            combined = head_scores[0]
        else:
            combined = torch.stack(head_scores).clamp_min(1e-12).log().mean(dim=0).exp()
        return combined, head_scores, [neighbours for _, neighbours in results]

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """k-NN cosine distance (geometric mean over heads), ``[N]``."""
        return self._knn(embeddings)[0]

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and its closed-form gradient with respect to the last head's embedding (fixed neighbours)."""
        score, head_scores, neighbours = self._knn(embeddings)
        last = len(self.banks) - 1
        gradient = knn_cosine_distance_gradient(embeddings[last], self.banks[last].memory_bank, neighbours[last])
        if len(self.banks) > 1:
            # d geometric_mean / d s_last = geometric_mean / (n * s_last)
            gradient = gradient * (score / (len(self.banks) * head_scores[last].clamp_min(1e-12)))[:, None]
        return score, gradient


class GaussianScorer(Scorer):
    """Mahalanobis distance of the (single) head's embedding to a Gaussian of the normal embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.density = GaussianDensity()

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit mean and Ledoit-Wolf precision (deterministic: ``generator`` is not used)."""
        del generator
        self.density.fit(_single(embeddings))

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mahalanobis distance, ``[N]``."""
        return self.density.score(_single(embeddings))

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mahalanobis distance and its closed-form gradient ``P (z - mean) / distance``."""
        score = self(embeddings)
        return score, self.density.score_gradient(_single(embeddings), score)


class CellScorer(DynamicBufferMixin, Scorer):
    """k-NN scorer of feature-grid cells: distances to the normal cells, each in units of a normal cell's own.

    ``"cosine"`` compares directions about the normal mean (:class:`CentredParts`): it ignores how strongly a
    cell deviates, so a reflection that only brightens a normal pattern stays normal. ``"euclidean"`` compares
    raw features: it sees magnitude changes (a darker or brighter region) that cosine misses, but its scale is
    set by the few channels that vary most. ``"standardized"`` is the Euclidean distance after dividing every
    channel by its normal standard deviation (a diagonal Mahalanobis distance), so every channel counts alike.
    The default, ``"cosine+euclidean"``, keeps one bank per distance, each subsampled in its own geometry, and
    scores a cell by the mean of its two distances, each divided by the mean distance of held-out normal cells
    (so both count alike and a typical normal cell scores about 1). The measurements behind it are in
    ``benchmarks/results/ssad_ablation``.

    Args:
        part_sizes: Sizes of the consecutive parts of an embedding (each centred and normalised on its own for
            the cosine distance).
        capacity: Rows kept in each bank.
        distance: ``"cosine"``, ``"euclidean"``, ``"standardized"``, or two of them joined by ``+``
            (``"cosine+euclidean"``, ``"cosine+standardized"``).
        num_neighbors: ``k`` of the k-NN distance.
        chunk_size: Rows per chunk of the k-NN search.
        holdout: Largest number of normal rows held out of the banks to measure a normal cell's distance.
        search: ``"exact"`` or ``"faiss"`` (approximate; see :class:`~anomalib_ssad.components.MemoryBank`).
        sampler: How each bank keeps ``capacity`` of more rows: ``"coreset"`` or ``"random"``.
        combine: How two distances make one score: their ``"mean"`` or their ``"max"`` (each in units of a
            normal cell's distance).
        direction_weight: Weight of the cosine distance in the ``"mean"`` of two distances (the other gets
            ``1 - direction_weight``); ``0.5``: their plain mean. Lower it for parts whose defects are mostly
            magnitude changes (large regions brighter or darker than normal), at the cost of image AUROC
            where defects are thin patterns (see the README's ablation).

    Example:
        >>> import torch
        >>> scorer = CellScorer((4,), capacity=32)
        >>> scorer.fit([torch.rand(200, 4) + 1.0])
        >>> scorer([torch.rand(3, 4) + 1.0]).shape
        torch.Size([3])
    """

    scale: torch.Tensor

    def __init__(
        self,
        part_sizes: tuple[int, ...],
        capacity: int = 4096,
        distance: CellDistance = "cosine+euclidean",
        num_neighbors: int = 3,
        chunk_size: int = 4096,
        holdout: int = 20000,
        search: Search = "exact",
        sampler: Sampler = "coreset",
        combine: Combine = "mean",
        direction_weight: float = 0.5,
    ) -> None:
        super().__init__()
        check_choice("combine", combine, Combine)
        check_choice("distance", distance, CellDistance)
        check_fraction(direction_weight=direction_weight)
        self.distances = tuple(distance.split("+"))
        if direction_weight != 0.5 and (combine != "mean" or len(self.distances) != 2):
            msg = (
                f"direction_weight={direction_weight} weighs the cosine distance against a second one in their "
                f"mean; distance={distance!r} with combine={combine!r} has no such mean."
            )
            raise ValueError(msg)
        # The cosine distance comes first in every two-distance choice.
        self.weights = (direction_weight, 1.0 - direction_weight) if len(self.distances) == 2 else (1.0,)
        self.centred_parts = CentredParts(part_sizes)
        self.banks = nn.ModuleList(
            MemoryBank(capacity, metric="cosine" if name == "cosine" else "euclidean", search=search)
            for name in self.distances
        )
        if "standardized" in self.distances:
            self.register_buffer("std", torch.ones(sum(part_sizes)))
        self.num_neighbors = num_neighbors
        self.chunk_size = chunk_size
        self.holdout = holdout
        self.sampler = sampler
        self.combine = combine
        self.register_buffer("scale", torch.ones(len(self.distances)))

    @property
    def max_fit_rows(self) -> int:
        """Normal rows beyond which :meth:`fit` learns nothing more (its holdout and coreset candidates are full).

        Fitting on a uniform random subset of this many rows draws from the same distribution as fitting on
        all of them; collecting no more keeps memory bounded for any training set.
        """
        return max(10 * self.holdout, CORESET_CANDIDATES + self.holdout)

    def _space(self, distance: str, embeddings: torch.Tensor) -> torch.Tensor:
        """``embeddings`` in the space where ``distance`` is a plain cosine or Euclidean distance."""
        if distance == "cosine":
            return self.centred_parts(embeddings)
        if distance == "standardized":
            return (embeddings - self.centred_parts.mean) / self.std
        return embeddings

    def _distances(self, embeddings: torch.Tensor) -> list[torch.Tensor]:
        """Raw k-NN distance of ``embeddings [N, D]`` to each bank."""
        return [
            bank.nearest(self._space(distance, embeddings), k=self.num_neighbors, chunk_size=self.chunk_size)[0]
            for distance, bank in zip(self.distances, self.banks, strict=True)
        ]

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit on normal cells ``[N, D]`` (one head): the mean, the banks (``sampler`` subsets), the normal distances.

        A tenth of the rows (at most ``holdout``, none if ``N < 2``) is kept out of the banks and scored against
        them: their mean distance is the unit of each distance.
        """
        embeddings = _single(embeddings).detach().float()
        self.centred_parts.fit(embeddings)
        if "standardized" in self.distances:
            # Channels that hardly vary on normal data are not scaled up without bound.
            std = embeddings.std(dim=0)
            self.std = std.clamp_min(1e-2 * std.mean().item() + _EPS).to(self.std.device)
        held, rest = _hold_out(embeddings, self.holdout, generator)
        for distance, bank in zip(self.distances, self.banks, strict=True):
            bank.fill(self._space(distance, rest), generator, self.sampler)
        self.scale = torch.ones_like(self.scale)
        if held is not None:
            distances = torch.stack([distance.mean() for distance in self._distances(held)])
            self.scale = distances.clamp_min(_EPS).to(self.scale.device)

    def relative_scores(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each distance over its normal distance, ``[N, num_distances]``: what ``combine`` makes one score of."""
        return torch.stack(self._distances(_single(embeddings)), dim=1) / self.scale

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Anomaly score of every cell ``[N, D]``: (weighted) mean or max of distance / normal distance, ``[N]``."""
        relative = self.relative_scores(embeddings)
        if self.combine == "max":
            return relative.amax(dim=1)
        return relative @ relative.new_tensor(self.weights)


class PartScorer(Scorer):
    """Scores each consecutive part of an embedding with its own scorer and combines their relative scores.

    Each part's score is divided by the mean score of held-out normal rows, so parts scored on different scales
    (a Mahalanobis distance, a k-NN distance) count alike and a typical normal row scores about 1. CutPaste's
    ``scorer="knn+gaussian"`` is one: the pooled backbone stages by their distance to the nearest normal windows
    (their local detail), the head's embedding by the Gaussian (what the pretext task learnt).

    Args:
        part_sizes: Sizes of the consecutive parts of an embedding.
        scorers: One unfitted scorer per part, in the same order.
        holdout: Largest number of normal rows held out of fitting to measure a normal row's score.
        combine: ``"mean"`` of the relative scores, or their ``"min"``: a row is as anomalous as the part that
            finds it least so, which keeps each part's false alarms on normal rows the other part knows (a rare
            normal pattern far from one Gaussian; a normal texture missing from a k-NN bank) out of the score,
            and with them any defect that only one part sees.

    Example:
        >>> import torch
        >>> scorer = PartScorer((4, 2), [CellScorer((4,), capacity=32), GaussianScorer()])
        >>> scorer.fit([torch.rand(200, 6) + 1.0])
        >>> scorer([torch.rand(3, 6) + 1.0]).shape
        torch.Size([3])
    """

    scale: torch.Tensor

    def __init__(
        self, part_sizes: Sequence[int], scorers: Sequence[Scorer], holdout: int = 20000, combine: PartCombine = "mean"
    ) -> None:
        super().__init__()
        check_choice("combine", combine, PartCombine)
        if len(part_sizes) != len(scorers) or not scorers:
            msg = f"PartScorer needs one scorer per part, got {len(scorers)} scorers for parts {tuple(part_sizes)}."
            raise ValueError(msg)
        _check_fitted_on_clean_rows(self, scorers)
        self.part_sizes = tuple(part_sizes)
        self.scorers = nn.ModuleList(scorers)
        self.holdout = holdout
        self.combine = combine
        self.register_buffer("scale", torch.ones(len(scorers)))

    def _parts(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        rows = _single(embeddings)
        if rows.shape[-1] != sum(self.part_sizes):
            msg = f"Embedding dimension {rows.shape[-1]} differs from the parts' total {sum(self.part_sizes)}."
            raise ValueError(msg)
        return rows.split(self.part_sizes, dim=-1)

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit every part's scorer on its part of normal rows ``[N, D]``, a tenth (at most ``holdout``) held out.

        The held-out rows' mean score is each part's unit (none held out if ``N < 10``: the unit stays 1).
        """
        rows = _single(embeddings).detach().float()
        held, rest = _hold_out_rows(rows.shape[0], self.holdout, generator, rows.device)
        # Each scorer gets a copy of its own part only, not of every part at once.
        for scorer, part in zip(self.scorers, self._parts([rows]), strict=True):
            scorer.fit([part[rest]], generator)
        self.scale = torch.ones_like(self.scale)
        if held is not None:
            parts = self._parts([rows[held]])
            scores = [scorer([part]).mean() for scorer, part in zip(self.scorers, parts, strict=True)]
            self.scale = torch.stack(scores).clamp_min(_EPS).to(self.scale.device)

    def relative_scores(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each part's score over its normal score, ``[N, num_parts]``: what ``combine`` makes one score of."""
        parts = self._parts(embeddings)
        scores = torch.stack([scorer([part]) for scorer, part in zip(self.scorers, parts, strict=True)], dim=1)
        return scores / self.scale

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean or minimum (``combine``) over the parts of score / normal score, ``[N]``."""
        relative = self.relative_scores(embeddings)
        return relative.amin(dim=1) if self.combine == "min" else relative.mean(dim=1)


class ScorerBag(Scorer):
    """Mean score of several scorers of one kind, each fitted on its own disjoint random share of the rows.

    A memory bank subsampled from many more normal rows (a coreset or a random subset) depends on its draw: one
    draw keeps rare normal patterns that another misses, and the maps move with it (the bank-seed rows of
    ``benchmarks/results/ssad_ablation``). Averaging the scores of independent draws keeps most of what each
    covers and removes most of that dependence, at the cost of one k-NN search per member.

    Args:
        build: Builds one member (e.g. ``lambda: CellScorer(part_sizes)``).
        num_members: Number of members (``>= 1``).

    Example:
        >>> import torch
        >>> bag = ScorerBag(lambda: CellScorer((4,), capacity=16), num_members=3)
        >>> bag.fit([torch.rand(300, 4) + 1.0])
        >>> bag([torch.rand(5, 4) + 1.0]).shape
        torch.Size([5])
    """

    def __init__(self, build: Callable[[], Scorer], num_members: int) -> None:
        super().__init__()
        check_positive(num_members=num_members)
        self.members = nn.ModuleList(build() for _ in range(num_members))
        _check_fitted_on_clean_rows(self, self.members)

    @classmethod
    def of(cls, build: Callable[[], Scorer], num_members: int) -> Scorer:
        """``build()``'s scorer itself for one member, else a bag of ``num_members`` (see the class).

        Example:
            >>> type(ScorerBag.of(lambda: CellScorer((4,)), 1)).__name__
            'CellScorer'
        """
        return build() if num_members == 1 else cls(build, num_members)

    @property
    def max_fit_rows(self) -> int | None:
        """The members' own bound on fitted rows, shared among them (``None``: no bound)."""
        return getattr(self.members[0], "max_fit_rows", None)

    def fit(self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> None:
        """Fit every member on its share of a random partition of the rows ``[N, D]`` (per head).

        Raises:
            ValueError: If there are fewer rows than members.
        """
        num_rows = embeddings[0].shape[0]
        if num_rows < len(self.members):
            msg = f"ScorerBag of {len(self.members)} members needs as many normal rows at least, got {num_rows}."
            raise ValueError(msg)
        order = torch.randperm(num_rows, generator=generator)
        for member, share in zip(self.members, order.tensor_split(len(self.members)), strict=True):
            member.fit([embedding[share.to(embedding.device)] for embedding in embeddings], generator)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean of the members' scores, ``[N]``."""
        return torch.stack([member(embeddings) for member in self.members]).mean(dim=0)

    def score_with_gradient(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the members' scores and of their gradients."""
        scores, gradients = zip(*(member.score_with_gradient(embeddings) for member in self.members), strict=True)
        return torch.stack(scores).mean(dim=0), torch.stack(gradients).mean(dim=0)


def _single(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """The embedding of a one-head network (scorers of one embedding reject several heads)."""
    if len(embeddings) != 1:
        msg = f"This scorer takes one head's embeddings, got {len(embeddings)} (use fusion='concat')."
        raise ValueError(msg)
    return embeddings[0]


def _check_fitted_on_clean_rows(owner: Scorer, scorers: Sequence[Scorer]) -> None:
    """Refuse scorers that learn in training inside ``owner``, which fits them on clean rows itself."""
    if any(scorer.learns_in_training for scorer in scorers):
        msg = f"{type(owner).__name__} fits its scorers on clean rows; a scorer that learns in training cannot be one."
        raise ValueError(msg)


def _hold_out_rows(
    num_rows: int, holdout: int, generator: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Indices of a random tenth of ``num_rows`` rows (at most ``holdout``; ``None`` if none) and of the others."""
    order = torch.randperm(num_rows, generator=generator).to(device)
    num_held = min(holdout, num_rows // 10)
    return (order[:num_held], order[num_held:]) if num_held else (None, torch.arange(num_rows, device=device))


def _hold_out(
    rows: torch.Tensor, holdout: int, generator: torch.Generator | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A random tenth of ``rows [N, D]`` (at most ``holdout``; ``None`` if that is none) and the other rows."""
    held, rest = _hold_out_rows(rows.shape[0], holdout, generator, rows.device)
    return (rows[held], rows[rest]) if held is not None else (None, rows)
