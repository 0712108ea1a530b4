"""Running a map step: skip the items earlier runs recorded, run the rest, commit in batches.

Batches are self-contained entries ``items/<step id>/<scope>/<run id>-<batch>.entry`` in the
store's ``items`` namespace, deleted once the step's results are committed (docs/fanout.md has
the layout). Only the process running the flow writes: results come back through the
executor's futures, so workers need no access to the store.
"""

from __future__ import annotations

import hashlib
import logging
import time
import types
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from typing import Any, cast

from ..errors import CheckpointCorruptError, FanOutError, UnpicklableStateError
from ..identity import fingerprint
from ..steps import StepContext
from ..storage.namespaces import Namespace
from .items import check_unique, item_key, key_digest, list_items
from .progress import Progress
from .settings import MapSettings
from .shipping import Shipped, WithState, apply

logger = logging.getLogger(__name__)

ITEMS = "items"
# Items submitted to an executor and not yet collected. Bounded so that max_failures can stop
# submission and a crash loses at most this many running items besides the uncommitted batch.
IN_FLIGHT = 128


class FanOut:
    """One execution of a map step: finds what is done, runs the rest, commits in batches."""

    def __init__(self, step: MapSettings, state: dict[str, Any], context: StepContext) -> None:
        self.step = step
        self.context = context
        self.store = context.store
        self.state = state
        self.items = list_items(step, state)
        self.keys = [item_key(step, item) for item in self.items]
        self.digests = [key_digest(step, k) for k in self.keys]
        check_unique(step, self.keys, self.digests)
        step_id = hashlib.sha256(step.name.encode()).hexdigest()[:16]
        self.items_ns = Namespace(self.store, ITEMS)
        self.step_folder = step_id
        self.folder = f"{self.step_folder}/{self._scope()}"
        self.done: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}
        self.pending_since: float | None = None
        self.batch = 0
        self.failures: dict[int, BaseException] = {}
        self.progress: Progress | None = None

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
        self.progress = Progress(self.step, total, total - len(todo))
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
                    f"{self.context.location}",
                    f"cannot be read ({exc})",
                    "Delete that file to run its items again.",
                ) from exc
            for digest, result in results.items():
                if digest in wanted:
                    self.done[digest] = result

    # -- running items ----------------------------------------------------------------------------

    def _task(self, shipped: bool) -> Callable[[Any], Any]:
        fn = cast(Callable[..., Any], self.step.fn)
        if shipped:
            return Shipped.pack(self.step, self.state if self.step.takes_state else None)
        if self.step.takes_state:
            return WithState(fn, types.MappingProxyType(self.state))
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
            in_flight[executor.submit(apply, task, self.items[index], call)] = (index, attempt)

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
                f"a result of map step {self.step.name!r}",
                str(exc.__cause__),
                "An item function must return picklable values.",
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
        error = FanOutError(
            self.step.name,
            self.context.location,
            {self.keys[i]: self.failures[i] for i in failed},
            total=len(self.items),
            finished=sum(1 for d in self.digests if d in self.done),
            max_failures=self.step.max_failures,
        )
        error.__cause__ = self.failures[failed[0]]
        return error
