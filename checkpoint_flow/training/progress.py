"""Where the training loop is: epoch, step, steps reported, metrics, the best value, history.

The manager owns one :class:`Progress`; hooks advance it, saves copy it into the checkpoint's
header, and a restore puts it back, so a resumed run counts and compares exactly as the
interrupted one would have. The best value is kept by a :class:`~.metrics.MetricTracker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import checks
from .metrics import MetricTracker, Position, check_metrics, checked
from .retention import Mode


class Progress:
    """The loop's counters and metrics; ``monitor``/``mode`` decide what "improved" means."""

    def __init__(self, monitor: str | None, mode: Mode) -> None:
        self.tracker = MetricTracker(monitor, mode)
        self.epoch: int | None = None
        self.step: int | None = None
        self.steps_reported = 0
        self.history: list[dict[str, Any]] = []
        self._metrics: dict[str, float] = {}
        self._metrics_at: Position | None = None

    @property
    def monitor(self) -> str | None:
        return self.tracker.monitor

    @property
    def best(self) -> float | None:
        return self.tracker.best

    @property
    def position(self) -> Position:
        return (self.epoch, self.step)

    def advance(self, epoch: int | None, step: int | None) -> None:
        """Take the epoch and step a hook or save reports (None: unchanged). Raises on bad
        values before anything changes."""
        if epoch is not None:
            checks.count("epoch", epoch)
        if step is not None:
            checks.count("step", step)
        if epoch is not None:
            self.epoch = epoch
        if step is not None:
            self.step = step

    def count_step(self) -> None:
        self.steps_reported += 1

    def report(
        self,
        epoch: int | None,
        step: int | None,
        metrics: Mapping[str, Any] | None,
        *,
        step_end: bool = False,
    ) -> bool:
        """Take what a hook or save reports; return True if the monitored metric improved.

        A step end counts the step, does not require the monitored metric and keeps its
        metrics out of the history. Raises TypeError/ValueError for bad values; metrics are
        checked before anything changes.
        """
        values = checked(metrics)
        self.advance(epoch, step)
        if step_end:
            self.count_step()
        return self.record(values, require_monitor=not step_end, history=not step_end)

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics reported at the current position (empty if none were)."""
        return dict(self._metrics) if self._metrics_at == self.position else {}

    def record(
        self, metrics: Mapping[str, Any] | None, *, require_monitor: bool, history: bool
    ) -> bool:
        """Store metrics at the current position; return True if the monitored one improved.

        Raises TypeError for values that are not real numbers, ValueError when
        ``require_monitor`` and the monitored metric is missing.
        """
        if metrics is None:
            return False
        values = check_metrics(metrics)
        if require_monitor:
            self.tracker.require(values)
        if self._metrics_at == self.position:
            values = {**self._metrics, **values}
        self._metrics, self._metrics_at = values, self.position
        if history:
            entry = {"epoch": self.epoch, "step": self.step, "metrics": dict(values)}
            last = self.history[-1] if self.history else None
            if last is not None and (last["epoch"], last["step"]) == self.position:
                self.history[-1] = entry
            else:
                self.history.append(entry)
        return self.tracker.update(values, self.position)

    def header(self) -> dict[str, Any]:
        """What a checkpoint's header records about progress."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "steps_reported": self.steps_reported,
            "metrics": self.metrics,
            "best": self.tracker.header(),
            "monitor": self.tracker.monitor,
            "mode": self.tracker.mode,
        }

    def restore(self, header: Mapping[str, Any], history: list[dict[str, Any]]) -> None:
        """Put back what :meth:`header` recorded (and the history saved with it)."""
        self.epoch = header.get("epoch")
        self.step = header.get("step")
        # A checkpoint of 0.1 has no count of reported steps; its global step is the count.
        self.steps_reported = int(header.get("steps_reported", self.step or 0))
        self._metrics = {str(k): float(v) for k, v in (header.get("metrics") or {}).items()}
        self._metrics_at = self.position
        self.tracker.restore(header.get("best"))
        self.history = [dict(h) for h in history]
