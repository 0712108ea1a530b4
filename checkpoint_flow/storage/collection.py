"""Reachability, verification and collection: what the records a retention rule keeps reach,
checking that it is intact, and deleting everything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import CheckpointCorruptError
from .layout import VALUES, Keep, RecordName
from .nodes import Nodes
from .records import RecordLog
from .values import ValueBlobs


def reachable(nodes: Nodes, bodies: Iterable[Mapping[str, Any]]) -> tuple[set[int], set[str]]:
    """The records holding a node, and the value blobs, reachable from ``bodies``."""
    records: set[int] = set()
    blobs: set[str] = set()
    seen: set[str] = set()
    stack: list[Any] = [{k: v for k, v in b.items() if k != "nodes"} for b in bodies]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("@")
            if isinstance(ref, str) and len(item) == 1:
                if ref not in seen:
                    seen.add(ref)
                    records.add(int(ref.split(".", 1)[0]))
                    stack.append(nodes.load(item))
                continue
            blob = item.get("blob")
            if isinstance(blob, str):
                blobs.add(blob)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return records, blobs


def verify_record(nodes: Nodes, values: ValueBlobs, body: Mapping[str, Any]) -> None:
    """Check every node and value blob a record reaches; raise CheckpointCorruptError."""
    _records, blobs = reachable(nodes, [body])
    for blob in sorted(blobs):
        values.read_blob(blob, f"blob {blob} named by record {body.get('seq')}")


def verify(log: RecordLog, nodes: Nodes, values: ValueBlobs, keep: Keep) -> list[str]:
    """Check every record, and what the records ``keep`` names reach; return the problems."""
    problems: list[str] = []
    checked: set[str] = set()
    names = [RecordName.parse(n) for n in log.record_names()]
    kept = set(keep(names))
    for record in names:
        try:
            body = log.read_record(record.name)
            if record.seq not in kept:
                continue
            _records, blobs = reachable(nodes, [body])
        except CheckpointCorruptError as exc:
            problems.append(str(exc))
            continue
        name = record.name
        for blob in sorted(blobs - checked):
            checked.add(blob)
            try:
                values.read_blob(blob, f"blob {blob} named by {name}")
            except CheckpointCorruptError as exc:
                problems.append(str(exc))
    return problems


def collect(log: RecordLog, nodes: Nodes, keep: Keep) -> tuple[int, int]:
    """Delete the records and value blobs that no record kept by ``keep`` reaches; return how
    many of each were deleted."""
    names = [RecordName.parse(n) for n in log.record_names()]
    kept = set(keep(names))
    if names and names[-1].seq not in kept:
        raise ValueError("a retention rule must keep the newest record")
    bodies = [log.read_record(n.name) for n in names if n.seq in kept]
    needed, blobs = reachable(nodes, bodies)
    # Records go first: a crash after this point leaves unreferenced blobs, never a record
    # naming a deleted blob.
    dropped = 0
    for n in names:
        if n.seq not in kept and n.seq not in needed:
            log.handler.delete(n.name)
            log.forget_record(n.seq)
            dropped += 1
    removed = 0
    for path in log.handler.list(VALUES):
        if path.rsplit("/", 1)[-1] not in blobs:
            log.handler.delete(path)
            removed += 1
    return dropped, removed
