"""Reported metrics and the monitored one: metric values are checked to be real numbers, and a
:class:`MetricTracker` keeps the best value of the monitored metric, which decides what
"improved" means for best saves, best copies and ``on_improvement``."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from .retention import Mode, better

Position = tuple[int | None, int | None]


def check_metrics(metrics: object) -> dict[str, float]:
    """Metric values as floats. Raises TypeError naming a value that is not a real number."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> number, got {metrics!r}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"metric names must be str, got {name!r}")
        values[name] = _real(name, value)
    return values


def checked(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    """:func:`check_metrics`, letting None (nothing reported) through. Hooks call it before
    they change anything, so a bad value leaves the manager as it was."""
    return None if metrics is None else check_metrics(metrics)


def _real(name: str, value: Any) -> float:
    item = value
    # A 0-d tensor or array (a loss straight from the loop) counts as the number it holds.
    if not isinstance(value, numbers.Number) and getattr(value, "ndim", None) == 0:
        item = value.item()
    is_bool = isinstance(item, bool) or type(item).__name__ in ("bool_", "bool")
    if is_bool or not isinstance(item, numbers.Real):
        raise TypeError(
            f"metric {name!r} must be a real number (int or float), got "
            f"{type(value).__name__}: {value!r}; put text and flags in info= instead"
        )
    return float(item)


class MetricTracker:
    """The best value of ``monitor`` (None: no metric is monitored) and where it was reported;
    ``mode`` says whether lower or higher is better."""

    def __init__(self, monitor: str | None, mode: Mode) -> None:
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_at: Position | None = None

    def require(self, values: Mapping[str, float]) -> None:
        """Raises ValueError when a metric is monitored and ``values`` lack it."""
        if self.monitor is not None and self.monitor not in values:
            raise ValueError(
                f"monitor {self.monitor!r} is missing from metrics; they hold: "
                f"{', '.join(sorted(values)) or 'nothing'}"
            )

    def update(self, values: Mapping[str, float], position: Position) -> bool:
        """Take the metrics reported at ``position``; True if the monitored one improved."""
        if self.monitor is None or self.monitor not in values:
            return False
        if better(values[self.monitor], self.best, self.mode):
            self.best, self.best_at = values[self.monitor], position
            return True
        return False

    def header(self) -> dict[str, Any] | None:
        """The best value and where it was reported, as a checkpoint's header records it."""
        if self.best is None:
            return None
        epoch, step = self.best_at or (None, None)
        return {"value": self.best, "epoch": epoch, "step": step}

    def restore(self, best: Mapping[str, Any] | None) -> None:
        """Put back what :meth:`header` recorded."""
        self.best = None if best is None else float(best["value"])
        self.best_at = None if best is None else (best.get("epoch"), best.get("step"))
