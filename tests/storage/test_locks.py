"""One run at a time: a second run on a held location is refused at once, naming the holder."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from checkpoint_flow.errors import CheckpointCorruptError, CheckpointLockedError
from checkpoint_flow.storage.handlers import FsspecHandler, LocalHandler, StateHandler
from checkpoint_flow.storage.locks import (
    FileRunLock,
    LockHolder,
    RecordRunLock,
    _machine_id,
    read_holder,
    run_lock,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# A holder in its own process: takes the lock, says so, then waits until killed.
HOLDER_SCRIPT = """
import json, sys
from checkpoint_flow.storage.handlers import resolve_handler
from checkpoint_flow.storage.locks import run_lock

location, options = sys.argv[1], json.loads(sys.argv[2])
lock = run_lock(resolve_handler(location, storage_options=options or None), ttl_s=60.0)
lock.acquire()
sys.stdout.write("locked\\n")
sys.stdout.flush()
sys.stdin.read()
"""

HandlerFactory = Callable[[], StateHandler]


@pytest.fixture
def holder_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts processes that hold a run lock; kills any still running at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(location: str, options: dict | None = None) -> subprocess.Popen[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, location, json.dumps(options or {})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        # readline returns "" if the holder died before taking the lock, which fails here.
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(params=["s3", "memory", "file"])
def new_handler(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HandlerFactory]:
    """A factory of independent handlers on one fresh record-lock location."""
    if request.param == "s3":
        _fs, bucket, options = request.getfixturevalue("s3")
        yield lambda: FsspecHandler(f"s3://{bucket}/loc", options)
    elif request.param == "memory":
        bucket = f"memory://locks-{uuid.uuid4().hex}"
        yield lambda: FsspecHandler(f"{bucket}/loc")
        fs = FsspecHandler(bucket).fs
        if fs.exists(bucket):
            fs.rm(bucket, recursive=True)
    else:
        yield lambda: FsspecHandler(f"file://{tmp_path}/loc")


@pytest.fixture
def s3_handler(s3: tuple) -> HandlerFactory:
    _fs, bucket, options = s3
    return lambda: FsspecHandler(f"s3://{bucket}/loc", options)


@pytest.fixture(params=["s3", "file"])
def shared_handler(request: pytest.FixtureRequest, tmp_path: Path) -> HandlerFactory:
    """Handlers on a store whose exclusive create holds across threads and processes.

    memory:// is left out: its create checks and then writes, which only one thread at a time
    can be trusted with.
    """
    if request.param == "s3":
        return request.getfixturevalue("s3_handler")
    return lambda: FsspecHandler(f"file://{tmp_path}/loc")


def _plant(handler: StateHandler, name: str = "lock.json", **fields: object) -> LockHolder:
    """Write a lock record directly, as a run on another machine would have left it."""
    record = {
        "host": "elsewhere",
        "pid": 4242,
        "since": time.time() - 3600,
        "token": uuid.uuid4().hex,
        "expires_at": time.time() - 60,
        "machine": None,
    }
    record.update(fields)
    handler.write(name, json.dumps(record).encode())
    return LockHolder(
        host=str(record["host"]),
        pid=int(record["pid"]),  # type: ignore[call-overload]
        since=float(record["since"]),  # type: ignore[arg-type]
        token=str(record["token"]),
        expires_at=record["expires_at"],  # type: ignore[arg-type]
    )


def _record(handler: StateHandler) -> dict:
    return json.loads(bytes(handler.read("lock.json")))


# --- local directories: an OS file lock -------------------------------------------------------


def test_second_process_is_refused_until_the_holder_is_killed(
    tmp_path: Path, holder_process: Callable[..., subprocess.Popen[str]]
) -> None:
    location = tmp_path / "run"
    proc = holder_process(str(location))
    handler = LocalHandler(location)
    lock = run_lock(handler)
    assert isinstance(lock, FileRunLock)

    with pytest.raises(CheckpointLockedError) as refused:
        lock.acquire()
    message = str(refused.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in message
    assert str(location) in message
    assert "Wait for it to finish" in message
    assert lock.holder is not None and lock.holder.pid == proc.pid
    assert not lock.held
    seen = read_holder(handler)
    assert seen is not None and seen.pid == proc.pid and seen.expires_at is None

    _kill(proc)
    # The kernel dropped the dead holder's lock; its record is left behind but known stale.
    assert read_holder(handler) is None
    lock.acquire()
    try:
        assert lock.holder is not None and lock.holder.pid == os.getpid()
        assert read_holder(handler) == lock.holder
    finally:
        lock.release()


def test_acquire_release_and_acquire_again_in_one_process(tmp_path: Path) -> None:
    handler = LocalHandler(tmp_path / "not" / "yet" / "there")
    first = run_lock(handler)
    first.acquire()
    assert first.held and read_holder(handler) == first.holder

    # A second lock object in the same process is a second run too.
    other = run_lock(LocalHandler(handler.root))
    with pytest.raises(CheckpointLockedError, match=f"pid {os.getpid()}"):
        other.acquire()

    first.release()
    first.release()  # idempotent
    assert not first.held and first.holder is None
    assert not handler.exists("lock.json")
    assert read_holder(handler) is None

    with other as entered:
        assert entered is other and other.held
        with pytest.raises(CheckpointLockedError):
            first.acquire()
    assert not other.held
    first.acquire()
    first.release()


def test_lock_is_released_when_the_with_block_raises(tmp_path: Path) -> None:
    handler = LocalHandler(tmp_path)
    with pytest.raises(KeyError), run_lock(handler):
        raise KeyError("step failed")
    with run_lock(handler) as lock:
        assert lock.held


def test_acquiring_twice_through_one_object_is_a_bug(tmp_path: Path) -> None:
    lock = run_lock(LocalHandler(tmp_path))
    with lock, pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
    assert not lock.held


def test_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        run_lock(LocalHandler(tmp_path), ttl_s=0)


# --- every other store: a record lock ---------------------------------------------------------


def test_second_run_is_refused_naming_the_holder(new_handler: HandlerFactory) -> None:
    first = run_lock(new_handler(), ttl_s=30)
    second = run_lock(new_handler(), ttl_s=30)
    assert isinstance(first, RecordRunLock)

    with first:
        with pytest.raises(CheckpointLockedError) as refused:
            second.acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert "a crashed holder's lock expires at" in message
        assert "lock.json" in message
        assert second.holder is not None and second.holder.token == first.holder.token
        seen = read_holder(new_handler())
        assert seen == first.holder
        assert seen.expires_at is not None and seen.expires_at > time.time()

    assert read_holder(new_handler()) is None
    assert not new_handler().exists("lock.json")
    with second:
        assert second.held


def test_expired_record_is_taken_over_with_a_warning(
    new_handler: HandlerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    handler = new_handler()
    dead = _plant(handler)
    assert read_holder(handler) is None  # expired counts as nobody

    lock = run_lock(handler, ttl_s=0.5)
    with caplog.at_level(logging.WARNING, logger="checkpoint_flow.storage.locks"):
        lock.acquire()
    try:
        assert _record(handler)["token"] == lock.holder.token != dead.token
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "taking over" in warnings[0].getMessage()
        assert "pid 4242 on host elsewhere" in warnings[0].getMessage()
        assert handler.list("lock-takeover") == []
    finally:
        lock.release()
    assert not handler.exists("lock.json")


def test_live_record_of_another_machine_is_respected(new_handler: HandlerFactory) -> None:
    handler = new_handler()
    _plant(handler, expires_at=time.time() + 600)
    expected = "pid 4242 on host elsewhere since .*expires at"
    with pytest.raises(CheckpointLockedError, match=expected):
        run_lock(handler, ttl_s=0.5).acquire()
    assert _record(handler)["pid"] == 4242


def test_takeover_marker_left_by_a_crashed_contender_does_not_block_for_ever(
    new_handler: HandlerFactory,
) -> None:
    handler = new_handler()
    dead = _plant(handler)
    _plant(handler, f"lock-takeover/{dead.token}", host="crashed-contender")

    with run_lock(handler, ttl_s=5) as lock:
        assert _record(handler)["token"] == lock.holder.token
        assert handler.list("lock-takeover") == []


def test_stale_marker_being_claimed_by_another_contender_is_left_to_it(
    new_handler: HandlerFactory,
) -> None:
    handler = new_handler()
    dead = _plant(handler)
    crashed = _plant(handler, f"lock-takeover/{dead.token}", host="crashed-contender")
    _plant(handler, f"lock-takeover/{crashed.token}", expires_at=time.time() + 600)

    with pytest.raises(CheckpointLockedError):
        run_lock(handler, ttl_s=5).acquire()
    assert handler.list("lock-takeover") == sorted(
        [f"lock-takeover/{dead.token}", f"lock-takeover/{crashed.token}"]
    )
    assert _record(handler)["token"] == dead.token


def test_contender_in_the_middle_of_a_takeover_wins(new_handler: HandlerFactory) -> None:
    handler = new_handler()
    dead = _plant(handler)
    _plant(handler, f"lock-takeover/{dead.token}", expires_at=time.time() + 600)

    with pytest.raises(CheckpointLockedError):
        run_lock(handler, ttl_s=5).acquire()
    assert _record(handler)["token"] == dead.token


def test_unreadable_young_record_is_not_taken_over(new_handler: HandlerFactory) -> None:
    handler = new_handler()
    handler.write("lock.json", b'{"host": "half-writ')
    with pytest.raises(CheckpointLockedError, match="cannot be read"):
        run_lock(handler, ttl_s=30).acquire()
    with pytest.raises(CheckpointCorruptError, match="lock.json"):
        read_holder(handler)
    assert bytes(handler.read("lock.json")) == b'{"host": "half-writ'


def test_heartbeat_never_overwrites_a_record_that_is_not_its_own(
    new_handler: HandlerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    handler = new_handler()
    lock = run_lock(handler, ttl_s=0.3)
    with caplog.at_level(logging.ERROR, logger="checkpoint_flow.storage.locks"):
        lock.acquire()
        # As if this run had been paused past its ttl and another run had taken over.
        usurper = _plant(handler, expires_at=time.time() + 600)
        deadline = time.monotonic() + 30
        while "lost the run lock" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "lost the run lock" in caplog.text
        lock.release()
    assert _record(handler)["token"] == usurper.token
    assert "no longer ours when released" in caplog.text


def test_heartbeat_stops_on_release(new_handler: HandlerFactory) -> None:
    handler = new_handler()
    lock = run_lock(handler, ttl_s=0.3)
    lock.acquire()
    beating = [t for t in threading.enumerate() if handler.location in t.name]
    assert len(beating) == 1 and beating[0].daemon
    lock.release()
    assert not beating[0].is_alive()
    assert not handler.exists("lock.json")


@pytest.mark.slow
def test_heartbeat_keeps_the_lock_of_a_long_step(
    s3_handler: HandlerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = 1.0
    lock = run_lock(s3_handler(), ttl_s=ttl)
    with caplog.at_level(logging.WARNING, logger="checkpoint_flow.storage.locks"), lock:
        first_expiry = lock.holder.expires_at
        # Past the first expiry (and then some): without renewals the lock would be free now.
        while time.time() < first_expiry + ttl:
            time.sleep(0.1)
        with pytest.raises(CheckpointLockedError):
            run_lock(s3_handler(), ttl_s=ttl).acquire()
        assert _record(s3_handler())["expires_at"] > first_expiry
        assert _record(s3_handler())["token"] == lock.holder.token
    assert not [r for r in caplog.records if "taking over" in r.getMessage()]


def _race(handlers: list[StateHandler], ttl_s: float) -> tuple[list[RecordRunLock], list]:
    """Every handler's lock calls acquire at the same moment; returns winners and failures."""
    locks = [run_lock(h, ttl_s=ttl_s) for h in handlers]
    start = threading.Barrier(len(locks))
    won: list = []
    lost: list = []

    def contend(lock: RecordRunLock) -> None:
        start.wait()
        try:
            lock.acquire()
        except CheckpointLockedError as exc:
            lost.append(exc)
        else:
            won.append(lock)

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


@pytest.mark.parametrize("round_", range(2))
def test_four_runs_starting_at_once_get_one_lock(
    shared_handler: HandlerFactory, round_: int
) -> None:
    won, lost = _race([shared_handler() for _ in range(4)], ttl_s=30)
    try:
        assert len(won) == 1 and len(lost) == 3
        assert _record(shared_handler())["token"] == won[0].holder.token
    finally:
        for lock in won:
            lock.release()


@pytest.mark.parametrize("round_", range(2))
def test_four_runs_finding_an_expired_lock_take_it_over_once(
    shared_handler: HandlerFactory, round_: int
) -> None:
    _plant(shared_handler())
    won, lost = _race([shared_handler() for _ in range(4)], ttl_s=30)
    try:
        assert len(won) == 1 and len(lost) == 3
        assert _record(shared_handler())["token"] == won[0].holder.token
        assert shared_handler().list("lock-takeover") == []
    finally:
        for lock in won:
            lock.release()


@pytest.mark.skipif(_machine_id() is None, reason="needs /proc to tell this machine's pids")
def test_lock_of_a_killed_process_on_this_machine_is_taken_over_before_it_expires(
    s3: tuple,
    holder_process: Callable[..., subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _fs, bucket, options = s3
    location = f"s3://{bucket}/loc"
    proc = holder_process(location, options)
    handler = FsspecHandler(location, options)
    with pytest.raises(CheckpointLockedError, match=f"pid {proc.pid} "):
        run_lock(handler).acquire()

    _kill(proc)
    assert _record(handler)["expires_at"] > time.time() + 30  # far from expiring
    assert read_holder(handler) is None
    with (
        caplog.at_level(logging.WARNING, logger="checkpoint_flow.storage.locks"),
        run_lock(handler) as lock,
    ):
        assert _record(handler)["token"] == lock.holder.token
    assert "no longer exists on this machine" in caplog.text


def test_same_hostname_is_not_enough_to_judge_a_pid(new_handler: HandlerFactory) -> None:
    """Containers can share a hostname while their pids live in different namespaces."""
    handler = new_handler()
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(finished.stdout)
    _plant(
        handler,
        host=socket.gethostname(),
        pid=dead_pid,
        expires_at=time.time() + 600,
        machine="another-boot/pid:[1]",
    )
    with pytest.raises(CheckpointLockedError, match=f"pid {dead_pid} "):
        run_lock(handler).acquire()
