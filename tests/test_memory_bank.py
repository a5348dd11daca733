import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import MemoryBank, knn_cosine_distance, knn_cosine_distance_gradient
from anomalib_ssad.components.memory_bank import greedy_coreset, knn_distance
from anomalib_ssad.components.scorers import CellScorer, GaussianScorer, KnnScorer, PartScorer, ScorerBag


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
    with pytest.raises(ValueError, match="sampler must be one of 'random', 'coreset', got"):
        MemoryBank(capacity=10).fill(embeddings, sampler="kmeans")


@pytest.mark.parametrize(("num_queries", "bank_size", "chunk_size"), [(50, 200, 7), (3, 2, 4096)])
def test_euclidean_knn_equals_brute_force(num_queries, bank_size, chunk_size):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(num_queries, 16, generator=generator) * 3
    bank = torch.randn(bank_size, 16, generator=generator) * 3
    scores, neighbours = knn_distance(queries, bank, k=3, chunk_size=chunk_size, metric="euclidean")
    distances, expected_neighbours = torch.cdist(queries, bank).topk(min(3, bank_size), dim=1, largest=False)
    torch.testing.assert_close(scores, distances.mean(dim=1), atol=1e-4, rtol=1e-4)
    assert (neighbours.sort(dim=1).values == expected_neighbours.sort(dim=1).values).all()
    with pytest.raises(ValueError, match="metric"):
        knn_distance(queries, bank, metric="manhattan")


def test_euclidean_coreset_keeps_magnitudes_that_a_cosine_coreset_cannot_tell_apart():
    # Every row points the same way; only the length differs. The cosine geometry sees one point.
    lengths = torch.linspace(1.0, 10.0, 50)
    embeddings = lengths[:, None] * torch.ones(1, 4)
    keep = greedy_coreset(embeddings, 3, generator=torch.Generator().manual_seed(0), metric="euclidean")
    assert {0, 49} <= set(keep.tolist())  # the shortest and the longest rows


def _normal_cells(generator: torch.Generator, count: int = 400) -> torch.Tensor:
    """Non-negative "activations" of one pattern whose strength varies (as lighting makes it), plus noise."""
    pattern = torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0, 0.2])
    strength = 0.8 + 0.4 * torch.rand(count, 1, generator=generator)
    return (strength * pattern + 0.02 * torch.randn(count, 6, generator=generator)).clamp_min(0.0)


def test_cell_scorer_combines_direction_and_magnitude_in_units_of_a_normal_cell():
    generator = torch.Generator().manual_seed(0)
    normal = _normal_cells(generator)
    scorers = {distance: CellScorer((6,), capacity=64, distance=distance) for distance in ("cosine", "euclidean")}
    combined = CellScorer((6,), capacity=64)
    for scorer in [*scorers.values(), combined]:
        scorer.fit([normal], generator=torch.Generator().manual_seed(1))
    fresh = _normal_cells(generator, 200)
    # A typical normal cell scores about 1 (each distance is divided by a held-out normal cell's).
    assert combined([fresh]).mean().item() == pytest.approx(1.0, abs=0.25)
    # A much brighter copy of a normal cell lies far away, but about the normal mean it points where normal
    # variation (strength) points too: the cosine distance alone does not single it out; the others do.
    brighter = fresh[:20] * 3.0
    assert scorers["cosine"]([brighter]).median() < scorers["cosine"]([fresh]).median()
    for scorer in (scorers["euclidean"], combined):
        assert scorer([brighter]).min() > scorer([fresh]).max()
    # A different pattern of the same strength: both distances single most of it out.
    swapped = fresh[:20][:, [1, 0, 3, 2, 5, 4]]
    for scorer in [*scorers.values(), combined]:
        assert scorer([swapped]).quantile(0.1) > scorer([fresh]).quantile(0.9)
    # The combined score is the mean of the two scaled distances.
    expected = (scorers["cosine"]([brighter]) + scorers["euclidean"]([brighter])) / 2
    torch.testing.assert_close(combined([brighter]), expected, rtol=0.05, atol=0.0)
    # combine="max" takes the larger of the same two scaled distances.
    largest = CellScorer((6,), capacity=64, combine="max")
    largest.fit([normal], generator=torch.Generator().manual_seed(1))
    both = torch.stack([scorers["cosine"]([brighter]), scorers["euclidean"]([brighter])])
    torch.testing.assert_close(largest([brighter]), both.amax(dim=0), rtol=0.05, atol=0.0)
    # direction_weight weighs the cosine part against the Euclidean one in the mean.
    weighted = CellScorer((6,), capacity=64, direction_weight=0.2)
    weighted.fit([normal], generator=torch.Generator().manual_seed(1))
    expected = 0.2 * scorers["cosine"]([brighter]) + 0.8 * scorers["euclidean"]([brighter])
    torch.testing.assert_close(weighted([brighter]), expected, rtol=0.05, atol=0.0)
    assert weighted([brighter]).mean() > combined([brighter]).mean()
    for arguments in ({"direction_weight": 1.5}, {"distance": "euclidean", "direction_weight": 0.3}):
        with pytest.raises(ValueError, match="direction_weight"):
            CellScorer((6,), **arguments)
    with pytest.raises(ValueError, match="direction_weight"):
        CellScorer((6,), combine="max", direction_weight=0.3)


def test_scorer_bag_fits_members_on_disjoint_shares_and_averages_their_scores():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(300, 4, generator=generator)
    bag = ScorerBag(lambda: CellScorer((4,), capacity=1000, distance="euclidean"), num_members=3)
    bag.fit([rows], generator=generator)
    # Every member keeps its 100-row share less its held-out tenth; no row is in two members' banks.
    banks = [member.banks[0].memory_bank for member in bag.members]
    assert [len(bank) for bank in banks] == [90, 90, 90]
    kept = torch.cat(banks)
    assert len({tuple(row.tolist()) for row in kept}) == 270
    assert (kept[:, None] == rows[None]).all(dim=-1).any(dim=1).all()  # every kept row is a fitted row
    queries = torch.randn(7, 4, generator=generator)
    expected = torch.stack([member([queries]) for member in bag.members]).mean(dim=0)
    torch.testing.assert_close(bag([queries]), expected)
    restored = ScorerBag(lambda: CellScorer((4,), capacity=1000, distance="euclidean"), num_members=3)
    restored.load_state_dict(bag.state_dict())
    torch.testing.assert_close(restored([queries]), bag([queries]))
    with pytest.raises(ValueError, match="3 members"):
        bag.fit([rows[:2]])
    # Image embeddings: the scores' gradient is the mean of the members' too.
    knn_bag = ScorerBag(lambda: KnnScorer(1, capacity=1000), num_members=2)
    knn_bag.fit([rows.abs()], generator=generator)
    scores, gradient = knn_bag.score_with_gradient([queries.abs()])
    members = [member.score_with_gradient([queries.abs()]) for member in knn_bag.members]
    torch.testing.assert_close(scores, (members[0][0] + members[1][0]) / 2)
    torch.testing.assert_close(gradient, (members[0][1] + members[1][1]) / 2)
    assert not torch.equal(members[0][1], members[1][1])
    with pytest.raises(ValueError, match="learns in training"):
        ScorerBag(lambda: KnnScorer(1, capacity=8, source="train"), num_members=2)
    with pytest.raises(ValueError, match="num_members"):
        ScorerBag(lambda: CellScorer((4,)), num_members=0)
    # ScorerBag.of: one member is the member itself (the state dict of a plain scorer), more a bag.
    assert type(ScorerBag.of(lambda: CellScorer((4,)), 1)) is CellScorer
    assert len(ScorerBag.of(lambda: CellScorer((4,)), 2).members) == 2
    with pytest.raises(ValueError, match="num_members"):
        ScorerBag.of(lambda: CellScorer((4,)), 0)


def test_part_scorer_counts_parts_on_different_scales_alike():
    generator = torch.Generator().manual_seed(0)
    # Part 1 (3 channels): a k-NN distance; part 2 (2 channels): a Mahalanobis distance, in other units.
    rows = torch.cat([1000.0 * torch.randn(2000, 3, generator=generator), torch.randn(2000, 2, generator=generator)], 1)

    def build() -> PartScorer:
        return PartScorer((3, 2), [CellScorer((3,), capacity=500, distance="euclidean"), GaussianScorer()])

    scorer = build()
    scorer.fit([rows], generator=generator)
    normal = torch.cat([1000.0 * torch.randn(200, 3, generator=generator), torch.randn(200, 2, generator=generator)], 1)
    # A deviation of either part alone outranks every normal row.
    small_defect, large_defect = normal[:1].clone(), normal[:1].clone()
    small_defect[0, 3:] = 8.0
    large_defect[0, :3] = 8000.0
    normal_scores = scorer([normal])
    assert scorer([small_defect]) > normal_scores.max() and scorer([large_defect]) > normal_scores.max()
    # The score is the mean of the parts' scores, each in its unit (a normal row's mean score).
    relative = [
        member([part]) / unit
        for member, part, unit in zip(scorer.scorers, normal.split((3, 2), 1), scorer.scale, strict=True)
    ]
    torch.testing.assert_close(normal_scores, (relative[0] + relative[1]) / 2)
    restored = build()
    restored.load_state_dict(scorer.state_dict())
    torch.testing.assert_close(restored([normal]), normal_scores)
    with pytest.raises(ValueError, match="one scorer per part, got 1 scorers for parts \\(3, 2\\)"):
        PartScorer((3, 2), [GaussianScorer()])
    with pytest.raises(ValueError, match="dimension 4 differs from the parts' total 5"):
        scorer([normal[:, :4]])
    with pytest.raises(ValueError, match="learns in training"):
        PartScorer((3,), [KnnScorer(1, capacity=8, source="train")])


def test_part_scorer_min_scores_a_row_by_the_part_that_finds_it_least_anomalous():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(2000, 5, generator=generator)

    def build(combine: str) -> PartScorer:
        return PartScorer(
            (3, 2), [CellScorer((3,), capacity=500, distance="euclidean"), GaussianScorer()], combine=combine
        )

    mean, least = build("mean"), build("min")
    mean.fit([rows], generator=torch.Generator().manual_seed(1))
    least.fit([rows], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(least.scale, mean.scale)
    # A row far off in one part only: the mean calls it anomalous, the minimum keeps it with the normal rows.
    normal = torch.randn(200, 5, generator=generator)
    one_part = normal[:1].clone()
    one_part[0, 3:] = 8.0
    both_parts = one_part.clone()
    both_parts[0, :3] = 8.0
    assert mean([one_part]) > mean([normal]).max()
    assert least([one_part]) <= least([normal]).max()
    assert least([both_parts]) > least([normal]).max()
    relative = [
        member([part]) / unit
        for member, part, unit in zip(least.scorers, normal.split((3, 2), 1), least.scale, strict=True)
    ]
    torch.testing.assert_close(least([normal]), torch.minimum(relative[0], relative[1]))
    with pytest.raises(ValueError, match="combine"):
        build("max")


def test_cell_scorer_state_dict_restores_banks_and_scales():
    generator = torch.Generator().manual_seed(0)
    scorer = CellScorer((4, 2), capacity=16)
    scorer.fit([_normal_cells(generator)], generator=generator)
    assert [len(bank) for bank in scorer.banks] == [16, 16]
    restored = CellScorer((4, 2), capacity=16)
    restored.load_state_dict(scorer.state_dict())
    queries = _normal_cells(generator, 10)
    torch.testing.assert_close(restored([queries]), scorer([queries]))
    with pytest.raises(ValueError, match="distance"):
        CellScorer((6,), distance="l1")
    with pytest.raises(ValueError, match="combine"):
        CellScorer((6,), combine="sum")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_search_finds_the_exact_neighbours_of_a_small_bank(metric):
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(0)
    rows, queries = torch.randn(500, 16, generator=generator), torch.randn(40, 16, generator=generator)
    exact, approximate = MemoryBank(500, metric=metric), MemoryBank(500, metric=metric, search="faiss")
    for bank in (exact, approximate):
        bank.fill(rows)
    expected_scores, expected_neighbours = exact.nearest(queries, k=3)
    scores, neighbours = approximate.nearest(queries, k=3)
    # HNSW at this size visits (nearly) every row: the same neighbours, the same scores.
    assert (neighbours.sort(dim=1).values == expected_neighbours.sort(dim=1).values).float().mean() > 0.95
    torch.testing.assert_close(scores, expected_scores, atol=1e-3, rtol=1e-3)
    # The index follows the bank: refilled rows are searched, not the stale index.
    approximate.fill(rows[:10])
    assert int(approximate.nearest(queries, k=1)[1].max()) < 10


def test_faiss_search_without_faiss_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        MemoryBank(10, search="faiss")


def test_train_source_knn_scorer_keeps_the_newest_normal_predicted_normal_rows() -> None:
    scorer = KnnScorer(num_heads=1, capacity=3, source="train")
    assert scorer.learns_in_training
    embeddings = torch.arange(12.0).view(6, 2)
    labels = torch.tensor([0, 0, 1, 0, 0, 0])
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0]])
    scorer.observe([embeddings], logits, labels)
    # Row 1 is predicted defective and row 2 is a defect: neither enters the bank.
    assert torch.equal(scorer.banks[0].memory_bank, embeddings[[0, 3, 4, 5]])
    gathered = []
    scorer.end_epoch(lambda rows: gathered.append(len(rows)) or rows)
    assert gathered == [4]
    assert torch.equal(scorer.banks[0].memory_bank, embeddings[[3, 4, 5]])
    # An "eval" scorer takes nothing from the pretext steps.
    evaluated = KnnScorer(num_heads=1, capacity=3)
    evaluated.observe([embeddings], logits, labels)
    evaluated.end_epoch(lambda rows: rows)
    assert len(evaluated.banks[0]) == 0
    with pytest.raises(ValueError, match="memory_bank_source"):
        KnnScorer(source="training")


def test_standardized_distance_weighs_every_channel_by_its_normal_spread():
    """A shift in a channel that hardly varies on normal data: small in raw units, large in standard deviations."""
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(600, 4, generator=generator) * torch.tensor([5.0, 5.0, 5.0, 0.05])
    scorers = {
        distance: CellScorer((4,), capacity=128, distance=distance) for distance in ("euclidean", "standardized")
    }
    for scorer in scorers.values():
        scorer.fit([normal], generator=torch.Generator().manual_seed(1))
    fresh = torch.randn(100, 4, generator=generator) * torch.tensor([5.0, 5.0, 5.0, 0.05])
    shifted = fresh.clone()
    shifted[:, 3] += 0.5  # ten normal standard deviations, a tenth of one of the other channels'
    euclidean, standardized = scorers["euclidean"], scorers["standardized"]
    assert euclidean([shifted]).median() < 1.2 * euclidean([fresh]).median()
    assert standardized([shifted]).quantile(0.1) > standardized([fresh]).quantile(0.9)
    assert standardized([fresh]).mean().item() == pytest.approx(1.0, abs=0.25)
