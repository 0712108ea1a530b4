"""Snapshots in storage, format 2 (see FORMAT.md): `Store` commits, reads, verifies and collects
them on one handler through its value blobs (`values`), tree nodes (`nodes`) and commit records
(`records`). A commit writes the changed value blobs and one record holding the nodes it created,
so its size depends on what changed, never on how many steps, runs or unchanged keys exist.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointCorruptError
from . import collection, snapshots, tree
from .codec import EncodedValue, Signer, check_compression
from .layout import (
    FORMAT_VERSION,
    PENDING,
    RECORDS,
    VALUES,
    Entry,
    Keep,
    Manifest,
    RecordName,
    blob_path,
    read_error,
)
from .nodes import Nodes
from .protocol import StateHandler
from .records import RecordLog
from .snapshots import SaveResult
from .values import INLINE_LIMIT, ValueBlobs, is_immutable, type_name

__all__ = [
    "FORMAT_VERSION",
    "INLINE_LIMIT",
    "PENDING",
    "RECORDS",
    "TEMP_GRACE_S",
    "VALUES",
    "Entry",
    "Keep",
    "Manifest",
    "RecordName",
    "SaveResult",
    "Store",
    "blob_path",
    "is_immutable",
    "read_error",
    "type_name",
]

logger = logging.getLogger(__name__)

# Temp files of writes that never finished are removed by collection once this old.
TEMP_GRACE_S = 3600.0


@dataclass
class Store:
    """Value blobs, trees and commit records on one handler.

    ``signer`` signs records and names blobs and nodes; anything that fails its checks raises
    CheckpointCorruptError or CheckpointSignatureError before anything is unpickled.
    ``compress`` (None or "zstd") applies to value blobs written from now on.
    """

    handler: StateHandler
    signer: Signer = field(default_factory=lambda: Signer(None))
    compress: str | None = None
    temp_grace_s: float = TEMP_GRACE_S
    # Called before every commit; a run lock's check, so a run that lost its lock stops there.
    guard: Callable[[], None] | None = field(default=None, repr=False)
    _values: ValueBlobs = field(init=False, repr=False)
    _log: RecordLog = field(init=False, repr=False)
    _nodes: Nodes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_compression(self.compress)
        self._values = ValueBlobs(self.handler, self.signer, self.compress)
        self._log = RecordLog(self.handler, self.signer)
        self._nodes = Nodes(self._log, self.signer)

    @property
    def location(self) -> str:
        return self.handler.location

    def check_format(self) -> None:
        """Refuse a location written by format 1, once per store. Raises CheckpointFormatError."""
        self._log.check_format()

    # -- values -------------------------------------------------------------------------------

    def encode(self, value: Any, what: str, remedy: str = "") -> EncodedValue:
        """Serialize a value; raise UnpicklableStateError naming ``what``."""
        return self._values.encode(value, what, remedy)

    def entry_of(self, encoded: EncodedValue, value: Any, *, what: str) -> tuple[Entry, int]:
        """The entry for an encoded value: inline when small, else a value blob (written if it
        is not stored yet). Returns the entry and the bytes written."""
        return self._values.entry_of(encoded, value, what=what)

    def put_value(self, value: Any, *, what: str) -> tuple[Entry, int]:
        """Store one value; return its entry and the bytes written."""
        return self._values.put_value(value, what=what)

    def get_value(self, entry: Mapping[str, Any], *, where: str, remedy: str = "") -> Any:
        """Read, verify and decode the value an entry holds or names.

        ``where`` names the value in messages; ``remedy`` ends the message of a damaged one.
        """
        return self._values.get_value(entry, where=where, remedy=remedy)

    def read_blob(self, blob: str, where: str) -> Any:
        return self._values.read_blob(blob, where)

    # -- tree nodes ----------------------------------------------------------------------------

    def add_node(self, node: dict[str, Any]) -> dict[str, str]:
        """Queue a node for the next commit; return its reference."""
        return self._nodes.add(node)

    def load_node(self, ref: Mapping[str, str]) -> dict[str, Any]:
        """The node a reference names, verified against its hash."""
        return self._nodes.load(ref)

    def put_json(self, value: Any) -> dict[str, str]:
        """Store a small JSON value (a list of names, a run history) as a node."""
        return self.add_node({"v": value})

    def get_json(self, ref: Mapping[str, str] | None, default: Any = None) -> Any:
        return default if ref is None else self.load_node(ref).get("v", default)

    # -- trees of entries ------------------------------------------------------------------------

    def tree_update(
        self, ref: Any, changes: Mapping[str, Any], *, leaf_max: int = tree.LEAF_MAX
    ) -> Any:
        return tree.update(self._nodes, ref, changes, leaf_max)

    def tree_items(self, ref: Any) -> Iterator[tuple[str, Any]]:
        return tree.items(self._nodes, ref)

    def tree_get(self, ref: Any, key: str) -> Any:
        return tree.get(self._nodes, ref, key)

    # -- state snapshots ---------------------------------------------------------------------------

    def save_state(
        self,
        state: Mapping[str, Any],
        base: SaveResult | None,
        *,
        what: Callable[[str], str],
        keys: Iterable[str] | None = None,
        remedy: str = "",
        fresh: bool = False,
        appended: Iterable[str] = (),
    ) -> SaveResult:
        """Save ``state`` as a change of ``base``: only ``keys`` (every key when None) are looked
        at; the others keep their entry. ``what(key)`` names a value in messages. ``fresh``
        writes every node anew instead of referring to ``base``'s (value blobs are still
        reused), so that no old record is kept alive by this snapshot alone. ``appended`` names
        the keys, in order, that now come last in the state (added, or deleted and set again);
        they get new positions so a reload gives the dict's order.

        Raises TypeError for a non-str key, UnpicklableStateError, CheckpointWriteError.
        """
        return snapshots.save_state(
            self._values, self._nodes, state, base,
            what=what, keys=keys, remedy=remedy, fresh=fresh, appended=appended,
        )

    def snapshot(self, ref: Any) -> SaveResult:
        """The entries of a stored snapshot (nothing is unpickled)."""
        return SaveResult(ref, dict(self.tree_items(ref)), 0)

    def manifest(self, ref: Any) -> Manifest:
        """The entries of a stored snapshot, in the state's key order."""
        entries = dict(self.tree_items(ref))
        return dict(sorted(entries.items(), key=lambda item: item[1].get("pos", 0)))

    def load_state(
        self, snapshot: SaveResult, *, where: Callable[[str, Entry], str], remedy: str = ""
    ) -> dict[str, Any]:
        """Read, verify and decode every value of a snapshot, in the state's key order."""
        ordered = sorted(snapshot.entries.items(), key=lambda item: item[1].get("pos", 0))
        return {
            key: self.get_value(entry, where=where(key, entry), remedy=remedy)
            for key, entry in ordered
        }

    # -- records ------------------------------------------------------------------------------

    def record_names(self) -> list[str]:
        return self._log.record_names()

    def read_record(self, name: str) -> dict[str, Any]:
        return self._log.read_record(name)

    def latest_record(self, *, fallback: bool = False) -> dict[str, Any] | None:
        """The newest committed record, or None if the location holds none.

        A damaged newest record raises; with ``fallback`` the newest record that verifies whole
        is returned instead, and the skipped records are logged.
        """
        self.check_format()
        names = self.record_names()
        self._log.note_newest(names)
        if not names:
            return None
        if not fallback:
            return self.read_record(names[-1])
        problems = []
        for name in reversed(names):
            try:
                body = self.read_record(name)
                self.verify_record(body)
            except CheckpointCorruptError as exc:
                problems.append(str(exc))
                continue
            if problems:
                logger.warning(
                    "on_corrupt='previous': skipped %d damaged record(s) at %s and fell back "
                    "to %s: %s",
                    len(problems),
                    self.location,
                    name,
                    "; ".join(problems),
                )
            return body
        raise CheckpointCorruptError(
            f"every record at {self.location}",
            f"is damaged, so there is no intact checkpoint ({'; '.join(problems)})",
            "Move the location aside to start over.",
        )

    def commit(self, body: Mapping[str, Any], *, tag: str) -> tuple[str, int]:
        """Append a record holding ``body`` and every node queued since the last commit.

        Value blobs must already be written. ``tag`` (letters and digits) is written into the
        record's name, for retention rules. Returns the record's name and size in bytes.
        """
        self.check_format()
        if not tag.isalnum():
            raise ValueError(f"record tag must be letters and digits, got {tag!r}")
        if self.guard is not None:
            self.guard()
        committed = self._log.commit(body, tag, self._nodes.pending)
        self._nodes.committed()
        return committed

    def sealed_size(self, body: Mapping[str, Any], *, tag: str) -> int:
        """The size in bytes of the record the next `commit` of ``body`` would write."""
        return self._log.sealed_size(body, tag, self._nodes.pending)

    def pending_mark(self) -> int:
        """How many nodes are queued; `rewind_pending` drops the ones queued after."""
        return self._nodes.mark()

    def rewind_pending(self, mark: int) -> None:
        self._nodes.rewind(mark)

    def next_seq(self) -> int:
        """The number the next commit gets."""
        return self._log.next_seq()

    def discard_pending(self) -> None:
        """Forget nodes queued for a commit that will not happen."""
        self._nodes.discard()

    # -- integrity and collection ---------------------------------------------------------------

    def reachable(self, bodies: Iterable[Mapping[str, Any]]) -> tuple[set[int], set[str]]:
        """The records holding a node, and the value blobs, reachable from ``bodies``."""
        return collection.reachable(self._nodes, bodies)

    def verify_record(self, body: Mapping[str, Any]) -> None:
        """Check every node and value blob a record reaches; raise CheckpointCorruptError."""
        collection.verify_record(self._nodes, self._values, body)

    def verify(self, keep: Keep) -> list[str]:
        """Check every record, and every node and blob the records ``keep`` names reach;
        return a list of problems (empty: ok).

        A record retention no longer keeps may still hold nodes that kept ones use; its own
        file is checked, but what only it names may have been collected.
        """
        self.check_format()
        return collection.verify(self._log, self._nodes, self._values, keep)

    def collect(self, keep: Keep) -> tuple[int, int]:
        """Delete the records and value blobs that no record kept by ``keep`` reaches.

        ``keep`` receives the parsed name of every record (``RecordName``), oldest first, and
        returns the seqs to keep; it must keep the newest. A record that is not kept
        but holds a node a kept one reaches stays. Nothing is deleted if a kept record cannot be
        read. Temp files older than ``temp_grace_s`` are removed too. Returns (records, blobs)
        deleted.
        """
        self.check_format()
        dropped, removed = collection.collect(self._log, self._nodes, keep)
        self.remove_stale_temps()
        return dropped, removed

    def collect_after(self, keep: Keep, first_seq: int) -> tuple[int, int] | None:
        """Collect after a commit sequence that started at record ``first_seq``, unless nothing
        can have become garbage: no record that ``keep`` kept before that sequence is dropped
        now, and no earlier collection failed. Returns what `collect` returns, or None when it
        was not needed.

        A failure leaves a marker (``PENDING``) so the next call collects whatever happens.
        """
        names = [RecordName.parse(n) for n in self.record_names()]
        before = [n for n in names if n.seq < first_seq]
        kept_before = set(keep(before)) if before else set()
        kept_now = set(keep(names))
        pending = self.handler.exists(PENDING)
        if not pending and kept_before <= kept_now:
            return None
        try:
            result = self.collect(keep)
        except BaseException:
            with contextlib.suppress(OSError):
                self.handler.write(PENDING, b"collection failed; the next run collects again")
            raise
        if pending:
            self.handler.delete(PENDING)
        return result

    def remove_stale_temps(self) -> int:
        """Delete temp files of writes that never finished (a process killed mid-write) once
        they are ``temp_grace_s`` old, where the handler makes temp files; return how many."""
        remove = getattr(self.handler, "remove_stale_temps", None)
        temps = int(remove(self.temp_grace_s)) if remove is not None else 0
        if temps:
            logger.info("removed %d unfinished temp file(s) at %s", temps, self.location)
        return temps
