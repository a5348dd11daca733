# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""The pre-processor that leaves training batches un-normalised, and the post-processor's sub-grid threshold."""

import pytest
import torch
import torch.nn.functional as F
from anomalib.data import ImageBatch
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_ssad import SSAD, CutPaste
from anomalib_ssad.components import PretextPreProcessor, SubgridPostProcessor


def _validation_batches(block: int) -> list[ImageBatch]:
    """Two batches of maps and masks that are constant over ``block x block`` pixel blocks."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        coarse = torch.rand(4, 1, 16, 16, generator=generator)
        defect = torch.zeros(4, 1, 16, 16)
        defect[1:, :, 4:9, 5:11] = 1.0
        coarse = coarse + 0.6 * defect + 0.2 * torch.rand(4, 1, 16, 16, generator=generator) * defect
        anomaly_map = F.interpolate(coarse, scale_factor=block, mode="nearest")[:, 0]
        gt_mask = F.interpolate(defect, scale_factor=block, mode="nearest")[:, 0].bool()
        batches.append(
            ImageBatch(
                image=torch.zeros(4, 3, 16 * block, 16 * block),
                anomaly_map=anomaly_map,
                gt_mask=gt_mask,
                pred_score=anomaly_map.flatten(1).amax(1),
                gt_label=gt_mask.flatten(1).any(1),
            )
        )
    return batches


def _fit(post_processor: PostProcessor, batches: list[ImageBatch]) -> PostProcessor:
    for batch in batches:
        post_processor.on_validation_batch_end(None, None, batch)
    post_processor.on_validation_epoch_end(None, None)
    return post_processor


def test_subgrid_threshold_equals_the_full_resolution_threshold_on_block_constant_maps() -> None:
    batches = _validation_batches(block=2)
    full = _fit(PostProcessor(), batches)
    reduced = _fit(SubgridPostProcessor(pixel_stride=2), batches)
    assert torch.isfinite(full.pixel_threshold)
    assert reduced.pixel_threshold == full.pixel_threshold
    assert reduced.image_threshold == full.image_threshold
    # Normalisation still sees every pixel.
    assert reduced.pixel_min == full.pixel_min
    assert reduced.pixel_max == full.pixel_max


def test_subgrid_keeps_one_pixel_per_block() -> None:
    batch = _validation_batches(block=4)[0]
    post_processor = SubgridPostProcessor(pixel_stride=4)
    post_processor.on_validation_batch_end(None, None, batch)
    stored = sum(preds.numel() for preds in post_processor._pixel_threshold_metric.preds)
    assert stored == batch.anomaly_map.numel() // 16
    # The kept pixel is the centre of its block: offset 2 in a 4x4 block.
    kept = post_processor._pixel_threshold_metric.preds[0].view(4, 16, 16)
    assert torch.equal(kept, batch.anomaly_map[:, 2::4, 2::4])


def test_models_use_the_subgrid_post_processor_and_its_stride_is_checkpointed() -> None:
    for model in (SSAD, CutPaste):
        post_processor = model.configure_post_processor()
        assert isinstance(post_processor, SubgridPostProcessor)
        assert post_processor.checkpoint_config()["pixel_stride"] == 2
    restored = SubgridPostProcessor(pixel_stride=2)
    restored.load_checkpoint_config({"pixel_stride": 3})
    assert restored.pixel_stride == 3
    assert restored._pixel_threshold_metric.stride == 3


def test_stride_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="pixel_stride"):
        SubgridPostProcessor(pixel_stride=0)


def test_pretext_pre_processor_resizes_training_batches_and_normalises_on_request() -> None:
    transform = Compose([Resize((32, 48)), Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    pre_processor = PretextPreProcessor(transform)
    images = torch.rand(2, 3, 64, 80)
    batch = ImageBatch(image=images.clone(), gt_mask=torch.zeros(2, 64, 80, dtype=torch.bool))
    pre_processor.on_train_batch_start(None, None, batch, 0)
    resized = Resize((32, 48))(images)
    torch.testing.assert_close(batch.image, resized)  # still in [0, 1], not normalised
    assert batch.gt_mask.shape == (2, 32, 48)
    torch.testing.assert_close(pre_processor.normalize(batch.image), transform(images))
    # Validation batches get the whole transform, as anomalib's pre-processor does.
    validation = ImageBatch(image=images.clone(), gt_mask=torch.zeros(2, 64, 80, dtype=torch.bool))
    pre_processor.on_validation_batch_start(None, None, validation, 0)
    torch.testing.assert_close(validation.image, transform(images))


def test_pretext_pre_processor_wraps_anomalib_pre_processors_and_rejects_a_normalize_before_the_end() -> None:
    plain = PreProcessor(transform=Compose([Resize((16, 16)), Normalize([0.5] * 3, [0.5] * 3)]))
    wrapped = PretextPreProcessor.wrap(plain)
    assert isinstance(wrapped, PretextPreProcessor)
    assert wrapped.transform is plain.transform
    assert PretextPreProcessor.wrap(None) is None
    with pytest.raises(ValueError, match="Normalize must be its last"):
        PretextPreProcessor(Compose([Normalize([0.5] * 3, [0.5] * 3), Resize((16, 16))]))
    # Without a Normalize, normalising is the identity.
    images = torch.rand(1, 3, 8, 8)
    assert torch.equal(PretextPreProcessor(Resize((8, 8))).normalize(images), images)


def test_pretext_models_train_on_un_normalised_batches() -> None:
    for model in (SSAD(pretrained=False), CutPaste(pretrained=False)):
        assert isinstance(model.pre_processor, PretextPreProcessor)
