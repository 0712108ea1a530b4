"""FlowCore: the step registry, where a run starts, and the flow's inspection and management.

The public ``CheckpointFlow`` (``flow.py``) adds the extension entry points to it. The run loop
(running, reusing and retrying steps, committing after each) is ``execution.py``; where a run
starts is ``run_start.py``.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, overload

from . import checks
from .errors import StepNotFoundError
from .execution import CORRUPT_REMEDY, Execution, RunOptions, load_data, value_where
from .flow_record import FlowRecord
from .flow_retention import KeepLatestRun, RetentionArg, as_flow_retention, over_record_names
from .policies import LoadPolicyArg, load_first, load_never, load_policy_from
from .retries import Retry, RetryOn
from .run_start import CheckpointRef, load_snapshot, plan_start
from .runs import RunSummary
from .status import FlowStatus, flow_status
from .steps import Loader, Saver, Step, StepFunction, check_redefinition
from .storage.codec import Signer
from .storage.handlers import StateHandler, resolve_handler
from .storage.locks import run_lock
from .storage.store import Store

logger = logging.getLogger("checkpoint_flow")

_CODE_CHANGE_CHOICES = ("restart", "ignore")
_CORRUPT_CHOICES = ("raise", "previous")


class FlowCore:
    """The flow without its extensions: registers steps, runs them, inspects and manages what
    the runs recorded. ``CheckpointFlow`` documents the arguments.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | StateHandler,
        handler: str | type | StateHandler | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        key: bytes | str | None = None,
        on_code_change: Literal["restart", "ignore"] = "restart",
        retention: RetentionArg | None = None,
        lock_ttl_s: float | timedelta = 60.0,
        compress: Literal["zstd"] | None = None,
        reuse: bool = False,
    ) -> None:
        checks.choice("on_code_change", on_code_change, _CODE_CHANGE_CHOICES)
        ttl_s = checks.seconds("lock_ttl_s", lock_ttl_s, positive=True)
        checks.flag("reuse", reuse)
        self.handler = resolve_handler(location, handler, storage_options)
        self.store = Store(self.handler, Signer.from_env(key), compress=compress)
        self.on_code_change = on_code_change
        self.retention = KeepLatestRun() if retention is None else as_flow_retention(retention)
        self.lock_ttl_s = ttl_s
        self.reuse = reuse
        self._steps: list[Step] = []
        self._positions: dict[str, int] = {}  # step name -> index in _steps

    def __repr__(self) -> str:
        return f"CheckpointFlow({self.location!r}, steps={self.step_names})"

    @property
    def location(self) -> str:
        return self.handler.location

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps)

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self._steps]

    # -- registering steps ------------------------------------------------------------------------

    @overload
    def add_step(self, fn: StepFunction) -> StepFunction: ...

    @overload
    def add_step(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        load: Loader | None = None,
        save: Saver | None = None,
        reuse: bool = True,
        retries: int = 0,
        retry_delay_s: float | timedelta = 1.0,
        backoff: float = 2.0,
        retry_on: RetryOn = Exception,
    ) -> Callable[[StepFunction], StepFunction]: ...

    def add_step(
        self,
        fn: StepFunction | None = None,
        *,
        name: str | None = None,
        load: Loader | None = None,
        save: Saver | None = None,
        reuse: bool = True,
        retries: int = 0,
        retry_delay_s: float | timedelta = 1.0,
        backoff: float = 2.0,
        retry_on: RetryOn = Exception,
    ) -> Any:
        """Register ``fn(state, data)`` as a step; usable bare or with arguments.

        A new definition of a registered step's function replaces it in place (re-running a
        notebook cell), keeping its position; other name collisions (factory-made steps, a
        second lambda) raise ValueError asking for ``name=``. The function is returned
        unchanged.

        Args:
            reuse: False for a step that reads the outside world (today's orders, an API): it
                runs even in a ``reuse=True`` run, and the steps after it are reused only if it
                produced the same output.
            retries: attempts after the first when the step (its loader, itself or its saver)
                raises one of ``retry_on``; each attempt starts from the state the step
                received. The last failure propagates as usual.
            retry_delay_s: seconds (or a ``timedelta``) before the first retry, multiplied by
                ``backoff`` before each further one.

        Raises TypeError/ValueError naming a bad argument.
        """
        retry = Retry(retries, retry_delay_s, backoff, retry_on)

        def register(function: StepFunction) -> StepFunction:
            self.register(Step.from_function(
                function, name=name, load=load, save=save, reuse=reuse, retry=retry,
            ))
            return function

        if fn is None:
            return register
        if not callable(fn):
            raise TypeError(f"add_step expects a function, got {fn!r}")
        return register(fn)

    def register(self, step: Step) -> Step:
        """Add a ready ``Step``, or let it replace a redefined one of the same name.

        Raises ValueError for a name collision that is not a redefinition (see
        ``steps.check_redefinition``).
        """
        i = self._positions.get(step.name)
        if i is not None:
            check_redefinition(self._steps[i], step)
            self._steps[i] = step
            logger.debug("step %r redefined in place at position %d", step.name, i)
            return step
        self._positions[step.name] = len(self._steps)
        self._steps.append(step)
        return step

    def remove_step(self, name: str) -> None:
        """Forget a registered step."""
        self._steps.pop(self._index_of(name, self.step_names, option="name"))
        self._positions = {s.name: i for i, s in enumerate(self._steps)}

    # -- running ----------------------------------------------------------------------------------

    def run(
        self,
        initial_state: Mapping[str, Any] | None = None,
        checkpoint: CheckpointRef | None = None,
        load_policy: LoadPolicyArg = "first",
        *,
        on_corrupt: Literal["raise", "previous"] = "raise",
        reuse: bool | None = None,
        until: CheckpointRef | None = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Run the steps, resuming where the last run stopped; return the final state.

        Args:
            initial_state: the state of a fresh run; ignored (with a log line) when resuming.
            checkpoint: force the start: a 0-based index, a negative index, or a step name;
                the step gets exactly the state it received the last time it ran, and runs.
            load_policy: which loaders run: ``"first"`` (only the first executed step's, and
                the first one executed after reused steps), ``"always"``, ``"never"``, or one
                boolean per step.
            on_corrupt: ``"raise"`` a damaged newest checkpoint, or fall back to the newest
                intact one (``"previous"``), saying so in the log.
            reuse: take the recorded output of each step whose code (with its loader and saver)
                and input are those of its last finished execution, instead of running it
                (see ``reuse.py``); None takes the flow's default (``CheckpointFlow(reuse=)``).
            until: stop after this step (a name or an index) and commit; the next run
                continues after it.
            progress: show a progress bar over the steps (tqdm when installed, log lines
                otherwise).

        Raises: the step's own exception (with a note saying where the next run resumes),
        ValueError/TypeError for bad arguments, CheckpointCorruptError, CheckpointLockedError,
        CheckpointWriteError, UnpicklableStateError. Warns (CheckpointFlowWarning) when a code
        change moves the start back, and when a saver runs without the data of loaders that
        ran in an earlier run.
        """
        if initial_state is None:
            initial_state = {}
        if not isinstance(initial_state, Mapping):
            raise TypeError(
                f"initial_state must be a dict, got {type(initial_state).__name__}"
            )
        for key in initial_state:
            if not isinstance(key, str):
                raise TypeError(
                    f"initial_state keys must be str, got the key {key!r} "
                    f"({type(key).__name__}); state keys name variables"
                )
        checks.choice("on_corrupt", on_corrupt, _CORRUPT_CHOICES)
        if not self._steps:
            raise ValueError("the flow has no steps; register some with @cp.add_step")
        policy = load_policy_from(load_policy, len(self._steps))
        names = self.step_names
        # Every argument is checked before storage is touched.
        forced = self._index_of(checkpoint, names) if checkpoint is not None else None
        last = self._index_of(until, names, option="until") if until is not None else None
        if reuse is not None:
            checks.flag("reuse", reuse)
        checks.flag("progress", progress)
        with run_lock(self.handler, ttl_s=self.lock_ttl_s) as lock:
            self.store.guard = lock.check
            try:
                body = self.store.latest_record(fallback=on_corrupt == "previous")
                record = FlowRecord.read(self.store, body)
                start, state, snapshot = plan_start(
                    self.store, self._steps, record, dict(initial_state), checkpoint, forced,
                    check_code=self.on_code_change == "restart",
                )
                if last is not None and last < start:
                    raise ValueError(
                        f"until={until!r} names step {names[last]!r} ({last + 1}/{len(names)}), "
                        f"which comes before step {names[start]!r}, where this run starts at "
                        f"{self.location}; pass checkpoint={names[last]!r} to run it again"
                    )
                options = RunOptions(
                    reuse=self.reuse if reuse is None else reuse, until=last, forced=forced,
                    progress=progress,
                    first_only=isinstance(policy, load_first),
                    warn_empty_saver=not isinstance(policy, load_never),
                )
                execution = Execution(
                    self.store, self._steps, record, policy, options, self.retention
                )
                return execution.execute(start, state, snapshot)
            finally:
                self.store.guard = None

    # -- inspection and management ---------------------------------------------------------------

    def record(self) -> FlowRecord | None:
        """The newest commit record at the location, read and typed; None if there is none."""
        return FlowRecord.read(self.store, self.store.latest_record())

    def status(self) -> FlowStatus:
        """Steps with their last outcome and duration, what the last run did with each (ran,
        resumed, reused, skipped), and where the next run starts. Shows as a table in Jupyter."""
        return flow_status(self.location, self.step_names, self.record())

    def runs(self) -> list[RunSummary]:
        """The runs kept at the location (at most 51), oldest first, ending with the newest."""
        record = self.record()
        return record.runs() if record is not None else []

    def state_before(self, step: CheckpointRef) -> dict[str, Any]:
        """The saved state ``step`` received the last time it ran."""
        record = self.record()
        names = self.step_names or (record.order if record is not None else [])
        name = names[self._index_of(step, names, option="step")]
        before = record.step(name).before if record is not None else None
        if before is None:
            raise ValueError(f"step {name!r} has never run at {self.location}; no snapshot")
        return load_snapshot(self.store, before, name)[0]

    def state_after(self, step: CheckpointRef) -> dict[str, Any]:
        """The saved state ``step`` left the last time it finished."""
        record = self.record()
        names = self.step_names or (record.order if record is not None else [])
        name = names[self._index_of(step, names, option="step")]
        after = record.step(name).after if record is not None else None
        if after is None:
            raise ValueError(
                f"step {name!r} has never finished at {self.location}; no saved output"
            )
        snapshot = self.store.snapshot(after)
        return self.store.load_state(
            snapshot, where=value_where(name, "after"), remedy=CORRUPT_REMEDY
        )

    def try_step(self, step: CheckpointRef, *, save: bool = False) -> dict[str, Any]:
        """Run one step alone on the state it received the last time it ran, in memory, and
        return the state it produces; the checkpoint is not touched.

        For a step that never ran, the state the step before it left is used. Its loader runs;
        its saver runs only with ``save=True``. Raises the step's own exception unchanged, and
        ValueError when no saved state fits.
        """
        checks.flag("save", save)
        names = self.step_names
        index = self._index_of(step, names, option="step")
        target = self._steps[index]
        record = self.record()
        ref, source = None, target.name
        if record is not None:
            ref = record.step(target.name).before
            if ref is None and index > 0:
                ref, source = record.step(names[index - 1]).after, names[index - 1]
        if ref is None:
            raise ValueError(
                f"step {target.name!r} has no saved input at {self.location}: it never ran, "
                "and neither did the step before it. Run the flow up to the step before it "
                "first (cp.run(..., until=...))"
            )
        state = load_snapshot(self.store, ref, source)[0]
        data: dict[str, Any] = {}
        load_data(target, state, data)
        result = target.call(state, data)
        if save and target.save is not None:
            target.save(result, data)
        logger.info(
            "tried step %r alone on the state saved at %s; nothing was written there",
            target.name, self.location,
        )
        return dict(result)

    def reset(self) -> None:
        """Forget the resume point: the next run starts at the beginning with its initial_state.

        Per-step snapshots are kept, so ``checkpoint=`` still works.
        """
        self._amend(lambda record: {**record.body, "resume": None}, "reset")

    def rewind(self, step: CheckpointRef) -> None:
        """Make the next run start at ``step`` with the state that step last received."""

        def rewound(record: FlowRecord) -> dict[str, Any]:
            names = self.step_names or record.order
            name = names[self._index_of(step, names, option="step")]
            before = record.step(name).before
            if before is None:
                raise ValueError(f"cannot rewind to step {name!r}: it has never run")
            return {**record.body, "resume": name, "state": before}

        self._amend(rewound, f"rewind to {step!r}")

    def gc(self) -> tuple[int, int]:
        """Apply the retention rule now; returns (records, blobs) deleted."""
        with run_lock(self.handler, ttl_s=self.lock_ttl_s):
            return self.store.collect(over_record_names(self.retention))

    def verify(self) -> list[str]:
        """Check every record, node and blob; returns the problems found (empty when all is
        well)."""
        return self.store.verify(over_record_names(self.retention))

    def _amend(self, change: Callable[[FlowRecord], dict[str, Any]], what: str) -> None:
        with run_lock(self.handler, ttl_s=self.lock_ttl_s):
            record = self.record()
            if record is None:
                logger.info("%s: nothing recorded at %s yet", what, self.location)
                return
            self.store.commit(change(record), tag=record.run.id or "amend")
            logger.info("%s at %s", what, self.location)

    @staticmethod
    def _index_of(ref: CheckpointRef, names: Sequence[str], *, option: str = "checkpoint") -> int:
        """The position of a step given by index (any integer type) or name.

        ``option`` is how the caller spelled the argument (``checkpoint``, ``--step``...), so the
        error names what the user typed.
        """
        listing = [f"{i}:{n}" for i, n in enumerate(names)]
        if not isinstance(ref, (str, bool)):
            with contextlib.suppress(TypeError):
                ref = operator.index(ref)  # NumPy and other integer types
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            raise TypeError(
                f"{option} must be a step index (int) or a step name (str), got {ref!r}"
            )
        shown = f"{option} {ref!r}" if option.isupper() or option.startswith("-") \
            else f"{option}={ref!r}"
        if isinstance(ref, int):
            if -len(names) <= ref < len(names):
                return ref % len(names)
            raise StepNotFoundError(shown, listing, "is out of range")
        if ref in names:
            return names.index(ref)
        raise StepNotFoundError(shown, listing)

