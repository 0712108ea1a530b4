"""What the catalogue knows about one checkpoint: :class:`CheckpointInfo`, and its record.

A record (``index/<file>.json``) is a sealed JSON object written after the checkpoint file it
describes, so a record always names a complete file. It is read and written here only.

Record fields (format 2)::

    kind "checkpoint_flow.training.record", format 2, file, role, source (a copy's original),
    name (the manager), seq, epoch, step, steps_reported, metrics, best, monitor, mode,
    timestamp, reason, metadata, info, objects, size

Records written by 0.1 (no ``kind``; epoch and step always integers) are read as format 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointCorruptError
from ..storage.codec import Signer, seal, unseal
from ..storage.handlers import Buffer

RECORD_KIND = "checkpoint_flow.training.record"
RECORD_FORMAT = 2
ROLES = ("rolling", "named", "emergency", "best")


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint as the catalogue knows it, without opening the file.

    ``epoch``/``step`` are the progress the loop had reported (None for what it never reported).
    ``role`` is "rolling" (saves named by progress, the only ones retention rules see), "named"
    (``save(name=...)``), "emergency" (training raised) or "best" (the copy of the best
    checkpoint, whose original is ``source``). ``seq`` numbers one manager's saves in the order
    they were made; a copy has the seq of its original. ``name`` is the manager's name.
    """

    file: str
    epoch: int | None
    step: int | None
    metrics: Mapping[str, float] = field(default_factory=dict)
    timestamp: float = 0.0
    reason: str = "periodic"
    size: int = 0
    seq: int = 0
    role: str = "rolling"
    name: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    monitor: str | None = None
    mode: str = "min"

    @property
    def order(self) -> tuple[int, int, float, int]:
        """Training order: epoch, then step, then save time (what was not reported sorts first)."""
        return (
            -1 if self.epoch is None else self.epoch,
            -1 if self.step is None else self.step,
            self.timestamp,
            self.seq,
        )

    def score(self, monitor: str) -> float | None:
        """The value of ``monitor`` in this checkpoint, or None when absent or NaN."""
        value = self.metrics.get(monitor)
        return None if value is None or math.isnan(value) else value


def to_record(info: CheckpointInfo, header: Mapping[str, Any], signer: Signer) -> bytes:
    """The sealed record of ``info``; ``header`` adds what the file's header holds besides."""
    body = {
        # The metric history stays in the file's header: in every record it would make
        # listing a folder cost saves x epochs.
        **{k: v for k, v in header.items() if k not in ("kind", "format", "blob", "history")},
        "kind": RECORD_KIND,
        "format": RECORD_FORMAT,
        "file": info.file,
        "role": info.role,
        "source": info.source,
        "name": info.name,
        "seq": info.seq,
        "size": info.size,
    }
    return seal(body, signer)


def from_record(
    data: Buffer, signer: Signer, where: str
) -> CheckpointInfo:
    """Read a record back. Raises CheckpointCorruptError (or its signature subclass)."""
    body = unseal(bytes(data), signer, where)
    version = body.get("format", 1) if body.get("kind") == RECORD_KIND else 1
    if body.get("kind") not in (RECORD_KIND, None) or version not in (1, RECORD_FORMAT):
        raise CheckpointCorruptError(
            f"record {where}",
            f"has kind {body.get('kind')!r} format {version!r}; this version reads "
            f"{RECORD_KIND!r} formats 1 and {RECORD_FORMAT}",
            "Upgrade checkpoint_flow to read it.",
        )
    return info_from_header(body, size=int(body.get("size", 0)), where=where)


def info_from_header(header: Mapping[str, Any], *, size: int, where: str) -> CheckpointInfo:
    """A CheckpointInfo from a record or a file header. Raises CheckpointCorruptError."""
    try:
        role = str(header.get("role", "rolling"))
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return CheckpointInfo(
            file=str(header["file"]),
            epoch=_optional_int(header.get("epoch")),
            step=_optional_int(header.get("step")),
            metrics={str(k): float(v) for k, v in (header.get("metrics") or {}).items()},
            timestamp=float(header.get("timestamp", 0.0)),
            reason=str(header.get("reason", "")),
            size=size,
            seq=int(header.get("seq", 0)),
            role=role,
            name=None if header.get("name") is None else str(header["name"]),
            info=dict(header.get("info") or {}),
            source=None if header.get("source") is None else str(header["source"]),
            monitor=None if header.get("monitor") is None else str(header["monitor"]),
            mode=str(header.get("mode") or "min"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointCorruptError(
            where,
            f"does not describe a checkpoint ({exc!r}); it was written by another tool or damaged",
        ) from exc


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer or null, got {value!r}")
    return value
