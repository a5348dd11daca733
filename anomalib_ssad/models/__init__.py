# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""The plugin's anomalib models."""

from .cutpaste import CutPaste
from .patch_ganomaly import PatchGanomaly
from .ssad import SSAD

__all__ = ["SSAD", "CutPaste", "PatchGanomaly"]
