# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Patch-GANomaly: anomalib's GANomaly trained on patches, with a patch-wise anomaly map (a baseline)."""

from .lightning_model import PatchGanomaly

__all__ = ["PatchGanomaly"]
