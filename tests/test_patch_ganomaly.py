# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests of Patch-GANomaly: patch crops, window scoring on any image size, Engine, CLI, checkpoint and export."""

import pytest
import torch

from anomalib_ssad.components.patch_grid import assemble_anomaly_map, crop_patches, random_crops
from anomalib_ssad.models.patch_ganomaly.torch_model import PatchGanomalyModel
from tests.conftest import assert_checkpoint_round_trip, fit_and_test_on_demo
from tests.test_ssad_end_to_end import assert_onnx_export_matches_checkpoint, train_with_cli

TINY_MODEL = {"patch_size": 32, "patch_stride": 16, "crops_per_image": 4, "epochs": 1, "n_features": 8}


def test_random_crops_are_windows_of_their_own_image() -> None:
    images = torch.rand(3, 2, 20, 28)
    crops = random_crops(images, count=5, size=8, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (15, 2, 8, 8)
    windows = crop_patches(images, 8, 1).view(3, -1, 2, 8, 8)  # every 8 x 8 window of each image
    for index, crop in enumerate(crops):
        matches = (windows - crop).abs().flatten(2).amax(dim=2) == 0
        # The crop is a window of image index // 5 and of no other image.
        assert matches.any(dim=1).tolist() == [image == index // 5 for image in range(3)]
    with pytest.raises(ValueError, match="20x28 px are smaller than the 32-px patches"):
        random_crops(images, 1, 32)


def test_scores_every_window_of_any_image_size() -> None:
    torch.manual_seed(0)
    model = PatchGanomalyModel(patch_size=32, patch_stride=16, n_features=8).eval()
    images = torch.rand(2, 3, 70, 100)
    with torch.no_grad():
        output = model(images)
        # The window scores, one by one: a 3 x 5 grid at stride 16 (the last 6 and 4 px are never a window's).
        expected = torch.stack(
            [
                model.window_scores(images[:, :, top : top + 32, left : left + 32])
                for top in range(0, 33, 16)
                for left in range(0, 65, 16)
            ]
        )
    # The map is built from those scores (3 rows of 5 windows); the image score is the smoothed map's peak.
    expected_map = assemble_anomaly_map(expected.T.reshape(2, 3, 5), (70, 100), 32, model.blur)
    assert output.anomaly_map.shape == (2, 1, 70, 100)
    torch.testing.assert_close(output.anomaly_map, expected_map)
    torch.testing.assert_close(output.pred_score, expected_map.flatten(1).amax(dim=1))
    with pytest.raises(ValueError, match="smaller than patch_size 32"):
        model(torch.rand(1, 3, 24, 64))


def test_window_score_reacts_to_a_defect_in_its_window_only() -> None:
    torch.manual_seed(0)
    model = PatchGanomalyModel(patch_size=32, patch_stride=32, n_features=8, score="reconstruction", sigma=0)
    model.eval()
    images = torch.zeros(1, 3, 64, 128)
    defective = images.clone()
    defective[:, :, 40:60, 100:120] = 1.0  # inside the last window of the second row
    with torch.no_grad():
        clean, dirty = (model.window_scores(crop_patches(x, 32, 32)) for x in (images, defective))
    changed = (dirty - clean).abs() > 1e-6
    assert changed.tolist() == [False] * 7 + [True]


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [("patch_size", 48, "power of two"), ("patch_size", 16, "power of two"), ("score", "ssim", "score must be")],
)
def test_bad_arguments_name_themselves(argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PatchGanomalyModel(**{argument: value})


def test_transfer_learning_variant_starts_from_imagenet_weights() -> None:
    from anomalib_ssad.components import build_backbone

    model = PatchGanomalyModel(patch_size=32, n_features=8, pretrained_encoder=True)
    reference = build_backbone("efficientnet_lite0", pretrained=True).state_dict()
    for encoder in (model.generator.encoder1, model.generator.encoder2):
        state = encoder.backbone.state_dict()
        assert all(torch.equal(state[key], value) for key, value in reference.items())
    padded, fake, latent_i, _ = model.train()(torch.rand(2, 3, 32, 32))
    assert fake.shape == padded.shape == (2, 3, 32, 32) and latent_i.shape == (2, 100, 1, 1)


def test_engine_fit_test_and_checkpoint_round_trip(tmp_path, demo_root) -> None:
    from anomalib_ssad import PatchGanomaly

    model = PatchGanomaly(
        **TINY_MODEL, pre_processor=PatchGanomaly.configure_pre_processor(image_size=(64, 64)), visualizer=False
    )
    before = {key: value.clone() for key, value in model.model.generator.state_dict().items()}
    engine, metrics = fit_and_test_on_demo(model, demo_root, tmp_path)
    # Training moved the generator; the test produced pixel metrics from the patch maps.
    after = model.model.generator.state_dict()
    assert any(not torch.equal(before[key], after[key]) for key in before if after[key].is_floating_point())
    assert engine.trainer.current_epoch == 1
    assert 0.0 <= float(metrics["pixel_AUROC"]) <= 1.0
    assert_checkpoint_round_trip(engine, model, demo_root, tmp_path)


def test_cli_train_and_onnx_export_give_checkpoint_scores(tmp_path, demo_root) -> None:
    from anomalib_ssad import PatchGanomaly

    run_dir = train_with_cli(tmp_path, demo_root, "anomalib_ssad.PatchGanomaly", TINY_MODEL)
    assert_onnx_export_matches_checkpoint(tmp_path, run_dir, PatchGanomaly, demo_root, ("pred_score", "anomaly_map"))
