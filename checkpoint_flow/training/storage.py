"""Where training checkpoints are kept: the one place that writes, lists, reads and deletes
checkpoint files and their catalogue records, through a handler.

Layout in the location: checkpoint files at the top (see :mod:`.naming`), one record per
committed file under ``index/<file>.json`` (see :mod:`.records`). The protocol:

- a save writes the file (atomically, by the handler), then its record: the record is the
  commit, so a record always names a complete file, and a file without a record is a save
  that never committed;
- a deletion removes the record first, then the file, for the same reason;
- the latest and best copies are refreshed after the record, by a hard link or a server-side
  copy where the handler offers one (``link``), by writing the same bytes again otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import CheckpointCorruptError
from ..storage.codec import EncodedValue, Signer
from ..storage.handlers import Buffer, Chunks, StateHandler
from ..storage.store import Store
from . import checkpoint_file
from .naming import SUFFIX
from .records import CheckpointInfo, from_record, to_record

logger = logging.getLogger(__name__)

INDEX_DIR = "index"
RECORD_SUFFIX = ".json"


def record_name(file: str) -> str:
    return f"{INDEX_DIR}/{file}{RECORD_SUFFIX}"


class TrainingStorage:
    """Checkpoint files and records of one location, kept through the library's store: its
    handler, its signer (which seals records and checks files), its encoding (with the
    compression it is configured with) and its clean-up of unfinished writes.

    Thread-safe as far as the handler is: it keeps no state of its own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.handler: StateHandler = store.handler
        self.signer: Signer = store.signer
        self.location = store.location

    def encode(self, payload: Any, what: str) -> EncodedValue:
        """Serialize a checkpoint's state (compressed if the store is). Raises
        UnpicklableStateError naming ``what``."""
        return self.store.encode(payload, what)

    def remove_stale_temps(self) -> int:
        """Delete temp files of writes killed mid-way, once they are old enough to be sure."""
        return self.store.remove_stale_temps()

    def __repr__(self) -> str:
        return f"TrainingStorage({self.location!r})"

    # ------------------------------------------------------------------ writing

    def write_file(self, file: str, chunks: Chunks) -> None:
        self.handler.write(file, chunks)

    def commit(self, info: CheckpointInfo, header: Mapping[str, Any]) -> None:
        """Write the record of ``info`` (whose file is complete): from now on it exists."""
        self.handler.write(record_name(info.file), to_record(info, header, self.signer))

    def copy(self, source: str, target: str, chunks: Sequence[Any] | None = None) -> None:
        """Make ``target`` a checkpoint file with the bytes of ``source``.

        Uses the handler's ``link`` when it has one; otherwise writes ``chunks`` (the bytes of
        ``source``, when the caller still has them) or reads ``source`` back.
        """
        link: Callable[[str, str], None] | None = getattr(self.handler, "link", None)
        if link is not None:
            link(source, target)
            return
        self.handler.write(target, chunks if chunks is not None else self.handler.read(source))

    def delete(self, file: str) -> None:
        """Delete a checkpoint: its record first, so no record ever names a missing file."""
        self.handler.delete(record_name(file))
        self.handler.delete(file)

    def delete_record(self, file: str) -> None:
        self.handler.delete(record_name(file))

    def delete_file(self, file: str) -> None:
        self.handler.delete(file)

    # ------------------------------------------------------------------ reading

    def record_files(self) -> list[str]:
        """The files that have a record, of every manager in the location."""
        prefix, suffix = f"{INDEX_DIR}/", RECORD_SUFFIX
        return [
            n[len(prefix) : -len(suffix)]
            for n in self.handler.list(INDEX_DIR)
            if n.endswith(suffix) and "/" not in n[len(prefix) :]
        ]

    def records(self, owns: Callable[[str], bool]) -> list[CheckpointInfo]:
        """The records of the files ``owns`` accepts. Raises CheckpointCorruptError naming the
        damaged record and the way out."""
        infos = []
        for file in self.record_files():
            if owns(file):
                infos.append(self.record(file))
        return infos

    def record(self, file: str) -> CheckpointInfo:
        name = record_name(file)
        where = f"{name!r} in {self.location}"
        try:
            info = from_record(self.handler.read(name), self.signer, where)
        except CheckpointCorruptError as exc:
            raise exc.with_remedy(
                f"The checkpoint file {file!r} itself may be intact: delete {name!r} to go on "
                "(that file is then no longer listed nor managed by retention), or run "
                f"`checkpoint-flow gc {self.location}` to rebuild the record from the file."
            ) from exc
        if info.file != file:
            raise CheckpointCorruptError(
                f"record {where}",
                f"describes {info.file!r}, not {file!r}: it was copied or renamed by hand",
                f"Delete {name!r} and run `checkpoint-flow gc {self.location}`.",
            )
        return info

    def read(self, file: str) -> Buffer:
        """The bytes of a checkpoint file. Raises FileNotFoundError."""
        return self.handler.read(file)

    def open(self, file: str) -> checkpoint_file.OpenedFile:
        """Read and verify a checkpoint file (nothing unpickled). Raises FileNotFoundError,
        CheckpointCorruptError, CheckpointSignatureError."""
        where = f"checkpoint file {file!r} in {self.location}"
        return checkpoint_file.open_file(self.read(file), self.signer, where)

    def exists(self, file: str) -> bool:
        return self.handler.exists(file)

    def top_files(self) -> list[str] | None:
        """Every checkpoint file at the top of the location, or None when the handler cannot
        list a folder without recursing (a user handler without ``list_dir``)."""
        list_dir: Callable[[str], list[str]] | None = getattr(self.handler, "list_dir", None)
        if list_dir is None:
            return None
        return [n for n in list_dir("") if n.endswith(SUFFIX)]
