"""Where checkpoints live: handlers, incremental snapshots, integrity, signing, collection."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from checkpoint_flow import (
    CheckpointCorruptError,
    CheckpointFlow,
    CheckpointFormatError,
    CheckpointSignatureError,
    FsspecHandler,
    KeepLastRecords,
    LocalHandler,
    RecordSummary,
)
from checkpoint_flow.storage.store import FORMAT_VERSION
from tests.support.layout import blob_file, blob_files, state_entry


def _three_steps(cp, fail=False):
    cp.add_step(name="a")(lambda s, d: s.update(a=list(range(300))))  # big enough for a blob

    def b(state, data):
        if fail:
            raise RuntimeError("b failed")
        state["b"] = sum(state["a"])

    cp.add_step(name="b")(b)
    cp.add_step(name="c")(lambda s, d: s.update(c=s["b"] + 1))
    return cp


def _story(make_flow):
    with pytest.raises(RuntimeError):
        _three_steps(make_flow(), fail=True).run({"x": 1})
    cp = _three_steps(make_flow())
    assert cp.status().resume_at == "b"
    assert cp.run({"x": 2}) == {"x": 1, "a": list(range(300)), "b": 44850, "c": 44851}


def test_handler_is_chosen_from_the_location(tmp_path):
    assert isinstance(CheckpointFlow(tmp_path).handler, LocalHandler)
    assert isinstance(CheckpointFlow("memory://flows/x").handler, FsspecHandler)
    assert isinstance(CheckpointFlow(f"file://{tmp_path}/f").handler, FsspecHandler)
    assert isinstance(CheckpointFlow(tmp_path, handler="fsspec").handler, FsspecHandler)
    custom = LocalHandler(tmp_path / "custom")
    assert CheckpointFlow("ignored", handler=custom).handler is custom
    assert isinstance(CheckpointFlow(tmp_path / "k", handler=LocalHandler).handler, LocalHandler)


def test_story_on_memory_filesystem():
    import uuid

    url = f"memory://cf-{uuid.uuid4().hex}"
    _story(lambda: CheckpointFlow(url))


def test_story_on_file_url(tmp_path):
    _story(lambda: CheckpointFlow(f"file://{tmp_path}/ckpt"))
    assert (tmp_path / "ckpt" / "records").is_dir()


def test_story_on_s3_server(s3):
    fs, bucket, options = s3
    _story(lambda: CheckpointFlow(f"s3://{bucket}/etl", storage_options=options))
    fs.invalidate_cache()
    assert fs.ls(f"{bucket}/etl/records")
    assert fs.ls(f"{bucket}/etl/values")


def test_large_value_round_trip_on_s3_uses_multipart(s3):
    np = pytest.importorskip("numpy")
    _fs, bucket, options = s3
    cp = CheckpointFlow(f"s3://{bucket}/big", storage_options=options)
    big = np.arange(9 * 2**20, dtype="f8")  # 72 MiB: above the single-PUT limit

    def fail(state, data):
        raise RuntimeError("stop")

    cp.add_step(name="make")(lambda s, d: s.update(arr=big))
    cp.add_step(name="use")(fail)
    with pytest.raises(RuntimeError):
        cp.run({})
    restored = cp.state_before("use")["arr"]
    assert np.array_equal(restored, big)
    restored[0] = -1  # resumed arrays are writable
    assert restored[0] == -1


def test_unchanged_values_are_not_written_again(tmp_path):
    np = pytest.importorskip("numpy")
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="make")(lambda s, d: s.update(arr=np.ones(1_000_000), blob=b"x" * 10**6))
    for i in range(3):
        cp.add_step(name=f"tick{i}")(lambda s, d: s.update(counter=s.get("counter", 0) + 1))
    cp.run({})
    steps = {s.name: s for s in cp.status().steps}
    assert steps["make"].bytes_written > 9_000_000
    for i in range(3):
        # the commit record (with the step's small changed value inline) and nothing else
        assert 0 < steps[f"tick{i}"].bytes_written < 4000
    # arr and blob; the small counter values ride inline in the records
    assert len(blob_files(tmp_path)) == 2


def test_in_place_array_change_is_detected(tmp_path):
    np = pytest.importorskip("numpy")
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="make")(lambda s, d: s.update(arr=np.zeros(1000)))

    def bump(state, data):
        state["arr"][500] = 7.0

    def stop(state, data):
        raise RuntimeError("stop")

    cp.add_step(name="bump")(bump)
    cp.add_step(name="stop")(stop)
    with pytest.raises(RuntimeError):
        cp.run({})
    assert cp.state_before("bump")["arr"][500] == 0.0
    assert cp.state_before("stop")["arr"][500] == 7.0


def _failed_flow(location, **kwargs):
    cp = _three_steps(CheckpointFlow(location, **kwargs), fail=True)
    with pytest.raises(RuntimeError):
        cp.run({"x": 1})
    return cp


def _records(root: Path) -> list[Path]:
    return sorted((root / "records").glob("*.rec"))


def test_corrupt_blob_names_step_key_and_blob(tmp_path):
    _failed_flow(tmp_path)
    cp = _three_steps(CheckpointFlow(tmp_path))
    manifest_entry = state_entry(cp, "a")
    path = blob_file(tmp_path, manifest_entry["blob"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError) as info:
        cp.run({})
    message = str(info.value)
    assert "'a'" in message and "'b'" in message and manifest_entry["blob"] in message
    assert "on_corrupt='previous'" in message


def test_missing_blob_is_an_error_not_a_fresh_start(tmp_path):
    _failed_flow(tmp_path)
    cp = _three_steps(CheckpointFlow(tmp_path))
    entry = state_entry(cp, "a")
    blob_file(tmp_path, entry["blob"]).unlink()
    with pytest.raises(CheckpointCorruptError, match="missing"):
        cp.run({})
    assert cp.verify(), "verify must report the missing blob"


@pytest.mark.parametrize("cut", [0, 1, 10, -40, -1])
def test_truncated_record_is_an_error_not_a_fresh_start(tmp_path, cut):
    _failed_flow(tmp_path)
    newest = _records(tmp_path)[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[:cut])
    cp = _three_steps(CheckpointFlow(tmp_path))
    with pytest.raises(CheckpointCorruptError, match=r"records/.*\.rec"):
        cp.run({"x": 1})


def test_on_corrupt_previous_falls_back_and_logs(tmp_path, caplog):
    _failed_flow(tmp_path)
    newest = _records(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:-5])
    caplog.set_level(logging.WARNING)
    cp = _three_steps(CheckpointFlow(tmp_path))
    final = cp.run({"x": 1}, on_corrupt="previous")
    assert final["c"] == 44851
    assert "fell back" in caplog.text


def test_unknown_format_version_is_refused(tmp_path):
    cp = _failed_flow(tmp_path)
    record = cp.store.latest_record()
    record["format"] = FORMAT_VERSION + 1
    from checkpoint_flow.storage.codec import seal

    newest = _records(tmp_path)[-1]
    newest.write_bytes(seal(record, cp.store.signer))
    with pytest.raises(CheckpointFormatError, match=r"storage format 3.*reads format 2"):
        _three_steps(CheckpointFlow(tmp_path)).run({})


def test_location_written_by_format_1_is_refused_never_misread(tmp_path):
    # What checkpoint_flow 0.1 left: blobs/ and format-1 records.
    (tmp_path / "blobs" / "ab").mkdir(parents=True)
    (tmp_path / "blobs" / "ab" / ("ab" * 16)).write_bytes(b"CFB1")
    (tmp_path / "records").mkdir()
    from checkpoint_flow.storage.codec import Signer, seal

    (tmp_path / "records" / "000000000001.rec").write_bytes(
        seal({"format": 1, "kind": "flow", "seq": 1}, Signer(None))
    )
    cp = _three_steps(CheckpointFlow(tmp_path))
    for attempt in (lambda: cp.run({}), cp.status, cp.verify, cp.gc):
        with pytest.raises(CheckpointFormatError, match=r"checkpoint_flow 0.1.*format 1"):
            attempt()
    memoized = cp.cached(lambda x: x)
    with pytest.raises(CheckpointFormatError, match="checkpoint_flow==0.1.0"):
        memoized(1)
    # nothing was written but the run lock's file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "lock", "records"]
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["000000000001.rec"]


class Tripwire:
    """Unpickling this writes a file: proof that a refused record was never unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_signed_checkpoint_refuses_tampering_before_unpickling(tmp_path):
    trip = tmp_path / "tripped"
    cp = CheckpointFlow(tmp_path / "ckpt", key="s3cret")
    cp.add_step(name="a")(lambda s, d: s.update(t=Tripwire(trip)))

    def stop(state, data):
        raise RuntimeError("stop")

    cp.add_step(name="b")(stop)
    with pytest.raises(RuntimeError):
        cp.run({})
    trip.unlink(missing_ok=True)

    newest = _records(tmp_path / "ckpt")[-1]
    raw = newest.read_bytes()
    body, _, trailer = raw.rpartition(b"\n")
    tampered = body.replace(b'"outcome":"failed"', b'"outcome":"done"  ')
    assert tampered != body
    import hashlib
    import json

    fake = json.loads(trailer)
    fake["sha256"] = hashlib.sha256(tampered).hexdigest()
    newest.write_bytes(tampered + b"\n" + json.dumps(fake).encode())
    again = CheckpointFlow(tmp_path / "ckpt", key="s3cret")
    again.add_step(name="a")(lambda s, d: None)
    again.add_step(name="b")(lambda s, d: None)
    with pytest.raises(CheckpointSignatureError, match="does not match the configured key"):
        again.run({})
    assert not trip.exists()

    with pytest.raises(CheckpointSignatureError):
        CheckpointFlow(tmp_path / "ckpt", key="other").status()


def test_key_from_environment_refuses_unsigned_checkpoint(tmp_path, monkeypatch):
    _failed_flow(tmp_path)
    monkeypatch.setenv("CHECKPOINT_FLOW_KEY", "from-env")
    with pytest.raises(CheckpointSignatureError, match="not signed"):
        _three_steps(CheckpointFlow(tmp_path)).run({})


def test_signed_checkpoint_needs_the_key_to_load(tmp_path):
    _failed_flow(tmp_path, key=b"k")
    with pytest.raises(CheckpointSignatureError, match="written with a signing key"):
        CheckpointFlow(tmp_path).status()
    assert _three_steps(CheckpointFlow(tmp_path, key=b"k")).run({})["c"] == 44851


def test_swapped_blob_is_refused_with_a_key(tmp_path):
    cp = _failed_flow(tmp_path, key="k")
    entry = state_entry(cp, "a")
    path = blob_file(tmp_path, entry["blob"])
    from checkpoint_flow.storage.codec import encode

    forged = encode(list(range(99)))
    path.write_bytes(b"".join(bytes(c) for c in forged.chunks))
    with pytest.raises(CheckpointCorruptError, match="does not match its hash"):
        _three_steps(CheckpointFlow(tmp_path, key="k")).run({})


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "a/../../b", "..", "ü/ñ\\x"])
def test_step_names_never_escape_the_location(tmp_path, name):
    location = tmp_path / "inner" / "ckpt"
    cp = CheckpointFlow(location)
    cp.add_step(name=name)(lambda s, d: s.update(v=1))
    cp.run({})
    files = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    assert all(p.is_relative_to(location.resolve()) for p in files)
    assert cp.status().steps[0].name == name


def test_collection_keeps_what_retained_records_name(tmp_path):
    np = pytest.importorskip("numpy")
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="a")(lambda s, d: s.update(arr=np.random.default_rng().random(1000)))
    cp.add_step(name="b")(lambda s, d: s.update(n=s.get("n", 0) + 1))
    for _ in range(4):
        cp.run({})
    # default rule: the latest run's records and the previous run's last one
    bodies = [
        cp.store.read_record(r.relative_to(tmp_path).as_posix()) for r in _records(tmp_path)
    ]
    assert len({b["run"]["id"] for b in bodies}) == 2
    assert cp.verify() == []
    kept = cp.retention([RecordSummary(b["seq"], "", b["run"]["id"]) for b in bodies])
    _needed, referenced = cp.store.reachable([b for b in bodies if b["seq"] in kept])
    assert {p.name for p in blob_files(tmp_path)} == referenced

    dropped, removed = CheckpointFlow(tmp_path, retention=KeepLastRecords(1)).gc()
    assert dropped > 0 and removed > 0
    # Only the newest record is kept; the records it reaches nodes in stay as well.
    newest = cp.store.latest_record()
    needed, referenced = cp.store.reachable([newest])
    remaining = [
        cp.store.read_record(r.relative_to(tmp_path).as_posix()) for r in _records(tmp_path)
    ]
    assert {b["seq"] for b in remaining} == needed | {newest["seq"]}
    assert {b["run"]["id"] for b in remaining} == {newest["run"]["id"]}
    assert {p.name for p in blob_files(tmp_path)} == referenced
    assert cp.state_before("a") == {}
    assert cp.verify() == []


def test_retention_rule_validates_its_argument():
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        KeepLastRecords(0)
    with pytest.raises(TypeError, match="retention must be callable"):
        CheckpointFlow("memory://x", retention=3)


def test_write_failure_is_reported_and_previous_checkpoint_survives(tmp_path, monkeypatch):
    from checkpoint_flow import CheckpointWriteError

    cp = _failed_flow(tmp_path)
    before = {p: p.read_bytes() for p in _records(tmp_path)}
    real_write = LocalHandler.write

    def full_disk(self, name, data):
        if name.startswith("values/"):
            raise OSError(28, "No space left on device")
        return real_write(self, name, data)

    monkeypatch.setattr(LocalHandler, "write", full_disk)
    cp = _three_steps(CheckpointFlow(tmp_path))
    cp.add_step(name="b")(lambda s, d: s.update(b=list(range(500))))  # needs a blob
    with pytest.raises(CheckpointWriteError, match="No space left.*previous checkpoint is intact"):
        cp.run({})
    for path, content in before.items():
        assert path.read_bytes() == content
    monkeypatch.setattr(LocalHandler, "write", real_write)
    assert _three_steps(CheckpointFlow(tmp_path)).run({})["c"] == 44851


def test_local_writes_leave_no_temporary_files(tmp_path):
    _three_steps(CheckpointFlow(tmp_path)).run({})
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert os.listdir(tmp_path)


def test_zstd_compression_is_per_blob_recorded_and_transparent(tmp_path):
    import os as _os

    compressible = b"checkpoint " * 20_000
    noise = _os.urandom(200_000)

    def build(location, compress):
        cp = CheckpointFlow(location, compress=compress)
        cp.add_step(name="a")(lambda s, d: s.update(text=compressible, noise=noise))
        cp.add_step(name="b")(lambda s, d: s.update(n=1))
        return cp

    plain, packed = tmp_path / "plain", tmp_path / "packed"
    assert build(plain, None).run({}) == build(packed, "zstd").run({})
    sizes = {p.name: p.stat().st_size for p in blob_files(packed)}
    assert min(sizes.values()) < len(compressible) // 20  # the text shrank
    assert max(sizes.values()) >= len(noise)  # random bytes cannot
    assert all(p.read_bytes()[:4] == b"CFZ1" for p in blob_files(packed))
    fresh = build(packed, "zstd")
    assert fresh.state_before("b")["text"] == compressible
    # the digest is the plain content's: turning compression off is not a change of the value
    assert build(packed, None).run({}, checkpoint="b")["noise"] == noise
    assert CheckpointFlow(packed).verify() == []
    with pytest.raises(ValueError, match="compress='gzip'.*'zstd'"):
        CheckpointFlow(tmp_path / "x", compress="gzip")
