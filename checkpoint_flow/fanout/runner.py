"""Fan-out steps: one function applied to many items, each finished item recorded durably.

Layout below the location, in the store's ``items`` namespace::

    items/<step id>/<scope>/<run id>-<batch, 6 digits>.entry

``<step id>`` is derived from the step name and ``<scope>`` from the item function's code (and,
for a function that reads the state, from the state the step received), so a changed function
starts afresh while a changed item list reuses every item that already finished. Each entry is
self-contained (a sealed header and one blob holding ``{item key digest: result}`` for a batch of
items) and written once. When the step completes, its results become one ordinary state value
and, once that is committed, the step's entries are deleted.

Only the process running the flow (the driver) writes: items run wherever the executor sends
them, and their results come back through the executor's futures. Workers on other machines
therefore need no access to the store, and the run lock of the location keeps meaning "one
writer".
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
import types
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import cloudpickle

from .. import identity
from ..errors import CheckpointCorruptError, FanOutError, UnpicklableStateError
from ..identity import fingerprint
from ..steps import Step, StepContext, StepFunction, step_name
from ..storage.codec import digest_chunks
from ..storage.namespaces import Namespace


class StepRegistry(Protocol):
    """What `map_step` registers a step with: a flow (``CheckpointFlow.register``)."""

    def register(self, step: Step) -> Step: ...


logger = logging.getLogger(__name__)

ItemsFunction = Callable[[dict[str, Any]], Iterable[Any]]
KeyFunction = Callable[[Any], Hashable]
F = TypeVar("F", bound=Callable[..., Any])

ITEMS = "items"
# Items submitted to an executor and not yet collected. Bounded so that max_failures can stop
# submission and a crash loses at most this many running items besides the uncommitted batch.
IN_FLIGHT = 128
_LOG_EVERY_S = 10.0
_BATCH_KEY = "fan-out batch"
_NAMED_FAILURES = 5


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
        commit_interval_s: float = 5.0,
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
            _check_int("max_failures", max_failures, minimum=1, extra=" or None for no limit")
        _check_int("retries", retries, minimum=0)
        _check_int("commit_every", commit_every, minimum=1)
        if (
            isinstance(commit_interval_s, bool)
            or not isinstance(commit_interval_s, (int, float))
            or not commit_interval_s > 0
        ):
            raise ValueError(
                f"commit_interval_s must be a positive number of seconds, got {commit_interval_s!r}"
            )
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
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
            commit_interval_s=float(commit_interval_s),
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
        state[self.into] = _FanOut(self, state, context).run()
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
    commit_interval_s: float = 5.0,
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


class _FanOut:
    """One execution of a map step: finds what is done, runs the rest, commits in batches."""

    def __init__(self, step: MapStep, state: dict[str, Any], context: StepContext) -> None:
        self.step = step
        self.context = context
        self.store = context.store
        self.state = state
        self.items = _list_items(step, state)
        self.keys = [_item_key(step, item) for item in self.items]
        self.digests = [_key_digest(step, k) for k in self.keys]
        _check_unique(step, self.keys, self.digests)
        step_id = hashlib.sha256(step.name.encode()).hexdigest()[:16]
        self.items_ns = Namespace(self.store, ITEMS)
        self.step_folder = step_id
        self.folder = f"{self.step_folder}/{self._scope()}"
        self.done: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}
        self.pending_since: float | None = None
        self.batch = 0
        self.failures: dict[int, BaseException] = {}
        self.progress: _Progress | None = None

    def _scope(self) -> str:
        parts = [self.step.item_fingerprint or fingerprint(self.step.fn)]
        if self.step.takes_state:
            # The results of a function that reads the state hold only for that state.
            parts.extend(f"{k}={e['digest']}" for k, e in sorted(self.context.before.items()))
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]

    def run(self) -> list[Any]:
        self._load_done()
        todo = [i for i, d in enumerate(self.digests) if d not in self.done]
        total = len(self.items)
        logger.info(
            "map step %r: %d items, %d finished in an earlier run, %d to run",
            self.step.name, total, total - len(todo), len(todo),
        )
        self.progress = _Progress(self.step, total, total - len(todo))
        try:
            if todo:
                if self.step.executor is None:
                    self._run_here(todo)
                else:
                    self._run_on(self.step.executor, todo)
        except BaseException:
            self._commit_after_interrupt()
            raise
        finally:
            self.progress.close()
        self._commit()
        if self.failures:
            raise self._error()
        self.context.on_committed.append(self._clean_up)
        return [self.done[d] for d in self.digests]

    # -- what earlier runs finished ---------------------------------------------------------------

    def _load_done(self) -> None:
        wanted = set(self.digests)
        for name in self.items_ns.names(self.folder):
            try:
                opened = self.items_ns.open(name)
                results = opened.value() if opened is not None else {}
                if not isinstance(results, dict):
                    raise TypeError(f"holds {type(results).__name__}, not a batch of results")
            except (CheckpointCorruptError, TypeError) as exc:
                raise CheckpointCorruptError(
                    f"item batch {ITEMS}/{name} of map step {self.step.name!r} at "
                    f"{self.context.location} cannot be read ({exc}). Delete that file to "
                    "run its items again."
                ) from exc
            for digest, result in results.items():
                if digest in wanted:
                    self.done[digest] = result

    # -- running items ----------------------------------------------------------------------------

    def _task(self, shipped: bool) -> Callable[[Any], Any]:
        fn = cast(Callable[..., Any], self.step.fn)
        if shipped:
            return _Shipped.pack(self.step, self.state if self.step.takes_state else None)
        if self.step.takes_state:
            return _WithState(fn, types.MappingProxyType(self.state))
        return fn

    def _stopped(self) -> bool:
        limit = self.step.max_failures
        return limit is not None and len(self.failures) >= limit

    def _run_here(self, todo: list[int]) -> None:
        task = self._task(shipped=False)
        for index in todo:
            if self._stopped():
                return
            for attempt in range(self.step.retries + 1):
                try:
                    result = task(self.items[index])
                except Exception as exc:  # noqa: BLE001  recorded as the item's failure
                    if attempt < self.step.retries:
                        self._log_retry(index, attempt, exc)
                        continue
                    self._failed(index, exc)
                else:
                    self._finished(index, result)
                break
            self._commit_if_due()

    def _run_on(self, executor: Executor, todo: list[int]) -> None:
        # Threads share the driver's memory; other executors get a picklable copy of the task.
        task = self._task(shipped=not isinstance(executor, ThreadPoolExecutor))
        queue = iter(todo)
        in_flight: dict[Future[Any], tuple[int, int]] = {}

        def submit(index: int, attempt: int) -> None:
            # Executors that cache calls by their arguments (dask assumes pure functions) would
            # hand back an earlier run's failure; the run id and attempt make each call unique.
            call = f"{self.context.run_id}:{attempt}"
            in_flight[executor.submit(_apply, task, self.items[index], call)] = (index, attempt)

        def fill() -> None:
            while len(in_flight) < IN_FLIGHT and not self._stopped():
                index = next(queue, None)
                if index is None:
                    return
                submit(index, 0)

        try:
            fill()
            while in_flight:
                finished, _ = wait(in_flight, timeout=self._seconds_to_commit(),
                                   return_when=FIRST_COMPLETED)
                for future in finished:
                    index, attempt = in_flight.pop(future)
                    exc = future.exception()
                    if exc is None:
                        self._finished(index, future.result())
                    elif attempt < self.step.retries:
                        self._log_retry(index, attempt, exc)
                        submit(index, attempt + 1)
                    else:
                        self._failed(index, exc)
                self._commit_if_due()
                fill()
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise

    def _finished(self, index: int, result: Any) -> None:
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        self.pending[self.digests[index]] = result
        assert self.progress is not None
        self.progress.advance()

    def _failed(self, index: int, exc: BaseException) -> None:
        self.failures[index] = exc
        logger.warning(
            "map step %r: item %r failed: %s: %s",
            self.step.name, self.keys[index], type(exc).__name__, exc,
        )

    def _log_retry(self, index: int, attempt: int, exc: BaseException) -> None:
        logger.info(
            "map step %r: item %r failed (%s: %s); retry %d of %d",
            self.step.name, self.keys[index], type(exc).__name__, exc, attempt + 1,
            self.step.retries,
        )

    # -- committing -------------------------------------------------------------------------------

    def _seconds_to_commit(self) -> float | None:
        if self.pending_since is None:
            return None
        return max(0.0, self.pending_since + self.step.commit_interval_s - time.monotonic())

    def _commit_if_due(self) -> None:
        if len(self.pending) >= self.step.commit_every or (
            self.pending and self._seconds_to_commit() == 0.0
        ):
            self._commit()

    def _commit(self) -> None:
        """Write the pending results as one self-contained entry."""
        if not self.pending:
            return
        self.batch += 1
        name = f"{self.folder}/{self.context.run_id}-{self.batch:06d}.entry"
        try:
            self.items_ns.put(
                name,
                self.pending,
                {"kind": "fan-out batch", "step": self.step.name, "run": self.context.run_id,
                 "count": len(self.pending)},
                what=f"a batch of results of map step {self.step.name!r}",
                exclusive=True,
            )
        except UnpicklableStateError as exc:
            self.batch -= 1
            raise UnpicklableStateError(
                f"a result of map step {self.step.name!r} cannot be pickled ({exc.__cause__}); "
                "an item function must return picklable values"
            ) from exc
        logger.debug("map step %r: committed %d items as %s", self.step.name,
                     len(self.pending), name)
        self.done.update(self.pending)
        self.pending = {}
        self.pending_since = None

    def _commit_after_interrupt(self) -> None:
        try:
            self._commit()
        except Exception as exc:  # noqa: BLE001  the interrupting exception matters more
            logger.error(
                "map step %r: could not record %d finished items while stopping: %s",
                self.step.name, len(self.pending), exc,
            )

    def _clean_up(self) -> None:
        names = self.items_ns.names(self.step_folder)
        for name in names:
            self.items_ns.delete(name)
        logger.debug("map step %r: removed %d item batches", self.step.name, len(names))

    def _error(self) -> FanOutError:
        failed = sorted(self.failures)
        named = ", ".join(repr(self.keys[i]) for i in failed[:_NAMED_FAILURES])
        more = f" and {len(failed) - _NAMED_FAILURES} more" if len(failed) > _NAMED_FAILURES else ""
        finished = sum(1 for d in self.digests if d in self.done)
        not_started = len(self.items) - finished - len(failed)
        stopped = (
            f"; {not_started} were not started (max_failures={self.step.max_failures})"
            if not_started else ""
        )
        first = self.failures[failed[0]]
        message = (
            f"map step {self.step.name!r}: {len(failed)} of {len(self.items)} items failed: "
            f"{named}{more}. {finished} finished items are recorded at {self.context.location} "
            f"and will not run again{stopped}. First error: {type(first).__name__}: {first}"
        )
        error = FanOutError(message, {self.keys[i]: self.failures[i] for i in failed})
        error.__cause__ = first
        return error


class _Progress:
    """A tqdm bar when asked for and installed, otherwise an INFO line every few seconds."""

    def __init__(self, step: MapStep, total: int, done: int) -> None:
        self.name = step.name
        self.total = total
        self.done = done
        self.ran = 0
        self.started = self.last_log = time.monotonic()
        self.bar: Any = None
        if step.progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.info("progress=True needs tqdm (pip install 'checkpoint_flow[progress]'); "
                            "logging progress instead")
            else:
                self.bar = tqdm(total=total, initial=done, desc=self.name, unit="item")

    def advance(self) -> None:
        self.done += 1
        self.ran += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_log >= _LOG_EVERY_S:
            self.last_log = now
            logger.info("map step %r: %d/%d items done (%.1f items/s)", self.name, self.done,
                        self.total, self.ran / (now - self.started))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elapsed = time.monotonic() - self.started
        logger.info("map step %r: %d/%d items done, %d ran in %.3f s (%.1f items/s)", self.name,
                    self.done, self.total, self.ran, elapsed, self.ran / elapsed if elapsed else 0)


# -- tasks sent to executors -----------------------------------------------------------------------


def _apply(task: Callable[[Any], Any], item: Any, call: str) -> Any:
    return task(item)


@dataclass(frozen=True)
class _WithState:
    fn: Callable[[Any, Mapping[str, Any]], Any]
    state: Mapping[str, Any]

    def __call__(self, item: Any) -> Any:
        return self.fn(item, self.state)


# Item functions unpickled in this (worker) process, by the digest of their pickled form, so a
# worker unpickles the function and the state once rather than once per item.
_UNPACKED: dict[str, Callable[[Any], Any]] = {}


@dataclass(frozen=True)
class _Shipped:
    """The item function (and state) cloudpickled once, so lambdas and closures reach workers."""

    payload: bytes
    digest: str

    @classmethod
    def pack(cls, step: MapStep, state: dict[str, Any] | None) -> _Shipped:
        try:
            payload = cloudpickle.dumps((step.fn, state), protocol=5)
        except Exception as exc:
            raise TypeError(
                f"map step {step.name!r} cannot send its function"
                f"{' and the state' if state is not None else ''} to the executor: {exc}"
            ) from exc
        return cls(payload, digest_chunks([payload]))

    def __call__(self, item: Any) -> Any:
        task = _UNPACKED.get(self.digest)
        if task is None:
            fn, state = cloudpickle.loads(self.payload)
            task = fn if state is None else _WithState(fn, types.MappingProxyType(state))
            _UNPACKED.clear()  # one map step at a time runs in a worker
            _UNPACKED[self.digest] = task
        return task(item)


# -- items and their keys --------------------------------------------------------------------------


def _list_items(step: MapStep, state: dict[str, Any]) -> list[Any]:
    found = step.items(state)
    if isinstance(found, (str, bytes, Mapping)) or not isinstance(found, Iterable):
        raise TypeError(
            f"items= of map step {step.name!r} returned {type(found).__name__} {found!r:.80}; "
            "it must return an iterable of items such as a list (not a str, bytes or dict)"
        )
    return list(found)


def _item_key(step: MapStep, item: Any) -> Any:
    key = step.key(item) if step.key is not None else item
    try:
        hash(key)
    except TypeError:
        where = f"key({item!r:.80})" if step.key is not None else f"item {item!r:.80}"
        raise TypeError(
            f"{where} of map step {step.name!r} is not hashable ({type(key).__name__}); pass "
            "key= returning a stable hashable identity such as a str or an int"
        ) from None
    return key


def _key_digest(step: MapStep, key: Any) -> str:
    # A content digest, not hash() or pickled bytes: str hashes, set order and the pickled
    # form of classes defined in __main__ all change from one process to the next.
    return identity.digest(
        key,
        what=f"the item key {key!r:.80} of map step {step.name!r}",
        remedy=". Pass key= returning a stable identity such as a str, an int or a tuple of them",
    )


def _check_unique(step: MapStep, keys: list[Any], digests: list[str]) -> None:
    seen: set[str] = set()
    duplicates: list[Any] = []
    for key, digest in zip(keys, digests, strict=True):
        if digest in seen:
            duplicates.append(key)
        seen.add(digest)
    if duplicates:
        shown = ", ".join(repr(k) for k in duplicates[:_NAMED_FAILURES])
        raise ValueError(
            f"map step {step.name!r} has {len(duplicates)} duplicate item key(s): {shown}; "
            "every item needs its own key (pass key= to tell equal-looking items apart)"
        )


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


def _check_int(what: str, value: Any, *, minimum: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int >= {minimum}{extra}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}{extra}, got {value!r}")
