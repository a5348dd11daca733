import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import MemoryBank, knn_cosine_distance, knn_cosine_distance_gradient
from anomalib_ssad.components.memory_bank import greedy_coreset


def brute_force(queries, bank, k):
    similarity = F.cosine_similarity(queries[:, None], bank[None], dim=-1)
    return (1 - similarity.topk(k, dim=1).values).mean(dim=1).clamp(0, 1)


@pytest.mark.parametrize(("num_queries", "bank_size", "chunk_size"), [(50, 200, 7), (3, 2, 4096), (100, 1000, 64)])
def test_knn_equals_brute_force(num_queries, bank_size, chunk_size):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(num_queries, 16, generator=generator)
    bank = torch.randn(bank_size, 16, generator=generator)
    scores, neighbours = knn_cosine_distance(queries, bank, k=3, chunk_size=chunk_size)
    torch.testing.assert_close(scores, brute_force(queries, bank, min(3, bank_size)))
    assert neighbours.shape == (num_queries, min(3, bank_size))
    assert ((scores >= 0) & (scores <= 1)).all()


def test_knn_of_a_bank_entry_is_zero():
    bank = torch.randn(10, 8)
    scores, neighbours = knn_cosine_distance(bank[[4]], bank, k=1)
    assert scores.item() == pytest.approx(0.0, abs=1e-6)
    assert neighbours.item() == 4


def test_knn_gradient_matches_autograd():
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(5, 12, generator=generator, requires_grad=True)
    bank = torch.randn(40, 12, generator=generator)
    scores, neighbours = knn_cosine_distance(queries, bank, k=3)
    (expected,) = torch.autograd.grad(scores.sum(), queries)
    torch.testing.assert_close(knn_cosine_distance_gradient(queries.detach(), bank, neighbours), expected)


def test_empty_bank_and_dimension_errors():
    with pytest.raises(ValueError, match="empty"):
        knn_cosine_distance(torch.randn(2, 4), torch.empty(0, 4))
    with pytest.raises(ValueError, match="dimension"):
        knn_cosine_distance(torch.randn(2, 4), torch.randn(3, 5))


def test_fifo_truncate_keeps_newest():
    bank = MemoryBank(capacity=5)
    bank.add(torch.arange(4.0)[:, None])
    bank.add(torch.arange(4.0, 8.0)[:, None])
    assert len(bank) == 8  # entries accumulate during an epoch
    bank.truncate()
    assert bank.memory_bank.flatten().tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_fill_subsamples_to_capacity_and_state_dict_round_trip():
    bank = MemoryBank(capacity=10)
    data = torch.randn(100, 6)
    bank.fill(data, generator=torch.Generator().manual_seed(0))
    assert bank.memory_bank.shape == (10, 6)
    assert all((row == data).all(dim=1).any() for row in bank.memory_bank)  # rows come from the data
    restored = MemoryBank(capacity=10)  # empty buffer: DynamicBufferMixin resizes it on load
    restored.load_state_dict(bank.state_dict())
    torch.testing.assert_close(restored.memory_bank, bank.memory_bank)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        MemoryBank(capacity=0)


def test_greedy_coreset_keeps_rare_patterns_that_a_random_subset_drops():
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(5000, 16, generator=generator) * 0.05 + torch.ones(16)
    rare = torch.eye(16)[:4] * 3.0  # 4 distinct directions, 0.08 % of the rows
    embeddings = torch.cat([common, rare])
    keep = greedy_coreset(embeddings, 32, generator=torch.Generator().manual_seed(1))
    assert keep.unique().numel() == 32
    assert set(range(5000, 5004)) <= set(keep.tolist())
    # Coverage: the farthest row from the coreset is closer than from a random subset of the same size.
    unit = torch.nn.functional.normalize(embeddings, dim=1)

    def worst_cosine_distance(rows):
        return (1 - (unit @ unit[rows].T).amax(dim=1)).max()

    random_rows = torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(1))[:32]
    assert worst_cosine_distance(keep) < worst_cosine_distance(random_rows)
    # Deterministic for a seeded generator; all rows when the size exceeds them.
    torch.testing.assert_close(keep, greedy_coreset(embeddings, 32, generator=torch.Generator().manual_seed(1)))
    assert greedy_coreset(rare, 10).tolist() == [0, 1, 2, 3]


def test_bank_fill_samplers():
    embeddings = torch.randn(100, 8)
    for sampler in ("random", "coreset"):
        bank = MemoryBank(capacity=10)
        bank.fill(embeddings, generator=torch.Generator().manual_seed(0), sampler=sampler)
        assert bank.memory_bank.shape == (10, 8)
        # Every kept row is one of the inputs.
        assert (bank.memory_bank[:, None] == embeddings[None]).all(dim=-1).any(dim=1).all()
    with pytest.raises(ValueError, match="sampler must be 'random' or 'coreset'"):
        MemoryBank(capacity=10).fill(embeddings, sampler="kmeans")
