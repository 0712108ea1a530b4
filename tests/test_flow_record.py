"""Typed flow records read back exactly what records hold: every shape of step entry, run and run
history that runs write, entries older than some of their keys, and damage."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import (
    CheckpointCorruptError,
    CheckpointFlow,
    KeepLastRecords,
    RunInfo,
    RunSummary,
    StepEntry,
)

REF = {"@": "3.0.6f1d0c4e9b7a25d3a1c8e0f4b2d6a9c7"}
OTHER = {"@": "4.1.0c8e0f4b2d6a9c76f1d0c4e9b7a25d3a"}


def flow(location: Path, *, fails: bool = False, version: int = 1, with_c: bool = True
         ) -> CheckpointFlow:
    """Steps a, b (two attempts; fails on both with ``fails``) and c; ``version`` is part of b's
    code but not of its output, so a reuse run reruns b and reuses c."""
    cp = CheckpointFlow(location, retention=KeepLastRecords(10_000))
    cp.add_step(name="a")(lambda s, d: s.update(a=list(range(300))))

    def b(state: dict, data: dict) -> None:
        if fails:
            raise RuntimeError("b failed")
        state["b"] = sum(state["a"]) + 0 * version

    cp.add_step(name="b", retries=1, retry_delay_s=0)(b)
    if with_c:
        cp.add_step(name="c")(lambda s, d: s.update(c=s["b"] + 1))
    return cp


def written_by_every_kind_of_run(location: Path) -> CheckpointFlow:
    """A failed run, its resumption, reuse, until=, checkpoint=, a removed step, reset."""
    with pytest.raises(RuntimeError):
        flow(location, fails=True).run({"x": 1})
    flow(location).run({"x": 1})
    flow(location, version=2).run({"x": 1}, reuse=True)
    flow(location).run({"x": 2}, until="a")
    flow(location).run({"x": 2})
    flow(location).run({"x": 2}, checkpoint="b")
    flow(location, with_c=False).run({"x": 3})
    cp = flow(location)
    cp.reset()
    cp.run({"x": 3})
    return cp


def every_body(cp: CheckpointFlow) -> list[dict[str, Any]]:
    return [cp.store.read_record(name) for name in cp.store.record_names()]


def test_every_step_entry_runs_write_reads_back_key_for_key(tmp_path):
    cp = written_by_every_kind_of_run(tmp_path)
    shapes = set()
    for body in every_body(cp):
        for name, stored in cp.store.tree_items(body["steps"]):
            assert StepEntry.from_json(stored, name).to_json() == stored
            shapes.add(frozenset(stored))
    execution = {"fingerprint", "status", "duration_s", "bytes_written", "ran_at", "error",
                 "run", "attempts"}
    assert frozenset({"before"}) in shapes  # received a state, never ran
    assert frozenset(execution | {"before"}) in shapes  # failed, never finished
    assert frozenset(execution | {"before", "input", "after"}) in shapes


def test_every_run_and_run_history_reads_back_key_for_key(tmp_path):
    cp = written_by_every_kind_of_run(tmp_path)
    outcomes = set()
    for body in every_body(cp):
        assert RunInfo.from_json(body["run"]).to_json() == body["run"]
        outcomes.add(body["run"]["outcome"])
        for run in cp.store.get_json(body["history"]):
            assert RunSummary.from_json(run).to_json() == run
    assert outcomes == {"running", "failed", "succeeded", "stopped"}
    record = cp.record()
    assert record is not None
    assert [r.to_json() for r in record.history] == cp.store.get_json(record.body["history"])
    assert record.run.summary() == cp.runs()[-1]
    assert record.run.summary().to_json() == {
        k: v for k, v in record.body["run"].items() if k != "initial"
    }


@pytest.mark.parametrize("stored", [
    # entries written before ``run``, ``attempts`` and ``input`` existed
    {"fingerprint": "f1", "status": "done", "duration_s": 0.25, "bytes_written": 812,
     "ran_at": 1_700_000_000.5, "error": None, "before": REF, "after": OTHER},
    {"fingerprint": "f1", "status": "failed", "duration_s": 0.25, "bytes_written": 640,
     "ran_at": 1_700_000_000.5, "error": "ValueError: bad row", "before": REF},
    # a step that received a state but never ran, and one that never finished
    {"before": REF},
    {"fingerprint": "f1", "status": "failed", "duration_s": 1.5, "bytes_written": 640,
     "ran_at": 1_700_000_000.5, "error": "KeyError: 'x'", "run": "ab12", "attempts": 3,
     "before": REF},
    {},
])
def test_older_and_partial_entries_keep_their_shape(stored):
    entry = StepEntry.from_json(stored)
    assert entry.to_json() == stored
    assert {
        k for k, v in dataclasses.asdict(entry).items() if v is not None and k != "extra"
    } == {k for k, v in stored.items() if v is not None}
    # What a run changes is what changes: the keys an entry lacked stay absent.
    assert dataclasses.replace(entry, before=OTHER).to_json() == {**stored, "before": OTHER}


def test_a_record_from_before_the_newer_keys_is_read_and_rewritten_unchanged(tmp_path):
    cp = flow(tmp_path)
    cp.run({"x": 1})
    body = cp.store.latest_record()
    assert body is not None
    old = {
        name: {k: v for k, v in stored.items() if k not in ("run", "attempts", "input")}
        for name, stored in cp.store.tree_items(body["steps"])
    }
    steps = cp.store.tree_update(body["steps"], old, leaf_max=16)
    cp.store.commit({**body, "steps": steps}, tag="old")

    assert [(s.status, s.attempts) for s in cp.status().steps] == [("done", None)] * 3
    assert cp.record().steps["a"] == StepEntry.from_json(old["a"])
    flow(tmp_path).run({"x": 1}, checkpoint="c", reuse=True)
    body = cp.store.latest_record()
    stored = dict(cp.store.tree_items(body["steps"]))
    assert stored["a"] == old["a"] and stored["b"] == old["b"]
    assert stored["c"]["attempts"] == 1 and stored["c"]["input"] == old["c"]["before"]


def test_a_record_run_lacking_fields_reads_with_their_defaults():
    run = RunInfo.from_json({"id": "ab12", "started_at": 1.5, "outcome": "running"})
    assert (run.executed, run.resumed, run.last_step, run.initial) == (0, False, None, None)
    assert RunInfo.from_json({}).id == ""


@pytest.mark.parametrize("damaged", [["fingerprint"], "done", None, 3])
def test_an_entry_that_is_not_an_object_is_damage_naming_the_step(damaged):
    with pytest.raises(CheckpointCorruptError, match="step table entry of 'fit'"):
        StepEntry.from_json(damaged, "fit")
    with pytest.raises(CheckpointCorruptError, match="recorded run"):
        RunInfo.from_json(damaged)


def test_keys_a_newer_version_wrote_survive_a_rewrite():
    stored = {"before": REF, "status": "done", "error": None, "cost_usd": 0.5}
    entry = StepEntry.from_json(stored)
    assert entry.extra == {"cost_usd": 0.5}
    assert dataclasses.replace(entry, before=OTHER).to_json() == {**stored, "before": OTHER}
    run = {**RunInfo(id="ab12").to_json(), "gpu_hours": 3}
    assert RunInfo.from_json(run).to_json() == run
    assert RunInfo.from_json(run).summary().to_json()["gpu_hours"] == 3
