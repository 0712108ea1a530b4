"""Bytes <-> objects: cloudpickle with out-of-band buffers, content hashing, sealed records.

Value blob layout (all integers little-endian)::

    b"CFB1" | u32 header_len | header JSON {"frame": n, "buffers": [n, ...], "align": 64}
    | padding to 64 | frame (pickle protocol 5) | each buffer, padded to 64

A ``bytes`` or ``bytearray`` value has an empty frame, one buffer holding its content, and
``"raw": "bytes"`` (or ``"bytearray"``) in the header.

Large buffers (NumPy arrays, bytes-like objects supporting PEP 574) are never copied into the
pickle stream: they are hashed and written straight from the object's memory.

A compressed blob wraps a whole plain blob: ``b"CFZ1" | u32 header_len | header JSON
{"codec": "zstd", "size": <plain size>} | compressed plain blob``. The content digest is always the
plain blob's, so turning compression on or off never counts as a change of the value.

Record layout: canonical JSON body, a newline, then a JSON trailer
``{"sha256": <hex of body>, "hmac_sha256": <hex or null>}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mmap
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import xxhash

from ..errors import CheckpointCorruptError, CheckpointSignatureError

BLOB_MAGIC = b"CFB1"
COMPRESSED_MAGIC = b"CFZ1"
COMPRESSIONS = (None, "zstd")
_ALIGN = 64
_PAD = bytes(_ALIGN)
KEY_ENV = "CHECKPOINT_FLOW_KEY"
_RAW_TYPES = (bytes, bytearray)
_RAW_TYPES_BY_NAME = {t.__name__: t for t in _RAW_TYPES}


def _pad(n: int) -> int:
    return -n % _ALIGN


@dataclass(frozen=True)
class EncodedValue:
    """A value serialized as chunks ready to write, with their total size and content digest.

    ``digest`` is the xxh3-128 of the plain (uncompressed) blob: what change detection compares.
    ``compressed`` is True when ``chunks`` hold the compressed form.
    """

    chunks: tuple[Any, ...]
    size: int
    digest: str
    compressed: bool = False


def check_compression(compress: str | None) -> str | None:
    """Validate a ``compress=`` argument; raise ValueError naming the choices."""
    if compress not in COMPRESSIONS:
        raise ValueError(
            f"compress={compress!r} is not valid; choose None (no compression) or 'zstd'"
        )
    if compress == "zstd":
        _zstd()
    return compress


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise ValueError(
            "compress='zstd' needs the zstandard package: pip install 'checkpoint_flow[zstd]'"
        ) from exc
    return zstandard


def encode(value: Any, compress: str | None = None) -> EncodedValue:
    """Serialize one value, compressed when ``compress="zstd"``.

    Raises whatever cloudpickle raises for unpicklable values.
    """
    plain = _encode_plain(value)
    return plain if compress is None else compressed(plain, compress)


def compressed(plain: EncodedValue, compress: str) -> EncodedValue:
    """The compressed form of an encoded value; its digest stays the plain one."""
    packed = _zstd().ZstdCompressor(level=3).compress(b"".join(plain.chunks))
    header = json.dumps({"codec": compress, "size": plain.size}).encode()
    head = COMPRESSED_MAGIC + struct.pack("<I", len(header)) + header
    return EncodedValue((head, packed), len(head) + len(packed), plain.digest, compressed=True)


def _encode_plain(value: Any) -> EncodedValue:
    fields: dict[str, Any] = {}
    if type(value) in _RAW_TYPES:
        # pickle copies bytes into its stream (PEP 574 covers only other buffers): store
        # them as the single out-of-band buffer instead, written straight from the object.
        frame, raws = b"", [memoryview(value).cast("B")]
        fields["raw"] = type(value).__name__
    else:
        buffers: list[pickle.PickleBuffer] = []
        frame = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
    header = json.dumps(
        {"frame": len(frame), "buffers": [r.nbytes for r in raws], "align": _ALIGN, **fields}
    ).encode()
    head = BLOB_MAGIC + struct.pack("<I", len(header)) + header
    chunks: list[Any] = [head, _PAD[: _pad(len(head))], frame, _PAD[: _pad(len(frame))]]
    for raw in raws:
        chunks.append(raw)
        chunks.append(_PAD[: _pad(raw.nbytes)])
    chunks = [c for c in chunks if len(c)]
    size = sum(c.nbytes if isinstance(c, memoryview) else len(c) for c in chunks)
    return EncodedValue(tuple(chunks), size, digest_chunks(chunks))


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Rebuild a value from a blob. Raises CheckpointCorruptError if the layout is damaged."""
    view = memoryview(data)
    if bytes(view[:4]) == COMPRESSED_MAGIC:
        view = memoryview(_decompress(view))
    try:
        if bytes(view[:4]) != BLOB_MAGIC:
            raise ValueError(f"bad magic {bytes(view[:4])!r}")
        (header_len,) = struct.unpack("<I", view[4:8])
        header = json.loads(bytes(view[8 : 8 + header_len]))
        offset = 8 + header_len
        offset += _pad(offset)
        frame = view[offset : offset + header["frame"]]
        offset += header["frame"] + _pad(header["frame"])
        out_of_band = []
        for n in header["buffers"]:
            out_of_band.append(view[offset : offset + n])
            offset += n + _pad(n)
        if offset > view.nbytes or len(frame) != header["frame"]:
            raise ValueError("blob is shorter than its header says")
        raw = header.get("raw")
        if raw is not None and (raw not in _RAW_TYPES_BY_NAME or len(out_of_band) != 1):
            raise ValueError(f"unknown raw value type {raw!r}")
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CheckpointCorruptError("value blob", f"cannot be decoded ({exc})") from exc
    if raw is not None:
        return _RAW_TYPES_BY_NAME[raw](out_of_band[0])
    return pickle.loads(frame, buffers=out_of_band)


def _decompress(view: memoryview) -> bytearray:
    try:
        (header_len,) = struct.unpack("<I", view[4:8])
        header = json.loads(bytes(view[8 : 8 + header_len]))
        if header.get("codec") != "zstd":
            raise ValueError(f"unknown compression {header.get('codec')!r}")
        size = int(header["size"])
        plain = _zstd().ZstdDecompressor().decompress(view[8 + header_len :], max_output_size=size)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CheckpointCorruptError("compressed blob", f"cannot be decompressed ({exc})") from exc
    except Exception as exc:  # zstandard.ZstdError has no common base with the above
        raise CheckpointCorruptError("compressed blob", f"cannot be decompressed ({exc})") from exc
    if len(plain) != size:
        raise CheckpointCorruptError("compressed blob", "decompresses to the wrong size")
    return bytearray(plain)


def digest_chunks(chunks: Sequence[Any]) -> str:
    """xxh3-128 of the concatenated chunks: fast enough to hash gigabytes on every save."""
    h = xxhash.xxh3_128()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


class Signer:
    """HMAC-SHA256 over records, and keyed BLAKE2b names for blobs when a key is configured.

    With a key, blob names are keyed MACs of their content, so a blob cannot be swapped for
    another without the key even though change detection uses a non-cryptographic hash.
    """

    def __init__(self, key: bytes | str | None) -> None:
        if isinstance(key, str):
            key = key.encode()
        if key is not None and not isinstance(key, bytes):
            raise TypeError(f"key must be bytes or str, got {type(key).__name__}")
        if key is not None and len(key) == 0:
            raise ValueError("key must not be empty")
        self._key = key
        self._blob_key = (
            hashlib.sha256(b"checkpoint_flow blob key\x00" + key).digest() if key else None
        )

    @classmethod
    def from_env(cls, key: bytes | str | None) -> Signer:
        """The given key, else the CHECKPOINT_FLOW_KEY environment variable, else none."""
        return cls(key if key is not None else (os.environ.get(KEY_ENV) or None))

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @property
    def blob_hash(self) -> str:
        return "blake2b-256-keyed" if self.enabled else "xxh3-128"

    def blob_name(self, encoded: EncodedValue) -> str:
        """The name of a stored blob: a hash of the bytes as stored (keyed when signing)."""
        if self._blob_key is None:
            return digest_chunks(encoded.chunks) if encoded.compressed else encoded.digest
        return self.name_of(encoded.chunks)

    def name_of(self, chunks: Sequence[Any]) -> str:
        """The hash naming stored bytes: xxh3-128, or keyed BLAKE2b-256 when signing."""
        if self._blob_key is None:
            return digest_chunks(chunks)
        h = hashlib.blake2b(key=self._blob_key[:64], digest_size=32)
        for chunk in chunks:
            h.update(chunk)
        return h.hexdigest()

    def check_blob(self, data: Any, name: str, hash_name: str) -> bool:
        """True if ``data`` hashes to ``name`` under ``hash_name``."""
        if hash_name == "xxh3-128":
            return xxhash.xxh3_128_hexdigest(data) == name
        if hash_name == "blake2b-256-keyed" and self._blob_key is not None:
            h = hashlib.blake2b(data, key=self._blob_key[:64], digest_size=32)
            return hmac.compare_digest(h.hexdigest(), name)
        return False

    def mac(self, body: bytes) -> str | None:
        if self._key is None:
            return None
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()


def seal(body: dict[str, Any], signer: Signer) -> bytes:
    """Serialize a record with its checksum and, if a key is set, its HMAC."""
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return raw + b"\n" + _trailer(hashlib.sha256(raw).hexdigest(), signer.mac(raw))


def _trailer(sha256: Any, mac: Any) -> bytes:
    return json.dumps({"hmac_sha256": mac, "sha256": sha256}, sort_keys=True).encode()


def unseal(
    data: bytes | bytearray | memoryview | mmap.mmap, signer: Signer, where: str
) -> dict[str, Any]:
    """Check a sealed record and return its body; nothing is unpickled here.

    Raises CheckpointCorruptError (damaged) or CheckpointSignatureError (unsigned or tampered
    while a key is configured). ``where`` names the record in messages.
    """
    raw, sep, trailer_raw = bytes(data).rpartition(b"\n")
    try:
        if not sep:
            raise ValueError("no trailer")
        trailer = json.loads(trailer_raw)
        if not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), str(trailer["sha256"])):
            raise ValueError("checksum mismatch")
        # Only the exact bytes seal() writes are accepted, so no byte of a record can change
        # unnoticed, not even in a field this reader does not check (the HMAC without a key).
        if trailer_raw != _trailer(trailer["sha256"], trailer.get("hmac_sha256")):
            raise ValueError("malformed trailer")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(
            f"record {where}",
            f"is damaged ({exc}); it was truncated or altered after it was written",
        ) from exc
    if signer.enabled:
        expected = signer.mac(raw)
        given = trailer.get("hmac_sha256")
        if not isinstance(given, str):
            raise CheckpointSignatureError(
                f"record {where}",
                "is not signed but a key is configured; refusing to load it",
                "Remove the checkpoint or run without the key if you trust its origin.",
            )
        if not hmac.compare_digest(expected or "", given):
            raise CheckpointSignatureError(
                f"record {where}",
                "has a signature that does not match the configured key: it was written with "
                "another key or tampered with; refusing to load it",
            )
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise CheckpointCorruptError(f"record {where}", f"is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CheckpointCorruptError(f"record {where}", "does not hold an object")
    return body
