"""The StateHandler contract, method by method, on every handler the library ships and on one a
user writes: local files, file://, memory://, S3 (the moto server) and a dict-backed handler.

Whatever handler a location uses, the store relies on exactly these promises.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, StateHandler
from checkpoint_flow.storage.handlers import Buffer, Chunks, as_chunks, check_name, resolve_handler


class DictHandler:
    """The smallest handler a user could write: a dict in memory, names checked, writes whole."""

    def __init__(self, location: str = "dict://contract") -> None:
        self.location = location
        self.files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> Buffer:
        try:
            return bytearray(self.files[check_name(name)])
        except KeyError:
            raise FileNotFoundError(name) from None

    def write(self, name: str, data: Chunks) -> None:
        content = b"".join(bytes(c) for c in as_chunks(data))
        with self._lock:
            self.files[check_name(name)] = content

    def create(self, name: str, data: bytes) -> bool:
        with self._lock:
            if check_name(name) in self.files:
                return False
            self.files[name] = bytes(data)
            return True

    def exists(self, name: str) -> bool:
        return check_name(name) in self.files

    def delete(self, name: str) -> None:
        with self._lock:
            self.files.pop(check_name(name), None)

    def list(self, prefix: str) -> list[str]:
        folder = check_name(prefix) + "/"
        return sorted(n for n in self.files if n.startswith(folder))


KINDS = ["local", "file-url", "memory", "s3", "user"]


@pytest.fixture(params=KINDS)
def handler(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateHandler]:
    kind = request.param
    if kind == "local":
        yield resolve_handler(tmp_path / "loc")
    elif kind == "file-url":
        yield resolve_handler(f"file://{tmp_path}/loc")
    elif kind == "memory":
        yield resolve_handler(f"memory://contract-{uuid.uuid4().hex}")
    elif kind == "s3":
        _fs, bucket, options = request.getfixturevalue("s3")
        yield resolve_handler(f"s3://{bucket}/loc", storage_options=options)
    else:
        yield DictHandler()


def test_it_is_a_state_handler(handler: StateHandler) -> None:
    assert isinstance(handler, StateHandler)
    assert isinstance(handler.location, str) and handler.location


def test_read_of_a_missing_name_raises_file_not_found(handler: StateHandler) -> None:
    with pytest.raises(FileNotFoundError):
        handler.read("records/000000000001.rec")


def test_write_then_read_returns_the_bytes_and_accepts_chunks(handler: StateHandler) -> None:
    handler.write("values/ab/one", b"hello")
    assert bytes(handler.read("values/ab/one")) == b"hello"
    handler.write("values/ab/two", [b"he", memoryview(b"ll"), bytearray(b"o")])
    assert bytes(handler.read("values/ab/two")) == b"hello"


def test_write_replaces_whole_content(handler: StateHandler) -> None:
    handler.write("a/x", b"a much longer first version")
    handler.write("a/x", b"short")
    assert bytes(handler.read("a/x")) == b"short"


def test_create_is_exclusive(handler: StateHandler) -> None:
    assert handler.create("records/1.rec", b"first") is True
    assert handler.create("records/1.rec", b"second") is False
    assert bytes(handler.read("records/1.rec")) == b"first"


def test_create_has_one_winner_among_threads(handler: StateHandler) -> None:
    if "memory://" in handler.location:
        pytest.skip("fsspec's memory filesystem checks, then writes: not exclusive across threads")
    winners: list[int] = []
    barrier = threading.Barrier(4)

    def contend(i: int) -> None:
        barrier.wait()
        if handler.create("records/race.rec", f"writer {i}".encode()):
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert bytes(handler.read("records/race.rec")) == f"writer {winners[0]}".encode()


def test_exists_follows_writes_and_deletes(handler: StateHandler) -> None:
    assert not handler.exists("m/e")
    handler.write("m/e", b"1")
    assert handler.exists("m/e")
    handler.delete("m/e")
    assert not handler.exists("m/e")


def test_delete_of_a_missing_name_is_silent(handler: StateHandler) -> None:
    handler.delete("nothing/here")
    handler.write("k/v", b"1")
    handler.delete("k/v")
    handler.delete("k/v")
    assert not handler.exists("k/v")


def test_list_is_recursive_sorted_and_relative(handler: StateHandler) -> None:
    for name in ("v/b/2", "v/a/1", "v/a/0", "v/c", "other/x"):
        handler.write(name, b".")
    assert handler.list("v") == ["v/a/0", "v/a/1", "v/b/2", "v/c"]
    assert handler.list("v/a") == ["v/a/0", "v/a/1"]
    assert handler.list("missing") == []


def test_list_hides_temp_files(handler: StateHandler, tmp_path: Path) -> None:
    handler.write("v/kept", b".")
    if "://" not in handler.location or handler.location.startswith("file://"):
        root = Path(handler.location.removeprefix("file://"))
        (root / "v" / ".kept.tmp-0123").write_bytes(b"half")
    assert handler.list("v") == ["v/kept"]


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a//b", "a\\b", "nul\x00"])
def test_names_that_could_escape_are_refused(handler: StateHandler, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid storage name"):
        handler.write(bad, b"x")


def test_a_whole_flow_runs_on_it(handler: StateHandler) -> None:
    cp = CheckpointFlow(handler)
    cp.add_step(name="big")(lambda s, d: s.update(payload=bytes(range(256)) * 20))
    cp.add_step(name="small")(lambda s, d: s.update(n=1))
    final = cp.run({})
    assert final == {"payload": bytes(range(256)) * 20, "n": 1}
    assert cp.state_before("small")["payload"] == final["payload"]
    assert cp.verify() == []


def test_optional_methods_keep_their_promises(handler: StateHandler) -> None:
    link: Any = getattr(handler, "link", None)
    if link is not None:
        handler.write("a/source", b"content")
        link("a/source", "a/copy")
        assert bytes(handler.read("a/copy")) == b"content"
        handler.delete("a/source")
        assert bytes(handler.read("a/copy")) == b"content"  # a copy, not a pointer
    list_dir: Any = getattr(handler, "list_dir", None)
    if list_dir is not None:
        handler.write("top.ckpt", b".")
        handler.write("deep/inner.ckpt", b".")
        assert "top.ckpt" in list_dir("")
        assert all("/" not in n for n in list_dir(""))
