"""Argument checks shared by every public constructor: counts, durations, choices and flags.

Each check returns the value in its canonical form (a ``timedelta`` becomes seconds) or raises
TypeError (wrong kind) / ValueError (right kind, bad value) naming the argument and what it
accepts.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")


def count(name: str, value: object, *, minimum: int = 0, alternative: str = "") -> int:
    """An int ``>= minimum`` (bools are refused: ``True`` is not a count). ``alternative``
    names what else the caller accepts (" or None for no limit") in the message."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}{alternative}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{alternative}, got {value!r}")
    return value


def number(name: str, value: object, *, minimum: float = 0.0) -> float:
    """A finite real number ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """A finite number of seconds ``>= 0`` (``> 0`` when ``positive``), given as a number or a
    ``timedelta``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def choice(name: str, value: T, choices: Collection[T]) -> T:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name}={value!r} is not valid; valid choices: {', '.join(map(repr, choices))}"
        )
    return value


def flag(name: str, value: object) -> bool:
    """A bool (not merely something truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value
