"""Which checkpoints to keep: small retention rules that compose.

A rule is a callable taking the managed checkpoints (oldest first) and returning the file names
to keep; everything else is deleted. Rules combine with ``|`` (keep what either keeps) and
``&`` (keep what both keep)::

    keep_last(3) | keep_best(1, "val_loss", "min")

The manager always keeps its newest checkpoint and the current best on top of what the rule
returns, so no rule can delete them. Rules see the rolling files of one manager, whatever the
loop counts: epochs, steps or both (what was not reported is None in each CheckpointInfo).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import checks
from ..policy import FromFunction, KeepBoth, KeepEither, Policy, kept_set, refuse_other_family
from .records import CheckpointInfo

__all__ = [
    "CheckpointInfo",
    "FunctionRule",
    "KeepAny",
    "KeepCommon",
    "RetentionRule",
    "as_rule",
    "keep_all",
    "keep_best",
    "keep_last",
]

Mode = Literal["min", "max"]
MODES: tuple[Mode, ...] = ("min", "max")


class RetentionRule(Policy[Sequence[CheckpointInfo], set[str]]):
    """Base class of retention rules: subclasses implement ``__call__(checkpoints)`` returning
    the file names to keep; ``|`` keeps what either rule keeps, ``&`` what both keep."""

    @classmethod
    def coerce(cls, value: Any) -> RetentionRule:
        return as_rule(value)

    @classmethod
    def either(cls, *parts: Policy[Sequence[CheckpointInfo], set[str]]) -> RetentionRule:
        return KeepAny(*parts)

    @classmethod
    def both(cls, *parts: Policy[Sequence[CheckpointInfo], set[str]]) -> RetentionRule:
        return KeepCommon(*parts)


RuleLike = Callable[[Sequence[CheckpointInfo]], Iterable[str]]


class FunctionRule(FromFunction[Sequence[CheckpointInfo], set[str]], RetentionRule):
    """A plain function ``(checkpoints) -> names to keep`` used as a rule."""

    def check(self, answer: Any) -> set[str]:
        return kept_set(self.fn, answer, str)


def as_rule(value: RuleLike | str) -> RetentionRule:
    """A rule from a callable ``(checkpoints) -> names to keep`` or the string ``"all"``."""
    if isinstance(value, RetentionRule):
        return value
    refuse_other_family(value, RetentionRule, "keep")
    if value == "all":
        return keep_all()
    if not callable(value):
        raise TypeError(
            f"keep must be 'all', a RetentionRule or a callable (checkpoints) -> names to keep, "
            f"got {value!r}"
        )
    return FunctionRule(value)


class KeepAny(KeepEither[Sequence[CheckpointInfo], str], RetentionRule):
    """Keeps every file that any of its rules keeps."""


class KeepCommon(KeepBoth[Sequence[CheckpointInfo], str], RetentionRule):
    """Keeps the files that every one of its rules keeps."""


@dataclass(frozen=True, repr=False)
class keep_all(RetentionRule):
    """Keeps everything."""

    def __call__(self, checkpoints: Sequence[CheckpointInfo]) -> set[str]:
        return {c.file for c in checkpoints}

    def __repr__(self) -> str:
        return "keep_all()"


@dataclass(frozen=True, repr=False)
class keep_last(RetentionRule):
    """Keeps the ``n`` most recent checkpoints in training order (epoch, step, save time)."""

    n: int

    def __post_init__(self) -> None:
        checks.count("keep_last_n", self.n)

    def __call__(self, checkpoints: Sequence[CheckpointInfo]) -> set[str]:
        if self.n == 0:
            return set()
        ordered = sorted(checkpoints, key=lambda c: c.order)
        return {c.file for c in ordered[-self.n :]}

    def __repr__(self) -> str:
        return f"keep_last({self.n})"


def check_mode(mode: Mode) -> Mode:
    return checks.choice("mode", mode, MODES)


def better(value: float, best: float | None, mode: Mode) -> bool:
    """True if ``value`` strictly improves on ``best``; NaN never improves, so ties keep the
    earlier value."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


@dataclass(frozen=True, repr=False)
class keep_best(RetentionRule):
    """Keeps the ``k`` checkpoints with the best ``monitor`` value; ties go to the earlier one.

    Checkpoints without the metric (or with NaN) are never counted among the best.
    """

    k: int
    monitor: str
    mode: Mode = "min"

    def __post_init__(self) -> None:
        checks.count("keep_best_k", self.k)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise TypeError(f"monitor must be a metric name, got {self.monitor!r}")
        check_mode(self.mode)

    def __call__(self, checkpoints: Sequence[CheckpointInfo]) -> set[str]:
        return {c.file for c in rank(checkpoints, self.monitor, self.mode)[: self.k]}

    def __repr__(self) -> str:
        return f"keep_best({self.k}, {self.monitor!r}, {self.mode!r})"


def rank(
    checkpoints: Sequence[CheckpointInfo], monitor: str, mode: Mode
) -> list[CheckpointInfo]:
    """The checkpoints holding ``monitor`` (not NaN), best first; ties go to the earlier one."""
    sign = 1.0 if mode == "min" else -1.0
    scored = [(score, c) for c in checkpoints if (score := c.score(monitor)) is not None]
    scored.sort(key=lambda pair: (sign * pair[0], pair[1].order))
    return [c for _, c in scored]


KeepArg = str | RetentionRule | RuleLike | None


def build_rule(
    keep: KeepArg, keep_last_n: int | None, keep_best_k: int | None, monitor: str | None, mode: Mode
) -> RetentionRule:
    """The rule the manager's keyword arguments describe. Raises ValueError/TypeError."""
    if keep is not None:
        if keep_last_n is not None or keep_best_k is not None:
            raise ValueError(
                f"keep={keep!r} replaces keep_last_n/keep_best_k; pass one or the other "
                "(combine rules with |, e.g. keep=keep_last(3) | my_rule)"
            )
        return as_rule(keep)
    if keep_last_n is None and keep_best_k is None:
        return keep_all()
    rules: list[RetentionRule] = []
    if keep_last_n is not None:
        rules.append(keep_last(keep_last_n))
    if keep_best_k is not None:
        if monitor is None:
            raise ValueError(
                f"keep_best_k={keep_best_k!r} needs a metric to rank by; pass monitor='val_loss' "
                "(or another metric name)"
            )
        rules.append(keep_best(keep_best_k, monitor, mode))
    return rules[0] if len(rules) == 1 else KeepAny(*rules)
