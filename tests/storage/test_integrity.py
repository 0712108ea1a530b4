"""The store keeps its promises when a location lives long: collection, damage, replays, locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from checkpoint_flow import (
    CheckpointFlow,
    CheckpointLockedError,
    CheckpointSignatureError,
    KeepLastRecords,
)
from tests.support.layout import blob_file, blob_files, state_entry

REPO = Path(__file__).resolve().parents[2]


def _payload(i: int) -> bytes:
    return bytes([i % 251]) * 3000  # large enough for a blob of its own


def test_a_notebook_running_one_flow_many_times_never_names_a_collected_blob(tmp_path):
    cp = CheckpointFlow(tmp_path, retention=KeepLastRecords(1))
    cp.add_step(name="double")(lambda s, d: s.update(twice=s["payload"] * 2))
    cp.add_step(name="tag")(lambda s, d: s.update(tag=len(s["twice"])))
    payloads = [_payload(i) for i in range(3)]
    for i in range(20):
        # the same objects come back run after run, as in a notebook kernel
        final = cp.run({"payload": payloads[i % 3]})
        assert final["tag"] == 6000
        cp.gc()
        assert cp.verify() == []
        fresh = CheckpointFlow(tmp_path)
        assert fresh.state_before("tag")["twice"] == payloads[i % 3] * 2
        assert fresh.state_before("double")["payload"] == payloads[i % 3]


def test_a_damaged_blob_is_rewritten_when_a_run_recomputes_it(tmp_path):
    def build(fail: bool) -> CheckpointFlow:
        cp = CheckpointFlow(tmp_path)
        cp.add_step(name="a")(lambda s, d: s.update(a=list(range(400))))

        def b(state, data):
            if fail:
                raise RuntimeError("stop")
            state["b"] = sum(state["a"])

        cp.add_step(name="b")(b)
        return cp

    with pytest.raises(RuntimeError):
        build(fail=True).run({})
    cp = build(fail=False)
    path = blob_file(tmp_path, state_entry(cp, "a")["blob"])
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert cp.verify(), "verify must see the damage"

    assert cp.run({}, on_corrupt="previous")["b"] == sum(range(400))
    assert path.read_bytes() == original  # the recomputed value healed the blob
    cp.gc()
    assert cp.verify() == []
    assert CheckpointFlow(tmp_path).state_before("b")["a"] == list(range(400))


@pytest.mark.slow  # a stress run of several seconds
def test_collection_beside_memoized_calls_never_breaks_an_entry(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="s")(lambda s, d: s.update(x=_payload(1)))
    cp.run({})

    computed: list[int] = []

    @cp.cached
    def heavy(i: int) -> bytes:
        computed.append(i)
        return _payload(i) * 2

    stop = threading.Event()
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        i = offset
        try:
            while not stop.is_set():
                assert heavy(i % 40) == _payload(i % 40) * 2
                i += 3
        except BaseException as exc:  # noqa: BLE001  reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    collections = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        cp.gc()
        collections += 1
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert collections > 5
    assert set(computed) == set(range(40))
    before = len(computed)
    assert [heavy(i) for i in range(40)] == [_payload(i) * 2 for i in range(40)]
    assert len(computed) == before, "an entry stored during collection was lost"
    assert cp.verify() == []


def test_temp_files_of_killed_writes_are_removed_after_a_grace_period(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="s")(lambda s, d: s.update(x=_payload(1)))
    cp.run({})
    folder = blob_files(tmp_path)[0].parent
    stale = folder / ".0123.tmp-deadbeef"
    fresh = folder / ".4567.tmp-cafebabe"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"x" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    cp.gc()
    assert not stale.exists()
    assert fresh.exists(), "a young temp file may be a write in progress"
    assert cp.verify() == []


def test_a_signed_record_replayed_under_a_newer_number_is_refused(tmp_path):
    cp = CheckpointFlow(tmp_path, key="k")
    cp.add_step(name="a")(lambda s, d: s.update(a=1))

    def b(state, data):
        raise RuntimeError("stop")

    cp.add_step(name="b")(b)
    with pytest.raises(RuntimeError):
        cp.run({})
    records = sorted((tmp_path / "records").glob("*.rec"))
    oldest, newest = records[0], records[-1]
    seq = int(newest.name.split(".")[0]) + 1
    shutil.copy(oldest, newest.with_name(f"{seq:012d}." + oldest.name.split(".", 1)[1]))
    with pytest.raises(CheckpointSignatureError, match="copied or renamed"):
        CheckpointFlow(tmp_path, key="k").status()
    problems = CheckpointFlow(tmp_path, key="k").verify()
    assert any("copied or renamed" in p for p in problems)


_STARVED_HOLDER = """
import sys, time
from checkpoint_flow.storage.handlers import resolve_handler
from checkpoint_flow.storage.locks import run_lock
lock = run_lock(resolve_handler(sys.argv[1]), ttl_s=0.5)
lock.acquire()
# A long call holding the GIL starves the heartbeat: stop it to stand for that.
lock._stop.set()
lock._heartbeat.join()
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.slow  # a stress run of several seconds
def test_a_live_holder_on_this_host_is_never_taken_over_even_when_its_record_expired(tmp_path):
    url = f"file://{tmp_path}/loc"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-c", _STARVED_HOLDER, url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(1.0)  # twice the ttl: the record has expired
        record = json.loads((tmp_path / "loc" / "lock.json").read_text())
        assert record["expires_at"] < time.time()
        cp = CheckpointFlow(url, lock_ttl_s=0.5)
        cp.add_step(name="s")(lambda s, d: None)
        with pytest.raises(CheckpointLockedError, match=f"pid {holder.pid}"):
            cp.run({})
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone for real now: its lock is taken over
    assert cp.run({}) == {}


def test_a_run_that_lost_its_lock_stops_before_its_next_commit(tmp_path):
    url = f"file://{tmp_path}/loc"
    lock_file = tmp_path / "loc" / "lock.json"
    cp = CheckpointFlow(url, lock_ttl_s=0.6)
    cp.add_step(name="a")(lambda s, d: s.update(a=1))

    def taken_over(state, data):
        # another run takes the lock over while this step runs
        record = json.loads(lock_file.read_text())
        record.update(token="someone-else", pid=record["pid"] + 1)
        lock_file.write_text(json.dumps(record))
        time.sleep(0.5)  # the heartbeat notices
        state["b"] = 2

    cp.add_step(name="b")(taken_over)
    cp.add_step(name="c")(lambda s, d: s.update(c=3))
    with pytest.raises(CheckpointLockedError, match="lost its run lock"):
        cp.run({})
    lock_file.unlink()
    again = CheckpointFlow(url)
    again.add_step(name="a")(lambda s, d: s.update(a=1))
    again.add_step(name="b")(lambda s, d: s.update(b=2))
    again.add_step(name="c")(lambda s, d: s.update(c=3))
    assert again.status().resume_at == "b"  # step b's result was never committed


def test_collection_runs_only_when_something_can_have_become_garbage(tmp_path, monkeypatch):
    from checkpoint_flow.storage.store import PENDING, Store

    calls: list[int] = []
    real_collect = Store.collect

    def counting(self, keep):
        calls.append(1)
        return real_collect(self, keep)

    monkeypatch.setattr(Store, "collect", counting)
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="s")(lambda s, d: s.update(x=_payload(len(s))))
    cp.run({})
    cp.run({})
    assert calls == []  # nothing an earlier collection kept was dropped yet
    cp.run({})
    assert calls == [1]  # the first run's last record is no longer kept

    def failing(self, keep):
        calls.append(1)
        raise OSError("storage went away")

    monkeypatch.setattr(Store, "collect", failing)
    assert cp.run({}) == {"x": _payload(0)}  # housekeeping never fails a finished run
    assert (tmp_path / PENDING).exists()
    monkeypatch.setattr(Store, "collect", counting)
    calls.clear()
    cp.retention = KeepLastRecords(10_000)  # drops nothing: only the failure asks for a retry
    cp.run({})
    assert calls == [1] and not (tmp_path / PENDING).exists()
    cp.run({})
    assert calls == [1]
    assert cp.verify() == []


_COLLECTOR = """
import sys, time
from checkpoint_flow import CheckpointFlow, CheckpointLockedError
cp = CheckpointFlow(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
done = 0
while time.monotonic() < deadline:
    try:
        cp.gc()
        done += 1
    except CheckpointLockedError:
        pass
print(done, flush=True)
"""


@pytest.mark.slow  # a stress run of several seconds
def test_collection_in_another_process_beside_memoized_calls_never_breaks_an_entry(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="s")(lambda s, d: s.update(x=_payload(1)))
    cp.run({})
    computed: list[int] = []

    @cp.cached
    def heavy(i: int) -> bytes:
        computed.append(i)
        return _payload(i) * 3

    env = dict(os.environ, PYTHONPATH=str(REPO))
    collector = subprocess.Popen(
        [sys.executable, "-c", _COLLECTOR, str(tmp_path), "3"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 3
    i = 0
    while time.monotonic() < deadline:
        assert heavy(i % 30) == _payload(i % 30) * 3
        i += 1
    out, _ = collector.communicate(timeout=60)
    assert collector.returncode == 0 and int(out) > 3
    before = len(computed)
    assert [heavy(i) for i in range(30)] == [_payload(i) * 3 for i in range(30)]
    assert len(computed) == before, "an entry stored during collection was lost"
    assert cp.verify() == []
