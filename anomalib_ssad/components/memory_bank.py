# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Memory bank of normal embeddings and its chunked k-nearest-neighbour search (cosine or Euclidean).

The bank is a buffer stored in the checkpoint: filled at once from the normal embeddings (keeping a greedy
coreset or a random subset of ``capacity`` rows), or used as a FIFO (the paper's train-mode bank). The scorer
searches it in chunks so that memory stays bounded whatever the number of queries or the size of the bank.

Example:
    >>> import torch
    >>> from anomalib_ssad.components import MemoryBank
    >>> bank = MemoryBank(capacity=4)
    >>> bank.add(torch.rand(6, 8))
    >>> bank.truncate()
    >>> bank.memory_bank.shape
    torch.Size([4, 8])
    >>> scores, neighbours = bank.nearest(torch.rand(3, 8), k=3)
    >>> bool(((scores >= 0) & (scores <= 1)).all())
    True
"""

import math
from typing import Any, Literal

import torch
from anomalib.models.components import DynamicBufferMixin
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_ssad.validation import check_choice

_EPS = 1e-8

Sampler = Literal["random", "coreset"]
Metric = Literal["cosine", "euclidean"]
Search = Literal["exact", "faiss"]

# HNSW graph of the optional FAISS index: links per node, and candidates kept while searching.
FAISS_HNSW_LINKS = 32
FAISS_HNSW_EF_SEARCH = 128
# Largest number of rows a greedy coreset searches (a random subset of the candidates beyond it).
CORESET_CANDIDATES = 65536


def knn_cosine_distance(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 3,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine distance of each query to its ``k`` nearest bank entries.

    Queries and bank are processed in chunks of ``chunk_size`` rows each, so the largest intermediate is a
    ``chunk_size x chunk_size`` similarity block plus a running top-k, whatever the sizes (in an exported
    graph only the bank is chunked).

    Args:
        queries: Query embeddings ``[N, D]``.
        bank: Bank embeddings ``[M, D]`` with ``M >= 1``.
        k: Number of neighbours (clipped to ``M``).
        chunk_size: Rows per chunk for queries and bank.

    Returns:
        ``(score, neighbours)``: ``score [N]`` is the mean of ``1 - cos`` over the ``k`` nearest entries,
        clamped to ``[0, 1]``; ``neighbours [N, k]`` are their indices in ``bank``.

    Raises:
        ValueError: If the bank is empty or the dimensions differ.
    """
    return knn_distance(queries, bank, k=k, chunk_size=chunk_size, metric="cosine")


def knn_distance(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 3,
    chunk_size: int = 4096,
    metric: Metric = "cosine",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean distance of each query to its ``k`` nearest bank entries, searched in chunks.

    Args:
        queries: Query embeddings ``[N, D]``.
        bank: Bank embeddings ``[M, D]`` with ``M >= 1``.
        k: Number of neighbours (clipped to ``M``).
        chunk_size: Rows per chunk for queries and bank.
        metric: ``"cosine"`` (``1 - cos``, clamped to ``[0, 1]``) or ``"euclidean"``.

    Returns:
        ``(score [N], neighbours [N, k])``, neighbours as indices into ``bank``.

    Raises:
        ValueError: If the bank is empty, the dimensions differ or the metric is unknown.
    """
    check_choice("metric", metric, Metric)
    if bank.numel() == 0:
        msg = "The memory bank is empty: train the model (or fill the bank) before scoring."
        raise ValueError(msg)
    if queries.shape[-1] != bank.shape[-1]:
        msg = f"Query dimension {queries.shape[-1]} differs from the bank's {bank.shape[-1]}."
        raise ValueError(msg)
    k = min(k, bank.shape[0])
    cosine = metric == "cosine"
    # Both metrics search for the largest "similarity": the cosine, or minus the squared Euclidean distance. The
    # query's own squared norm does not change which entries are nearest: it is added to the k best at the end,
    # so each block is one fused matrix product (2 q.b - |b|^2) rather than three passes over it.
    bank = _search_space(bank, cosine)
    negative_bank_squared = None if cosine else -(bank * bank).sum(dim=1).unsqueeze(0)
    scores, neighbours = [], []
    # While exporting, the query count depends on the (dynamic) batch size; a Python loop over its chunks
    # would pin the batch size into the exported graph, so the export keeps all queries in one chunk.
    query_chunks = [queries] if torch.compiler.is_exporting() else queries.split(chunk_size)
    for query_chunk in query_chunks:
        query = _search_space(query_chunk, cosine)
        best_sim = query.new_full((query.shape[0], k), -float("inf"))
        best_idx = torch.zeros((query.shape[0], k), dtype=torch.long, device=queries.device)
        for start in range(0, bank.shape[0], chunk_size):
            block = bank[start : start + chunk_size].T
            similarity = (
                query @ block
                if cosine
                else torch.addmm(negative_bank_squared[:, start : start + chunk_size], query, block, alpha=2.0)
            )
            chunk_sim, chunk_idx = similarity.topk(min(k, similarity.shape[1]), dim=1)
            merged_sim = torch.cat([best_sim, chunk_sim], dim=1)
            merged_idx = torch.cat([best_idx, chunk_idx + start], dim=1)
            best_sim, order = merged_sim.topk(k, dim=1)
            best_idx = merged_idx.gather(1, order)
        if not cosine:
            best_sim = best_sim - (query * query).sum(dim=1, keepdim=True)
        scores.append(_mean_distance(best_sim, cosine))
        neighbours.append(best_idx)
    return torch.cat(scores), torch.cat(neighbours)


def _search_space(rows: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Rows as searched: unit-normalised for the cosine distance, as they are for the Euclidean one."""
    return F.normalize(rows, dim=-1, eps=_EPS) if cosine else rows


def _mean_distance(similarities: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Mean distance ``[N]`` of the ``k`` nearest from their similarities ``[N, k]``.

    Similarities are cosines (distance ``1 - cos``, clamped to ``[0, 1]``) or minus squared Euclidean distances.
    """
    if cosine:
        return (1.0 - similarities).mean(dim=1).clamp(0.0, 1.0)
    return (-similarities).clamp_min(0.0).sqrt().mean(dim=1)


def knn_cosine_distance_gradient(queries: torch.Tensor, bank: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Gradient of :func:`knn_cosine_distance` with respect to the queries, for fixed neighbours.

    Written out in closed form so that Grad-CAM needs no autograd and the model stays exportable.

    Args:
        queries: Query embeddings ``[N, D]``.
        bank: Bank embeddings ``[M, D]``.
        neighbours: Neighbour indices ``[N, k]`` returned by :func:`knn_cosine_distance`.

    Returns:
        ``d score / d query``, ``[N, D]``.
    """
    norm = queries.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    query_unit = queries / norm
    neighbour_unit = F.normalize(bank[neighbours], dim=-1, eps=_EPS)  # [N, k, D]
    cosine = (neighbour_unit * query_unit.unsqueeze(1)).sum(-1, keepdim=True)  # [N, k, 1]
    # d cos(q, m) / dq = (m_unit - cos * q_unit) / |q|; the score is the mean of (1 - cos).
    return -((neighbour_unit - cosine * query_unit.unsqueeze(1)).mean(dim=1)) / norm


def _normalize_(rows: torch.Tensor) -> torch.Tensor:
    """``F.normalize(rows, dim=-1, eps=_EPS)`` in place (the same arithmetic, bit for bit); returns ``rows``."""
    return rows.div_(rows.norm(dim=-1, keepdim=True).clamp_min(_EPS))


def greedy_coreset(
    embeddings: torch.Tensor,
    size: int,
    generator: torch.Generator | None = None,
    max_candidates: int = CORESET_CANDIDATES,
    projection_dim: int = 128,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """Indices of a k-center-greedy coreset of ``size`` rows of ``embeddings [N, D]``.

    Each step adds the candidate farthest from everything chosen so far, so rare normal patterns are kept
    that a random subset would drop. To bound the cost (``size`` passes over the candidates), the candidates
    are a random subset of at most ``max_candidates`` rows, and the rows (unit-normalised for ``"cosine"``) are
    randomly projected to ``projection_dim`` dimensions (distances are preserved approximately, as in
    PatchCore's sampler).

    Args:
        embeddings: Candidate embeddings ``[N, D]``.
        size: Number of rows to select.
        generator: Random generator (candidate subset, projection, first centre).
        max_candidates: Largest number of rows searched.
        projection_dim: Dimension of the random projection (none if ``D`` is not larger).
        metric: Geometry of the coverage: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``[min(size, N)]`` indices into ``embeddings``.
    """
    num_rows = embeddings.shape[0]
    if size >= num_rows:
        return torch.arange(num_rows, device=embeddings.device)
    candidates = torch.randperm(num_rows, generator=generator)[:max_candidates].to(embeddings.device)
    points = embeddings[candidates].float()
    if metric == "cosine":
        _normalize_(points)  # a fresh copy: no second copy of the candidates
    if points.shape[1] > projection_dim:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator).to(points.device)
        points = points @ (projection / projection_dim**0.5)
    squared_norms = (points * points).sum(dim=1)
    selected = torch.empty(size, dtype=torch.long, device=points.device)
    min_distances = torch.full_like(squared_norms, float("inf"))
    index = torch.randint(points.shape[0], (1,), generator=generator).to(points.device)[0]
    for step in range(size):
        selected[step] = index
        centre = points[index]
        distances = squared_norms - 2.0 * (points @ centre) + squared_norms[index]
        min_distances = torch.minimum(min_distances, distances)
        index = min_distances.argmax()
    return candidates[selected]


class CentredParts(DynamicBufferMixin, nn.Module):
    """Centre every part of an embedding on the normal data's mean, unit-normalise each part, concatenate.

    Backbone activations and ReLU head embeddings are non-negative, so all of them lie in one orthant and their
    cosine similarities crowd near 1; measured about the normal mean, cosine distance separates them far better
    (see the centring row of benchmarks/results/ssad_ablation). Each part is
    unit-normalised on its own and the result divided by ``sqrt(len(part_sizes))``, so the cosine distance of two
    embeddings is the mean of the parts' cosine distances, whatever their dimensions and scales.

    Args:
        part_sizes: Sizes of the consecutive parts of an embedding.

    Example:
        >>> import torch
        >>> centred = CentredParts((3, 2))
        >>> centred.fit(torch.rand(10, 5))
        >>> bool(torch.allclose(centred(torch.rand(4, 5)).norm(dim=-1), torch.ones(4)))
        True
    """

    mean: torch.Tensor

    def __init__(self, part_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.part_sizes = tuple(part_sizes)
        self.register_buffer("mean", torch.zeros(sum(self.part_sizes)))

    def fit(self, embeddings: torch.Tensor) -> None:
        """Set the mean from normal embeddings ``[N, D]``."""
        self.mean = embeddings.detach().float().mean(dim=0).to(self.mean.device)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Centred, part-wise unit-normalised embeddings, same shape as ``embeddings [..., D]``."""
        centred = embeddings - self.mean
        parts = centred.split(self.part_sizes, dim=-1)
        if centred.requires_grad or torch.compiler.is_exporting():
            joint = torch.cat([F.normalize(part, dim=-1, eps=_EPS) for part in parts], dim=-1)
            return joint / math.sqrt(len(parts))
        # In place: one copy of a large fitting set instead of four.
        for part in parts:
            _normalize_(part)
        return centred.div_(math.sqrt(len(parts)))


class MemoryBank(DynamicBufferMixin, nn.Module):
    """FIFO memory bank of normal embeddings, saved in the checkpoint.

    Args:
        capacity: Maximum number of entries kept by :meth:`truncate` (the newest ones) or :meth:`fill`.
        metric: Distance of the k-NN search and geometry of the coreset: ``"cosine"`` or ``"euclidean"``.
        search: ``"exact"`` (chunked, exportable) or ``"faiss"``: an approximate HNSW index (``pip install
            faiss-cpu``), built on the first search after the bank changes and never saved (the checkpoint holds
            the rows); exports always search exactly. Its recall is measured in ``benchmarks/knn_index.py``.
    """

    memory_bank: torch.Tensor

    def __init__(self, capacity: int = 2048, metric: Metric = "cosine", search: Search = "exact") -> None:
        super().__init__()
        check_choice("Memory bank search", search, Search)
        if search == "faiss":
            _import_faiss()
        self.search = search
        self._index: Any = None
        self._indexed: tuple[int, int] | None = None
        if capacity < 1:
            msg = f"Memory bank capacity must be >= 1, got {capacity}."
            raise ValueError(msg)
        check_choice("Memory bank metric", metric, Metric)
        self.capacity = capacity
        self.metric = metric
        self.register_buffer("memory_bank", torch.empty(0, 0))

    def __len__(self) -> int:
        return self.memory_bank.shape[0]

    def reset(self) -> None:
        """Empty the bank."""
        self.memory_bank = self.memory_bank.new_empty(0, 0)

    def add(self, embeddings: torch.Tensor) -> None:
        """Append embeddings ``[N, D]`` as the newest entries (kept until :meth:`truncate`)."""
        embeddings = embeddings.detach().to(self.memory_bank.device, torch.float32)
        if len(self) == 0:
            self.memory_bank = embeddings.clone()
        else:
            self.memory_bank = torch.cat([self.memory_bank, embeddings])

    def fill(
        self,
        embeddings: torch.Tensor,
        generator: torch.Generator | None = None,
        sampler: Sampler = "random",
    ) -> None:
        """Replace the bank with ``embeddings [N, D]``, keeping ``capacity`` rows if there are more.

        Args:
            embeddings: Normal embeddings.
            generator: Random generator of the subset.
            sampler: ``"random"`` (a uniform subset) or ``"coreset"`` (:func:`greedy_coreset`).

        Raises:
            ValueError: For an unknown sampler.
        """
        check_choice("sampler", sampler, Sampler)
        embeddings = embeddings.detach().to(self.memory_bank.device, torch.float32)
        if embeddings.shape[0] > self.capacity:
            if sampler == "coreset":
                keep = greedy_coreset(embeddings, self.capacity, generator=generator, metric=self.metric)
            else:
                keep = torch.randperm(embeddings.shape[0], generator=generator)[: self.capacity]
            embeddings = embeddings[keep.to(embeddings.device)]
        self.memory_bank = embeddings.clone()

    def truncate(self) -> None:
        """Cut the bank to its capacity, dropping the oldest entries."""
        if len(self) > self.capacity:
            self.memory_bank = self.memory_bank[-self.capacity :].clone()

    def nearest(
        self,
        embeddings: torch.Tensor,
        k: int = 3,
        chunk_size: int = 4096,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`knn_distance` of ``embeddings [N, D]`` against the bank: ``(score [N], neighbours [N, k])``."""
        if self.search == "faiss" and not torch.compiler.is_exporting() and len(self) > 0:
            return self._faiss_nearest(embeddings, k)
        return knn_distance(embeddings, self.memory_bank, k=k, chunk_size=chunk_size, metric=self.metric)

    def _faiss_nearest(self, embeddings: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate k-NN with a FAISS HNSW index of the bank (rebuilt when the bank has changed)."""
        faiss = _import_faiss()
        key = (id(self.memory_bank), self.memory_bank._version)
        cosine = self.metric == "cosine"
        if self._indexed != key:
            rows = _search_space(self.memory_bank.detach().float().cpu(), cosine)
            measure = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
            index = faiss.IndexHNSWFlat(rows.shape[1], FAISS_HNSW_LINKS, measure)
            index.hnsw.efSearch = FAISS_HNSW_EF_SEARCH
            index.add(rows.contiguous().numpy())
            self._index, self._indexed = index, key
        k = min(k, len(self))
        queries = _search_space(embeddings.detach().float().cpu(), cosine)
        values, neighbours = self._index.search(queries.contiguous().numpy(), k)
        values = torch.from_numpy(values)
        # FAISS returns inner products (cosine) or squared distances (Euclidean).
        score = _mean_distance(values if cosine else -values, cosine)
        return score.to(embeddings.device), torch.from_numpy(neighbours).long().to(embeddings.device)


def _import_faiss() -> Any:
    """The ``faiss`` module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        msg = "search='faiss' needs the faiss package: pip install faiss-cpu (or use search='exact')."
        raise ImportError(msg) from error
    return faiss
