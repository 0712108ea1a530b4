"""The map step: `MapStep`, its option checks, and `map_step`, which registers one with a flow."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar, cast

from .. import checks
from ..identity import fingerprint
from ..steps import Step, StepContext, StepFunction, step_name
from .runner import FanOut
from .settings import ItemsFunction, KeyFunction


class StepRegistry(Protocol):
    """What `map_step` registers a step with: a flow (``CheckpointFlow.register``)."""

    def register(self, step: Step) -> Step: ...


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class MapStep(Step):
    """A step that calls ``fn(item)`` (or ``fn(item, state)``) once per item.

    The results, in item order, become ``state[into]`` (``into`` defaults to the step name).
    Build one with ``CheckpointFlow.map_step`` or ``MapStep.from_item_function``.
    """

    items: ItemsFunction
    key: KeyFunction | None = None
    into: str = ""
    executor: Executor | None = None
    max_failures: int | None = 1
    retries: int = 0
    commit_every: int = 1000
    commit_interval_s: float = 5.0
    progress: bool = False
    takes_state: bool = False
    item_fingerprint: str = ""

    @classmethod
    def from_item_function(
        cls,
        fn: Callable[..., Any],
        *,
        items: ItemsFunction,
        name: str | None = None,
        key: KeyFunction | None = None,
        into: str | None = None,
        executor: Executor | None = None,
        max_failures: int | None = 1,
        retries: int = 0,
        commit_every: int = 1000,
        commit_interval_s: float | timedelta = 5.0,
        progress: bool = False,
    ) -> MapStep:
        """Validate the options and build the step. Raises TypeError/ValueError naming the value."""
        if not callable(fn):
            raise TypeError(f"map_step expects a function, got {fn!r}")
        if not callable(items):
            raise TypeError(
                f"items= must be a function of the state returning the items, got {items!r}; "
                "for example items=lambda state: state['files']"
            )
        if key is not None and not callable(key):
            raise TypeError(f"key= must be a function of an item or None, got {key!r}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                f"executor= must be a concurrent.futures.Executor (ThreadPoolExecutor, "
                f"ProcessPoolExecutor, dask's Client.get_executor()...) or None, got {executor!r}"
            )
        if max_failures is not None:
            checks.count(
                "max_failures", max_failures, minimum=1, alternative=" or None for no limit"
            )
        checks.count("retries", retries)
        checks.count("commit_every", commit_every, minimum=1)
        interval_s = checks.seconds("commit_interval_s", commit_interval_s, positive=True)
        checks.flag("progress", progress)
        name = step_name(fn, name)
        if into is None:
            into = name
        if not isinstance(into, str) or not into:
            raise ValueError(f"into= must be a non-empty state key (str), got {into!r}")
        # Taken once, at registration: the item results are reused while this is unchanged,
        # even if the function mutates what it captured while the items run.
        item_fingerprint = fingerprint(fn)
        parts = ["map", item_fingerprint, fingerprint(items), fingerprint(key), into]
        return cls(
            name=name,
            fn=cast(StepFunction, fn),
            fingerprint=hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32],
            item_fingerprint=item_fingerprint,
            items=items,
            key=key,
            into=into,
            executor=executor,
            max_failures=max_failures,
            retries=retries,
            commit_every=commit_every,
            commit_interval_s=interval_s,
            progress=progress,
            takes_state=_takes_second_argument(fn),
        )

    def call(
        self, state: dict[str, Any], data: dict[str, Any], context: StepContext | None = None
    ) -> dict[str, Any]:
        """Run the unfinished items, gather every result into ``state[into]``.

        Raises FanOutError when items fail (the finished ones stay recorded).
        """
        if context is None:
            raise TypeError(
                f"map step {self.name!r} records its items in the flow's store; run it with "
                "CheckpointFlow.run, or call the item function directly"
            )
        state[self.into] = FanOut(self, state, context).run()
        return state


def map_step(
    flow: StepRegistry,
    *,
    items: ItemsFunction,
    name: str | None = None,
    key: KeyFunction | None = None,
    into: str | None = None,
    executor: Executor | None = None,
    max_failures: int | None = 1,
    retries: int = 0,
    commit_every: int = 1000,
    commit_interval_s: float | timedelta = 5.0,
    progress: bool = False,
) -> Callable[[F], F]:
    """Register ``fn(item)`` or ``fn(item, state)`` as a fan-out step: ``@cp.map_step(items=...)``.

    The function runs once per item of ``items(state)``; its results, in item order, become
    ``state[into]`` (the step name by default). Each finished item is recorded as it completes,
    so a rerun after a crash or a failure runs only the unfinished items. A function with a
    second parameter receives the state as a read-only mapping.

    Args:
        items: ``items(state)`` returns the items (any iterable; it is read once per run).
        key: ``key(item)`` returns the item's stable identity; by default the item itself,
            which must then be hashable and picklable.
        executor: any ``concurrent.futures.Executor``; None runs items in the calling thread.
        max_failures: stop submitting new items after this many failures (None: run every
            item); the step then fails with FanOutError.
        retries: extra attempts for an item that raised, before it counts as a failure.
        commit_every, commit_interval_s: finished items are committed in batches of this
            many, or sooner once the oldest uncommitted result is this many seconds old.
        progress: show a tqdm progress bar (the ``progress`` extra) instead of log lines.

    Raises TypeError/ValueError for bad options. The function is returned unchanged.
    """

    def register(function: F) -> F:
        flow.register(
            MapStep.from_item_function(
                function, items=items, name=name, key=key, into=into, executor=executor,
                max_failures=max_failures, retries=retries, commit_every=commit_every,
                commit_interval_s=commit_interval_s, progress=progress,
            )
        )
        return function

    return register


def _takes_second_argument(fn: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2

