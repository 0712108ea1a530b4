"""Identity across processes: every run is a new interpreter with a hash seed of its own.

The runs execute tests/support/identity_child.py, a user's script whose classes live in
``__main__``.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint_flow.identity import digest

# Each run is a separate process: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHILD = ROOT / "tests" / "support" / "identity_child.py"
SEEDS = iter(range(1, 10_000))


def child(
    scenario: str, location: Path, log: Path, *args: str, env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """One run of the user's script in a new interpreter with a hash seed of its own."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(next(SEEDS)),
                **(env or {})}
    done = subprocess.run(
        [sys.executable, str(CHILD), scenario, str(location), str(log), *args],
        capture_output=True, text=True, env=full_env, timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def lines(log: Path) -> list[str]:
    """The calls logged since the last look; the log is emptied."""
    if not log.exists():
        return []
    found = log.read_text().splitlines()
    log.unlink()
    return found


# -- across processes -----------------------------------------------------------------------------


def test_memo_hits_in_new_processes_for_main_classes_methods_and_sets(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "calls"
    first = json.loads(child("memo", location, log).stdout)
    assert lines(log) == ["describe", "unpack", "count", "join", "predict"]
    for _ in range(2):
        again = json.loads(child("memo", location, log).stdout)
        assert again == first
        assert lines(log) == []
    assert first[-1] == 5  # five calls, five entries
    changed = json.loads(child("memo", location, log, "changed").stdout)
    assert lines(log) == ["count"]  # a changed set is a new call
    assert changed[-1] == 6


def test_factory_closures_never_share_entries_across_processes(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "calls"
    assert json.loads(child("factory", location, log, "1").stdout) == 1
    assert json.loads(child("factory", location, log, "100").stdout) == 100
    assert lines(log) == ["scaled 1", "scaled 100"]
    assert json.loads(child("factory", location, log, "1").stdout) == 1
    assert json.loads(child("factory", location, log, "100").stdout) == 100
    assert lines(log) == []


def test_partial_and_callable_object_changes_restart_at_their_step(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "calls"
    failing = {"FAIL": "1"}

    def run(factor: int, amount: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return child("partial", location, log, str(factor), str(amount), env=env, check=False)

    assert run(2, 1, failing).returncode == 1
    assert lines(log) == ["load", "scale", "offset", "last"]
    assert run(2, 1, failing).returncode == 1
    assert lines(log) == ["last"]  # nothing changed: resumes at the failed step
    assert run(3, 1, failing).returncode == 1
    assert lines(log) == ["scale", "offset", "last"]  # a bound argument of the partial
    assert run(3, 5, failing).returncode == 1
    assert lines(log) == ["offset", "last"]  # an attribute of the callable object
    done = run(3, 5, {"FAIL": "0"})
    assert done.returncode == 0, done.stderr
    assert lines(log) == ["last"]
    assert json.loads(done.stdout) == 1 * 3 + 5


def test_reordered_steps_restart_at_the_first_moved_one_across_processes(tmp_path: Path) -> None:
    location, log = tmp_path / "cp", tmp_path / "calls"
    assert child("reorder", location, log, "abcd", env={"FAIL": "1"}, check=False).returncode == 1
    assert lines(log) == ["a", "b", "c", "d"]
    done = child("reorder", location, log, "acbd", env={"FAIL": "0"})
    assert lines(log) == ["c", "b", "d"]
    assert json.loads(done.stdout) == ["a", "c", "b", "d"]
    assert "the steps were reordered: step 'c'" in done.stderr


@pytest.mark.slow
def test_fan_out_with_main_dataclass_items_reruns_only_unfinished_after_sigkill(
    tmp_path: Path,
) -> None:
    location, log = tmp_path / "cp", tmp_path / "items"
    argv = [sys.executable, str(CHILD), "fanout", str(location), str(log), "300"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "11"}
    job = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(log.read_text().split() if log.exists() else []) < 121:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    first = lines(log)
    assert 121 <= len(first) < 300
    done = child("fanout", location, log, "300")  # another hash seed
    second = lines(log)
    # items run in order and commit every 20: at most one uncommitted batch runs again
    assert len(set(first) & set(second)) <= 20
    assert len(second) <= 300 - len(first) + 20
    assert set(first) | set(second) == {str(i) for i in range(300)}
    assert json.loads(done.stdout) == [2 * i for i in range(300)]


# -- equal values built in two processes ----------------------------------------------------------

hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.binary(max_size=8) | st.decimals(allow_nan=False, places=2)
    | st.dates() | st.datetimes() | st.builds(PurePosixPath, st.text(max_size=6)),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=6,
)
values = st.recursive(
    hashable | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hashable, inner, max_size=4)
    | st.sets(hashable, max_size=4) | st.tuples(inner),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal as a cache key must see it: same types all the way down, -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, v2) for k2, v2 in b.items()) for k, v in a.items()
        )
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a) and all(
            any(same(x, y) for y in a) for x in b
        )
    return bool(a == b)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, min_size=10, max_size=30))
def test_equal_values_built_in_two_processes_digest_alike_and_unequal_ones_differ(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[Any],
) -> None:
    folder = tmp_path_factory.mktemp("digests")
    (folder / "values.pickle").write_bytes(pickle.dumps(drawn))
    here = [digest(v) for v in drawn]
    there = json.loads(child("digests", folder / "values.pickle", folder / "unused").stdout)
    assert there == here
    for i, a in enumerate(drawn):
        for j in range(i + 1, len(drawn)):
            assert (here[i] == here[j]) == same(a, drawn[j]), (a, drawn[j])
