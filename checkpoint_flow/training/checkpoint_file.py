"""What a training checkpoint file is: a sealed header followed by one value blob.

Layout (integers little-endian)::

    b"CFCKPT1\\n" | u64 header_len | sealed header (codec.seal) | value blob (codec.encode)

The header is a small JSON record with a SHA-256 checksum and, when a key is configured, an
HMAC. It carries the manager's name, the file's own name, the epoch and step (null when the loop
never reported one), metrics, info and timestamp, plus the blob's size and hash (a keyed BLAKE2b
when signing), so a reader checks both the header and the blob before anything is unpickled.
Every file is self-contained: copying it elsewhere copies a loadable checkpoint, and the latest
and best copies are such copies (their header names the original).

Format 2 (this version) allows a null epoch or step; files of format 1 (0.1) are read as well.
0.1 also wrote ``latest.ckpt`` as a small sealed pointer; it is replaced by a real copy at the
next save.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointCorruptError, CheckpointSignatureError
from ..storage.codec import EncodedValue, Signer, decode, seal, unseal
from ..storage.handlers import Buffer

FILE_MAGIC = b"CFCKPT1\n"
CHECKPOINT_KIND = "checkpoint_flow.training"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_LEN = struct.Struct("<Q")


@dataclass(frozen=True)
class OpenedFile:
    """A verified checkpoint file: its header and its (not yet unpickled) blob."""

    header: dict[str, Any]
    blob: memoryview

    def decode(self) -> Any:
        return decode(self.blob)


def pack(header: dict[str, Any], encoded: EncodedValue, digest: str, signer: Signer) -> list[Any]:
    """The chunks of a checkpoint file holding ``encoded`` described by ``header``.

    ``digest`` is ``signer.blob_name(encoded)``, computed once when one state goes to several files.
    """
    body = dict(header)
    body["kind"] = CHECKPOINT_KIND
    body["format"] = FORMAT_VERSION
    body["blob"] = {
        "size": encoded.size,
        "hash": signer.blob_hash,
        "digest": digest,
    }
    sealed = seal(body, signer)
    return [FILE_MAGIC, _LEN.pack(len(sealed)), sealed, *encoded.chunks]


def header_of(data: Buffer, signer: Signer, where: str) -> dict[str, Any]:
    """Read and verify just the header of a checkpoint file."""
    view = memoryview(data)
    if bytes(view[: len(FILE_MAGIC)]) != FILE_MAGIC:
        raise CheckpointCorruptError(
            where,
            f"is not a checkpoint file (bad magic {bytes(view[:8])!r}); it was truncated, "
            "overwritten or is not a checkpoint_flow training checkpoint",
        )
    start = len(FILE_MAGIC) + _LEN.size
    if view.nbytes < start:
        raise CheckpointCorruptError(where, "is truncated: it ends inside its header")
    (header_len,) = _LEN.unpack(view[len(FILE_MAGIC) : start])
    if start + header_len > view.nbytes:
        raise CheckpointCorruptError(where, "is truncated: it ends inside its header")
    body = unseal(bytes(view[start : start + header_len]), signer, where)
    if body.get("kind") != CHECKPOINT_KIND or body.get("format") not in READABLE_FORMATS:
        raise CheckpointCorruptError(
            where,
            f"has kind {body.get('kind')!r} format {body.get('format')!r}; this version reads "
            f"{CHECKPOINT_KIND!r} formats {', '.join(map(str, READABLE_FORMATS))}",
            "Upgrade checkpoint_flow to read it.",
        )
    return body


def open_file(data: Buffer, signer: Signer, where: str) -> OpenedFile:
    """Verify a whole checkpoint file: header checksum and signature, then the blob's hash.

    Raises CheckpointCorruptError or CheckpointSignatureError; nothing is unpickled here.
    """
    view = memoryview(data)
    header = header_of(view, signer, where)
    (header_len,) = _LEN.unpack(view[len(FILE_MAGIC) : len(FILE_MAGIC) + _LEN.size])
    blob = view[len(FILE_MAGIC) + _LEN.size + header_len :]
    info = header.get("blob") or {}
    if blob.nbytes != info.get("size"):
        raise CheckpointCorruptError(
            where,
            f"holds {blob.nbytes} bytes of state where its header says {info.get('size')}: the "
            "file was truncated or appended to after it was written",
        )
    hash_name = str(info.get("hash"))
    if signer.enabled and hash_name != signer.blob_hash:
        raise CheckpointSignatureError(
            where, "was written without a key but a key is configured; refusing to load it"
        )
    if not signer.check_blob(blob, str(info.get("digest")), hash_name):
        if signer.enabled:
            raise CheckpointSignatureError(
                where,
                "holds state that does not match the keyed hash in its signed header; it was "
                "altered after it was written or written with another key; refusing to load it",
            )
        raise CheckpointCorruptError(
            where,
            f"holds state that does not match the hash in its header ({hash_name}); the file "
            "was damaged or altered after it was written",
        )
    return OpenedFile(header, blob)


def is_checkpoint(data: Buffer) -> bool:
    return bytes(memoryview(data)[: len(FILE_MAGIC)]) == FILE_MAGIC
