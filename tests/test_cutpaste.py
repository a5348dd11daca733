# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of CutPaste: augmentations, Gaussian density, localization, export, Engine and CLI runs."""

import math
from typing import get_args

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import GaussianDensity, GaussianScorer, PretextNetwork, ledoit_wolf
from anomalib_ssad.components.synthetic import CUTPASTE_CLASSES, SyntheticAnomalyGenerator
from anomalib_ssad.components.synthetic.presets import CutPasteVariant
from anomalib_ssad.models.base import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_KEY
from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network
from tests.conftest import assert_checkpoint_round_trip, fit_and_test_on_demo
from tests.test_ssad_end_to_end import assert_onnx_export_matches_checkpoint, train_with_cli
from tests.test_ssad_torch_model import MEAN, STD

TINY_MODEL = {
    "backbone": "efficientnet_lite0",
    "warmup_epochs": 1,
    "finetune_epochs": 1,
    "samples_per_epoch": 30,
    "batch_size": 32,
}


def _textured(size: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, size // 8, size // 8, generator=generator)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]


# --- augmentations -------------------------------------------------------------------------------------------


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _offsets(pool: torch.Tensor, values: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> list[tuple[int, int]]:
    """Every shift ``(dy, dx)`` such that ``pool[:, ys + dy, xs + dx]`` equals ``values`` exactly."""
    _, height, width = pool.shape
    offsets = []
    for y, x in (pool == values[:, :1, None]).all(dim=0).nonzero().tolist():
        dy, dx = y - int(ys[0]), x - int(xs[0])
        rows, cols = ys + dy, xs + dx
        inside = rows.min() >= 0 and cols.min() >= 0 and rows.max() < height and cols.max() < width
        if inside and torch.equal(pool[:, rows, cols], values):
            offsets.append((dy, dx))
    return offsets


def test_cutpaste_rectangle_ranges_and_same_image_content() -> None:
    n = 40
    images = torch.stack([_textured(128, seed) for seed in range(n)])
    labels = torch.ones(n, dtype=torch.long)
    out, out_labels, masks = SyntheticAnomalyGenerator.cutpaste(variant="cutpaste")(
        images, generator=_seeded(0), labels=labels
    )
    # Without the patch's colour jitter (drawn after the rectangle and its source), the paste is an exact copy.
    exact, _, exact_masks = SyntheticAnomalyGenerator.cutpaste(variant="cutpaste", patch_jitter=(0.0, 0.0, 0.0, 0.0))(
        images, generator=_seeded(0), labels=labels
    )
    assert out_labels.tolist() == [1] * n
    assert torch.equal(masks, exact_masks)
    aspects = []
    for image, result, copy, mask in zip(images, out, exact, masks[:, 0].bool(), strict=True):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert int(mask.sum()) == width * height, "the mask is its bounding box: an axis-aligned rectangle"
        assert 0.015 <= width * height / 128**2 <= 0.17
        aspects.append(width / height)
        # Outside the rectangle the image is untouched (no global jitter).
        assert torch.equal(result[:, ~mask], image[:, ~mask])
        # Inside: a window of the same image, elsewhere (at least half the rectangle away) ...
        offsets = _offsets(image, copy[:, mask], rows, cols)
        assert len(offsets) == 1, offsets
        (dy, dx) = offsets[0]
        assert abs(dy) >= height / 2 or abs(dx) >= width / 2
        # ... colour-jittered (0.1 each): changed, but still close to and correlated with the window.
        difference = (result[:, mask] - copy[:, mask]).abs()
        assert difference.max() > 1e-3 and difference.mean() < 0.1
        correlation = torch.corrcoef(torch.stack([result[:, mask].flatten(), copy[:, mask].flatten()]))[0, 1]
        assert correlation > 0.7
    assert min(aspects) < 1 < max(aspects)


def test_cutpaste_scar_size_and_rotation_ranges() -> None:
    n = 60
    images = torch.stack([_textured(128, seed) for seed in range(n)])
    out, labels, masks = SyntheticAnomalyGenerator.cutpaste(variant="scar")(
        images, generator=_seeded(1), labels=torch.full((n,), 2)
    )
    assert labels.tolist() == [2] * n
    short_sides, long_sides, angles = [], [], []
    for image, result, mask in zip(images, out, masks[:, 0].numpy().astype(np.uint8), strict=True):
        outside = torch.from_numpy(mask == 0)
        assert torch.equal(result[:, outside], image[:, outside])
        # The rectangle around the pixel squares (centres +- 0.5) has the scar's size, up to a pixel.
        centres = cv2.findNonZero(mask).reshape(-1, 2).astype(np.float32)
        corners = (centres[:, None] + np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])).reshape(-1, 2)
        _, sides, _ = cv2.minAreaRect(corners.astype(np.float32))
        short, long = sorted(sides)
        assert 2 - 1 <= short <= 16 + 1.5 and 10 - 1 <= long <= 25 + 1.5, (short, long)
        short_sides.append(short)
        long_sides.append(long)
        if long >= 2 * short:  # clearly taller than wide: the principal axis is the height's, at the angle + 90
            moments = cv2.moments(mask, binaryImage=True)
            major = 0.5 * math.degrees(math.atan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
            angles.append(major % 180 - 90)
    assert min(short_sides) < 4 and max(short_sides) > 13
    assert min(long_sides) < 13 and max(long_sides) > 22
    assert max(abs(angle) for angle in angles) <= 45 + 8
    assert min(angles) < -20 and max(angles) > 20


@pytest.mark.parametrize(("variant", "expected"), [("cutpaste", {0, 1}), ("scar", {0, 2}), ("3way", {0, 1, 2})])
def test_variants_draw_their_classes_and_are_deterministic(variant: str, expected: set[int]) -> None:
    generator = SyntheticAnomalyGenerator.cutpaste(variant=variant)
    images = torch.stack([_textured(64, seed) for seed in range(4)]).repeat(8, 1, 1, 1)
    first = generator(images, generator=_seeded(3))
    second = generator(images, generator=_seeded(3))
    other = generator(images, generator=_seeded(4))
    assert set(first[1].tolist()) == expected
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    labels, masks = first[1], first[2][:, 0].bool()
    normal = labels == 0
    assert torch.equal(first[0][normal], images[normal])  # normal samples stay untouched
    assert not masks[normal].any() and masks[~normal].flatten(1).any(dim=1).all()
    # Label 1 is CutPaste's rectangle (it fills its bounding box), label 2 the rotated scar.
    for label, mask in zip(labels.tolist(), masks, strict=True):
        if label == 1:
            rows, cols = torch.nonzero(mask, as_tuple=True)
            assert int(mask.sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
    with pytest.raises(ValueError, match="variant"):
        SyntheticAnomalyGenerator.cutpaste(variant="four")
    # Every variant the type names has its classes (one source for the option's values and its check).
    assert tuple(CUTPASTE_CLASSES) == get_args(CutPasteVariant)
    with pytest.raises(ValueError, match="classes"):
        SyntheticAnomalyGenerator.image_level(classes=(0, 3))


# --- Gaussian density ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_samples", "num_features"), [(200, 16), (20, 64)])
def test_ledoit_wolf_matches_sklearn(num_samples: int, num_features: int) -> None:
    from sklearn.covariance import LedoitWolf

    generator = torch.Generator().manual_seed(0)
    samples = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float64)
    samples = samples * torch.linspace(0.2, 3.0, num_features, dtype=torch.float64) + 1.5
    covariance, shrinkage = ledoit_wolf(samples)
    reference = LedoitWolf().fit(samples.numpy())
    assert shrinkage == pytest.approx(reference.shrinkage_, abs=1e-5)
    np.testing.assert_allclose(covariance.numpy(), reference.covariance_, atol=1e-5)


def test_mahalanobis_score_and_gradient_match_references() -> None:
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf

    generator = torch.Generator().manual_seed(1)
    normal = torch.randn(300, 12, generator=generator) * torch.linspace(0.5, 2.0, 12)
    queries = torch.randn(5, 12, generator=generator) * 2
    density = GaussianDensity()
    density.fit(normal)
    precision = np.linalg.inv(LedoitWolf().fit(normal.double().numpy()).covariance_)
    mean = normal.double().mean(0).numpy()
    expected = [mahalanobis(query, mean, precision) for query in queries.double().numpy()]
    scores = density.score(queries)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)

    leaf = queries.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(density.score(leaf).sum(), leaf)
    torch.testing.assert_close(density.score_gradient(queries, scores), autograd, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="not fitted"):
        GaussianDensity().score(queries)


# --- model -----------------------------------------------------------------------------------------------------


def fitted(model: PretextNetwork, normal: torch.Tensor) -> PretextNetwork:
    model.eval()
    with torch.no_grad():
        model.scorer.fit(model.normal_embeddings(normal))
    return model


@pytest.mark.parametrize("scored_features", ["backbone", "head", "backbone+head"])
def test_grad_cam_is_batched_and_equals_autograd(scored_features: str) -> None:
    torch.manual_seed(0)
    network = build_cutpaste_network(
        backbone="resnet18", pretrained=False, num_classes=2, localization="image", scored_features=scored_features
    )
    model = fitted(network, torch.rand(24, 3, 64, 64))
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        batched = model(images).anomaly_map
        single = torch.cat([model(image[None]).anomaly_map for image in images])
    stage_maps = model.backbone(images)
    last = stage_maps[-1].detach().requires_grad_(True)
    pooled = [feature_map.mean(dim=(2, 3)) for feature_map in stage_maps[:-1]] + [last.mean(dim=(2, 3))]
    features = torch.cat(pooled, dim=-1)
    scored = {
        "backbone": features,
        "head": model.heads[0](features),
        "backbone+head": torch.cat([features, model.heads[0](features)], dim=-1),
    }[scored_features]
    scores = model.scorer.density.score(scored)
    (gradient,) = torch.autograd.grad(scores.sum(), last)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * last).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    reference = cam / cam.flatten(1).amax(dim=1)[:, None, None, None] * scores.detach()[:, None, None, None]
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("scorer", "scored_features"),
    [("gaussian", "head"), ("knn", "backbone+head"), ("knn+gaussian", "backbone+head")],
)
def test_patch_map_lights_up_a_painted_defect(bottle_images: torch.Tensor, scorer: str, scored_features: str) -> None:
    model = build_cutpaste_network(
        localization="patch", patch_size=32, patch_stride=8, scorer=scorer, scored_features=scored_features
    )  # 64 px / 256 px, scaled to 128 px
    fitted(model, (bottle_images[:20] - MEAN) / STD)
    test = bottle_images[20:22].clone()
    test[:, :, 40:56, 70:86] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    with torch.no_grad():
        output = model((test - MEAN) / STD)
        clean = model((bottle_images[20:22] - MEAN) / STD)
    assert output.anomaly_map.shape == (2, 1, 128, 128)
    for anomaly_map in output.anomaly_map[:, 0]:
        peak = divmod(int(anomaly_map.argmax()), anomaly_map.shape[1])
        assert 32 <= peak[0] < 64 and 62 <= peak[1] < 94, peak
    assert (output.pred_score > clean.pred_score).all()
    # The image score is the smoothed map's peak (as in dense mode), not one window's score.
    torch.testing.assert_close(output.pred_score, output.anomaly_map.flatten(1).amax(dim=1))


def test_knn_scorer_compares_the_backbone_and_head_parts_apart() -> None:
    model = build_cutpaste_network(backbone="resnet18", pretrained=False, scorer="knn", scored_features="backbone+head")
    assert model.scored_part_sizes == (sum(model.backbone.out_channels), 128) == (128 + 256 + 512, 128)
    # Each pooled stage gets its own cosine distance, then the head's embedding.
    assert model.stage_sizes == (128, 256, 512)
    assert model.scorer.centred_parts.part_sizes == (128, 256, 512, 128)
    head_only = build_cutpaste_network(backbone="resnet18", pretrained=False, scorer="knn", scored_features="head")
    assert head_only.scorer.centred_parts.part_sizes == (128,)
    with pytest.raises(ValueError, match="scorer='knn' scores windows: it needs localization='patch', got 'image'"):
        build_cutpaste_network(backbone="resnet18", pretrained=False, scorer="knn", localization="image")
    with pytest.raises(ValueError, match="scorer must be one of 'gaussian', 'knn', 'knn\\+gaussian', got 'gmm'"):
        build_cutpaste_network(backbone="resnet18", pretrained=False, scorer="gmm")


def test_knn_gaussian_scorer_scores_the_backbone_by_knn_and_the_head_by_the_gaussian() -> None:
    model = build_cutpaste_network(
        backbone="resnet18", pretrained=False, scorer="knn+gaussian", scored_features="backbone+head"
    )
    backbone_scorer, head_scorer = model.scorer.scorers
    assert model.scorer.part_sizes == model.scored_part_sizes
    assert backbone_scorer.centred_parts.part_sizes == model.stage_sizes == (128, 256, 512)
    assert isinstance(head_scorer, GaussianScorer)
    with pytest.raises(ValueError, match="needs scored_features='backbone\\+head', got 'head'"):
        build_cutpaste_network(backbone="resnet18", pretrained=False, scorer="knn+gaussian", scored_features="head")
    with pytest.raises(ValueError, match="scorer='knn\\+gaussian' scores windows: it needs localization='patch'"):
        build_cutpaste_network(
            backbone="resnet18",
            pretrained=False,
            scorer="knn+gaussian",
            scored_features="backbone+head",
            localization="image",
        )


def test_eval_forward_exports_with_dynamic_batch() -> None:
    """Closed-form Grad-CAM exports (the patch-level graph is exported to ONNX in the CLI test)."""
    model = build_cutpaste_network(backbone="resnet18", pretrained=False, localization="image")
    fitted(model, torch.rand(8, 3, 64, 64))
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (torch.rand(2, 3, 64, 64),), dynamic_shapes={"images": {0: batch}})
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
    actual = exported.module()(images)
    torch.testing.assert_close(actual[0], expected.pred_score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual[2], expected.anomaly_map, atol=1e-5, rtol=1e-5)  # InferenceBatch order


def test_image_gaussian_multiplies_the_map_peak_by_the_images_max_pooled_stage_score() -> None:
    """``image_score="peak*image_gaussian"``: the map is unchanged, the score is its peak times the image's density."""
    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "pretrained": False, "patch_size": 32, "patch_stride": 16}
    network = build_cutpaste_network(**kwargs, image_score="peak*image_gaussian")
    peak_only = build_cutpaste_network(**kwargs)
    peak_only.load_state_dict(network.state_dict(), strict=False)
    normal = torch.stack([_textured(64, seed) for seed in range(12)])
    fitted(network, normal)
    fitted(peak_only, normal)
    with torch.no_grad():
        network.image_scorer.fit([network.image_features(normal)])
        images = normal[:2].clone()
        images[1, :, 20:30, 20:30] = 3.0  # a small bright defect: it raises channel maxima, barely the means
        scored, peaks = network(images), peak_only(images)
        factor = network.image_scorer([network.image_features(images)])
    torch.testing.assert_close(scored.anomaly_map, peaks.anomaly_map)
    torch.testing.assert_close(scored.pred_score, peaks.anomaly_map.flatten(1).amax(dim=1) * factor)
    assert factor[1] > 2 * factor[0]
    with pytest.raises(
        ValueError, match=r"image_score='peak\*image_gaussian' multiplies the peak .* localization='patch'"
    ):
        build_cutpaste_network(**kwargs, localization="image", image_score="peak*image_gaussian")
    with pytest.raises(ValueError, match="image_score"):
        build_cutpaste_network(**kwargs, image_score="mean")


def test_image_scorer_is_fitted_beside_a_scorer_that_learns_in_training() -> None:
    """A scorer filled while training is left as it is; the image scorer still needs the clean images."""
    from types import SimpleNamespace

    from anomalib_ssad import CutPaste
    from anomalib_ssad.components.scorers import KnnScorer

    module = CutPaste(
        backbone="resnet18",
        pretrained=False,
        patch_size=32,
        patch_stride=16,
        image_score="peak*image_gaussian",
        pre_processor=False,
        visualizer=False,
    )
    module.model.scorer = KnnScorer(num_heads=1, capacity=8, source="train")
    images = [_textured(64, seed) for seed in range(6)]
    loader = torch.utils.data.DataLoader(
        images, batch_size=2, collate_fn=lambda items: SimpleNamespace(image=torch.stack(items))
    )
    module.fit_normal_model(loader)
    assert module.model.image_scorer.density.is_fitted
    assert len(module.model.scorer.banks[0].memory_bank) == 0


# --- anomalib Engine and CLI -------------------------------------------------------------------------------------


def test_engine_fit_test_and_checkpoint_round_trip(tmp_path, demo_root) -> None:
    from anomalib_ssad import CutPaste

    model = CutPaste(
        **TINY_MODEL,
        variant="3way",
        pre_processor=CutPaste.configure_pre_processor(image_size=(64, 64)),
        visualizer=False,
    )
    engine, metrics = fit_and_test_on_demo(model, demo_root, tmp_path)
    # The default scorer: k-NN of the pooled stages, Gaussian of the head's embedding.
    stages, head = model.model.scorer.scorers
    assert head.density.is_fitted and len(stages.banks[0]) > 0
    print("CutPaste tiny demo metrics:", {key: round(float(value), 3) for key, value in metrics.items()})
    restored = assert_checkpoint_round_trip(engine, model, demo_root, tmp_path)
    restored_stages, restored_head = restored.model.scorer.scorers
    torch.testing.assert_close(restored_head.density.precision, head.density.precision)
    torch.testing.assert_close(restored_stages.banks[0].memory_bank, stages.banks[0].memory_bank)
    torch.testing.assert_close(restored.model.scorer.scale, model.model.scorer.scale)
    # A checkpoint of 0.3 or earlier (no format key) held a bank of the stages normalised as one part: refused.
    saved = torch.load(tmp_path / "model.ckpt", map_location="cpu", weights_only=False)
    assert saved.pop(CHECKPOINT_FORMAT_KEY) == CHECKPOINT_FORMAT == 4
    torch.save(saved, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"saved by anomalib-ssad 0\.3 or earlier, whose k-NN compared the pooled"):
        CutPaste.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu", weights_only=False)
    # The default image score's Gaussian is saved; a checkpoint of 0.5 (the peak alone, no image_score in its
    # hyperparameters) is refused by the new default with a message, and loads with image_score="peak".
    torch.testing.assert_close(
        restored.model.image_scorer.density.precision, model.model.image_scorer.density.precision
    )
    saved[CHECKPOINT_FORMAT_KEY] = CHECKPOINT_FORMAT
    saved["state_dict"] = {key: value for key, value in saved["state_dict"].items() if "image_scorer" not in key}
    assert saved["hyper_parameters"].pop("image_score") == "peak*image_gaussian"
    torch.save(saved, tmp_path / "peak.ckpt")
    with pytest.raises(ValueError, match=r"has no image Gaussian.*Load it with image_score='peak'"):
        CutPaste.load_from_checkpoint(tmp_path / "peak.ckpt", map_location="cpu", weights_only=False)
    peak = CutPaste.load_from_checkpoint(
        tmp_path / "peak.ckpt", map_location="cpu", weights_only=False, image_score="peak"
    )
    assert peak.model.image_scorer is None
    # The default averages a window's two relative scores; a checkpoint of 0.6 (no combine in its hyperparameters:
    # the mean) loads as it was saved, and is refused with a message by a model that takes their minimum.
    assert model.model.scorer.combine == restored.model.scorer.combine == "mean"
    saved = torch.load(tmp_path / "model.ckpt", map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"].pop("combine") == "mean"
    saved[CHECKPOINT_FORMAT_KEY] = 3
    torch.save(saved, tmp_path / "mean.ckpt")
    with pytest.raises(ValueError, match=r"saved by anomalib-ssad 0\.6 or earlier.*not for combine='min'"):
        CutPaste.load_from_checkpoint(tmp_path / "mean.ckpt", map_location="cpu", weights_only=False, combine="min")
    mean = CutPaste.load_from_checkpoint(tmp_path / "mean.ckpt", map_location="cpu", weights_only=False)
    assert mean.model.scorer.combine == "mean"
    torch.testing.assert_close(mean.model.scorer.scale, model.model.scorer.scale)


@pytest.mark.parametrize("image_score", ["peak", "peak*image_gaussian"])
def test_cli_train_and_onnx_export_give_checkpoint_scores(tmp_path, demo_root, image_score: str) -> None:
    from anomalib_ssad import CutPaste

    init_args = {
        **TINY_MODEL,
        "variant": "cutpaste",
        "localization": "patch",
        "patch_size": 32,
        "patch_stride": 16,
        "crops_per_image": 1,
        "image_score": image_score,
    }
    run_dir = train_with_cli(tmp_path, demo_root, "anomalib_ssad.CutPaste", init_args)
    restored = assert_onnx_export_matches_checkpoint(tmp_path, run_dir, CutPaste, demo_root)
    if image_score == "peak":
        assert restored.model.image_scorer is None
    else:  # fitted on the training images while fitting, restored from the checkpoint
        assert restored.model.image_scorer.density.is_fitted


@pytest.mark.parametrize("scorer", ["gaussian", "knn+gaussian"])
@pytest.mark.parametrize("seed", [0, 1])
def test_patch_map_of_a_defect_free_texture_has_no_border_hot_spots(seed: int, scorer: str) -> None:
    """Every window is embedded alone, as in training: a uniform texture gets a uniform map, borders included."""
    generator = torch.Generator().manual_seed(seed)
    # A smooth stationary texture: random-phase sinusoids plus fine noise, never seen at any one position.
    grid = torch.linspace(0, 1, 128)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")

    def texture() -> torch.Tensor:
        phase = torch.rand(4, generator=generator) * 2 * math.pi
        wave = torch.sin(40 * xx + phase[0]) + torch.sin(31 * yy + phase[1]) + torch.sin(25 * (xx + yy) + phase[2])
        noise = torch.rand(3, 128, 128, generator=generator) * 0.1
        return (0.45 + 0.12 * wave + noise).clamp(0, 1)

    # 64 px windows by default: 32 px at this 128 px input is the paper's ratio.
    scored_features = "head" if scorer == "gaussian" else "backbone+head"
    model = build_cutpaste_network(patch_size=32, patch_stride=8, scorer=scorer, scored_features=scored_features)
    normal = torch.stack([texture() for _ in range(12)])
    fitted(model, (normal - MEAN) / STD)
    with torch.no_grad():
        anomaly_map = model((torch.stack([texture() for _ in range(2)]) - MEAN) / STD).anomaly_map[:, 0]
    band = torch.zeros(128, 128, dtype=torch.bool)
    band[:16], band[-16:], band[:, :16], band[:, -16:] = True, True, True, True
    for single in anomaly_map:
        assert single[band].mean() <= 1.2 * single[~band].mean(), (single[band].mean(), single[~band].mean())
