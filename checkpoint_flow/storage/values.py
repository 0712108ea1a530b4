"""Values: a state's values serialized into entries, inline when small and otherwise value blobs
named by their hash, and read back verified.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointCorruptError, CheckpointWriteError, UnpicklableStateError
from .codec import EncodedValue, Signer, compressed, decode, digest_chunks, encode
from .layout import Entry, blob_path, read_error
from .protocol import StateHandler

# Values whose blob would be this small are kept inside a tree node instead.
INLINE_LIMIT = 512
# A value blob this small is read back and checked before a commit relies on the stored copy.
_VERIFY_EXISTING_LIMIT = 2**20

_ATOMS = (bytes, str, int, float, complex, bool, type(None))


def is_immutable(value: Any) -> bool:
    """True for values that cannot change in place (so an untouched key needs no new look)."""
    if type(value) in _ATOMS:
        return True
    if type(value) in (tuple, frozenset):
        return all(type(v) in _ATOMS for v in value)
    return False


def type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


@dataclass
class ValueBlobs:
    """The value blobs of one location: written once each, read back checked against their name.

    ``compress`` (None or "zstd") applies to value blobs written from now on.
    """

    handler: StateHandler
    signer: Signer
    compress: str | None = None
    # Blobs found damaged: a commit that needs one of them writes it again instead of trusting it.
    _damaged: set[str] = field(default_factory=set, repr=False)

    @property
    def location(self) -> str:
        return self.handler.location

    def encode(self, value: Any, what: str, remedy: str = "") -> EncodedValue:
        """Serialize a value; raise UnpicklableStateError naming ``what``."""
        try:
            plain = encode(value)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise UnpicklableStateError(f"{what} ({type_name(value)})", str(exc), remedy) from exc
        if self.compress is None or plain.size <= INLINE_LIMIT:
            return plain
        return compressed(plain, self.compress)

    def entry_of(self, encoded: EncodedValue, value: Any, *, what: str) -> tuple[Entry, int]:
        """The entry for an encoded value: inline when small, else a value blob (written if it
        is not stored yet). Returns the entry and the bytes written."""
        if encoded.size <= INLINE_LIMIT and not encoded.compressed:
            content = b"".join(bytes(chunk) for chunk in encoded.chunks)
            entry: Entry = {
                "inline": base64.b64encode(content).decode("ascii"),
                "digest": encoded.digest,
                "size": encoded.size,
                "type": type_name(value),
            }
            return entry, 0
        name = self.signer.blob_name(encoded)
        written = self._put_blob(name, encoded, what=what)
        return {
            "blob": name,
            "digest": encoded.digest,
            "size": encoded.size,
            "type": type_name(value),
        }, written

    def put_value(self, value: Any, *, what: str) -> tuple[Entry, int]:
        """Store one value; return its entry and the bytes written."""
        return self.entry_of(self.encode(value, what), value, what=what)

    def get_value(self, entry: Mapping[str, Any], *, where: str, remedy: str = "") -> Any:
        """Read, verify and decode the value an entry holds or names.

        ``where`` names the value in messages; ``remedy`` ends the message of a damaged one.
        """
        where = f"{where} at {self.location}"
        try:
            if "inline" in entry:
                data: Any = _inline_content(entry, where)
            else:
                data = self.read_blob(entry["blob"], where)
        except CheckpointCorruptError as exc:
            raise exc.with_remedy(remedy) from exc
        try:
            return decode(data)
        except CheckpointCorruptError as exc:
            raise CheckpointCorruptError(
                where, f"is damaged: its {exc.what} {exc.problem}", remedy
            ) from exc
        except Exception as exc:
            raise CheckpointCorruptError(
                where,
                f"could not be unpickled ({type(exc).__name__}: {exc}); a class or module it "
                "needs may have changed or be missing",
            ) from exc

    def read_blob(self, blob: str, where: str) -> Any:
        try:
            data = self.handler.read(blob_path(blob))
        except FileNotFoundError as exc:
            self._damaged.add(blob)
            raise CheckpointCorruptError(
                where, "is missing from storage", "Run `checkpoint-flow verify` to list the damage."
            ) from exc
        except OSError as exc:
            raise read_error(where, exc) from exc
        if not self.signer.check_blob(data, blob, self.signer.blob_hash):
            self._damaged.add(blob)
            raise CheckpointCorruptError(
                where, "does not match its hash: the blob was altered or truncated"
            )
        return data

    def _put_blob(self, name: str, encoded: EncodedValue, *, what: str) -> int:
        path = blob_path(name)
        try:
            # Never rewrite a sound stored blob: on a store without atomic writes a failed
            # rewrite could damage content that an older snapshot still names. A blob known to be
            # damaged, or a small one that fails its check, is written again: the location heals.
            if name not in self._damaged and self._stored_intact(name, encoded.size):
                return 0
            self.handler.write(path, encoded.chunks)
        except OSError as exc:
            raise CheckpointWriteError(self.location, what, exc) from exc
        self._damaged.discard(name)
        return encoded.size

    def _stored_intact(self, name: str, size: int) -> bool:
        path = blob_path(name)
        if size > _VERIFY_EXISTING_LIMIT:
            return self.handler.exists(path)
        try:
            stored = self.handler.read(path)
        except FileNotFoundError:
            return False
        return self.signer.check_blob(stored, name, self.signer.blob_hash)


def _inline_content(entry: Mapping[str, Any], where: str) -> bytes:
    try:
        data = base64.b64decode(entry["inline"], validate=True)
    except (ValueError, TypeError) as exc:
        raise CheckpointCorruptError(where, f"is damaged: bad inline value ({exc})") from exc
    if digest_chunks([data]) != entry.get("digest"):
        raise CheckpointCorruptError(where, "does not match its digest: it was altered")
    return data
