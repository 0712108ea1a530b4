"""Nothing is lost: SIGKILL at random instants, storage faults, corruption at every byte."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from checkpoint_flow import (
    CheckpointCorruptError,
    CheckpointFlow,
    CheckpointReadError,
    CheckpointSignatureError,
    CheckpointWriteError,
    FsspecHandler,
)
from checkpoint_flow.storage.codec import seal, unseal
from tests.support.faulty_fs import FaultyFileSystem, disk_full
from tests.support.kill_flow import INITIAL, STEP_NAMES, build, same_state
from tests.support.layout import blob_file, state_entry

REPO = Path(__file__).resolve().parents[2]
KILL_SCRIPT = REPO / "tests" / "support" / "kill_flow.py"
# 200 trials in all by default; CHECKPOINT_FLOW_KILL_TRIALS scales both (e.g. 10 for a quick look).
LOCAL_TRIALS = int(os.environ.get("CHECKPOINT_FLOW_KILL_TRIALS", "150"))
S3_TRIALS = max(1, LOCAL_TRIALS // 3)


@pytest.fixture(scope="module")
def expected_final():
    return build(f"memory://expected-{uuid.uuid4().hex}").run(dict(INITIAL))


def _kill_trials(location_for, options, expected_final, trials, rng):
    """Start the flow in a subprocess, SIGKILL it after a random delay, then check and finish."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    outcomes = {"killed": 0, "finished_first": 0}
    resume_points = {}

    def start(location):
        args = [sys.executable, str(KILL_SCRIPT), location]
        if options is not None:
            args.append(json.dumps(options))
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    # One uninterrupted run measures how long a run takes, so kills can spread over all of it.
    calibration = start(location_for("calibration"))
    started = time.monotonic()
    assert calibration.wait(timeout=120) == 0
    window = time.monotonic() - started
    for trial in range(trials):
        location = location_for(trial)
        proc = start(location)
        time.sleep(rng.uniform(0, window))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == 0:
            outcomes["finished_first"] += 1
        else:
            assert proc.returncode == -signal.SIGKILL
            outcomes["killed"] += 1

        cp = build(location, options)
        status = cp.status()
        assert status.resume_at is None or status.resume_at in STEP_NAMES
        if status.resume_at is not None:
            assert cp.state_before(status.resume_at)["seed"] == INITIAL["seed"]
        resume_points[status.resume_at] = resume_points.get(status.resume_at, 0) + 1
        assert cp.verify() == []
        final = _run_waiting_for_stale_lock(cp)
        assert same_state(final, expected_final), f"trial {trial}: final state differs"
    return outcomes, resume_points


def _run_waiting_for_stale_lock(cp):
    from checkpoint_flow import CheckpointLockedError

    deadline = time.monotonic() + 3 * cp.lock_ttl_s + 5
    while True:
        try:
            return cp.run(dict(INITIAL))
        except CheckpointLockedError:
            # A killed holder's lock record on an object store expires after lock_ttl_s.
            assert time.monotonic() < deadline, "a dead holder's lock never expired"
            time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_at_random_instants_local(tmp_path, expected_final, record_property):
    outcomes, resume_points = _kill_trials(
        lambda t: str(tmp_path / f"t{t}"), None, expected_final, LOCAL_TRIALS, random.Random(1)
    )
    record_property("outcomes", outcomes)
    print("local kill trials:", outcomes, resume_points)
    assert outcomes["killed"] >= sum(outcomes.values()) // 2
    if sum(outcomes.values()) >= 20:
        assert len(resume_points) >= 3, f"kills should land at several steps: {resume_points}"


@pytest.mark.slow
def test_sigkill_at_random_instants_s3(s3, expected_final, record_property):
    _fs, bucket, options = s3
    outcomes, resume_points = _kill_trials(
        lambda t: f"s3://{bucket}/t{t}", options, expected_final, S3_TRIALS, random.Random(2)
    )
    record_property("outcomes", outcomes)
    print("s3 kill trials:", outcomes, resume_points)
    assert outcomes["killed"] >= sum(outcomes.values()) // 2
    if sum(outcomes.values()) >= 20:
        assert len(resume_points) >= 3, f"kills should land at several steps: {resume_points}"


# -- storage faults -----------------------------------------------------------------------------


def _faulty_flow(fs, fail_at=None):
    cp = CheckpointFlow(FsspecHandler("faultymem://flow", filesystem=fs))
    cp.add_step(name="a")(lambda s, d: s.update(a=list(range(1000))))  # stored as a blob

    def b(state, data):
        if fail_at == "b":
            raise RuntimeError("b fails")
        state["b"] = sum(state["a"])
        state["b_list"] = list(range(300))  # a value large enough for its own blob

    cp.add_step(name="b")(b)
    cp.add_step(name="c")(lambda s, d: s.update(c=s["b"] * 2))
    return cp


def _snapshot_of(fs):
    return {path: bytes(f.getvalue()) for path, f in fs.store.items()}


@pytest.mark.parametrize("partial", [False, True], ids=["error", "partial-write"])
@pytest.mark.parametrize(
    "fault",
    [
        lambda path: OSError(5, "Input/output error") if "/values/" in path else None,
        lambda path: disk_full(path) if "/values/" in path else None,
        lambda path: disk_full(path) if "/records/" in path else None,
    ],
    ids=["blob-io-error", "blob-disk-full", "record-disk-full"],
)
def test_write_faults_are_clear_and_keep_the_previous_snapshot(fault, partial):
    fs = FaultyFileSystem()
    with pytest.raises(RuntimeError):
        _faulty_flow(fs, fail_at="b").run({"x": 1})
    good = _snapshot_of(fs)

    fs.write_fault, fs.partial_writes = fault, partial
    with pytest.raises(CheckpointWriteError) as info:
        _faulty_flow(fs).run({"x": 1})
    message = str(info.value)
    assert "faultymem://flow" in message and "previous checkpoint is intact" in message
    after = _snapshot_of(fs)
    for path, content in good.items():
        assert after.get(path) == content, f"{path} was damaged"

    fs.write_fault, fs.partial_writes = (lambda path: None), False
    assert _faulty_flow(fs).run({"x": 99}) == {"x": 1, "a": list(range(1000)),
                                               "b": 499500, "b_list": list(range(300)),
                                               "c": 999000}


def test_read_fault_on_load_is_clear_and_changes_nothing():
    fs = FaultyFileSystem()
    with pytest.raises(RuntimeError):
        _faulty_flow(fs, fail_at="b").run({"x": 1})
    good = _snapshot_of(fs)
    fs.read_fault = lambda path: OSError(5, "Input/output error") if "/values/" in path else None
    with pytest.raises(CheckpointReadError, match="Nothing was changed"):
        _faulty_flow(fs).run({})
    assert _snapshot_of(fs) == good
    fs.read_fault = lambda path: None
    assert _faulty_flow(fs).run({})["c"] == 999000


@pytest.mark.slow  # starts a server / imports torch
def test_s3_server_stopped_mid_run_then_restarted(monkeypatch):
    from moto.server import ThreadedMotoServer

    from tests.conftest import _free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {
        "key": "testing", "secret": "testing", "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("outage")

    def build_flow(stop_server):
        cp = CheckpointFlow("s3://outage/flow", storage_options=options)
        cp.add_step(name="a")(lambda s, d: s.update(a=1))

        def b(state, data):
            if stop_server:
                server.stop()
            state["b"] = state["a"] + 1

        cp.add_step(name="b")(b)
        cp.add_step(name="c")(lambda s, d: s.update(c=s["b"] + 1))
        return cp

    try:
        with pytest.raises((CheckpointWriteError, CheckpointReadError)) as info:
            build_flow(stop_server=True).run({})
        assert "s3://outage/flow" in str(info.value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
        cp = build_flow(stop_server=False)
        assert cp.status().resume_at == "b"
        assert cp.run({}) == {"a": 1, "b": 2, "c": 3}
    finally:
        server.stop()


# -- corruption ----------------------------------------------------------------------------------


class Tripwire:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _small_failed_flow(location, key=None, trip=None):
    cp = CheckpointFlow(location, key=key)
    cp.add_step(name="a")(
        lambda s, d: s.update(a=1, big=list(range(300)), t=Tripwire(trip) if trip else None)
    )

    def b(state, data):
        raise RuntimeError("stop")

    cp.add_step(name="b")(b)
    with pytest.raises(RuntimeError):
        cp.run({"x": 1})
    return cp


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, "signing-key"], ids=["unsigned", "signed"])
def test_every_flipped_byte_and_every_truncation_of_a_record_is_detected(tmp_path, key):
    trip = tmp_path / "tripped"
    cp = _small_failed_flow(tmp_path / "ckpt", key=key, trip=trip)
    trip.unlink(missing_ok=True)
    name = cp.store.record_names()[-1]
    path = tmp_path / "ckpt" / name
    original = path.read_bytes()
    damaged = []
    for i in range(len(original)):
        for flip in (0x01, 0x80):
            data = bytearray(original)
            data[i] ^= flip
            damaged.append(bytes(data))
    damaged += [original[:n] for n in range(len(original))]
    undetected = []
    for data in damaged:
        path.write_bytes(data)
        try:
            CheckpointFlow(tmp_path / "ckpt", key=key).state_before("b")
        except CheckpointCorruptError:
            continue
        undetected.append(data)
    path.write_bytes(original)
    assert undetected == []
    assert not trip.exists(), "a damaged record led to unpickling"
    assert CheckpointFlow(tmp_path / "ckpt", key=key).state_before("b")["a"] == 1


def test_every_flipped_byte_of_a_blob_is_detected(tmp_path):
    cp = _small_failed_flow(tmp_path)
    entry = state_entry(cp, "big")
    path = blob_file(tmp_path, entry["blob"])
    original = path.read_bytes()
    for i in range(len(original)):
        data = bytearray(original)
        data[i] ^= 0x04
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointCorruptError, match=entry["blob"]):
            CheckpointFlow(tmp_path).state_before("b")
    path.write_bytes(original)
    assert CheckpointFlow(tmp_path).state_before("b")["a"] == 1


def test_resealed_record_without_key_is_refused_when_key_is_set(tmp_path):
    cp = _small_failed_flow(tmp_path / "ckpt", key="k")
    name = cp.store.record_names()[-1]
    path = tmp_path / "ckpt" / name
    from checkpoint_flow.storage.codec import Signer

    body = unseal(path.read_bytes(), Signer(None), name)
    path.write_bytes(seal(body, Signer(None)))
    with pytest.raises(CheckpointSignatureError, match="not signed"):
        CheckpointFlow(tmp_path / "ckpt", key="k").state_before("b")


# -- concurrent runs -----------------------------------------------------------------------------

CONTENDER = """
import sys, time
from checkpoint_flow import CheckpointFlow, CheckpointLockedError

location, go_at, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cp = CheckpointFlow(location)

@cp.add_step
def work(state, data):
    with open(log, "a") as f:
        f.write("ran\\n")
    time.sleep(1.5)
    state["n"] = state["n"] + 1

@cp.add_step
def more(state, data):
    state["m"] = state["n"] * 10

while time.time() < go_at:
    time.sleep(0.001)
try:
    print(cp.run({"n": 1}))
except CheckpointLockedError as exc:
    print("LOCKED", exc)
    sys.exit(3)
"""


@pytest.mark.slow
@pytest.mark.parametrize("contenders", [2, 4])
def test_concurrent_runs_exactly_one_runs(tmp_path, contenders):
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    location, log = tmp_path / "ckpt", tmp_path / "ran.log"
    go_at = time.time() + 3.0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(location), str(go_at), str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(contenders)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0] + [3] * (contenders - 1), results
    assert log.read_text() == "ran\n"
    for (out, _err), proc in zip(results, procs, strict=True):
        if proc.returncode == 3:
            assert "is locked by pid" in out
    cp = CheckpointFlow(location)
    assert cp.verify() == []
    assert cp.state_before(-1) == {"n": 2}
