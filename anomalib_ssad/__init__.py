# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""anomalib-ssad: self-supervised anomaly detection models for anomalib.

Use from the CLI as ``anomalib train --model anomalib_ssad.SSAD --data anomalib.data.MVTecAD`` (or
``--model anomalib_ssad.CutPaste``; the baseline ``anomalib_ssad.PatchGanomaly``).
"""

from .models import SSAD, CutPaste, PatchGanomaly

__all__ = ["SSAD", "CutPaste", "PatchGanomaly"]
__version__ = "0.7.0"
