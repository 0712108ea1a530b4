"""Where things are under a location (storage format 2, see FORMAT.md) and what their names say:
value blobs under ``values/`` named by their hash, commit records under ``records/`` named by
their number and their writer's tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointCorruptError, CheckpointReadError

FORMAT_VERSION = 2
RECORDS = "records"
VALUES = "values"
# Present only in locations written by format 1 (checkpoint_flow 0.1).
FORMAT_1_FOLDER = "blobs"
# Left when a collection failed: the next run collects whatever else happened.
PENDING = "collect.pending"

Entry = dict[str, Any]
Manifest = dict[str, Entry]
Keep = Callable[[list["RecordName"]], Iterable[int]]


@dataclass(frozen=True)
class RecordName:
    """What a record's file name tells without reading it: its number and its writer's tag."""

    name: str
    seq: int
    tag: str

    @classmethod
    def parse(cls, name: str) -> RecordName:
        stem = name.rsplit("/", 1)[-1].removesuffix(".rec")
        seq, _, tag = stem.partition(".")
        try:
            return cls(name, int(seq), tag)
        except ValueError as exc:
            raise CheckpointCorruptError(f"record name {name!r}", "is not one") from exc


def record_name(seq: int, tag: str) -> str:
    """The name of record number ``seq`` written with ``tag``."""
    return f"{RECORDS}/{seq:012d}.{tag}.rec"


def blob_path(blob: str) -> str:
    if not blob or not all(c in "0123456789abcdef" for c in blob):
        raise CheckpointCorruptError(f"blob name {blob!r} in a record", "is not one")
    return f"{VALUES}/{blob[:2]}/{blob}"


def read_error(what: str, exc: OSError) -> CheckpointReadError:
    """The error for storage that could not be read; ``what`` names what was being read."""
    return CheckpointReadError(what, exc)
