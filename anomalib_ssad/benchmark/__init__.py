# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Config-file benchmark of anomalib models side by side (SSAD, PatchCore, GANomaly, CutPaste, ...).

Run as ``python -m anomalib_ssad.benchmark CONFIG``; :mod:`.runner` runs the jobs, :mod:`.figures` draws the
comparison figures from their results.

Example:
    >>> from anomalib_ssad.benchmark import expand_jobs, load_config
    >>> jobs = expand_jobs(load_config("benchmarks/configs/compare_bottle.yaml"))  # doctest: +SKIP
"""

from .figures import write_figures
from .runner import Job, expand_jobs, load_config, main, run_benchmark, shared_evaluator

__all__ = ["Job", "expand_jobs", "load_config", "main", "run_benchmark", "shared_evaluator", "write_figures"]
