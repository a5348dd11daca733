"""Dense pretext task: cell labels from defect masks, locally aware features, dense scoring."""

import pytest
import torch

from anomalib_ssad import SSAD
from anomalib_ssad.components import PretextNetwork, cell_labels, local_cell_features, with_cell_context
from anomalib_ssad.components.scorers import CellScorer
from anomalib_ssad.models import pretext_module
from anomalib_ssad.models.pretext_module import balanced_cross_entropy
from anomalib_ssad.models.ssad.torch_model import build_ssad_network
from tests.test_ssad_torch_model import MEAN, STD


def test_cell_labels_follow_the_masks():
    masks = torch.zeros(3, 1, 64, 64)
    masks[0, 0, 16:32, 16:32] = 1  # exactly cells (2, 2), (2, 3), (3, 2), (3, 3) of an 8 x 8 grid
    masks[1, 0, 40:42, 0:64] = 1  # a thin line: 2 of each cell's 8 rows in grid row 5
    labels = torch.tensor([1, 2, 0])
    cells = cell_labels(masks, labels, (8, 8), min_fraction=0.25)
    assert cells.shape == (3, 8, 8) and cells.dtype == torch.long
    # Image 0: the covered cells take the big-defect label, their neighbours are ignored, the rest is normal.
    assert (cells[0, 2:4, 2:4] == 1).all()
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[1:5, 1:5] = True
    ring[2:4, 2:4] = False
    assert (cells[0][ring] == -1).all()
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 1:5] = False
    assert (cells[0][outside] == 0).all()
    # Image 1: 2 / 8 of each cell of row 5 is defective (= min_fraction), rows 4 and 6 only touch it.
    assert (cells[1, 5] == 2).all()
    assert (cells[1, 4] == -1).all() and (cells[1, 6] == -1).all()
    assert (cells[1, :4] == 0).all() and (cells[1, 7] == 0).all()
    # Image 2 has no defect: every cell is normal.
    assert (cells[2] == 0).all()
    # A fraction below the threshold is ignored, not labelled.
    assert (cell_labels(masks, labels, (8, 8), min_fraction=0.3)[1, 5] == -1).all()


def test_local_features_average_a_neighbourhood_without_border_dilution():
    fine = torch.ones(1, 2, 8, 8)
    coarse = torch.arange(16.0).view(1, 1, 4, 4)
    features = local_cell_features([fine, coarse], stages=(0, 1))
    assert features.shape == (1, 3, 8, 8)
    # A constant map stays constant up to the corners (no zero padding pulled in).
    torch.testing.assert_close(features[:, :2], fine)


def test_cell_context_is_the_mean_of_the_neighbourhood_inside_the_grid():
    cells = torch.arange(2 * 6 * 7 * 3, dtype=torch.float32).view(2, 6, 7, 3)
    widened = with_cell_context(cells, size=5)
    assert widened.shape == (2, 6, 7, 6)
    torch.testing.assert_close(widened[..., :3], cells)
    torch.testing.assert_close(widened[1, 3, 3, 3:], cells[1, 1:6, 1:6].mean(dim=(0, 1)))
    # A corner averages only the 3 x 3 cells of its neighbourhood that lie inside the grid (no zero padding).
    torch.testing.assert_close(widened[0, 0, 0, 3:], cells[0, :3, :3].mean(dim=(0, 1)))


@pytest.mark.parametrize("dense_features", ["backbone+head", "backbone"])
def test_context_cells_score_every_part_beside_its_context_and_bad_values_fail(dense_features):
    torch.manual_seed(0)
    model = build_ssad_network(
        backbone="resnet18", pretrained=False, dense_features=dense_features, context_cells=5
    ).eval()
    parts = {"backbone+head": (384, 128), "backbone": (384,)}[dense_features]
    assert model.scored_part_sizes == parts * 2
    with torch.no_grad():
        cells = model.dense_embeddings(torch.rand(2, 3, 64, 96))[0]
        model.scorer.fit(model.normal_embeddings(torch.rand(3, 3, 64, 64)))
        output = model(torch.rand(2, 3, 64, 96))
    assert cells.shape == (2, 8, 12, 2 * sum(parts))
    torch.testing.assert_close(
        cells[..., sum(parts) :], with_cell_context(cells[..., : sum(parts)], 5)[..., sum(parts) :]
    )
    assert output.anomaly_map.shape == (2, 1, 64, 96)
    # Patch and image modes have no cells to widen: the SSAD network ignores it there, PretextNetwork refuses it.
    patch = build_ssad_network(backbone="resnet18", pretrained=False, localization="patch", context_cells=5)
    assert patch.context_cells == 0
    for value, localization in ((4, "dense"), (1, "dense"), (-3, "dense"), (3, "patch")):
        with pytest.raises(ValueError, match="context_cells"):
            PretextNetwork(
                backbone="resnet18",
                pretrained=False,
                localization=localization,
                context_cells=value,
                scorer=lambda network: CellScorer(network.scored_part_sizes),
            )


def test_balanced_cross_entropy_weighs_classes_equally():
    logits = torch.tensor([[2.0, 0.0, 0.0]] * 9 + [[0.0, 2.0, 0.0]])
    labels = torch.tensor([0] * 9 + [1])
    loss = balanced_cross_entropy(logits, labels, 3)
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(loss, (per_sample[0] + per_sample[-1]) / 2)


@pytest.mark.parametrize("dense_features", ["backbone+head", "head", "backbone"])
def test_dense_mode_trains_per_cell_and_scores_every_cell(dense_features):
    torch.manual_seed(0)
    model = build_ssad_network(backbone="resnet18", pretrained=False, dense_features=dense_features)
    embeddings, logits = model.train()(torch.rand(2, 3, 64, 96))
    assert logits.shape == (2, 8, 12, 3) and embeddings[0].shape == (2, 8, 12, 128)
    model.eval()
    with torch.no_grad():
        normal = model.normal_embeddings(torch.rand(3, 3, 64, 64))[0]
        model.scorer.fit([normal])
        output = model(torch.rand(2, 1, 64, 96))
    expected_dim = {"backbone+head": 128 + 256 + 128, "head": 128, "backbone": 128 + 256}[dense_features]
    assert sum(model.scored_part_sizes) == expected_dim
    assert model.stage_sizes == (128, 256)  # the locally aware feature: the first two stages
    assert normal.shape == (3 * 8 * 8, expected_dim)
    assert output.anomaly_map.shape == (2, 1, 64, 96)
    torch.testing.assert_close(output.pred_score, output.anomaly_map.flatten(1).amax(dim=1))


def _dark_background_object(generator: torch.Generator, size: int = 128) -> torch.Tensor:
    """A striped, textured disc at a slightly varying position on a near-black, noisy background."""
    grid = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    shift = (torch.rand(2, generator=generator) - 0.5) * 8
    inside = ((yy - size / 2 - shift[0]) ** 2 + (xx - size / 2 - shift[1]) ** 2) < (0.32 * size) ** 2
    phase = torch.rand(1, generator=generator) * 6.28
    stripes = 0.5 + 0.15 * torch.sin(0.6 * (xx + 0.5 * yy) + phase)
    colour = torch.tensor([0.9, 0.75, 0.45]).view(3, 1, 1)
    image = 0.04 + 0.03 * torch.rand(3, size, size, generator=generator)
    return torch.where(inside, colour * stripes + 0.05 * torch.rand(3, size, size, generator=generator), image)


def test_defect_on_a_dark_background_object_lights_up_the_object():
    """The map peaks on a defect on the object, not on the dark background or along the object's outline."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_ssad_network(backbone="efficientnet_lite0", pretrained=True).eval()
    normal = torch.stack([_dark_background_object(generator) for _ in range(16)])
    with torch.no_grad():
        model.scorer.fit(model.normal_embeddings((normal - MEAN) / STD))
        test = torch.stack([_dark_background_object(generator) for _ in range(2)])
        clean = model((test - MEAN) / STD)
        test[:, :, 70:80, 50:62] = torch.tensor([0.25, 0.45, 0.8]).view(1, 3, 1, 1)  # a blue stain on the object
        output = model((test - MEAN) / STD)
    defect = torch.zeros(128, 128, dtype=torch.bool)
    defect[70:80, 50:62] = True
    for anomaly_map in output.anomaly_map[:, 0]:
        peak = divmod(int(anomaly_map.argmax()), 128)
        assert 62 <= peak[0] < 88 and 42 <= peak[1] < 70, peak
        assert anomaly_map[defect].mean() > 2 * anomaly_map[~defect].mean()
    assert (output.pred_score > clean.pred_score).all()


def test_centred_parts_score_the_mean_of_the_parts_cosine_distances():
    from anomalib_ssad.components.memory_bank import CentredParts

    generator = torch.Generator().manual_seed(0)
    normal = torch.rand(50, 5, generator=generator) + 3.0  # far from the origin: raw cosines all near 1
    centred = CentredParts((3, 2))
    centred.fit(normal)
    torch.testing.assert_close(centred.mean, normal.mean(dim=0))
    a, b = torch.rand(2, 5, generator=generator) + 3.0
    joint = 1 - (centred(a) * centred(b)).sum()
    parts = [(a[:3], b[:3], centred.mean[:3]), (a[3:], b[3:], centred.mean[3:])]
    expected = sum(1 - torch.nn.functional.cosine_similarity(x - m, y - m, dim=0) for x, y, m in parts) / 2
    torch.testing.assert_close(joint, expected)
    # Rows that need no gradient are normalised in place (one copy): the same values, bit for bit, and the input
    # is left as it was.
    rows = torch.rand(40, 5, generator=generator) + 3.0
    kept = rows.clone()
    with_gradient = centred(rows.clone().requires_grad_())
    assert torch.equal(centred(rows), with_gradient.detach()) and torch.equal(rows, kept)


def test_normal_rows_are_capped_by_a_random_subset_of_every_batch(bottle_images):
    from types import SimpleNamespace

    from anomalib_ssad import SSAD

    model = SSAD(backbone="resnet18", pretrained=False, pre_processor=False, visualizer=False)
    images = bottle_images[:6, :, :64, :64]  # an 8 x 8 cell grid: 64 rows per image, 384 in all
    loader = torch.utils.data.DataLoader(
        list(images), batch_size=2, collate_fn=lambda items: SimpleNamespace(image=torch.stack(items))
    )
    every_row = model.collect_normal_embeddings(loader)[0]
    assert every_row.shape[0] == 384
    capped = model.collect_normal_embeddings(loader, max_rows=96, generator=torch.Generator().manual_seed(0))[0]
    assert capped.shape == (96, every_row.shape[1])
    # Each kept row is one of the image's rows, and every batch gives its share (32 of its 128 rows).
    distance, source = torch.cdist(capped, every_row, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    assert distance.max() < 1e-4
    assert torch.bincount(source // 128, minlength=3).tolist() == [32, 32, 32]
    assert len(source.unique()) == 96


def test_normal_rows_do_not_depend_on_a_shuffling_loader_order(bottle_images):
    """A training loader shuffles: the rows kept (and so the scorer) must not follow its order."""
    from types import SimpleNamespace

    from anomalib_ssad import SSAD

    model = SSAD(backbone="resnet18", pretrained=False, pre_processor=False, visualizer=False)
    images = list(bottle_images[:6, :, :64, :64])

    def rows(shuffle: bool, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the global state a shuffling loader draws its order from
        loader = torch.utils.data.DataLoader(
            images, batch_size=2, shuffle=shuffle, collate_fn=lambda items: SimpleNamespace(image=torch.stack(items))
        )
        return model.collect_normal_embeddings(loader, max_rows=96, generator=torch.Generator().manual_seed(0))[0]

    in_order = rows(shuffle=False, seed=0)
    assert torch.equal(rows(shuffle=True, seed=1), in_order)
    assert torch.equal(rows(shuffle=True, seed=2), in_order)


def test_cell_scorer_needs_no_more_rows_than_its_holdout_and_coreset_use():
    from anomalib_ssad.components.memory_bank import CORESET_CANDIDATES
    from anomalib_ssad.components.scorers import CellScorer

    scorer = CellScorer((4,), capacity=8, holdout=20000)
    # A tenth is held out up to 20,000 rows: 200,000 rows fill the holdout and leave > 65,536 candidates.
    assert scorer.max_fit_rows == 200_000
    assert scorer.max_fit_rows - 20000 >= CORESET_CANDIDATES


def test_fitting_stops_with_a_clear_error_when_the_pretext_loss_is_not_finite(monkeypatch, demo_root, tmp_path):
    """Diverged weights would score every image NaN, which metrics turn into numbers: fitting raises instead."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    monkeypatch.setattr(pretext_module, "balanced_cross_entropy", lambda logits, labels, n: logits.sum() * float("nan"))
    model = SSAD(backbone="resnet18", pretrained=False, warmup_epochs=1, finetune_epochs=0, samples_per_epoch=8)
    datamodule = MVTecAD(root=demo_root, category="bottle", num_workers=0, train_batch_size=8, eval_batch_size=8)
    engine = Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(
        FloatingPointError, match=r"loss is nan in epoch 0: training diverged. Lower warmup_lr \(now 0.03\)"
    ):
        engine.fit(model=model, datamodule=datamodule)


def test_fitting_stops_with_a_clear_error_when_normal_embeddings_are_not_finite(monkeypatch, demo_root, tmp_path):
    """A scorer fitted on NaN embeddings would score every image NaN: fitting raises before the scorer sees them."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    model = SSAD(backbone="resnet18", pretrained=False, warmup_epochs=1, finetune_epochs=0, samples_per_epoch=8)
    embed = model.model.normal_embeddings

    def diverged(images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.full_like(embedding, float("nan")) for embedding in embed(images)]

    monkeypatch.setattr(model.model, "normal_embeddings", diverged)
    datamodule = MVTecAD(root=demo_root, category="bottle", num_workers=0, train_batch_size=8, eval_batch_size=8)
    engine = Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(
        FloatingPointError, match=r"SSAD: (\d+) of \1 normal embeddings are not finite in epoch 0: training diverged"
    ):
        engine.fit(model=model, datamodule=datamodule)
