"""Step: a function with its loader, saver, name and code fingerprint."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import checks
from .identity import definition_of, fingerprint
from .retries import NO_RETRY, Retry

if TYPE_CHECKING:
    from .storage.store import Manifest, Store

logger = logging.getLogger(__name__)

StepFunction = Callable[[dict[str, Any], dict[str, Any]], Any]
Loader = Callable[[dict[str, Any]], Mapping[str, Any]]
Saver = Callable[[dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class StepContext:
    """What the run loop tells a step about the run executing it.

    Plain steps ignore it; steps that keep their own records (fan-out steps) write them to
    ``store``. ``before`` is the stored form of the state the step received. Callbacks added to
    ``on_committed`` run once the step's result is committed, for cleanup that must not happen
    earlier.
    """

    store: Store
    location: str
    run_id: str
    before: Manifest
    on_committed: list[Callable[[], None]] = field(default_factory=list)

    def committed(self) -> None:
        """Run the ``on_committed`` callbacks; a failing one is logged, the step stays done."""
        for callback in self.on_committed:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001  cleanup must not fail a committed step
                logger.warning("cleanup after a committed step failed at %s: %s",
                               self.location, exc)


@dataclass(frozen=True)
class Step:
    """One unit of resumable work.

    ``fn(state, data)`` mutates ``state`` in place or returns a new state dict. ``load(state)``
    returns a mapping merged into ``data`` before the step; ``save(state, data)`` writes heavy
    data after it. ``reuse=False`` marks a step that reads the outside world, which runs even
    when its recorded output could be reused; ``retry`` says when a failing step is retried.
    Neither is part of the fingerprint: they do not change what the step computes.
    """

    name: str
    fn: StepFunction
    load: Loader | None = None
    save: Saver | None = None
    fingerprint: str = ""
    reuse: bool = True
    retry: Retry = NO_RETRY

    @classmethod
    def from_function(
        cls,
        fn: StepFunction,
        *,
        name: str | None = None,
        load: Loader | None = None,
        save: Saver | None = None,
        reuse: bool = True,
        retry: Retry = NO_RETRY,
    ) -> Step:
        for role, value in (("step", fn), ("load", load), ("save", save)):
            if value is not None and not callable(value):
                raise TypeError(f"{role}= must be callable, got {value!r}")
        checks.flag("reuse=", reuse)
        if not isinstance(retry, Retry):
            raise TypeError(f"retry= must be a Retry, got {retry!r}")
        name = step_name(fn, name)
        parts = [fingerprint(fn), fingerprint(load), fingerprint(save)]
        return cls(
            name, fn, load, save, hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32],
            reuse=reuse, retry=retry,
        )

    def call(
        self, state: dict[str, Any], data: dict[str, Any], context: StepContext | None = None
    ) -> dict[str, Any]:
        """Run the step; return the state it leaves (the same dict if it mutated in place).

        ``context`` describes the run; a plain step does not need it.
        """
        result = self.fn(state, data)
        if result is None:
            return state
        if result is data and result is not state:
            # Returning `data` (as gumly's step wrapper did) would make the heavy data the
            # new state and silently drop every state variable.
            raise TypeError(
                f"step {self.name!r} returned its `data` dict; a step returns None (after "
                "changing state in place) or the new state. Remove the `return data`: `data` "
                "is passed on to the next step by itself."
            )
        if not isinstance(result, dict):
            raise TypeError(
                f"step {self.name!r} returned {type(result).__name__}; a step returns None "
                "(after changing state in place) or the new state as a dict"
            )
        return result


def step_name(fn: Callable[..., Any], name: str | None) -> str:
    """``name`` if given, else the function's qualified name; raises ValueError if unusable."""
    if name is None:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        if not name:
            raise ValueError(f"cannot derive a step name from {fn!r}; pass name='...'")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"step name must be a non-empty str, got {name!r}")
    return name


def check_redefinition(existing: Step, new: Step) -> None:
    """Let ``new`` replace the registered step of the same name, or raise ValueError.

    A new definition of the function replaces the step in place: an edited notebook cell run
    again, or a script defining the function again further down. Nothing here looks at the file
    or line a function comes from, as a notebook compiles each run of a cell under a new name.
    Refused, with a request for ``name=``, are collisions of steps that are not redefinitions:
    one definition registered again with different captured values (steps made by a factory),
    a second unnamed lambda, and a function of the same name from another module. A name given
    with ``name=`` is the user's decision and always replaces.
    """
    if new.fn is existing.fn:
        return  # the same function registered again, whatever its captured values hold now
    try:
        derived = step_name(new.fn, None)
    except ValueError:
        return
    if new.name != derived:
        return
    old, fresh = definition_of(existing.fn), definition_of(new.fn)
    if old.module != fresh.module:
        raise ValueError(
            f"step {new.name!r} is already registered from module {old.module!r}; the function "
            f"of the same name from module {fresh.module!r} would replace it. Give one of them "
            f"its own name with name='...', or call remove_step({new.name!r}) first to replace it"
        )
    if fresh.same_code(old):
        if new.fingerprint == existing.fingerprint:
            return  # the same function registered again
        raise ValueError(
            f"step {new.name!r} is already registered from the same definition with different "
            "captured values (a factory or a loop making several steps); each needs its own "
            "name: pass name='...' when registering it, for example "
            f"add_step(fn, name='{new.name.rpartition('.')[2]}_2')"
        )
    if fresh.anonymous:
        raise ValueError(
            f"a second unnamed lambda step {new.name!r} would replace the first; give each "
            "lambda step its own name: add_step(name='...')(lambda state, data: ...)"
        )
