"""Arguments are checked at construction; the message names the argument and the value."""

import re

import pytest

from anomalib_ssad import SSAD, CutPaste

BAD_ARGUMENTS = [
    (SSAD, {"patch_stride": 0}, "patch_stride must be > 0, got 0"),
    (SSAD, {"patch_size": 0}, "patch_size must be > 0, got 0"),
    (SSAD, {"num_neighbors": 0}, "num_neighbors must be > 0, got 0"),
    (SSAD, {"memory_bank_size": -1}, "memory_bank_size must be > 0, got -1"),
    (SSAD, {"sigma": -1.0}, "sigma must be >= 0, got -1.0"),
    (SSAD, {"batch_size": 0}, "batch_size must be > 0, got 0"),
    (SSAD, {"samples_per_epoch": 0}, "samples_per_epoch must be > 0, got 0"),
    (SSAD, {"warmup_lr": float("nan")}, "warmup_lr must be > 0, got nan"),
    (SSAD, {"momentum": 1.0}, "momentum must lie in [0, 1), got 1.0"),
    (SSAD, {"weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
    (SSAD, {"crops_per_image": 0}, "crops_per_image must be > 0, got 0"),
    (SSAD, {"big_area_ratio": (0.2, 0.1)}, "big_area_ratio must be a (minimum, maximum) pair"),
    (SSAD, {"small_area_ratio": (0.0, 0.1)}, "small_area_ratio must be a (minimum, maximum) pair"),
    (SSAD, {"color_jitter": (0.1, -0.1, 0.1, 0.1)}, "color_jitter[contrast] must be >= 0, got -0.1"),
    (SSAD, {"min_foreground": 1.5}, "min_foreground must lie in [0, 1], got 1.5"),
    (SSAD, {"head_dims": []}, "head_dims must be a non-empty list"),
    (CutPaste, {"patch_stride": 0}, "patch_stride must be > 0, got 0"),
    (CutPaste, {"area_ratio": (0.1, 1.5)}, "area_ratio must be a (minimum, maximum) pair"),
    (CutPaste, {"scar_width": (0, 4)}, "scar_width must be a (minimum, maximum) pair"),
    (CutPaste, {"max_angle": -5.0}, "max_angle must be >= 0, got -5.0"),
    (SSAD, {"fusion": "sum"}, "fusion must be one of 'concat', 'multiply', got 'sum'"),
    (SSAD, {"object_mask_mode": "edges"}, "object_mask_mode must be one of 'auto', 'texture', 'fixed', 'per_image'"),
    (CutPaste, {"variant": "4way"}, "variant must be one of 'cutpaste', 'scar', '3way', got '4way'"),
    (CutPaste, {"scored_features": "stages"}, "scored_features must be one of 'backbone+head', 'head', 'backbone'"),
]


@pytest.mark.parametrize(("model", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_argument_fails_at_construction_naming_it(model, arguments, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        model(pretrained=False, **arguments)


def test_valid_arguments_construct():
    SSAD(pretrained=False, patch_stride=4, sigma=0.0, momentum=0.0, big_area_ratio=(0.05, 0.05))
    CutPaste(pretrained=False, area_ratio=(0.02, 1.0), max_angle=0.0)
