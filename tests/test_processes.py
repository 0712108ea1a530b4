"""Resumption across real processes, including a process killed with SIGKILL while saving."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from checkpoint_flow import CheckpointFlow

# Each run is a separate process, some killed: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

STORY = textwrap.dedent(
    """
    import json, os, sys
    from checkpoint_flow import CheckpointFlow

    location, log_path = sys.argv[1], sys.argv[2]
    fixed = os.environ.get("FIXED") == "1"

    def log(*event):
        with open(log_path, "a") as f:
            f.write(json.dumps(event) + "\\n")

    cp = CheckpointFlow(location)

    def load_rows(state):
        log("load1", state)
        return {"rows": list(range(state["n"]))}

    def save_rows(state, data):
        log("save1", state, sorted(data))

    def load_lookup(state):
        log("load2", state)
        return {"lookup": {"a": 1}}

    @cp.add_step(load=load_rows, save=save_rows)
    def extract(state, data):
        log("extract", state, sorted(data))
        state["total"] = sum(data["rows"])

    @cp.add_step(load=load_lookup)
    def transform(state, data):
        log("transform", state, sorted(data))
        if not fixed:
            raise ValueError("column 'a' missing")
        state["scaled"] = state["total"] * data["lookup"]["a"] * 2

    @cp.add_step
    def report(state, data):
        log("report", state, sorted(data))
        state["report"] = f"total={state['total']} scaled={state['scaled']}"

    policy = os.environ.get("LOAD_POLICY", "first")
    print(json.dumps(cp.run({"n": int(os.environ.get("N", "10"))}, load_policy=policy)))
    """
)


def _run(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=full_env,
        timeout=120,
    )


def _events(log: Path) -> list[list]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_story_across_two_processes(tmp_path):
    script = tmp_path / "story.py"
    script.write_text(STORY)
    location, log = tmp_path / "ckpt", tmp_path / "events.jsonl"

    first = _run(script, str(location), str(log), env={"FIXED": "0"})
    assert first.returncode == 1
    assert "ValueError: column 'a' missing" in first.stderr
    assert "the next run resumes at 'transform'" in first.stderr
    assert _events(log) == [
        ["load1", {"n": 10}],
        ["extract", {"n": 10}, ["rows"]],
        ["save1", {"n": 10, "total": 45}, ["rows"]],
        ["transform", {"n": 10, "total": 45}, ["rows"]],
    ]

    log.unlink()
    second = _run(script, str(location), str(log), env={"FIXED": "1", "N": "99"})
    assert second.returncode == 0, second.stderr
    assert _events(log) == [
        ["load2", {"n": 10, "total": 45}],
        ["transform", {"n": 10, "total": 45}, ["lookup"]],
        ["report", {"n": 10, "total": 45, "scaled": 90}, ["lookup"]],
    ]
    assert json.loads(second.stdout) == {
        "n": 10, "total": 45, "scaled": 90, "report": "total=45 scaled=90",
    }

    log.unlink()
    third = _run(
        script, str(location), str(log), env={"FIXED": "1", "N": "4", "LOAD_POLICY": "always"}
    )
    assert third.returncode == 0, third.stderr
    assert [e[0] for e in _events(log)] == [
        "load1", "extract", "save1", "load2", "transform", "report",
    ]
    assert json.loads(third.stdout)["total"] == 6


SAVER = textwrap.dedent(
    """
    import os, sys
    from checkpoint_flow import CheckpointFlow

    location, marker = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3])
    cp = CheckpointFlow(location)

    @cp.add_step
    def small(state, data):
        state["small"] = list(range(100))

    @cp.add_step
    def big(state, data):
        state["big"] = os.urandom(size)
        state["numbers"] = [i * 2 for i in range(100_000)]
        open(marker, "w").close()  # the save starts as soon as this returns

    @cp.add_step
    def last(state, data):
        import time
        time.sleep(120)  # never finishes: the kill lands during the save or here

    cp.run({"seed": 1})
    """
)


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path, trial):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    location, marker = tmp_path / "ckpt", tmp_path / "saving"
    size = 64 * 2**20
    proc = subprocess.Popen(
        [sys.executable, str(script), str(location), str(marker), str(size)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, "the saver exited before reaching the save"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(random.Random(trial).uniform(0, 0.25))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # The steps are redefined below with other code, so code-change restarts are turned off.
    cp = CheckpointFlow(location, on_code_change="ignore")
    status = cp.status()
    # Killed before the commit: resume at `big` with the small state; after it: at `last`.
    assert status.resume_at in {"big", "last"}
    snapshot = cp.state_before(status.resume_at)
    assert snapshot["small"] == list(range(100))
    assert cp.verify() == []

    ran = []
    cp.add_step(name="small")(lambda s, d: ran.append("small"))

    def big(state, data):
        ran.append("big")
        state["big"] = b"x" * 10
        state["numbers"] = [i * 2 for i in range(100_000)]

    cp.add_step(name="big")(big)
    cp.add_step(name="last")(lambda s, d: s.update(last=len(s["big"])))
    final = cp.run({"seed": 1})
    assert "small" not in ran
    assert final["small"] == list(range(100))
    assert final["numbers"][-1] == 199_998
    assert final["last"] == len(final["big"])
