# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""``python -m anomalib_ssad.benchmark CONFIG``: see :mod:`anomalib_ssad.benchmark.runner`."""

from .runner import main

main()
