"""Commit records: listing, reading and checking them, sealing and writing the next one, and the
node lists of records read so far.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    CheckpointCorruptError,
    CheckpointFormatError,
    CheckpointSignatureError,
    CheckpointWriteError,
)
from .codec import Signer, seal, unseal
from .layout import FORMAT_1_FOLDER, FORMAT_VERSION, RECORDS, RecordName, read_error, record_name
from .protocol import StateHandler

_RECORD_CACHE = 1024


@dataclass
class RecordLog:
    """The records of one location, and what this process knows of them."""

    handler: StateHandler
    signer: Signer
    _last_seq: int | None = field(default=None, repr=False)
    _records: OrderedDict[int, list[str]] = field(default_factory=OrderedDict, repr=False)
    _format_checked: bool = field(default=False, repr=False)
    _stamp: float | None = field(default=None, repr=False)
    _names: dict[int, str] = field(default_factory=dict, repr=False)
    _sealed: tuple[Any, str, int, bytes] | None = field(default=None, repr=False)

    @property
    def location(self) -> str:
        return self.handler.location

    def check_format(self) -> None:
        """Refuse a location written by format 1, once per store. Raises CheckpointFormatError."""
        if self._format_checked:
            return
        try:
            old = self.handler.list(FORMAT_1_FOLDER)
        except OSError as exc:
            raise read_error(f"the location {self.location}", exc) from exc
        if old:
            raise CheckpointFormatError(
                self.location,
                "1 (checkpoint_flow 0.1)",
                str(FORMAT_VERSION),
                "Finish or inspect that run with checkpoint_flow 0.1, which reads format 1 "
                "(pip install 'checkpoint_flow==0.1.0'), or move the location aside and start "
                "a new one.",
            )
        self._format_checked = True

    def record_names(self) -> list[str]:
        try:
            names = self.handler.list(RECORDS)
        except OSError as exc:
            raise read_error(f"the records at {self.location}", exc) from exc
        found = [n for n in names if n.endswith(".rec")]
        return sorted(found, key=lambda n: RecordName.parse(n).seq)

    def read_record(self, name: str) -> dict[str, Any]:
        where = f"{self.location}/{name}"
        try:
            data = self.handler.read(name)
        except FileNotFoundError as exc:
            raise CheckpointCorruptError(f"record {where}", "disappeared while reading") from exc
        except OSError as exc:
            raise read_error(f"record {where}", exc) from exc
        body = unseal(data, self.signer, where)
        version = body.get("format")
        if version != FORMAT_VERSION:
            raise CheckpointFormatError(
                f"record {where}",
                repr(version),
                str(FORMAT_VERSION),
                "Use the checkpoint_flow version that wrote it (format 1: checkpoint_flow 0.1), "
                "or move the location aside and start a new one.",
            )
        if body.get("name") != name:
            error = CheckpointSignatureError if self.signer.enabled else CheckpointCorruptError
            raise error(
                f"record {where}",
                f"was written as {body.get('name')!r}: it was copied or renamed after it was "
                "written (a replayed record); refusing to load it",
            )
        if body.get("hash") == "blake2b-256-keyed" and not self.signer.enabled:
            raise CheckpointSignatureError(
                f"record {where}",
                "was written with a signing key",
                "Set the same key (key=... or CHECKPOINT_FLOW_KEY) to load it.",
            )
        return body

    def note_newest(self, names: list[str]) -> None:
        """Take note of the newest of ``names``, a listing of every record."""
        if names:
            self._last_seq = max(self._last_seq or 0, RecordName.parse(names[-1]).seq)

    def next_seq(self) -> int:
        """The number the next commit gets."""
        return self._last_seq_or_none() + 1

    def _last_seq_or_none(self) -> int:
        if self._last_seq is None:
            names = self.record_names()
            self._last_seq = RecordName.parse(names[-1]).seq if names else 0
        return self._last_seq

    def commit(self, body: Mapping[str, Any], tag: str, pending: list[str]) -> tuple[str, int]:
        """Write the next record, holding ``body`` and the ``pending`` nodes; return its name and
        size in bytes."""
        seq = self.next_seq()
        name = record_name(seq, tag)
        nodes = list(pending)
        sealed = self._seal(body, tag, pending)
        self._stamp = None
        try:
            created = self.handler.create(name, sealed)
        except OSError as exc:
            # A store without atomic writes may keep part of a failed record; remove it so the
            # previous record stays the newest one.
            with contextlib.suppress(OSError):
                self.handler.delete(name)
            raise CheckpointWriteError(self.location, f"commit record {name}", exc) from exc
        if not created:
            raise CheckpointWriteError(
                self.location,
                f"commit record {name}",
                "another process wrote it during this run; two runs are using the same location",
                "Stop the other run and rerun.",
            )
        self._last_seq = seq
        self._remember_record(seq, nodes)
        return name, len(sealed)

    def sealed_size(self, body: Mapping[str, Any], tag: str, pending: list[str]) -> int:
        """The size in bytes of the record the next `commit` of ``body`` would write."""
        sealed = self._seal(body, tag, pending)
        # The commit of this very body (unchanged, nothing queued since) writes these bytes.
        self._sealed = (body, tag, len(pending), sealed)
        return len(sealed)

    def _seal(self, body: Mapping[str, Any], tag: str, pending: list[str]) -> bytes:
        if self._sealed is not None:
            last_body, last_tag, count, sealed = self._sealed
            self._sealed = None
            if last_body is body and last_tag == tag and count == len(pending):
                return sealed
        if self._stamp is None:
            self._stamp = time.time()
        seq = self.next_seq()
        return seal(
            dict(body, format=FORMAT_VERSION, seq=seq, name=record_name(seq, tag),
                 written_at=self._stamp, hash=self.signer.blob_hash, nodes=pending),
            self.signer,
        )

    def record_nodes(self, seq: int) -> list[str]:
        """The nodes record ``seq`` holds, read once and then kept."""
        cached = self._records.get(seq)
        if cached is not None:
            self._records.move_to_end(seq)
            return cached
        name = self._names.get(seq)
        if name is None:
            # One listing serves every record read after it.
            self._names = {RecordName.parse(n).seq: n for n in self.record_names()}
            name = self._names.get(seq)
        if name is None:
            raise CheckpointCorruptError(
                f"record {seq} at {self.location}",
                "is missing but a newer record names a node in it",
                "Run `checkpoint-flow verify` to list the damage.",
            )
        body = self.read_record(name)
        nodes = [str(node) for node in body.get("nodes", [])]
        self._remember_record(seq, nodes)
        return nodes

    def _remember_record(self, seq: int, nodes: list[str]) -> None:
        self._records[seq] = nodes
        if len(self._records) > _RECORD_CACHE:
            self._records.popitem(last=False)

    def forget_record(self, seq: int) -> None:
        """Drop a deleted record's node list."""
        self._records.pop(seq, None)
