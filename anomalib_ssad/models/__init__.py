# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""The plugin's anomalib models."""

from .ssad import SSAD

__all__ = ["SSAD"]
