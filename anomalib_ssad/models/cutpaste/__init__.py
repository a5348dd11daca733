# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""CutPaste: self-supervised learning for anomaly detection and localization (see README.md beside this file)."""

from .lightning_model import CutPaste
from .torch_model import build_cutpaste_network

__all__ = ["CutPaste", "build_cutpaste_network"]
