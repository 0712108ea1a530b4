"""Fan-out steps: one function over many items, resumed item by item after crashes and failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, FanOutError, MapStep
from checkpoint_flow.storage.namespaces import Namespace

ROOT = Path(__file__).resolve().parents[2]


def ran(log: Path) -> list[str]:
    """The lines of a side log written by item functions (one line per item call)."""
    return log.read_text().split() if log.exists() else []


def make_work(log: Path, fail_marker: Path | None = None, fail_on: frozenset[int] = frozenset(),
              ) -> Callable[[int], int]:
    """An item function that logs each call and fails on ``fail_on`` while the marker exists."""

    def work(item: int) -> int:
        with open(log, "a") as f:
            f.write(f"{item}\n")
        if item in fail_on and (fail_marker is None or fail_marker.exists()):
            raise ValueError(f"item {item} is broken")
        return item * item

    return work


def item_records(cp: CheckpointFlow) -> list[dict[str, Any]]:
    items = Namespace(cp.store, "items")
    return [items.open(n).meta for n in items.names()]


# -- the basic story ------------------------------------------------------------------------------


def test_results_in_item_order_become_the_state_value(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")

    @cp.map_step(items=lambda state: state["files"], name="size")
    def size(name: str) -> int:
        return len(name)

    @cp.map_step(items=lambda state: state["files"], into="upper")
    def shout(name: str) -> str:
        return name.upper()

    state = cp.run({"files": ["a", "bbb", "cc"]})
    assert state["size"] == [1, 3, 2]
    assert state["upper"] == ["A", "BBB", "CC"]
    assert shout("x") == "X"  # the decorated function stays usable
    assert isinstance(cp.steps[0], MapStep)


def test_rerun_after_a_failed_item_runs_only_unfinished_items(tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "broken"
    marker.touch()
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", commit_every=7)(
        make_work(log, marker, frozenset({30}))
    )
    with pytest.raises(FanOutError):
        cp.run({"n": list(range(50))})
    assert ran(log) == [str(i) for i in range(31)]
    marker.unlink()
    log.unlink()
    state = cp.run({"n": list(range(50))})
    assert ran(log) == [str(i) for i in range(30, 50)]
    assert state["work"] == [i * i for i in range(50)]


def test_failures_are_aggregated_naming_the_items(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    bad = frozenset({3, 11, 12, 13, 14, 15, 17})
    cp.map_step(items=lambda s: s["n"], name="work", max_failures=None)(
        make_work(tmp_path / "log", None, bad)
    )
    with pytest.raises(FanOutError) as caught:
        cp.run({"n": list(range(20))})
    error = caught.value
    assert set(error.failures) == bad
    assert all(isinstance(e, ValueError) for e in error.failures.values())
    assert isinstance(error.__cause__, ValueError) and "item 3 " in str(error.__cause__)
    message = str(error)
    assert "7 of 20 items failed: 3, 11, 12, 13, 14 and 2 more" in message
    assert "13 finished items are recorded" in message
    assert len(ran(tmp_path / "log")) == 20  # max_failures=None: every item was tried


def test_max_failures_stops_submitting_new_items(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", max_failures=2)(
        make_work(tmp_path / "log", None, frozenset(range(100)))
    )
    with pytest.raises(FanOutError, match="98 were not started") as caught:
        cp.run({"n": list(range(100))})
    assert set(caught.value.failures) == {0, 1}
    assert len(ran(tmp_path / "log")) == 2


def test_retries_give_an_item_more_attempts(tmp_path: Path) -> None:
    attempts: dict[int, int] = {}

    def flaky(item: int) -> int:
        attempts[item] = attempts.get(item, 0) + 1
        if item % 2 and attempts[item] <= 2:
            raise ConnectionError("try again")
        return item

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="flaky", retries=2)(flaky)
    assert cp.run({"n": list(range(6))})["flaky"] == list(range(6))
    assert attempts == {0: 1, 1: 3, 2: 1, 3: 3, 4: 1, 5: 3}

    attempts.clear()
    cp2 = CheckpointFlow(tmp_path / "cp2")
    cp2.map_step(items=lambda s: s["n"], name="flaky", retries=1)(flaky)
    with pytest.raises(FanOutError) as caught:
        cp2.run({"n": list(range(6))})
    assert list(caught.value.failures) == [1]
    assert attempts[1] == 2


def test_an_interrupt_records_the_finished_items_first(tmp_path: Path) -> None:
    calls: list[int] = []

    def work(item: int) -> int:
        calls.append(item)
        if item == 5 and len(calls) == 6:
            raise KeyboardInterrupt
        return item

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", commit_every=100)(work)
    with pytest.raises(KeyboardInterrupt):
        cp.run({"n": list(range(10))})
    assert cp.run({"n": list(range(10))})["work"] == list(range(10))
    assert calls == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]


# -- what a rerun reuses --------------------------------------------------------------------------


def test_a_changed_item_list_reuses_finished_items(tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "broken"
    marker.touch()
    cp = CheckpointFlow(tmp_path / "cp")

    @cp.add_step
    def list_files(state: dict[str, Any], data: dict[str, Any]) -> None:
        state["files"] = list(range(state["count"]))

    cp.map_step(items=lambda s: s["files"], name="work", commit_every=3)(
        make_work(log, marker, frozenset({9}))
    )
    with pytest.raises(FanOutError):
        cp.run({"count": 10})
    marker.unlink()
    log.unlink()
    cp.reset()  # a fresh run from the first step: more files this time
    state = cp.run({"count": 15})
    assert ran(log) == [str(i) for i in range(9, 15)]
    assert state["work"] == [i * i for i in range(15)]


def test_a_changed_item_function_runs_every_item_again(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cp = CheckpointFlow(tmp_path / "cp")

    @cp.map_step(items=lambda s: s["n"], name="work")
    def v1(item: int) -> int:
        with open(log, "a") as f:
            f.write(f"{item}\n")
        if item == 5:
            raise ValueError("v1 cannot do 5")
        return item

    with pytest.raises(FanOutError):
        cp.run({"n": list(range(8))})
    log.unlink()

    @cp.map_step(items=lambda s: s["n"], name="work")
    def v2(item: int) -> int:
        with open(log, "a") as f:
            f.write(f"{item}\n")
        return -item

    assert cp.run({"n": list(range(8))})["work"] == [-i for i in range(8)]
    assert ran(log) == [str(i) for i in range(8)]


def test_item_results_survive_collection_until_the_step_completes(tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "broken"
    marker.touch()
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", commit_every=10)(
        make_work(log, marker, frozenset({34}))
    )
    with pytest.raises(FanOutError):
        cp.run({"n": list(range(40))})
    assert [r["count"] for r in item_records(cp)] == [10, 10, 10, 4]
    cp.gc()
    assert cp.verify() == []
    marker.unlink()
    log.unlink()
    assert cp.run({"n": list(range(40))})["work"] == [i * i for i in range(40)]
    assert ran(log) == [str(i) for i in range(34, 40)]
    assert Namespace(cp.store, "items").names() == []  # gathered into the state, then removed
    cp.gc()
    assert cp.verify() == []


def test_commits_also_happen_after_commit_interval_s(tmp_path: Path) -> None:
    def slow(item: int) -> int:
        time.sleep(0.03)
        if item == 11:
            raise ValueError("stop here")
        return item

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="slow", commit_every=1000,
                commit_interval_s=0.1)(slow)
    with pytest.raises(FanOutError):
        cp.run({"n": list(range(12))})
    counts = [r["count"] for r in item_records(cp)]
    assert sum(counts) == 11 and 2 <= len(counts) <= 6


# -- keys, state and bad input --------------------------------------------------------------------


def test_two_parameter_functions_get_a_read_only_state(tmp_path: Path) -> None:
    def scale(item: int, state: Any) -> int:
        with pytest.raises(TypeError):
            state["factor"] = 0
        return item * state["factor"]

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="scale")(scale)
    assert cp.run({"n": [1, 2, 3], "factor": 10})["scale"] == [10, 20, 30]


def test_duplicate_keys_are_refused_and_key_tells_items_apart(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work")(lambda item: item)
    with pytest.raises(ValueError, match=r"2 duplicate item key\(s\): 'a', 'b'"):
        cp.run({"n": ["a", "b", "a", "b", "c"]})

    records = [{"id": 1, "x": "p"}, {"id": 2, "x": "q"}]
    cp2 = CheckpointFlow(tmp_path / "cp2")
    cp2.map_step(items=lambda s: s["rows"], name="x", key=lambda row: row["id"])(
        lambda row: row["x"]
    )
    assert cp2.run({"rows": records})["x"] == ["p", "q"]
    cp3 = CheckpointFlow(tmp_path / "cp3")
    cp3.map_step(items=lambda s: s["rows"], name="x")(lambda row: row["x"])
    with pytest.raises(TypeError, match="is not hashable.*pass key="):
        cp3.run({"rows": records})


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"items": [1, 2]}, TypeError, r"items= must be a function.*\[1, 2\]"),
        ({"key": "id"}, TypeError, "key= must be a function.*'id'"),
        ({"executor": "threads"}, TypeError, "concurrent.futures.Executor.*'threads'"),
        ({"max_failures": -1}, ValueError, "max_failures must be an int >= 1 or None.*got -1"),
        ({"max_failures": 1.5}, TypeError, "max_failures.*1.5"),
        ({"retries": -2}, ValueError, "retries must be an int >= 0, got -2"),
        ({"commit_every": 0}, ValueError, "commit_every must be an int >= 1, got 0"),
        ({"commit_interval_s": 0}, ValueError, "commit_interval_s.*0"),
        ({"into": ""}, ValueError, "into= must be a non-empty"),
    ],
)
def test_bad_options_are_refused_when_the_step_is_registered(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    options.setdefault("items", lambda s: s["n"])
    with pytest.raises(error, match=names):
        cp.map_step(**options)(lambda item: item)


def test_items_that_are_not_iterable_are_refused(tmp_path: Path) -> None:
    for i, (items, message) in enumerate([(42, "returned int 42"), ("abc", "returned str 'abc'")]):
        cp = CheckpointFlow(tmp_path / f"cp{i}")
        cp.map_step(items=lambda s: s["n"], name="work")(lambda item: item)
        with pytest.raises(TypeError, match=message):
            cp.run({"n": items})


def test_progress_bar_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", progress=True)(lambda item: item)
    cp.run({"n": list(range(25))})
    assert "25/25" in capsys.readouterr().err


# -- executors ------------------------------------------------------------------------------------


@pytest.fixture(params=["threads", "processes"])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    pool: Executor = (
        ThreadPoolExecutor(4) if request.param == "threads" else ProcessPoolExecutor(2)
    )
    with pool:
        yield pool


def test_executor_rerun_runs_only_unfinished_items(tmp_path: Path, executor: Executor) -> None:
    log, marker = tmp_path / "log", tmp_path / "broken"
    marker.touch()
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work", executor=executor, commit_every=5)(
        make_work(log, marker, frozenset({40}))
    )
    with pytest.raises(FanOutError) as caught:
        cp.run({"n": list(range(120))})
    assert list(caught.value.failures) == [40]
    first = set(ran(log))
    marker.unlink()
    log.unlink()
    assert cp.run({"n": list(range(120))})["work"] == [i * i for i in range(120)]
    second = ran(log)
    # every item that finished was recorded before the error: only the failed item runs twice
    assert len(second) == len(set(second))
    assert first & set(second) == {"40"}
    assert first | set(second) == {str(i) for i in range(120)}


def test_executor_gets_a_read_only_state(tmp_path: Path, executor: Executor) -> None:
    def scale(item: int, state: Any) -> int:
        try:
            state["factor"] = 0
        except TypeError:
            return item * state["factor"]
        return -1

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="scale", executor=executor)(scale)
    assert cp.run({"n": [1, 2, 3], "factor": 10})["scale"] == [10, 20, 30]


# -- crashes: a real SIGKILL, a dask cluster, an S3 store -----------------------------------------

COMMIT_EVERY = 20
SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from checkpoint_flow import CheckpointFlow

    location, log, out, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    cp = CheckpointFlow(location, storage_options=options or None)

    @cp.map_step(items=lambda state: state["n"], commit_every=COMMIT_EVERY,
                 commit_interval_s=3600)
    def work(item):
        with open(log, "a") as f:
            f.write(f"{item}\\n")
        time.sleep(0.003)
        return item * item

    state = cp.run({"n": list(range(1000))})
    with open(out, "w") as f:
        json.dump(state["work"], f)
    """
).replace("COMMIT_EVERY", str(COMMIT_EVERY))


def kill_then_rerun(tmp_path: Path, location: str, options: dict[str, Any]) -> None:
    script, log, out = tmp_path / "job.py", tmp_path / "ran.log", tmp_path / "out.json"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, str(script), location, str(log), str(out), json.dumps(options)]
    job = subprocess.Popen(argv, env=env)
    deadline = time.monotonic() + 60
    while len(ran(log)) < 300:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    first = ran(log)
    assert len(first) < 1000 and not out.exists()
    log.unlink()
    subprocess.run(argv, env=env, check=True, timeout=120)
    second = ran(log)
    # Items run in order in the calling thread, and a batch is committed after COMMIT_EVERY of
    # them, so at the kill at most COMMIT_EVERY items had run without being committed: up to
    # COMMIT_EVERY - 1 finished ones plus the one running, or a whole batch during its commit.
    assert len(first) == len(set(first)) and len(second) == len(set(second))
    repeated = set(first) & set(second)
    assert len(repeated) <= COMMIT_EVERY
    assert set(first) | set(second) == {str(i) for i in range(1000)}
    assert len(second) <= 1000 - len(first) + COMMIT_EVERY
    assert json.loads(out.read_text()) == [i * i for i in range(1000)]


@pytest.mark.slow
def test_sigkill_mid_fan_out_rerun_runs_only_the_rest(tmp_path: Path) -> None:
    kill_then_rerun(tmp_path, str(tmp_path / "cp"), {})


@pytest.mark.slow
def test_sigkill_mid_fan_out_on_s3(tmp_path: Path, s3: Any) -> None:
    _fs, bucket, options = s3
    kill_then_rerun(tmp_path, f"s3://{bucket}/flow", options)


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Executor]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client.get_executor()


@pytest.mark.slow
def test_dask_cluster_with_an_s3_store_resumes_item_by_item(
    tmp_path: Path, s3: Any, dask_executor: Executor
) -> None:
    _fs, bucket, options = s3
    log, marker = tmp_path / "log", tmp_path / "broken"
    marker.touch()
    cp = CheckpointFlow(f"s3://{bucket}/flow", storage_options=options)
    cp.map_step(items=lambda s: s["n"], name="work", executor=dask_executor, commit_every=10,
                retries=1)(make_work(log, marker, frozenset({150})))
    with pytest.raises(FanOutError) as caught:
        cp.run({"n": list(range(300))})
    assert list(caught.value.failures) == [150]
    first = ran(log)
    assert first.count("150") == 2  # the first attempt and its retry
    marker.unlink()
    log.unlink()
    assert cp.run({"n": list(range(300))})["work"] == [i * i for i in range(300)]
    second = ran(log)
    assert len(second) == len(set(second))
    assert set(first) & set(second) == {"150"}
    assert set(first) | set(second) == {str(i) for i in range(300)}
    assert Namespace(cp.store, "items").names() == []
