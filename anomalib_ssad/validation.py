# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""Argument checks run at construction, so a bad value fails at once, naming the argument and the value.

Example:
    >>> from anomalib_ssad.validation import check_positive
    >>> check_positive(patch_stride=0)
    Traceback (most recent call last):
    ...
    ValueError: patch_stride must be > 0, got 0.
"""

from collections.abc import Sequence
from typing import Any, get_args


def check_positive(**arguments: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not ``> 0`` (NaN included)."""
    for name, value in arguments.items():
        if not value > 0:
            msg = f"{name} must be > 0, got {value!r}."
            raise ValueError(msg)


def check_non_negative(**arguments: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not ``>= 0`` (NaN included)."""
    for name, value in arguments.items():
        if not value >= 0:
            msg = f"{name} must be >= 0, got {value!r}."
            raise ValueError(msg)


def check_fraction(**arguments: float) -> None:
    """Raise ``ValueError`` naming the first argument outside ``[0, 1]``."""
    for name, value in arguments.items():
        if not 0 <= value <= 1:
            msg = f"{name} must lie in [0, 1], got {value!r}."
            raise ValueError(msg)


def check_interval(name: str, interval: Sequence[float], low: float = 0.0, high: float = float("inf")) -> None:
    """Raise ``ValueError`` unless ``interval`` is ``(a, b)`` with ``low < a <= b <= high``.

    Args:
        name: Argument name for the message.
        interval: The ``(minimum, maximum)`` pair given.
        low: Exclusive lower bound of ``a``.
        high: Inclusive upper bound of ``b``.
    """
    if len(interval) != 2 or not low < interval[0] <= interval[1] <= high:
        bounds = f"{low} < minimum <= maximum" + (f" <= {high}" if high != float("inf") else "")
        msg = f"{name} must be a (minimum, maximum) pair with {bounds}, got {tuple(interval)!r}."
        raise ValueError(msg)


def check_choice(name: str, value: object, choices: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (a ``Literal`` type or an iterable).

    Args:
        name: Argument name for the message.
        value: The value given.
        choices: The allowed values: a ``typing.Literal`` (its arguments) or any iterable of them.
    """
    allowed = tuple(get_args(choices) or choices)
    if value not in allowed:
        msg = f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}."
        raise ValueError(msg)
