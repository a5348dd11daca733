import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import MemoryBank, knn_cosine_distance, knn_cosine_distance_gradient


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
