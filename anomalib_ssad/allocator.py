# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Hand memory that the C allocator holds freed back to the system (glibc's ``malloc_trim``).

A CPU fine-tuning step allocates and frees about a gigabyte of activations and gradients. glibc keeps freed
buffers for reuse, and where they no longer fit the next step's requests it takes new memory: identical fits then
peak at RSS that differ by up to ~0.9 GB from run to run (README, Troubleshooting). Trimming after every step starts
each step from the memory actually in use, so the peak is one step's own
(``benchmarks/results/fit_memory``).

Example:
    >>> from anomalib_ssad.allocator import release_freed_memory
    >>> isinstance(release_freed_memory(), bool)
    True
"""

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or ``None`` where the C library has none (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return freed heap memory to the system; ``True`` if the C library trimmed any, ``False`` otherwise.

    A no-op (``False``) on C libraries without ``malloc_trim``. Live memory is untouched: only pages of freed
    buffers are released, which later allocations fault in again, at a cost in time
    (``benchmarks/results/fit_memory``).
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
