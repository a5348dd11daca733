# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Synthetic anomalies for the pretext tasks, drawn for a whole batch on its device.

- :mod:`.presets`: what is drawn (:class:`AnomalySpec`) and the named presets;
- :mod:`.shapes`: convex polygons, rotated boxes and Perlin blobs, rasterised on the pixel grid;
- :mod:`.placement`: centres on the object mask, masks cut to the object, retries;
- :mod:`.fills`: cut-paste content, region means, random colours, visibility, colour jitter;
- :mod:`.generator`: :class:`SyntheticAnomalyGenerator`, the module that puts them together.
"""

from .generator import SyntheticAnomalyGenerator
from .presets import CUTPASTE_CLASSES, IMAGE_LEVEL, PATCH_LEVEL, SADSA, AnomalySpec, cutpaste_spec

__all__ = [
    "CUTPASTE_CLASSES",
    "IMAGE_LEVEL",
    "PATCH_LEVEL",
    "SADSA",
    "AnomalySpec",
    "SyntheticAnomalyGenerator",
    "cutpaste_spec",
]
