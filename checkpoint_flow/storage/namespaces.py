"""Namespaces: the store's clients (memoized calls, fan-out items) keep self-contained entries.

An entry is one file under ``<namespace>/``: a sealed JSON header followed by one value blob::

    b"CFENTRY2" | u64 little-endian header length | sealed header (codec.seal) | padding to 64
    | value blob (codec.encode)

The header holds the client's own fields under ``"meta"``, the entry's namespace and name (so an
entry copied to another name is refused), and the size and hash of the blob, so a reader checks
both before anything is unpickled. An entry owns its bytes: writing it is one atomic write and
deleting it frees them, so no collection ever has to decide whether a concurrent writer is about
to use a blob.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointCorruptError, CheckpointSignatureError, CheckpointWriteError
from .codec import decode, seal, unseal
from .layout import read_error
from .protocol import check_name
from .store import Store

MAGIC = b"CFENTRY2"
_LEN = struct.Struct("<Q")
_ALIGN = 64


@dataclass(frozen=True)
class Opened:
    """A verified entry: the client's fields and the (not yet unpickled) value blob."""

    meta: dict[str, Any]
    blob: memoryview
    size: int

    def value(self) -> Any:
        return decode(self.blob)


class Namespace:
    """The entries one client keeps under ``<location>/<name>/``."""

    def __init__(self, store: Store, name: str) -> None:
        check_name(name)
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.store.location!r}, {self.name!r})"

    def path(self, name: str) -> str:
        return f"{self.name}/{check_name(name)}"

    def put(
        self,
        name: str,
        value: Any,
        meta: Mapping[str, Any],
        *,
        what: str,
        exclusive: bool = False,
    ) -> int:
        """Write the entry ``name`` (atomically replacing it, or only if new with
        ``exclusive``); return the bytes written.

        Raises UnpicklableStateError naming ``what``, CheckpointWriteError.
        """
        store = self.store
        store.check_format()
        encoded = store.encode(value, what)
        header = {
            "format": 2,
            "namespace": self.name,
            "name": name,
            "written_at": time.time(),
            "meta": dict(meta),
            "blob": {
                "size": encoded.size,
                "hash": store.signer.blob_hash,
                "name": store.signer.blob_name(encoded),
            },
        }
        sealed = seal(header, store.signer)
        head = MAGIC + _LEN.pack(len(sealed)) + sealed
        chunks = [head, bytes(-len(head) % _ALIGN), *encoded.chunks]
        path = self.path(name)
        try:
            if exclusive:
                if not store.handler.create(path, b"".join(bytes(c) for c in chunks)):
                    raise CheckpointWriteError(
                        store.location,
                        path,
                        "it already exists; two runs are using the same location",
                        "Stop the other run and retry.",
                    )
            else:
                store.handler.write(path, chunks)
        except OSError as exc:
            raise CheckpointWriteError(
                store.location,
                f"{what} ({path})",
                exc,
                "Nothing else was changed; fix the storage problem and retry.",
            ) from exc
        return sum(len(c) if not isinstance(c, memoryview) else c.nbytes for c in chunks)

    def open(self, name: str) -> Opened | None:
        """The verified entry ``name``, or None if there is none.

        A damaged or forged entry raises CheckpointCorruptError / CheckpointSignatureError: it is
        never taken for a missing one.
        """
        store = self.store
        store.check_format()
        path = self.path(name)
        where = f"{store.location}/{path}"
        try:
            data = store.handler.read(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise read_error(f"entry {where}", exc) from exc
        view = memoryview(data)
        if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < len(MAGIC) + _LEN.size:
            raise CheckpointCorruptError(f"entry {where}", "is damaged: it does not start as one")
        (length,) = _LEN.unpack(view[len(MAGIC) : len(MAGIC) + _LEN.size])
        start = len(MAGIC) + _LEN.size
        header = unseal(bytes(view[start : start + length]), store.signer, where)
        if header.get("namespace") != self.name or header.get("name") != name:
            error = CheckpointSignatureError if store.signer.enabled else CheckpointCorruptError
            raise error(
                f"entry {where}",
                f"was written as {header.get('namespace')}/{header.get('name')}: it was copied "
                "or renamed after it was written; refusing to load it",
            )
        body_start = start + length
        body_start += -body_start % _ALIGN
        blob = view[body_start:]
        info = header.get("blob") or {}
        if info.get("size") != len(blob) or not store.signer.check_blob(
            blob, str(info.get("name")), str(info.get("hash"))
        ):
            raise CheckpointCorruptError(
                f"entry {where}",
                "is damaged: its value does not match its header (truncated or altered)",
            )
        return Opened(dict(header.get("meta") or {}), blob, len(view))

    def names(self, prefix: str = "") -> list[str]:
        """The entry names below ``prefix`` (a folder inside the namespace), sorted."""
        folder = self.name if not prefix else self.path(prefix.rstrip("/"))
        listed = self.store.handler.list(folder)
        return [n[len(self.name) + 1 :] for n in listed]

    def delete(self, name: str) -> None:
        self.store.handler.delete(self.path(name))
