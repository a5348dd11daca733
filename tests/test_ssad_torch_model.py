import pytest
import torch
from torch.nn import functional as F

from anomalib_ssad.components import PretextNetwork, knn_cosine_distance
from anomalib_ssad.models.ssad.torch_model import build_ssad_network

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def fitted(model: PretextNetwork, normal: torch.Tensor) -> PretextNetwork:
    model.eval()
    with torch.no_grad():
        model.scorer.fit(model.normal_embeddings(normal))
    return model


@pytest.mark.parametrize("fusion", ["concat", "multiply"])
@pytest.mark.parametrize("localization", ["image", "patch"])
def test_train_and_eval_outputs(fusion, localization):
    torch.manual_seed(0)
    model = build_ssad_network(backbone="resnet18", pretrained=False, fusion=fusion, localization=localization)
    embeddings, logits = model.train()(torch.rand(6, 3, 32, 32))
    assert logits.shape == (6, 3)
    assert len(embeddings) == (1 if fusion == "concat" else 3)
    # The stages in the last head's input: all of them concatenated, or the last one for its own head.
    assert model.stage_sizes == ((128, 256, 512) if fusion == "concat" else (512,))
    assert sum(model.stage_sizes) == model.heads[-1].in_features
    fitted(model, torch.rand(3, 3, 64, 64))
    with torch.no_grad():
        output = model(torch.rand(2, 3, 64, 96))
    assert output.pred_score.shape == (2,)
    assert output.anomaly_map.shape == (2, 1, 64, 96)
    assert ((output.pred_score >= 0) & (output.pred_score <= 1)).all()


def test_grayscale_input():
    model = fitted(
        build_ssad_network(backbone="resnet18", pretrained=False, localization="image"), torch.rand(3, 1, 64, 64)
    )
    with torch.no_grad():
        output = model(torch.rand(2, 1, 64, 64))
    assert output.anomaly_map.shape == (2, 1, 64, 64)


def autograd_grad_cam(model: PretextNetwork, images: torch.Tensor) -> torch.Tensor:
    """Reference Grad-CAM with autograd on the last stage (no hooks: the stage output is made a leaf)."""
    stage_maps = model.backbone(images)
    last = stage_maps[-1].detach().requires_grad_(True)
    pooled = [feature_map.mean(dim=(2, 3)) for feature_map in stage_maps[:-1]] + [last.mean(dim=(2, 3))]
    embedding = model.heads[0](torch.cat(pooled, dim=-1))
    scores, _ = knn_cosine_distance(embedding, model.scorer.banks[0].memory_bank, k=model.scorer.num_neighbors)
    (gradient,) = torch.autograd.grad(scores.sum(), last)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * last).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return cam / cam.flatten(1).amax(dim=1)[:, None, None, None] * scores.detach()[:, None, None, None]


def test_grad_cam_is_batched_and_equals_autograd():
    torch.manual_seed(0)
    model = fitted(
        build_ssad_network(backbone="resnet18", pretrained=False, localization="image"), torch.rand(8, 3, 64, 64)
    )
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        batched = model(images).anomaly_map
        single = torch.cat([model(image[None]).anomaly_map for image in images])
    torch.testing.assert_close(batched, autograd_grad_cam(model, images), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-4)
    assert (batched.flatten(1).amax(dim=1) > 0).all()


@pytest.mark.parametrize("localization", ["dense", "patch"])
def test_patch_map_lights_up_a_synthetic_defect(bottle_images, localization):
    """A defect painted at a known spot of a normal bottle image is where the patch-level map peaks."""
    torch.manual_seed(0)
    model = build_ssad_network(
        backbone="efficientnet_lite0", pretrained=True, localization=localization, patch_stride=8
    )
    normal = (bottle_images[:20] - MEAN) / STD
    fitted(model, normal)
    test = bottle_images[20:22].clone()
    test[:, :, 40:56, 70:86] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # red square on the bottle
    with torch.no_grad():
        output = model((test - MEAN) / STD)
        clean = model((bottle_images[20:22] - MEAN) / STD)
    for anomaly_map in output.anomaly_map[:, 0]:
        peak = divmod(int(anomaly_map.argmax()), anomaly_map.shape[1])
        assert 32 <= peak[0] < 64 and 62 <= peak[1] < 94, peak
    assert (output.pred_score > clean.pred_score).all()


def test_dense_and_crop_patch_embeddings_share_the_grid():
    model = build_ssad_network(
        backbone="resnet18", pretrained=False, localization="patch", patch_embedding="crops"
    ).eval()
    with torch.no_grad():
        crops = model.patch_embeddings(torch.rand(2, 3, 64, 80))
        model.patch_embedding = "dense"
        dense = model.patch_embeddings(torch.rand(2, 3, 64, 80))
    assert crops[0].shape == dense[0].shape == (2, 5, 7, 128)


@pytest.mark.parametrize("localization", ["dense", "patch"])
def test_eval_forward_is_exportable(localization):
    model = fitted(
        build_ssad_network(backbone="resnet18", pretrained=False, localization=localization), torch.rand(2, 3, 64, 64)
    )
    images = torch.rand(1, 3, 64, 64)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        expected = model(images)
    actual = exported.module()(images)
    torch.testing.assert_close(actual[0], expected.pred_score)


def test_invalid_options():
    with pytest.raises(ValueError, match="fusion"):
        build_ssad_network(backbone="resnet18", pretrained=False, fusion="sum")
    with pytest.raises(ValueError, match="smaller than patch_size"):
        fitted(
            build_ssad_network(backbone="resnet18", pretrained=False, localization="patch"), torch.rand(1, 3, 16, 16)
        )
    with pytest.raises(ValueError, match="dense_features"):
        build_ssad_network(backbone="resnet18", pretrained=False, dense_features="pixels")
    with pytest.raises(ValueError, match="direction_weight"):
        build_ssad_network(backbone="resnet18", pretrained=False, localization="patch", direction_weight=0.3)
    with pytest.raises(ValueError, match="direction_weight"):
        build_ssad_network(backbone="resnet18", pretrained=False, direction_weight=-0.1)
