"""When to save: small trigger objects evaluated at each training boundary.

A trigger is a callable taking a :class:`Boundary` and returning True when a checkpoint should be
written there. Triggers compose like tenacity's stop conditions::

    every_n_epochs(1) & min_interval(600)      # each epoch, but at most every ten minutes
    every_n_steps(500) | on_improvement()      # every 500 steps, and whenever the metric improves

Triggers are pure: the manager hands them the time of the last save and the number of steps
reported so far, so they hold no state and can be tested without a clock. They work alike for
loops that count epochs, steps or both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, cast

from .. import checks, policy
from ..policy import FromFunction, Policy, refuse_other_family

__all__ = [
    "AllOf",
    "AnyOf",
    "Boundary",
    "FunctionTrigger",
    "Trigger",
    "as_trigger",
    "at_boundary",
    "at_loop_unit",
    "every_n_epochs",
    "every_n_steps",
    "min_interval",
    "never",
    "on_improvement",
]

BoundaryKind = Literal["step", "epoch"]
BOUNDARY_KINDS: tuple[BoundaryKind, ...] = ("step", "epoch")


@dataclass(frozen=True)
class Boundary:
    """One point of the training loop where a save may happen.

    ``epoch``/``step`` are the progress the loop reported (None for what it never reports).
    ``steps_reported`` counts the ``on_step_end`` calls of the run so far, this one included
    (restored with a checkpoint); when not given it is taken to be ``step``. ``now`` and
    ``last_save`` are ``time.monotonic()`` readings; ``last_save`` is None before the first
    periodic save of this manager. ``metrics`` are those reported at this boundary;
    ``improved`` is True when the monitored metric improved on the best value so far here.
    """

    kind: BoundaryKind
    epoch: int | None
    step: int | None
    metrics: Mapping[str, float] = field(default_factory=dict)
    improved: bool = False
    now: float = 0.0
    last_save: float | None = None
    steps_reported: int | None = None

    def __post_init__(self) -> None:
        if self.steps_reported is None:
            object.__setattr__(self, "steps_reported", self.step or 0)


class Trigger(Policy[Boundary, bool]):
    """Base class of triggers: subclasses implement ``__call__(boundary) -> bool``; ``|`` fires
    when either trigger fires, ``&`` when both do."""

    @classmethod
    def coerce(cls, value: Any) -> Trigger:
        return as_trigger(value)

    @classmethod
    def either(cls, *parts: Policy[Boundary, bool]) -> Trigger:
        return AnyOf(*parts)

    @classmethod
    def both(cls, *parts: Policy[Boundary, bool]) -> Trigger:
        return AllOf(*parts)


TriggerLike = Callable[[Boundary], bool]


class FunctionTrigger(FromFunction[Boundary, bool], Trigger):
    """A plain function ``(Boundary) -> bool`` used as a trigger."""

    def check(self, answer: Any) -> bool:
        return bool(answer)


def as_trigger(value: TriggerLike) -> Trigger:
    """Wrap a plain callable ``(Boundary) -> bool`` so it composes. Raises TypeError."""
    if isinstance(value, Trigger):
        return value
    refuse_other_family(value, Trigger, "trigger")
    if not callable(value):
        raise TypeError(f"a trigger must be callable as trigger(boundary) -> bool, got {value!r}")
    return FunctionTrigger(value)


class AnyOf(policy.AnyOf[Boundary], Trigger):
    """Fires when any of its triggers fires."""


class AllOf(policy.AllOf[Boundary], Trigger):
    """Fires when all of its triggers fire."""


@dataclass(frozen=True, repr=False)
class every_n_epochs(Trigger):
    """Fires at epoch boundaries whose epoch number is a multiple of ``n``."""

    n: int

    def __post_init__(self) -> None:
        checks.count("every_n_epochs", self.n, minimum=1)

    def __call__(self, boundary: Boundary) -> bool:
        return (
            boundary.kind == "epoch" and boundary.epoch is not None and boundary.epoch % self.n == 0
        )

    def __repr__(self) -> str:
        return f"every_n_epochs({self.n})"


@dataclass(frozen=True, repr=False)
class every_n_steps(Trigger):
    """Fires at every ``n``-th step the loop reports (``Boundary.steps_reported``).

    It counts reports, not step numbers, so a global step that grows by a batch size, or starts
    anywhere, is saved every ``n`` iterations all the same.
    """

    n: int

    def __post_init__(self) -> None:
        checks.count("every_n_steps", self.n, minimum=1)

    def __call__(self, boundary: Boundary) -> bool:
        reported = boundary.steps_reported or 0
        return boundary.kind == "step" and reported > 0 and reported % self.n == 0

    def __repr__(self) -> str:
        return f"every_n_steps({self.n})"


@dataclass(frozen=True, repr=False)
class min_interval(Trigger):
    """Fires when at least ``seconds`` (a number or a ``timedelta``) have passed since the last
    periodic save, or when there was none yet."""

    seconds: float | timedelta

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", checks.seconds("min_interval_s", self.seconds))

    def __call__(self, boundary: Boundary) -> bool:
        interval = cast(float, self.seconds)  # a timedelta became seconds on construction
        return boundary.last_save is None or boundary.now - boundary.last_save >= interval

    def __repr__(self) -> str:
        seconds = cast(float, self.seconds)
        return f"min_interval({int(seconds) if seconds.is_integer() else seconds!r})"


@dataclass(frozen=True, repr=False)
class on_improvement(Trigger):
    """Fires when the monitored metric improved at this boundary."""

    def __call__(self, boundary: Boundary) -> bool:
        return boundary.improved

    def __repr__(self) -> str:
        return "on_improvement()"


@dataclass(frozen=True, repr=False)
class at_boundary(Trigger):
    """Fires at every boundary of the given kind ("epoch" or "step")."""

    kind: BoundaryKind

    def __post_init__(self) -> None:
        checks.choice("kind", self.kind, BOUNDARY_KINDS)

    def __call__(self, boundary: Boundary) -> bool:
        return boundary.kind == self.kind

    def __repr__(self) -> str:
        return f"at_boundary({self.kind!r})"


@dataclass(frozen=True, repr=False)
class at_loop_unit(Trigger):
    """Fires at every epoch end, and at every step end of a loop that reports no epoch."""

    def __call__(self, boundary: Boundary) -> bool:
        return boundary.kind == "epoch" or boundary.epoch is None

    def __repr__(self) -> str:
        return "at_loop_unit()"


@dataclass(frozen=True, repr=False)
class never(Trigger):
    """Never fires: saves happen only on demand, on improvement and at the end."""

    def __call__(self, boundary: Boundary) -> bool:
        return False

    def __repr__(self) -> str:
        return "never()"


def choose_trigger(
    trigger: TriggerLike | None,
    every_n_epochs_: int | None,
    every_n_steps_: int | None,
    min_interval_s: float | timedelta | None,
) -> Trigger:
    """The manager's trigger: ``trigger=`` itself, or the one its counts describe. Raises
    ValueError when both are given."""
    if trigger is None:
        return periodic_trigger(every_n_epochs_, every_n_steps_, min_interval_s)
    if (every_n_steps_, min_interval_s) != (None, None) or every_n_epochs_ not in (None, 1):
        raise ValueError(
            "trigger= replaces every_n_epochs/every_n_steps/min_interval_s; combine "
            "triggers with | and & instead of passing both"
        )
    return as_trigger(trigger)


def periodic_trigger(
    every_n_epochs_: int | None,
    every_n_steps_: int | None,
    min_interval_s: float | timedelta | None,
) -> Trigger:
    """The trigger the manager's keyword arguments describe.

    Epoch and step counts fire independently; ``min_interval_s`` throttles them, and on its own
    (no counts) means "at the first epoch end (step end, for a loop without epochs) once that
    much time has passed".
    """
    counts: list[Trigger] = []
    if every_n_epochs_ is not None:
        counts.append(every_n_epochs(every_n_epochs_))
    if every_n_steps_ is not None:
        counts.append(every_n_steps(every_n_steps_))
    if min_interval_s is None:
        return AnyOf(*counts) if counts else never()
    base: Trigger = AnyOf(*counts) if counts else at_loop_unit()
    return AllOf(base, min_interval(min_interval_s))
