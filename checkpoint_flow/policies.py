"""Load policies: which steps' loaders run in a given run (``cp.run(load_policy=...)``).

A load policy answers, for each step about to run, whether its loader runs. They compose like
every policy of the library::

    load_first() | load_steps([False, False, True])   # the run's first step, and step 3

The strings ``"first"`` (or ``"first only"``), ``"always"`` and ``"never"`` and a list of one
boolean per step stay accepted and mean the policies of those names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import policy
from .policy import FromFunction, Policy, refuse_other_family

__all__ = [
    "LoadPolicy",
    "LoadPolicyArg",
    "StepLoad",
    "load_always",
    "load_first",
    "load_never",
    "load_policy_from",
    "load_steps",
]


@dataclass(frozen=True)
class StepLoad:
    """A step about to run: its position, and the position of the first step this run
    executes (the start, or the first step run after reused ones)."""

    index: int
    first: int


class LoadPolicy(Policy[StepLoad, bool]):
    """Base class of load policies: ``__call__(step) -> bool`` says whether the step's loader
    runs; ``|`` loads when either policy does, ``&`` when both do."""

    @classmethod
    def coerce(cls, value: Any) -> LoadPolicy:
        return as_load_policy(value)

    @classmethod
    def either(cls, *parts: Policy[StepLoad, bool]) -> LoadPolicy:
        return LoadAny(*parts)

    @classmethod
    def both(cls, *parts: Policy[StepLoad, bool]) -> LoadPolicy:
        return LoadAll(*parts)

    def check_steps(self, n_steps: int) -> None:
        """Raise ValueError when the policy cannot apply to a flow of ``n_steps`` steps."""


class LoadAny(policy.AnyOf[StepLoad], LoadPolicy):
    """Loads when any of its policies does."""

    def check_steps(self, n_steps: int) -> None:
        _check_parts(self.parts, n_steps)


class LoadAll(policy.AllOf[StepLoad], LoadPolicy):
    """Loads when all of its policies do."""

    def check_steps(self, n_steps: int) -> None:
        _check_parts(self.parts, n_steps)


def _check_parts(parts: Sequence[Policy[StepLoad, bool]], n_steps: int) -> None:
    for part in parts:
        if isinstance(part, LoadPolicy):
            part.check_steps(n_steps)


class FunctionLoadPolicy(FromFunction[StepLoad, bool], LoadPolicy):
    """A plain function ``(StepLoad) -> bool`` used as a load policy."""

    def check(self, answer: Any) -> bool:
        return bool(answer)


@dataclass(frozen=True, repr=False)
class load_first(LoadPolicy):
    """Only the run's first executed step loads (the start, or the first step run after
    reused ones)."""

    def __call__(self, step: StepLoad) -> bool:
        return step.index == step.first

    def __repr__(self) -> str:
        return "load_first()"


@dataclass(frozen=True, repr=False)
class load_always(LoadPolicy):
    """Every step loads."""

    def __call__(self, step: StepLoad) -> bool:
        return True

    def __repr__(self) -> str:
        return "load_always()"


@dataclass(frozen=True, repr=False)
class load_never(LoadPolicy):
    """No step loads."""

    def __call__(self, step: StepLoad) -> bool:
        return False

    def __repr__(self) -> str:
        return "load_never()"


@dataclass(frozen=True, repr=False)
class load_steps(LoadPolicy):
    """The steps whose flag is True load: one boolean per step of the flow."""

    flags: tuple[bool, ...]

    def __post_init__(self) -> None:
        flags = self.flags
        if isinstance(flags, (str, bytes)) or not isinstance(flags, Sequence) or not all(
            isinstance(flag, bool) for flag in flags
        ):
            raise TypeError(f"load_steps needs a list of booleans, one per step, got {flags!r}")
        object.__setattr__(self, "flags", tuple(flags))

    def __call__(self, step: StepLoad) -> bool:
        return self.flags[step.index]

    def check_steps(self, n_steps: int) -> None:
        if len(self.flags) != n_steps:
            raise ValueError(
                f"load_policy has {len(self.flags)} booleans but the flow has {n_steps} steps; "
                "give exactly one per step"
            )

    def __repr__(self) -> str:
        return f"load_steps({list(self.flags)!r})"


NAMED: dict[str, Callable[[], LoadPolicy]] = {
    "first": load_first,
    "always": load_always,
    "never": load_never,
    "first only": load_first,
}
LoadPolicyArg = (
    Literal["first", "first only", "always", "never"]
    | Sequence[bool]
    | LoadPolicy
    | Callable[[StepLoad], bool]
)


def as_load_policy(value: Any) -> LoadPolicy:
    """The policy a ``load_policy`` argument names. Raises ValueError/TypeError."""
    if isinstance(value, LoadPolicy):
        return value
    refuse_other_family(value, LoadPolicy, "load_policy")
    if isinstance(value, str):
        if value not in NAMED:
            choices = ", ".join(map(repr, NAMED))
            raise ValueError(
                f"load_policy={value!r} is not valid; choose one of {choices}, "
                "a list of booleans (one per step) or a LoadPolicy"
            )
        return NAMED[value]()
    if isinstance(value, Sequence) and all(isinstance(flag, bool) for flag in value):
        return load_steps(tuple(value))
    if callable(value):
        return FunctionLoadPolicy(value)
    raise TypeError(
        "load_policy must be 'first', 'always', 'never', a list of booleans, a LoadPolicy or "
        f"a callable (StepLoad) -> bool, got {value!r}"
    )


def load_policy_from(value: LoadPolicyArg, n_steps: int) -> LoadPolicy:
    """The ``load_policy`` argument of ``run`` as a policy for a flow of ``n_steps`` steps."""
    chosen = as_load_policy(value)
    chosen.check_steps(n_steps)
    return chosen
