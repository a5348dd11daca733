# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""SSAD: self-supervised anomaly detection with synthetic anomalies (see README.md beside this file)."""

from .lightning_model import SSAD
from .torch_model import build_ssad_network

__all__ = ["SSAD", "build_ssad_network"]
