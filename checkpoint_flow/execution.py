"""One execution of a flow: runs or reuses steps from a start point, committing as it goes.

``CheckpointFlow.run`` decides where a run starts and with which state; an ``Execution`` takes it
from there. For each step it asks ``reuse.decide`` whether the recorded output can be taken
(``reuse=True``), otherwise it runs the step (loader, function, saver), retrying as the step's
``Retry`` says from the state the step received, and commits the state after it through its
``RunRecorder`` (``run_recorder.py``), which keeps what the records say.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import reuse
from .errors import CheckpointCorruptError, CheckpointFlowWarning
from .flow_record import FlowRecord, StepEntry
from .flow_retention import FlowRetention
from .policies import LoadPolicy, StepLoad
from .run_recorder import RunRecorder
from .step_progress import StepProgress
from .steps import Step, StepContext
from .storage.store import SaveResult, Store, is_immutable
from .tracked import TrackedState

logger = logging.getLogger("checkpoint_flow")


@dataclass(frozen=True)
class RunOptions:
    """How one run goes: reuse recorded outputs, stop after step ``until`` (an index), always run
    step ``forced`` (where ``checkpoint=`` starts), show a progress bar, warn about savers
    without data."""

    reuse: bool = False
    until: int | None = None
    forced: int | None = None
    progress: bool = False
    # Whether a saver left without the data of earlier loaders is worth a warning (not under
    # load_policy="never", which asks for no data), and whether the policy is "first".
    warn_empty_saver: bool = False
    first_only: bool = False


class Execution:
    """One execution of a flow: runs (or reuses) steps from a start index, committing as it goes.

    A step runs only once the state it receives is committed, so that a failure can always
    record "resume here with that state". Reused steps commit nothing of their own: the commit
    before the next executed step, or the run's last one, carries what they changed.
    """

    def __init__(
        self,
        store: Store,
        steps: Sequence[Step],
        record: FlowRecord | None,
        policy: LoadPolicy,
        options: RunOptions,
        retention: FlowRetention,
    ) -> None:
        self.store = store
        self.steps = tuple(steps)
        self.names = [step.name for step in self.steps]
        self.location = store.location
        self.policy = policy
        self.options = options
        # The step table as the run found it: reuse decisions look at this, never at what the
        # run itself has recorded since.
        self.recorded: Mapping[str, StepEntry] = record.steps if record is not None else {}
        self.recorder = RunRecorder(store, self.names, record, retention)
        self.start = 0
        # The load policy's "first step": the start, or the first step run after reused ones.
        self.segment = 0
        self.warn_empty_saver = options.warn_empty_saver

    def execute(
        self, start: int, state: dict[str, Any], snapshot: SaveResult | None
    ) -> dict[str, Any]:
        """Run from step ``start``; ``snapshot`` is the stored form of ``state``, if stored."""
        self.start = self.segment = start
        steps = self.steps
        last = self.options.until if self.options.until is not None else len(steps) - 1
        first = steps[start].name
        recorder = self.recorder
        if snapshot is None:
            previous = recorder.entry(first).before
            base = self.store.snapshot(previous) if previous is not None else None
            # A run that reuses builds on the tree the first step last received, so an unchanged
            # initial state is that very snapshot; otherwise a tree of its own lets old records go.
            snapshot = self.store.save_state(
                state, base, what=lambda key: f"initial_state[{key!r}]",
                fresh=not self.options.reuse, remedy=_INITIAL_REMEDY,
            )
            recorder.started(first, skipped=start, initial=snapshot)
        else:
            recorder.resumed(first, skipped=start)
        for name in self.names[:start]:
            logger.info("step %r skipped (done in an earlier run)", name)
        tracked = TrackedState(state)
        mutable = {k for k, v in tracked.items() if not is_immutable(v)}
        data: dict[str, Any] = {}
        progress = StepProgress(last + 1, start, enabled=self.options.progress)
        try:
            for index in range(start, last + 1):
                progress.begin(steps[index].name)
                tracked, snapshot, mutable, outcome = self._step(
                    index, tracked, data, snapshot, mutable
                )
                progress.advance(steps[index].name, outcome)
        finally:
            progress.close()
        following = steps[last + 1].name if last + 1 < len(steps) else None
        recorder.ended("stopped" if following else "succeeded")
        recorder.commit(resume=following, state=snapshot.ref, written=recorder.take_unwritten())
        if following is not None:
            logger.info(
                "stopped after step %r as asked (until=); the next run starts at step %r",
                steps[last].name, following,
            )
        recorder.collect()
        return dict(tracked)

    def _step(
        self,
        index: int,
        state: TrackedState,
        data: dict[str, Any],
        snapshot: SaveResult,
        mutable: set[str],
    ) -> tuple[TrackedState, SaveResult, set[str], str]:
        """Reuse or run one step; returns the state after it and "reused" or "ran"."""
        step = self.steps[index]
        decision = self._decide(index, step, snapshot)
        why = None if decision is None else decision.reason
        if decision is not None and decision.reuse:
            reused = self._reuse(step, state, snapshot, mutable)
            if reused is not None:
                logger.info("step %r reused (%s)", step.name, decision.reason)
                self.segment = index + 1
                self.recorder.step_reused(step.name)
                return (*reused, "reused")
            why = "its recorded output is damaged; running it writes it anew"
        recorder = self.recorder
        entry = recorder.entry(step.name)
        if recorder.needs_commit or entry.before != snapshot.ref:
            recorder.set_entry(step.name, replace(entry, before=snapshot.ref))
            recorder.commit(
                resume=step.name, state=snapshot.ref, written=recorder.take_unwritten()
            )
        state, snapshot, mutable = self._run_step(index, state, data, snapshot, mutable, why)
        return state, snapshot, mutable, "ran"

    def _decide(self, index: int, step: Step, snapshot: SaveResult) -> reuse.Decision | None:
        """Whether ``step`` is reused (None when the run does not reuse)."""
        if not self.options.reuse:
            return None
        entry = self.recorded.get(step.name)
        recorded = None
        if entry is not None:
            recorded = reuse.RecordedExecution(
                fingerprint=entry.fingerprint, status=entry.status, ran_at=entry.ran_at,
                has_output=entry.input is not None and entry.after is not None,
            )
        return reuse.decide(
            recorded, fingerprint=step.fingerprint, allowed=step.reuse,
            forced=index == self.options.forced,
            same_input=lambda: self._same_input(entry.input if entry else None, snapshot),
        )

    def _same_input(self, ref: Any, snapshot: SaveResult) -> bool:
        if ref == snapshot.ref:
            return True
        try:
            recorded = self.store.snapshot(ref).entries
        except CheckpointCorruptError as exc:
            logger.warning("could not compare a step's input with its recorded one: %s", exc)
            return False
        return reuse.state_digest(recorded) == reuse.state_digest(snapshot.entries)

    def _reuse(
        self, step: Step, state: TrackedState, snapshot: SaveResult, mutable: set[str]
    ) -> tuple[TrackedState, SaveResult, set[str]] | None:
        """Take the recorded output of ``step``: load (and so verify) every value it changed.
        None when that output is damaged."""
        try:
            after = self.store.snapshot(self.recorded[step.name].after)
            changed = reuse.changed_keys(snapshot.entries, after.entries)
            state = state.restore(after.entries, changed, self._loader(step.name, "after"))
        except CheckpointCorruptError as exc:
            logger.warning(
                "step %r: its recorded output is damaged, so it runs again: %s", step.name, exc
            )
            return None
        _track_mutable(state, changed, mutable)
        return state, after, mutable

    def _run_step(
        self,
        index: int,
        state: TrackedState,
        data: dict[str, Any],
        before: SaveResult,
        mutable: set[str],
        why: str | None,
    ) -> tuple[TrackedState, SaveResult, set[str]]:
        step = self.steps[index]
        started = time.perf_counter()
        entry = self.recorder.entry(step.name)
        kept_data = dict(data) if step.retry.retries else {}
        attempt = 1
        while True:
            context = StepContext(self.store, self.location, self.recorder.run_id, before.entries)
            state.take_touched()
            try:
                state, saved, mutable = self._attempt(
                    index, step, state, data, before, mutable, context
                )
                break
            except BaseException as exc:
                self.store.discard_pending()
                if not step.retry.retries_after(exc, attempt):
                    where = f"step {step.name!r} ({index + 1}/{len(self.steps)})"
                    self.recorder.step_failed(step, where, entry, exc, started, before, attempt)
                    raise
                attempt += 1
                delay = step.retry.delay_before(attempt)
                logger.warning(
                    "step %r failed on attempt %d of %d (%s: %s); retrying in %.1f s with the "
                    "state it received", step.name, attempt - 1, step.retry.attempts,
                    type(exc).__name__, exc, delay,
                )
                state, before = self._restore_input(step, state, before, mutable)
                data.clear()
                data.update(kept_data)
                time.sleep(delay)
        duration = time.perf_counter() - started
        following = self.steps[index + 1].name if index + 1 < len(self.steps) else None
        written = self.recorder.step_done(step, entry, following, before, saved, duration, attempt)
        context.committed()
        logger.info(
            "step %r ran in %.3f s, wrote %d bytes%s", step.name, duration, written,
            f" ({why})" if why else "",
        )
        return state, saved, mutable

    def _attempt(
        self,
        index: int,
        step: Step,
        state: TrackedState,
        data: dict[str, Any],
        before: SaveResult,
        mutable: set[str],
        context: StepContext,
    ) -> tuple[TrackedState, SaveResult, set[str]]:
        """Load, run and save the step once; returns the state after it and its snapshot."""
        if self.policy(StepLoad(index, self.segment)):
            load_data(step, state, data)
        result = step.call(state, data, context)
        if step.save is not None:
            if not data and self.warn_empty_saver:
                self._warn_empty_saver(step)
            step.save(result, data)
        what = _step_what(step.name)
        if result is not state:
            saved = self.store.save_state(result, before, what=what, remedy=_STATE_REMEDY)
            state = TrackedState(result)
            return state, saved, {k for k, v in state.items() if not is_immutable(v)}
        # The touched keys stay counted until the save succeeds: a retry puts them back.
        touched = set(state.touched)
        keys = touched | mutable
        saved = self.store.save_state(
            state, before, what=what, keys=keys, remedy=_STATE_REMEDY,
            appended=_appended(state, before.entries, touched, set(state.removed)),
        )
        state.take_touched()
        _track_mutable(state, keys, mutable)
        return state, saved, mutable

    def _restore_input(
        self, step: Step, state: TrackedState, before: SaveResult, mutable: set[str]
    ) -> tuple[TrackedState, SaveResult]:
        """Put back the state ``step`` received, undoing what a failed attempt changed: the keys
        it wrote and the values that can change in place, read from the committed snapshot."""
        # A save that failed half-way may have updated the entries of ``before`` in place.
        before = self.store.snapshot(before.ref)
        touched, _removed = state.take_touched()
        keys = touched | mutable
        state = state.restore(before.entries, keys, self._loader(step.name, "before"))
        return state, before

    def _warn_empty_saver(self, step: Step) -> None:
        loaders = [s.name for s in self.steps[: self.segment] if s.load is not None]
        if not loaders:
            return
        self.warn_empty_saver = False  # once per run
        own = f"give {step.name!r} a loader"
        if self.options.first_only:
            own += " and pass load_policy='always' (under 'first' only a run's first step loads)"
        first = self.steps[self.segment].name
        where = (
            f"this run resumed at {first!r}" if self.segment == self.start
            else f"this run reused the steps before {first!r}"
        )
        warnings.warn(
            f"the saver of step {step.name!r} runs with an empty `data`: {where}, and the "
            f"loader(s) that filled `data` ({', '.join(map(repr, loaders))}) ran in an earlier "
            f"run. If the saver writes what a loader brought in, it may overwrite its output "
            f"with nothing. To give it the data, {own}, or start at {loaders[-1]!r} "
            f"(checkpoint={loaders[-1]!r}) so that its loader runs again.",
            CheckpointFlowWarning,
            stacklevel=7,  # the caller of run()
        )

    def _loader(self, step: str, which: str) -> Callable[[str, Mapping[str, Any]], Any]:
        where = value_where(step, which)

        def load(key: str, entry: Mapping[str, Any]) -> Any:
            return self.store.get_value(entry, where=where(key, entry), remedy=CORRUPT_REMEDY)

        return load


def load_data(step: Step, state: dict[str, Any], data: dict[str, Any]) -> None:
    """Call the step's loader, if it has one, and merge what it returns into ``data``."""
    if step.load is None:
        return
    loaded = step.load(state)
    if loaded is None:
        return
    if not isinstance(loaded, Mapping):
        raise TypeError(
            f"the loader of step {step.name!r} returned {type(loaded).__name__}; a loader "
            "returns a dict of data"
        )
    data.update(loaded)


def _appended(
    state: dict[str, Any], entries: Mapping[str, Any], touched: set[Any], removed: set[Any]
) -> list[str]:
    """The keys a step added, or deleted and set again, in the order the dict now has them:
    they are the last ones of the dict."""
    count = sum(1 for k in touched if k in state and (k not in entries or k in removed))
    if not count:
        return []
    return list(itertools.islice(reversed(state), count))[::-1]


def _track_mutable(state: Mapping[str, Any], keys: Iterable[str], mutable: set[str]) -> None:
    """Keep in ``mutable`` those of ``keys`` whose value in ``state`` can change in place."""
    for key in keys:
        if key in state and not is_immutable(state[key]):
            mutable.add(key)
        else:
            mutable.discard(key)


def _step_what(step: str) -> Callable[[str], str]:
    return lambda key: f"state[{key!r}] after step {step!r}"


def value_where(step: str, which: str = "before") -> Callable[[str, Any], str]:
    def where(key: str, entry: Mapping[str, Any]) -> str:
        held = f"blob {entry['blob']}" if "blob" in entry else "stored inline in the record"
        return f"value {key!r} of the snapshot {which} step {step!r} ({held})"

    return where


_INITIAL_REMEDY = (
    " Pass only picklable values in initial_state; bring live or heavy objects in through the "
    "first step's loader (into `data`). Nothing was run."
)
CORRUPT_REMEDY = (
    " Rerun with on_corrupt='previous' to fall back to an intact snapshot; `checkpoint-flow "
    "verify` lists the damage."
)
_STATE_REMEDY = (
    " Keep it in `data` (and write it with the step's saver) instead of `state`; the previous "
    "checkpoint is untouched."
)

