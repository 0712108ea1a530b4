"""CheckpointFlow: the flow core with the extension entry points ``map_step`` and ``cached``.

Registering steps, running them and inspecting what runs recorded is ``flow_core.FlowCore``;
the fan-out (``fanout``) and memo (``memo``) extensions build on the core, and this class is
where the flow reaches them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any, TypeVar

from . import fanout, memo
from .flow_core import FlowCore
from .run_start import CheckpointRef
from .status import FlowStatus, StepStatus

# Re-exported: the status types used to live here.
__all__ = ["CheckpointFlow", "CheckpointRef", "FlowStatus", "StepStatus"]

F = TypeVar("F", bound=Callable[..., Any])


class CheckpointFlow(FlowCore):
    """Records steps and runs them so that a rerun starts at the first step that did not finish.

    Args:
        location: a directory path, an fsspec URL (``s3://bucket/prefix``...) or a handler.
        handler: ``"local"``, ``"fsspec"``, a handler class or instance; chosen from the
            location when omitted.
        storage_options: passed untouched to fsspec.
        key: signs every record (HMAC-SHA256) and refuses unsigned or tampered ones; defaults to
            the ``CHECKPOINT_FLOW_KEY`` environment variable.
        on_code_change: ``"restart"`` reruns from the earliest step whose code changed since it
            ran; ``"ignore"`` resumes regardless.
        retention: which commit records to keep after a run: a rule such as
            ``KeepLatestRun()`` (the default) or ``KeepLastRecords(n)``, rules combined with
            ``|``/``&``, or a callable over ``RecordSummary`` objects returning the seqs to keep.
        lock_ttl_s: how long a lock record on an object store outlives a crashed holder.
        compress: ``"zstd"`` compresses value blobs larger than 512 bytes (the ``zstd`` extra);
            None (the default) stores them as they are.
        reuse: the default of ``run(..., reuse=)``: False (after a success the next run starts
            over), or True (unchanged steps take their recorded output instead of running).
    """

    def map_step(
        self,
        *,
        items: Callable[[dict[str, Any]], Iterable[Any]],
        name: str | None = None,
        key: Callable[[Any], Hashable] | None = None,
        into: str | None = None,
        executor: Executor | None = None,
        max_failures: int | None = 1,
        retries: int = 0,
        commit_every: int = 1000,
        commit_interval_s: float | timedelta = 5.0,
        progress: bool = False,
    ) -> Callable[[F], F]:
        """Register ``fn(item)`` or ``fn(item, state)`` as a fan-out step:
        ``@cp.map_step(items=...)``.

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
        return fanout.map_step(
            self, items=items, name=name, key=key, into=into, executor=executor,
            max_failures=max_failures, retries=retries, commit_every=commit_every,
            commit_interval_s=commit_interval_s, progress=progress,
        )

    def cached(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        key: str | None = None,
        ignore: Collection[str] = (),
    ) -> Any:
        """Memoize a function's result in this flow's store; see ``memo.cached``.

        Usable bare (``@cp.cached``), with a key prefix (``@cp.cached(key="embed")``) or with
        arguments left out of the key (``@cp.cached(ignore=["logger"])``).
        """
        return memo.cached(self.store, fn, key=key, ignore=ignore)
