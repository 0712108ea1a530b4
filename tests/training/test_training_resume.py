"""A training run killed with SIGKILL and resumed in a new process ends bit-identical to one that
never stopped; signals sent to a running job make it save (and, for SIGTERM, exit)."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checkpoint_flow import CheckpointLockedError, CheckpointManager

# Each run is a separate process, some killed: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("training_child.py")
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("CHECKPOINT_FLOW_KEY", None)
    return env


def _run(*args: str, timeout: float = 120) -> None:
    done = subprocess.run(
        [sys.executable, str(CHILD), *args],
        env=_env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _assert_identical(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _train_until_killed(backend: str, ckdir: Path, tmp_path: Path) -> None:
    """Run the child until epoch 5's checkpoint is written, then SIGKILL it."""
    marker = tmp_path / f"{ckdir.name}.marker"
    never = tmp_path / f"{ckdir.name}.never.pkl"
    child = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            backend,
            "--dir",
            str(ckdir),
            "--stop-after",
            "5",
            "--marker",
            str(marker),
            "--out",
            str(never),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: marker.exists() or child.poll() is not None, "epoch 5's checkpoint")
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()
    assert not never.exists()
    assert CheckpointManager(ckdir).load("latest").epoch == 5


def _resume(backend: str, ckdir: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{ckdir.name}.pkl"
    _run(backend, "--dir", str(ckdir), "--out", str(out), *extra)
    return pickle.loads(out.read_bytes())


@pytest.mark.slow
def test_numpy_loop_killed_and_resumed_matches_uninterrupted_run(tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    _train_until_killed("numpy", killed, tmp_path)
    shutil.copytree(killed, tmp_path / "control")
    reference = tmp_path / "reference.pkl"
    resumed = _resume("numpy", killed, tmp_path, "--reference-out", str(reference))
    straight = pickle.loads(reference.read_bytes())
    assert [h["epoch"] for h in straight["history"]] == list(range(1, 11))
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 11))
    _assert_identical(straight, resumed)

    # Negative control: the same resume without the saved RNG states (dropout masks, jitter)
    # diverges, so the comparison above depends on restoring them.
    scrambled = _resume("numpy", tmp_path / "control", tmp_path, "--scramble-rng")
    assert scrambled["history"][:5] == straight["history"][:5]
    assert scrambled["history"][5:] != straight["history"][5:]


@pytest.mark.slow
def test_torch_loop_killed_and_resumed_matches_uninterrupted_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    killed = tmp_path / "killed"
    _train_until_killed("torch", killed, tmp_path)
    reference = tmp_path / "reference.pkl"
    resumed = _resume("torch", killed, tmp_path, "--reference-out", str(reference))
    straight = pickle.loads(reference.read_bytes())
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 11))
    assert resumed["state"]["opt"]["state"], "optimizer state was not compared"
    _assert_identical(straight, resumed)


@pytest.mark.slow
def test_sigusr1_saves_and_sigterm_saves_then_exits(tmp_path: Path) -> None:
    ckdir, marker = tmp_path / "ck", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "signals", "--dir", str(ckdir), "--marker", str(marker)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def saved() -> list[str]:
        index = ckdir / "index"
        return sorted(p.name for p in index.iterdir()) if index.exists() else []

    try:
        _wait_for(lambda: marker.exists() or child.poll() is not None, "the child to start")
        assert child.poll() is None
        assert saved() == []
        child.send_signal(signal.SIGUSR1)
        _wait_for(lambda: len(saved()) == 1, "a save after SIGUSR1")
        assert child.poll() is None, "SIGUSR1 must not stop the process"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()
    assert len(saved()) == 2
    ckpt = CheckpointManager(ckdir)
    latest = ckpt.load("latest")
    assert latest.reason == "requested"
    assert latest.step > ckpt.load(ckpt.checkpoints()[0].file).step
    np.testing.assert_array_equal(latest.state("weights"), np.arange(4.0))


# ------------------------------------------------------------------ mid-epoch resumption


def _kill_midway(backend: str, ckdir: Path, tmp_path: Path, kill_at: int, delay: float) -> None:
    """Run the mid-epoch loop and SIGKILL it right after step ``kill_at`` (a save may be in
    flight on the writer thread at that moment)."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "midepoch", "--backend", backend, "--dir", str(ckdir),
         "--kill-at", str(kill_at), "--kill-delay", str(delay),
         "--out", str(tmp_path / "never.pkl")],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "killable\n", (line, child.stderr.read() if child.stderr else "")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()
    assert not (tmp_path / "never.pkl").exists()


def _midepoch_case(backend: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    draw = random.Random()
    kill_at, delay = draw.randrange(1, 31), draw.choice([0.0, 0.001, 0.005, 0.02])
    case = f"killed after step {kill_at} (+{delay} s) of 32"
    killed = tmp_path / "killed"
    _kill_midway(backend, killed, tmp_path, kill_at, delay)
    shutil.copytree(killed, tmp_path / "control")
    reference = tmp_path / "reference.pkl"
    resumed = _resume("midepoch", killed, tmp_path, "--backend", backend,
                      "--reference-out", str(reference))
    straight = pickle.loads(reference.read_bytes())
    assert len(straight["curve"]) == 32, case
    return straight, resumed, case


@pytest.mark.slow
def test_torch_loop_killed_mid_epoch_resumes_at_the_next_batch(tmp_path: Path) -> None:
    """A DataLoader over a stateful sampler, Adam and a gradient scaler, killed by SIGKILL at a
    random batch: the resumed run's loss curve and weights are bit-identical to a run that
    never stopped."""
    pytest.importorskip("torch")
    straight, resumed, case = _midepoch_case("torch", tmp_path)
    assert resumed["curve"] == straight["curve"], case
    assert resumed["state"]["scaler"]["scale"] > 2.0**8, "the scaler's state never changed"
    _assert_identical(straight, resumed, case)


def test_numpy_loop_killed_mid_epoch_resumes_at_the_next_batch(tmp_path: Path) -> None:
    """The same with a hand-written stateful batch iterator and a NumPy model."""
    straight, resumed, case = _midepoch_case("numpy", tmp_path)
    assert resumed["curve"] == straight["curve"], case
    _assert_identical(straight, resumed, case)

    # Negative control: the same resume with a batch iterator that starts its epoch over
    # diverges, so the comparison above depends on restoring the iterator's position.
    killed = CheckpointManager(tmp_path / "control", read_only=True)
    left = killed.latest
    killed.close()
    if left is None:
        # Killed before its first save was committed: the control needs a run that left one.
        # The loop saves every 3 steps and a save waits for the one in flight, so a run killed
        # after step 6 always has the save of step 3 committed.
        shutil.rmtree(tmp_path / "control")
        _kill_midway("numpy", tmp_path / "control", tmp_path, random.randrange(6, 31), 0.0)
        again = CheckpointManager(tmp_path / "control", read_only=True)
        assert again.latest is not None, case
        again.close()
    control = _resume("midepoch", tmp_path / "control", tmp_path, "--backend", "numpy",
                      "--forget-position")
    assert control["curve"] != straight["curve"], case


# ------------------------------------------------------------------ a learner and an evaluator


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
        child.wait()
    for stream in (child.stdout, child.stderr):
        if stream:
            stream.close()


def _expect_line(child: subprocess.Popen[str], expected: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == expected, (line, child.stderr.read() if child.stderr else "")


def test_learner_and_evaluator_share_a_folder_and_restore_from_another(tmp_path: Path) -> None:
    """The periodic checkpointer of an RL learner: tracked attributes, every 3 iterations at
    least 0.02 s apart, the 2 newest and the 2 best by score kept; an evaluator beside it; the
    learner restored in a new process by latest, best, 2nd newest and global step, from its own
    folder and from another one."""
    folder, other = tmp_path / "session", tmp_path / "other"
    child = _start("surreal", "--dir", str(folder))
    try:
        _expect_line(child, "trained\n")
        # While the learner's process is alive, its name is taken; other names are not.
        with pytest.raises(CheckpointLockedError, match=rf"pid {child.pid}.*'learner'"):
            CheckpointManager(folder, name="learner")
        CheckpointManager(folder, name="teacher").close()
        reader = CheckpointManager(folder, name="learner", read_only=True)
        assert reader.load("latest").step == 18 * 64
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(child)

    saved = sorted(p.name for p in folder.iterdir() if p.suffix == ".ckpt")
    # Saved at iterations 3, 6, ..., 18; kept: the newest two (15, 18) and the best two
    # (9 with 0.7, 6 with 0.6). The evaluator keeps its newest and its best (iteration 4).
    assert saved == [
        "evaluator.best_model_return.ckpt",
        "evaluator.checkpoint_step_00000004.ckpt",
        "evaluator.checkpoint_step_00000020.ckpt",
        "evaluator.latest.ckpt",
        *(f"learner.checkpoint_step_{i * 64:08d}.ckpt" for i in (6, 9, 15, 18)),
        "learner.latest.ckpt",
    ]

    out = tmp_path / "restored.pkl"
    _run("surreal-restore", "--dir", str(folder), "--other", str(other), "--out", str(out))
    results = pickle.loads(out.read_bytes())
    assert results["own folder latest"] == (18, 18.0)
    assert results["best"] == (9, 9.0, 9 * 64)
    assert results["best:2"] == (6, 6.0, 6 * 64)
    assert results["2nd newest"] == (15, 15.0, 15 * 64)
    assert results["global step 384"] == (6, 6.0, 384)
    assert results["latest"] == (18, 18.0, 18 * 64)
    rng = np.random.default_rng(11)
    for _ in range(18):
        rng.random()
    assert results["rng draw"] == rng.random()
    # Training went on in the other folder and saved at the 21st iteration, as it would have.
    assert results["other folder"] == [("learner.checkpoint_step_00001344.ckpt", 1344)]
    assert CheckpointManager(folder, name="evaluator", read_only=True).load("best").step == 4


def test_a_second_process_with_the_same_name_is_refused(tmp_path: Path) -> None:
    child = _start("hold", "--dir", str(tmp_path), "--name", "learner")
    try:
        _expect_line(child, "holding\n")
        code = (
            "import sys\n"
            "from checkpoint_flow import CheckpointManager, CheckpointLockedError\n"
            "for name in ('learner', 'evaluator'):\n"
            "    try:\n"
            "        CheckpointManager(sys.argv[1], name=name).close()\n"
            "        print(name, 'opened')\n"
            "    except CheckpointLockedError as exc:\n"
            "        print(name, 'locked', 'pid %d' % int(sys.argv[2]) in str(exc))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), str(child.pid)],
            env=_env(), capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["learner locked True", "evaluator opened"]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        _stop(child)
    # The kernel released the dead holder's lock.
    with CheckpointManager(tmp_path, name="learner") as ckpt:
        assert ckpt.latest == "learner.checkpoint_step_00000001.ckpt"


# ------------------------------------------------------------------ crashes inside a save


def _crash(ckdir: Path, before: str) -> None:
    done = subprocess.run(
        [sys.executable, str(CHILD), "crash", "--dir", str(ckdir), "--crash-before", before],
        env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "checkpoint_flow", *args],
        env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )


def test_sigkill_between_a_file_and_its_record(tmp_path: Path) -> None:
    """The third save's file is complete but its record was never written: latest stays on the
    second save, which retention kept, and gc deletes the uncommitted file."""
    _crash(tmp_path, "index/")
    orphan = tmp_path / "checkpoint_step_00000003.ckpt"
    assert orphan.exists()
    ckpt = CheckpointManager(tmp_path, read_only=True)
    assert ckpt.latest == "checkpoint_step_00000002.ckpt"
    assert [c.step for c in ckpt.checkpoints()] == [2]
    assert ckpt.load("latest").step == 2
    assert ckpt.load("latest").file == ckpt.latest
    verify = _cli("verify", str(tmp_path))
    assert verify.returncode == 0, verify.stderr
    assert "checkpoint_step_00000003.ckpt: a checkpoint file without a record" in verify.stdout
    gc = _cli("gc", str(tmp_path))
    assert gc.returncode == 0 and "deleted checkpoint_step_00000003.ckpt" in gc.stdout
    assert not orphan.exists()
    assert os.path.samefile(tmp_path / "latest.ckpt", tmp_path / "checkpoint_step_00000002.ckpt")


def test_sigkill_before_the_latest_copy_is_refreshed(tmp_path: Path) -> None:
    """The third save committed, then the process died before refreshing latest.ckpt: "latest"
    (read from the records) is the third save, every recorded file exists, and gc refreshes the
    stale copy."""
    _crash(tmp_path, "latest")
    ckpt = CheckpointManager(tmp_path, read_only=True)
    assert ckpt.latest == "checkpoint_step_00000003.ckpt"
    assert ckpt.load("latest").step == 3
    for info in ckpt.checkpoints():
        assert (tmp_path / info.file).exists()
    verify = _cli("verify", str(tmp_path))
    assert verify.returncode == 0 and "not the newest checkpoint" in verify.stdout
    assert _cli("gc", str(tmp_path)).returncode == 0
    assert os.path.samefile(tmp_path / "latest.ckpt", tmp_path / "checkpoint_step_00000003.ckpt")
