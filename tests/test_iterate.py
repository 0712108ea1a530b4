"""Iterating fast in one process: reuse, until=, try_step, retries, run history, status views."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, FlowStatus, RunSummary, StepNotFoundError
from tests.support.layout import blob_file, blob_files

ROOT = Path(__file__).resolve().parents[1]


class Pipeline:
    """Four steps a, b, c, d whose runs (and loader calls) are logged. ``b_adds`` is captured by
    b alone, so changing it changes b's fingerprint and nothing else's."""

    def __init__(self, location: Any, *, b_adds: int = 1, c_reuse: bool = True, **flow: Any):
        calls: list[str] = []
        self.calls = calls
        self.cp = cp = CheckpointFlow(location, **flow)

        def load_a(state):
            calls.append("load_a")
            return {"rows": list(range(state["n"]))}

        def load_c(state):
            calls.append("load_c")
            return {"factor": 3}

        @cp.add_step(name="a", load=load_a)
        def a(state, data):
            calls.append("a")
            state["rows"] = list(data["rows"])

        adds = b_adds

        @cp.add_step(name="b")
        def b(state, data):
            calls.append("b")
            state["b"] = [r + adds for r in state["rows"]]

        @cp.add_step(name="c", load=load_c, reuse=c_reuse)
        def c(state, data):
            calls.append("c")
            state["c"] = sum(state["b"]) * data.get("factor", 1)

        @cp.add_step(name="d")
        def d(state, data):
            calls.append("d")
            state["d"] = f"c={state['c']}"

    def run(self, state: dict | None = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.clear()
        return self.cp.run({"n": 300} if state is None else state, **kwargs)


# -- reuse ------------------------------------------------------------------------------------


def test_reuse_takes_recorded_outputs_and_calls_no_loader_of_a_reused_step(tmp_path):
    first = Pipeline(tmp_path).run()
    again = Pipeline(tmp_path)
    assert again.run(reuse=True) == first
    assert again.calls == []
    edited = Pipeline(tmp_path, b_adds=2)
    final = edited.run(reuse=True)
    assert edited.calls == ["b", "c", "d"]
    assert final == Pipeline(tmp_path / "fresh", b_adds=2).run()


def test_the_first_step_run_after_reused_ones_calls_its_loader(tmp_path):
    first = Pipeline(tmp_path)
    first.run()
    assert first.calls == ["load_a", "a", "b", "c", "d"]  # "first": only a's loader
    p = Pipeline(tmp_path, c_reuse=False)  # c always runs; a and b are reused
    p.run(reuse=True)
    # data starts empty after reused steps, so the first step run after them calls its
    # loader, as the first step of a resumed run does; with its data c's output changes.
    assert p.calls == ["load_c", "c", "d"]
    p.run(reuse=True, load_policy="never")
    assert p.calls == ["c", "d"]


def test_flow_default_reuse_and_the_run_argument(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path, reuse=True)
    p.run()
    assert p.calls == []
    p.run(reuse=False)
    assert p.calls == ["load_a", "a", "b", "c", "d"]


def test_a_changed_initial_state_runs_the_first_step(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path)
    assert p.run({"n": 5}, reuse=True)["d"] == f"c={sum(range(1, 6))}"
    assert p.calls == ["load_a", "a", "b", "c", "d"]


def test_checkpoint_runs_its_step_and_reuses_after_it(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path)
    p.run(checkpoint="b", reuse=True)
    assert p.calls == ["b"]  # b reproduced its output: c and d are reused


def test_after_a_failure_reuse_resumes_and_then_reuses(tmp_path):
    Pipeline(tmp_path).run()
    broken = Pipeline(tmp_path, b_adds=None)  # type: ignore[arg-type]  b raises TypeError
    with pytest.raises(TypeError):
        broken.run()
    fixed = Pipeline(tmp_path)
    fixed.run(reuse=True)
    # the run resumes at b (it failed); b's output is the one c last received, so c and d are
    # reused, and the loader of a, done in the failed run, is not called.
    assert fixed.calls == ["b"]
    runs = fixed.cp.runs()
    assert (runs[-1].first_step, runs[-1].resumed, runs[-1].skipped) == ("b", True, 1)
    assert (runs[-1].executed, runs[-1].reused) == (1, 2)


def test_reuse_never_takes_a_damaged_output_and_the_rerun_heals_it(tmp_path):
    Pipeline(tmp_path).run()
    cp = CheckpointFlow(tmp_path)
    entry = cp.store.snapshot(cp.record().steps["b"].after).entries["b"]
    path = blob_file(tmp_path, entry["blob"])
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    p = Pipeline(tmp_path)
    p.run(reuse=True)
    assert p.calls == ["b"]
    assert cp.verify() == []


def test_a_reused_run_writes_no_value_blobs(tmp_path):
    Pipeline(tmp_path).run()
    before = {p: p.stat().st_mtime_ns for p in blob_files(tmp_path)}
    assert before
    Pipeline(tmp_path).run(reuse=True)
    assert {p: p.stat().st_mtime_ns for p in blob_files(tmp_path)} == before


def test_reused_steps_keep_their_snapshots_for_checkpoint_and_state_after(tmp_path):
    first = Pipeline(tmp_path)
    first.run()
    expected = {name: first.cp.state_before(name) for name in "abcd"}
    p = Pipeline(tmp_path, b_adds=5)
    p.run(reuse=True)
    assert p.cp.state_before("a") == expected["a"]
    assert p.cp.state_before("b") == expected["b"]
    assert p.cp.state_after("b")["b"][0] == 5
    assert p.cp.state_before("c")["b"][0] == 5


# -- until ------------------------------------------------------------------------------------


def test_until_stops_after_the_step_and_the_next_run_continues(tmp_path):
    p = Pipeline(tmp_path)
    stopped = p.run(until="b")
    assert p.calls == ["load_a", "a", "b"]
    assert set(stopped) == {"n", "rows", "b"}
    assert p.cp.status().resume_at == "c"
    run = p.cp.runs()[-1]
    assert (run.outcome, run.last_step, run.executed) == ("stopped", "b", 2)
    p.run(until=-1)
    assert p.calls == ["load_c", "c", "d"]
    assert p.cp.runs()[-1].outcome == "succeeded"
    assert p.cp.status().resume_at is None


def test_until_with_reuse_stops_there_too(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path, b_adds=3)
    p.run(reuse=True, until=1)
    assert p.calls == ["b"]
    assert p.cp.status().resume_at == "c"
    p.run(reuse=True)
    assert p.calls == ["load_c", "c", "d"]  # c resumes with b's new output


def test_until_before_the_start_or_naming_no_step_is_refused(tmp_path):
    p = Pipeline(tmp_path)
    with pytest.raises(StepNotFoundError, match="until='x' names no step; steps are: 0:a"):
        p.run(until="x")
    with pytest.raises(TypeError, match="until must be a step index"):
        p.run(until=1.0)  # type: ignore[arg-type]
    p.run(until="b")
    with pytest.raises(ValueError, match="until='a' names step 'a' .1/4., which comes before "
                                         "step 'c', where this run starts"):
        p.run(until="a")
    assert p.calls == []


# -- try_step ---------------------------------------------------------------------------------


def test_try_step_runs_one_step_in_memory_and_touches_nothing(tmp_path):
    saved: list[str] = []
    p = Pipeline(tmp_path)

    def save_c(state, data):
        saved.append("save_c")

    p.run()
    files = sorted((str(f), f.stat().st_mtime_ns) for f in Path(tmp_path).rglob("*"))
    p.cp.add_step(name="c", load=p.cp.steps[2].load, save=save_c)(p.cp.steps[2].fn)
    p.calls.clear()
    result = p.cp.try_step("c")
    assert p.calls == ["load_c", "c"] and saved == []
    assert result["c"] == sum(range(1, 301)) * 3
    assert p.cp.try_step(2, save=True)["c"] == result["c"]
    assert saved == ["save_c"]
    assert sorted((str(f), f.stat().st_mtime_ns) for f in Path(tmp_path).rglob("*")) == files


def test_try_step_of_a_new_step_uses_what_the_step_before_it_left(tmp_path):
    p = Pipeline(tmp_path)
    p.run()

    @p.cp.add_step(name="e")
    def e(state, data):
        state["e"] = state["d"].upper()

    assert p.cp.try_step("e")["e"] == p.cp.state_after("d")["d"].upper()
    fresh = CheckpointFlow(tmp_path / "empty")
    fresh.add_step(name="a")(lambda state, data: None)
    with pytest.raises(ValueError, match="step 'a' has no saved input at .*it never ran"):
        fresh.try_step("a")


def test_try_step_lets_the_steps_own_exception_through(tmp_path):
    p = Pipeline(tmp_path)
    p.run()
    p.cp.add_step(name="c")(lambda state, data: state["missing"])
    with pytest.raises(KeyError, match="missing"):
        p.cp.try_step("c")
    assert p.cp.status().steps[2].status == "done"


# -- retries ----------------------------------------------------------------------------------


def test_each_attempt_starts_from_the_state_and_data_the_step_received(tmp_path, caplog):
    seen: list[tuple] = []
    cp = CheckpointFlow(tmp_path)

    @cp.add_step(name="make")
    def make(state, data):
        state["items"] = [1, 2]
        data["note"] = "from make"

    @cp.add_step(name="flaky", retries=2, retry_delay_s=0, retry_on=(OSError,))
    def flaky(state, data):
        seen.append((list(state["items"]), sorted(state), dict(data)))
        state["items"].append(len(seen))
        state["partial"] = True
        data["scratch"] = 1
        del state["items"]  # and a deletion
        if len(seen) < 3:
            raise ConnectionError("reset by peer")
        state["items"] = [9]

    caplog.set_level(logging.INFO, logger="checkpoint_flow")
    final = cp.run({"x": 1})
    assert seen == [([1, 2], ["items", "x"], {"note": "from make"})] * 3
    assert final == {"x": 1, "partial": True, "items": [9]}
    retried = [r.getMessage() for r in caplog.records if "failed on attempt" in r.getMessage()]
    assert retried == [
        "step 'flaky' failed on attempt 1 of 3 (ConnectionError: reset by peer); retrying in "
        "0.0 s with the state it received",
        "step 'flaky' failed on attempt 2 of 3 (ConnectionError: reset by peer); retrying in "
        "0.0 s with the state it received",
    ]
    assert cp.status().steps[1].attempts == 3


def test_a_step_returning_a_new_state_is_retried_from_the_state_it_received(tmp_path):
    attempts: list[dict] = []
    cp = CheckpointFlow(tmp_path)

    def save(state, data):
        if len(attempts) < 2:
            raise OSError("disk full")

    @cp.add_step(name="rebuild", save=save, retries=1, retry_delay_s=0)
    def rebuild(state, data):
        attempts.append(dict(state))
        state["mutated"] = True  # changed in place, then a new dict returned
        return {"fresh": state["x"] + 1}

    assert cp.run({"x": 1}) == {"fresh": 2}
    assert attempts == [{"x": 1}, {"x": 1}]


def test_retries_wait_with_backoff_and_stop_at_the_first_other_error(tmp_path, monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("checkpoint_flow.execution.time.sleep", waits.append)
    errors = iter([OSError("1"), OSError("2"), ValueError("not retried")])
    cp = CheckpointFlow(tmp_path)

    @cp.add_step(name="s", retries=5, retry_delay_s=0.25, backoff=3.0, retry_on=OSError)
    def s(state, data):
        raise next(errors)

    with pytest.raises(ValueError, match="not retried") as info:
        cp.run({})
    assert waits == [0.25, 0.75]
    assert any("failed on each of 3 attempts; the next run resumes at 's'" in n
               for n in info.value.__notes__)
    assert cp.status().steps[0].attempts == 3


def test_the_last_failure_propagates_with_the_usual_note(tmp_path):
    cp = CheckpointFlow(tmp_path)

    @cp.add_step(name="s", retries=1, retry_delay_s=0)
    def s(state, data):
        state["junk"] = 1
        raise OSError("still down")

    with pytest.raises(OSError, match="still down") as info:
        cp.run({"x": 1})
    assert any("failed on each of 2 attempts; the next run resumes at 's'" in n
               for n in info.value.__notes__)
    assert cp.state_before("s") == {"x": 1}
    assert cp.runs()[-1].failed_step == "s"


def test_bad_step_options_are_refused_at_registration(tmp_path):
    cp = CheckpointFlow(tmp_path)
    with pytest.raises(ValueError, match="retries must be an int >= 0, got -1"):
        cp.add_step(name="x", retries=-1)
    with pytest.raises(TypeError, match="reuse= must be True or False, got 'no'"):
        cp.add_step(name="x", reuse="no")(lambda state, data: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reuse must be True or False, got 1"):
        CheckpointFlow(tmp_path, reuse=1)  # type: ignore[arg-type]
    cp.add_step(name="x")(lambda state, data: None)
    with pytest.raises(TypeError, match="progress must be True or False"):
        cp.run({}, progress="yes")  # type: ignore[arg-type]
    assert cp.record() is None  # refused before anything was written


# -- run history ------------------------------------------------------------------------------


def test_runs_report_each_run_and_agree_with_the_cli(tmp_path):
    Pipeline(tmp_path).run()
    with pytest.raises(TypeError):
        Pipeline(tmp_path, b_adds=None).run()  # type: ignore[arg-type]
    Pipeline(tmp_path).run(reuse=True)
    Pipeline(tmp_path).run(reuse=True, until="c")
    runs = CheckpointFlow(tmp_path).runs()
    assert [(r.outcome, r.first_step, r.last_step, r.failed_step) for r in runs] == [
        ("succeeded", "a", "d", None),
        ("failed", "a", "b", "b"),
        ("succeeded", "b", "d", None),
        ("stopped", "a", "c", None),
    ]
    assert [(r.executed, r.reused, r.skipped) for r in runs] == [
        (4, 0, 0), (2, 0, 0), (1, 2, 1), (0, 3, 0),
    ]
    assert all(isinstance(r, RunSummary) and r.bytes_written > 0 for r in runs)
    assert runs[0].bytes_written > runs[3].bytes_written
    assert len({r.id for r in runs}) == 4
    done = subprocess.run(
        [sys.executable, "-m", "checkpoint_flow", "history", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [r.to_json() for r in runs]


def test_bytes_written_by_a_run_are_what_its_steps_and_records_wrote(tmp_path):
    p = Pipeline(tmp_path)
    p.run()
    steps = p.cp.status().steps
    run = p.cp.runs()[-1]
    # the run also wrote its first record (the initial state) and its last one
    assert run.bytes_written > sum(s.bytes_written for s in steps)
    records = sum(f.stat().st_size for f in (Path(tmp_path) / "records").iterdir())
    values = sum(f.stat().st_size for f in blob_files(tmp_path))
    assert run.bytes_written == records + values


# -- the notebook view ------------------------------------------------------------------------


def test_status_marks_what_the_last_run_did_with_each_step(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path, b_adds=2)
    p.run(reuse=True)
    marks = [(s.name, s.in_last_run) for s in p.cp.status().steps]
    assert marks == [("a", "reused"), ("b", "ran"), ("c", "ran"), ("d", "ran")]
    with pytest.raises(TypeError):
        Pipeline(tmp_path, b_adds=None).run()  # type: ignore[arg-type]
    marks = [(s.name, s.in_last_run) for s in p.cp.status().steps]
    assert marks == [("a", "ran"), ("b", "ran"), ("c", None), ("d", None)]
    Pipeline(tmp_path, b_adds=2).run()
    status = p.cp.status()
    assert [s.in_last_run for s in status.steps] == ["skipped", "resumed", "ran", "ran"]
    assert ">resumed<" in status._repr_html_()


def test_status_renders_as_an_html_table_in_jupyter(tmp_path):
    Pipeline(tmp_path).run()
    p = Pipeline(tmp_path, b_adds=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p.run({"n": 300}, reuse=True)
    status = p.cp.status()
    assert isinstance(status, FlowStatus)
    page = status._repr_html_()
    assert page.count("<tr") == 5  # the header and four steps
    assert "color:#c62828" in page  # failed, in red
    assert "color:#2e7d32" in page  # done, in green
    assert ">reused<" in page
    assert "&#9654;" in page and "next run starts at <b>b</b>" in page
    assert "TypeError" in page
    p.cp.add_step(name="<b>")(lambda state, data: None)
    assert "<code>&lt;b&gt;</code>" in p.cp.status()._repr_html_()


def test_progress_shows_a_bar_over_the_steps(tmp_path, capsys):
    pytest.importorskip("tqdm")
    Pipeline(tmp_path).run(progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "steps" in err


def test_progress_without_tqdm_logs_a_line_per_step(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    caplog.set_level(logging.INFO, logger="checkpoint_flow")
    Pipeline(tmp_path).run(progress=True, until="b")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines == ["progress: 1/2 steps (step 'a' ran)", "progress: 2/2 steps (step 'b' ran)"]
    caplog.clear()
    Pipeline(tmp_path).run()
    assert not [r for r in caplog.records if r.getMessage().startswith("progress")]


def test_a_fan_out_step_is_reused_whole(tmp_path):
    calls: list[int] = []
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="make")(lambda state, data: state.update(numbers=list(range(20))))

    @cp.map_step(items=lambda state: state["numbers"], name="square")
    def square(n):
        calls.append(n)
        return n * n

    first = cp.run({})
    assert len(calls) == 20
    calls.clear()
    assert cp.run({}, reuse=True) == first
    assert calls == []


@pytest.mark.slow
def test_reuse_on_s3_writes_no_value_blobs(s3):
    fs, bucket, options = s3
    location = f"s3://{bucket}/iterate"
    Pipeline(location, storage_options=options).run()
    fs.invalidate_cache()
    blobs = sorted(fs.find(f"{bucket}/iterate/values"))
    assert blobs
    p = Pipeline(location, storage_options=options)
    p.run(reuse=True)
    assert p.calls == []
    fs.invalidate_cache()
    assert sorted(fs.find(f"{bucket}/iterate/values")) == blobs
    edited = Pipeline(location, b_adds=2, storage_options=options)
    edited.run(reuse=True)
    assert edited.calls == ["b", "c", "d"]
