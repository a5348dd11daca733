# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of CutPaste: augmentations, Gaussian density, localization, export, Engine and CLI runs."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import GaussianDensity, PretextNetwork, SyntheticAnomalyGenerator, ledoit_wolf
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


def test_cutpaste_rectangle_ranges_and_same_image_content() -> None:
    generator = SyntheticAnomalyGenerator.cutpaste(variant="cutpaste")
    image = _textured()
    aspects = []
    for seed in range(40):
        sample = generator(image, np.random.default_rng(seed), label=1)
        info = sample.info
        assert info["shape"] == "cutpaste" and info["fill"] == "cut_paste"
        assert 0.02 <= info["area_ratio"] <= 0.15
        assert 0.3 <= info["aspect_ratio"] <= 3.3 and info["aspect_ratio"] != 1.0
        width, height = info["size"]
        assert math.isclose(width * height / 128**2, info["area_ratio"], rel_tol=0.15, abs_tol=2e-3)
        drawn = float(sample.mask.sum()) / 128**2
        assert 0.015 <= drawn <= 0.17, drawn
        rows, cols = torch.nonzero(sample.mask, as_tuple=True)
        assert int(rows.max() - rows.min()) + 1 == height and int(cols.max() - cols.min()) + 1 == width
        # Outside the rectangle the image is untouched (no global jitter); inside, the pasted patch differs.
        outside = sample.mask == 0
        assert torch.equal(sample.image[:, outside], image[:, outside])
        assert info["patch_jitter"].keys() == {"brightness", "contrast", "saturation", "hue"}
        aspects.append(info["aspect_ratio"])
    assert min(aspects) < 1 < max(aspects)


def test_cutpaste_scar_size_and_rotation_ranges() -> None:
    generator = SyntheticAnomalyGenerator.cutpaste(variant="scar")
    angles = []
    for seed in range(40):
        sample = generator(_textured(), np.random.default_rng(seed), label=2)
        info = sample.info
        assert info["shape"] == "cutpaste_scar" and info["fill"] == "cut_paste"
        width, height = info["size"]
        assert 2 <= width <= 16 and 10 <= height <= 25
        assert -45 <= info["angle"] <= 45
        assert 0.5 * width * height <= float(sample.mask.sum()) <= 2.0 * (width + 2) * (height + 2)
        angles.append(info["angle"])
    assert min(angles) < -20 and max(angles) > 20


@pytest.mark.parametrize(("variant", "expected"), [("cutpaste", {0, 1}), ("scar", {0, 2}), ("3way", {0, 1, 2})])
def test_variants_draw_their_classes_and_are_deterministic(variant: str, expected: set[int]) -> None:
    generator = SyntheticAnomalyGenerator.cutpaste(variant=variant)
    images = torch.stack([_textured(64, seed) for seed in range(4)]).repeat(8, 1, 1, 1)
    first = generator.generate_batch(images, rng=np.random.default_rng(3))
    second = generator.generate_batch(images, rng=np.random.default_rng(3))
    other = generator.generate_batch(images, rng=np.random.default_rng(4))
    assert set(first[1].tolist()) == expected
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    normal = first[1] == 0
    assert torch.equal(first[0][normal], images[normal])  # normal samples stay untouched
    with pytest.raises(ValueError, match="variant"):
        SyntheticAnomalyGenerator.cutpaste(variant="four")
    with pytest.raises(ValueError, match="classes"):
        SyntheticAnomalyGenerator(classes=(0, 3))


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


def test_grad_cam_is_batched_and_equals_autograd() -> None:
    torch.manual_seed(0)
    model = fitted(
        build_cutpaste_network(backbone="resnet18", pretrained=False, num_classes=2, localization="image"),
        torch.rand(24, 3, 64, 64),
    )
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        batched = model(images).anomaly_map
        single = torch.cat([model(image[None]).anomaly_map for image in images])
    stage_maps = model.backbone(images)
    last = stage_maps[-1].detach().requires_grad_(True)
    pooled = [feature_map.mean(dim=(2, 3)) for feature_map in stage_maps[:-1]] + [last.mean(dim=(2, 3))]
    scores = model.scorer.density.score(model.heads[0](torch.cat(pooled, dim=-1)))
    (gradient,) = torch.autograd.grad(scores.sum(), last)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * last).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    reference = cam / cam.flatten(1).amax(dim=1)[:, None, None, None] * scores.detach()[:, None, None, None]
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_patch_map_lights_up_a_painted_defect(bottle_images: torch.Tensor) -> None:
    model = build_cutpaste_network(
        localization="patch", patch_size=32, patch_stride=8
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
    assert model.model.scorer.density.is_fitted
    print("CutPaste tiny demo metrics:", {key: round(float(value), 3) for key, value in metrics.items()})
    restored = assert_checkpoint_round_trip(engine, model, demo_root, tmp_path)
    torch.testing.assert_close(restored.model.scorer.density.precision, model.model.scorer.density.precision)


def test_cli_train_and_onnx_export_give_checkpoint_scores(tmp_path, demo_root) -> None:
    from anomalib_ssad import CutPaste

    init_args = {
        **TINY_MODEL,
        "variant": "cutpaste",
        "localization": "patch",
        "patch_size": 32,
        "patch_stride": 16,
        "crops_per_image": 1,
    }
    run_dir = train_with_cli(tmp_path, demo_root, "anomalib_ssad.CutPaste", init_args)
    assert_onnx_export_matches_checkpoint(tmp_path, run_dir, CutPaste, demo_root)


@pytest.mark.parametrize("seed", [0, 1])
def test_patch_map_of_a_defect_free_texture_has_no_border_hot_spots(seed: int) -> None:
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

    model = (
        build_cutpaste_network()
    )  # the defaults: 64 px windows (32 px at this 128 px input would be the paper's ratio)
    model.patch_size, model.patch_stride = 32, 8
    normal = torch.stack([texture() for _ in range(12)])
    fitted(model, (normal - MEAN) / STD)
    with torch.no_grad():
        anomaly_map = model((torch.stack([texture() for _ in range(2)]) - MEAN) / STD).anomaly_map[:, 0]
    band = torch.zeros(128, 128, dtype=torch.bool)
    band[:16], band[-16:], band[:, :16], band[:, -16:] = True, True, True, True
    for single in anomaly_map:
        assert single[band].mean() <= 1.2 * single[~band].mean(), (single[band].mean(), single[~band].mean())
