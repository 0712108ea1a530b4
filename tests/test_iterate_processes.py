"""Iterating on a pipeline across processes: every run is a new interpreter with its own hash seed.

The runs execute tests/support/iterate_child.py, a four-step pipeline (extract, clean, features,
report) whose middle step is edited between runs, as a user edits a script or a notebook cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow
from tests.support.layout import blob_file, blob_files

# Each run is a separate process: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "support" / "iterate_child.py"
SEEDS = iter(range(101, 10_000))
PIPELINE = ["load_rows", "extract", "clean", "features", "report"]


def child(location: Path, log: Path, *, check: bool = True, **options: Any
          ) -> subprocess.CompletedProcess[str]:
    """One run of the user's script in a new interpreter with a hash seed of its own."""
    options.setdefault("clean", "v1")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(next(SEEDS))}
    done = subprocess.run(
        [sys.executable, str(CHILD), str(location), str(log), json.dumps(options)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def ran(log: Path) -> list[str]:
    """The steps (and loaders) that ran since the last look; the log is emptied."""
    if not log.exists():
        return []
    found = log.read_text().splitlines()
    log.unlink()
    return found


def result(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(done.stdout)


def test_a_changed_middle_step_reruns_only_itself_and_the_steps_after_it(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    first = result(child(location, log))
    assert ran(log) == PIPELINE
    again = child(location, log, reuse=True)
    assert ran(log) == []  # nothing changed: every step is reused, in a new process
    assert result(again) == first
    assert "step 'extract' reused (unchanged since " in again.stderr
    edited = child(location, log, reuse=True, clean="v2")
    assert ran(log) == ["clean", "features", "report"]
    assert result(edited)["total"] != first["total"]
    assert "step 'clean' ran in" in edited.stderr and "changed since it ran" in edited.stderr
    fresh = child(tmp_path / "fresh", tmp_path / "fresh.log", clean="v2")
    assert result(edited) == result(fresh)  # the same state a whole run produces


def test_early_cutoff_reuses_the_steps_after_an_unchanged_output(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    first = result(child(location, log))
    ran(log)
    same_output = child(location, log, reuse=True, clean="v3")
    assert ran(log) == ["clean"]  # features and report receive what they received before
    assert result(same_output) == first
    assert "step 'features' reused" in same_output.stderr


def test_without_reuse_a_rerun_after_success_starts_over(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    child(location, log)
    ran(log)
    child(location, log)
    assert ran(log) == PIPELINE


def test_a_step_marked_reuse_false_always_runs(tmp_path: Path) -> None:
    location, log, prices = tmp_path / "cp", tmp_path / "log", tmp_path / "prices.txt"
    prices.write_text("2.0")
    first = result(child(location, log, outside=str(prices)))
    ran(log)
    same = result(child(location, log, outside=str(prices), reuse=True))
    # prices reads the outside world, so it runs; it read the same, so the rest is reused.
    assert ran(log) == ["prices"]
    assert same == first
    prices.write_text("3.0")
    moved = result(child(location, log, outside=str(prices), reuse=True))
    assert ran(log) == ["prices", "features", "report"]
    assert moved["total"] == pytest.approx(first["total"] * 1.5)


def test_damaged_recorded_output_is_never_reused_and_the_rerun_heals_it(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    first = result(child(location, log))
    ran(log)
    cp = CheckpointFlow(location)
    after = cp.store.snapshot(cp.record().steps["clean"].after)
    blob = after.entries["clean"]["blob"]
    path = blob_file(location, blob)
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert cp.verify() != []

    rerun = child(location, log, reuse=True)
    assert ran(log) == ["clean"]  # its output comes out the same, so the rest is reused
    assert "step 'clean': its recorded output is damaged, so it runs again" in rerun.stderr
    assert result(rerun) == first
    assert path.read_bytes() != bytes(damaged)
    assert CheckpointFlow(location).verify() == []  # the location healed
    child(location, log, reuse=True)
    assert ran(log) == []


def test_a_reused_run_writes_no_value_blobs(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    child(location, log)
    blobs = {p: p.stat().st_mtime_ns for p in blob_files(location)}
    records = set(CheckpointFlow(location).store.record_names())
    assert blobs  # the lists are large enough to be stored as blobs
    child(location, log, reuse=True)
    assert {p: p.stat().st_mtime_ns for p in blob_files(location)} == blobs
    cp = CheckpointFlow(location)
    runs = cp.runs()
    assert (runs[-1].executed, runs[-1].reused) == (0, 4)
    # one record, for the run history; its bytes are all the run wrote
    assert len(set(cp.store.record_names()) - records) == 1
    assert 0 < runs[-1].bytes_written < 4000


def test_reuse_compares_with_the_input_a_step_ran_on_not_the_one_it_was_handed(
    tmp_path: Path,
) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    child(location, log)
    ran(log)
    # clean v2 commits a new output, so features is handed a new input; the process dies
    # before features runs on it.
    killed = child(location, log, clean="v2", kill_in="features", check=False)
    assert killed.returncode != 0
    assert ran(log) == ["load_rows", "extract", "clean", "features"]
    resumed = child(location, log, clean="v2", reuse=True)
    assert ran(log) == ["features", "report"]  # the output recorded for features is stale
    fresh = child(tmp_path / "fresh", tmp_path / "fresh.log", clean="v2")
    assert result(resumed) == result(fresh)


def test_until_stops_after_a_step_and_the_next_run_continues_after_it(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    child(location, log, until="clean")
    assert ran(log) == ["load_rows", "extract", "clean"]
    cp = CheckpointFlow(location)
    assert cp.status().resume_at == "features"
    assert cp.runs()[-1].outcome == "stopped"
    assert cp.runs()[-1].last_step == "clean"
    finished = result(child(location, log))
    assert ran(log) == ["features", "report"]
    assert finished == result(child(tmp_path / "fresh", tmp_path / "fresh.log"))


def test_retries_never_see_a_failed_attempts_partial_mutations(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "log"
    steady = result(child(tmp_path / "steady", tmp_path / "steady.log"))
    flaky = child(location, log, flaky=2)
    assert ran(log) == ["load_rows", "extract", "clean", "features", "features", "features",
                        "report"]
    assert result(flaky) == steady  # the third attempt saw the list the step received
    assert flaky.stderr.count("step 'features' failed on attempt") == 2
    status = {s.name: s for s in CheckpointFlow(location).status().steps}
    assert status["features"].attempts == 3

    log.with_suffix(".failures").unlink()
    failing = child(location, log, flaky=9, check=False)
    assert failing.returncode != 0
    assert "OSError: flaky disk (failure 4)" in failing.stderr
    assert "failed on each of 4 attempts; the next run resumes at 'features'" in failing.stderr
    assert CheckpointFlow(location).state_before("features")["clean"][-1] != -1
