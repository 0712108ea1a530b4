"""What one run writes at the location: the step table, the run's summary and the commits.

An ``Execution`` decides what happens to each step; its ``RunRecorder`` keeps what the records
say about that (each step's ``StepEntry``, the run's ``RunInfo``, the bytes written) and commits
a record whenever the run needs one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from .flow_record import FlowRecord, RunInfo, StepEntry
from .flow_retention import FlowRetention, over_record_names
from .runs import HISTORY_LIMIT
from .steps import Step
from .storage.store import SaveResult, Store

logger = logging.getLogger("checkpoint_flow")

# Step-table leaves hold up to 16 steps, like snapshots': a commit rewrites one small leaf and
# its parents, so a step costs the same at step 1,000 as at step 10. (64-step leaves let a
# resume at step 1,000 read 17 records instead of about 250, but made each late commit
# rewrite a leaf of 60 entries: 2-3x the cost of an early one.)
_STEP_TABLE_LEAF = 16


class RunRecorder:
    """The records of one run: each commit carries the step table, the run summary, the run
    history and where the next run resumes with which state."""

    def __init__(
        self, store: Store, names: Sequence[str], record: FlowRecord | None,
        retention: FlowRetention,
    ) -> None:
        self.store = store
        self.location = store.location
        self.retention = retention
        self.steps_ref = record.body.get("steps") if record is not None else None
        self.entries = dict(record.steps) if record is not None else {}
        registered = set(names)
        gone = [name for name in self.entries if name not in registered]
        for name in gone:
            del self.entries[name]
        # What the next commit changes in the step table; None removes a step's entry.
        self.changed: dict[str, StepEntry | None] = {name: None for name in gone}
        history = list(record.history) if record is not None else []
        if record is not None:
            history.append(record.run.summary())
        self.history_ref = self.store.put_json([r.to_json() for r in history[-HISTORY_LIMIT:]])
        # Written anew by every run (once), so no record of an old run stays only for it.
        self.order_ref = self.store.put_json(list(names))
        self.resumed_run = record.run if record is not None and record.resume else None
        self.run_info = RunInfo(
            id=uuid.uuid4().hex, started_at=time.time(), outcome="running",
            host=socket.gethostname(), pid=os.getpid(),
        )
        self.record_size = 0
        self.written = 0  # bytes this run's commits wrote so far
        self.unwritten = 0  # blob bytes written for the next commit
        self.needs_commit = True
        self.first_seq = self.store.next_seq()

    @property
    def run_id(self) -> str:
        return self.run_info.id

    def entry(self, name: str) -> StepEntry:
        """What the step table holds for ``name`` now; an empty entry if nothing."""
        return self.entries.get(name, StepEntry())

    def set_entry(self, name: str, entry: StepEntry) -> None:
        self.entries[name] = entry
        self.changed[name] = entry

    def started(self, first: str, *, skipped: int, initial: SaveResult) -> None:
        """The run starts at step ``first`` from its ``initial_state``, just saved."""
        self.run_info = replace(
            self.run_info, first_step=first, resumed=False, skipped=skipped, initial=initial.ref
        )
        self.unwritten = initial.bytes_written

    def resumed(self, first: str, *, skipped: int) -> None:
        """The run starts at step ``first`` from a saved state."""
        initial = self.resumed_run.initial if self.resumed_run is not None else None
        self.run_info = replace(
            self.run_info, first_step=first, resumed=True, skipped=skipped, initial=initial
        )

    def ended(self, outcome: Literal["succeeded", "stopped"]) -> None:
        """The run went through its steps; the next commit records how it ended."""
        self.run_info = replace(self.run_info, ended_at=time.time(), outcome=outcome)

    def take_unwritten(self) -> int:
        written, self.unwritten = self.unwritten, 0
        return written

    def step_reused(self, name: str) -> None:
        self.run_info = replace(self.run_info, reused=self.run_info.reused + 1, last_step=name)
        self.needs_commit = True

    def step_done(
        self,
        step: Step,
        entry: StepEntry,
        following: str | None,
        before: SaveResult,
        after: SaveResult,
        duration: float,
        attempts: int,
    ) -> int:
        """Commit a finished step and the state it left; returns the bytes this commit wrote."""
        entry = replace(
            entry, fingerprint=step.fingerprint, status="done", duration_s=duration,
            ran_at=time.time(), error=None, run=self.run_id, attempts=attempts,
            input=before.ref, after=after.ref,
        )
        self.run_info = replace(
            self.run_info, executed=self.run_info.executed + 1, last_step=step.name
        )
        if following is not None:
            self.set_entry(following, replace(self.entry(following), before=after.ref))
        return self.commit(
            resume=following, state=after.ref, written=after.bytes_written,
            step=(step.name, entry),
        )

    def step_failed(
        self,
        step: Step,
        where: str,
        entry: StepEntry,
        exc: BaseException,
        started: float,
        before: SaveResult,
        attempts: int,
    ) -> None:
        """Commit that ``step`` (``where`` names it for people) failed, so the next run resumes
        at it, and add a note saying so to ``exc``."""
        duration = time.perf_counter() - started
        entry = replace(
            entry, fingerprint=step.fingerprint, status="failed", duration_s=duration,
            ran_at=time.time(), error=f"{type(exc).__name__}: {exc}"[:500], run=self.run_id,
            attempts=attempts,
        )
        self.run_info = replace(
            self.run_info, ended_at=time.time(), outcome="failed", failed_step=step.name,
            last_step=step.name, executed=self.run_info.executed + 1,
        )
        tries = f" on each of {attempts} attempts" if attempts > 1 else ""
        try:
            self.commit(resume=step.name, state=before.ref, written=0, step=(step.name, entry))
        except Exception as commit_exc:  # noqa: BLE001  the user's exception matters more
            logger.error("could not record the failure of %s: %s", where, commit_exc)
        _add_note(
            exc,
            f"checkpoint_flow: {where} failed{tries}; the next run resumes at {step.name!r} "
            f"with the state saved before it at {self.location}",
        )
        logger.info(
            "%s failed%s after %.3f s; the next run resumes at %r", where, tries, duration,
            step.name,
        )

    def commit(
        self,
        *,
        resume: str | None,
        state: Any,
        written: int,
        step: tuple[str, StepEntry] | None = None,
    ) -> int:
        """Commit a record; a step's entry and the run's summary count the bytes written, this
        record included. Returns the bytes this commit wrote."""
        tag = self.run_id
        # The record's size depends only on how many digits the numbers written inside it
        # have: start from the last record's size and settle it (usually in two rounds).
        size = self.record_size
        for _ in range(4):
            self._count(step, written + size)
            mark = self.store.pending_mark()
            body, steps_ref = self._body(resume, state)
            exact = self.store.sealed_size(body, tag=tag)
            if exact == size:
                break
            self.store.rewind_pending(mark)
            size = exact
        else:
            self._count(step, written + size)
            body, steps_ref = self._body(resume, state)
        _name, size = self.store.commit(body, tag=tag)
        self.record_size = size
        self.written += written + size
        self.steps_ref = steps_ref
        self.changed = {}
        self.needs_commit = False
        return written + size

    def collect(self) -> None:
        """Apply the retention rule to what this run made old; a failure is only logged."""
        try:
            self.store.collect_after(over_record_names(self.retention), self.first_seq)
        except Exception as exc:  # noqa: BLE001  housekeeping must not fail a finished run
            logger.warning(
                "could not collect old snapshots at %s (the next run retries): %s",
                self.location, exc,
            )

    def _count(self, step: tuple[str, StepEntry] | None, this_commit: int) -> None:
        if step is not None:
            name, entry = step
            self.set_entry(name, replace(entry, bytes_written=this_commit))
        self.run_info = replace(self.run_info, bytes_written=self.written + this_commit)

    def _body(self, resume: str | None, state: Any) -> tuple[dict[str, Any], Any]:
        # The one place the step table is written.
        changes = {
            name: None if entry is None else entry.to_json()
            for name, entry in self.changed.items()
        }
        steps_ref = self.store.tree_update(self.steps_ref, changes, leaf_max=_STEP_TABLE_LEAF)
        return {
            "kind": "flow",
            "run": self.run_info.to_json(),
            "resume": resume,
            "state": state,
            "order": self.order_ref,
            "steps": steps_ref,
            "history": self.history_ref,
        }, steps_ref


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
