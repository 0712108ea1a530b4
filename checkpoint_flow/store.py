"""Snapshots: how state is laid out in storage, committed, verified and collected.

Layout under the location (format 1, see FORMAT.md)::

    blobs/<2 hex>/<blob name>   one serialized state value, named by its content hash
    records/<seq, 12 digits>.rec  sealed JSON commit records, append-only, newest wins

A snapshot is a manifest ``{key: entry}`` naming one blob per state value. Values whose content
did not change since the previous snapshot reuse their blob, so a save writes only what changed.
A commit writes every new blob first and the small record last; readers trust records only, so
a crash at any instant leaves the previous record and everything it names intact.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import EncodedValue, Signer, decode, digest_chunks, encode, seal, unseal
from .errors import (
    CheckpointCorruptError,
    CheckpointReadError,
    CheckpointSignatureError,
    CheckpointWriteError,
    UnpicklableStateError,
)
from .handlers import StateHandler

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
RECORDS = "records"
BLOBS = "blobs"
# Folders whose records name blobs that collection must keep (memoized calls, fan-out items).
GC_ROOTS = ("memo", "items")

Manifest = dict[str, dict[str, Any]]
# Values whose blob would be this small are kept inside the commit record instead.
INLINE_LIMIT = 512

_ATOMS = (bytes, str, int, float, complex, bool, type(None))


def _is_immutable(value: Any) -> bool:
    if isinstance(value, _ATOMS) and type(value) in _ATOMS:
        return True
    if type(value) in (tuple, frozenset):
        return all(type(v) in _ATOMS for v in value)
    return False


@dataclass
class SaveResult:
    manifest: Manifest
    bytes_written: int


@dataclass
class _Remembered:
    value: Any
    entry: dict[str, Any]


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def manifest_blobs(manifest: Mapping[str, Mapping[str, Any]] | None) -> set[str]:
    return {entry["blob"] for entry in (manifest or {}).values() if "blob" in entry}


def _inline_entry(encoded: EncodedValue, value: Any) -> dict[str, Any]:
    content = b"".join(bytes(chunk) for chunk in encoded.chunks)
    return {
        "inline": base64.b64encode(content).decode("ascii"),
        "digest": encoded.digest,
        "size": encoded.size,
        "type": _type_name(value),
    }


@dataclass
class Store:
    """Blobs, manifests and commit records on one handler.

    ``signer`` signs records and names blobs; a record that fails its checks raises
    CheckpointCorruptError or CheckpointSignatureError before anything is unpickled.
    """

    handler: StateHandler
    signer: Signer = field(default_factory=lambda: Signer(None))
    _remembered: dict[str, _Remembered] = field(default_factory=dict, repr=False)
    _last_seq: int | None = field(default=None, repr=False)
    # Records this object committed, by name: records never change once written, so
    # collection need not read and parse them back.
    _committed: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def location(self) -> str:
        return self.handler.location

    # -- values -------------------------------------------------------------------------------

    def save_state(
        self, state: Mapping[str, Any], previous: Manifest | None, *, step: str
    ) -> SaveResult:
        """Write the blobs of every value that changed since ``previous``; return the manifest.

        Raises UnpicklableStateError naming the key and step, or CheckpointWriteError.
        """
        previous = previous or {}
        manifest: Manifest = {}
        written = 0
        for key, value in state.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"state keys must be str; step {step!r} left the key {key!r} "
                    f"({type(key).__name__}) in the state"
                )
            remembered = self._remembered.get(key)
            if remembered is not None and remembered.value is value:
                manifest[key] = remembered.entry
                continue
            what = f"state[{key!r}] after step {step!r}"
            encoded = self._encode(
                value,
                what,
                " Keep it in `data` (and write it with the step's saver) instead of `state`; "
                "the previous checkpoint is untouched.",
            )
            before = previous.get(key)
            if before is not None and before.get("digest") == encoded.digest:
                entry = before
            elif encoded.size <= INLINE_LIMIT:
                # A small value rides in the commit record, covered by its checksum and
                # signature: one durable file per step instead of two.
                entry = _inline_entry(encoded, value)
                written += encoded.size
            else:
                entry, size = self._put_blob(encoded, value, what=what)
                written += size
            manifest[key] = entry
            self._remember(key, value, entry)
        return SaveResult(manifest, written)

    def load_state(self, manifest: Manifest, *, step: str) -> dict[str, Any]:
        """Read, verify and decode every value of a manifest."""
        state = {}
        for key, entry in manifest.items():
            state[key] = self.load_value(entry, step=step, key=key)
            self._remember(key, state[key], entry)
        return state

    def load_value(self, entry: Mapping[str, Any], *, step: str, key: str) -> Any:
        held = f"blob {entry['blob']}" if "blob" in entry else "stored inline in the record"
        where = f"value {key!r} of the snapshot before step {step!r} ({held})"
        return self.get_value(entry, where=where)

    def put_value(self, value: Any, *, what: str) -> tuple[dict[str, Any], int]:
        """Write one value as a blob (unless already stored); return its entry and bytes written.

        ``what`` names the value in messages. Raises UnpicklableStateError, CheckpointWriteError.
        """
        return self._put_blob(self._encode(value, what), value, what=what)

    def get_value(self, entry: Mapping[str, Any], *, where: str) -> Any:
        """Read, verify and decode the value an entry holds or names; ``where`` names it in
        messages."""
        where = f"{where} at {self.location}"
        if "inline" in entry:
            data = _inline_content(entry, where)
        else:
            data = self.read_blob(entry["blob"], where)
        try:
            return decode(data)
        except CheckpointCorruptError as exc:
            raise CheckpointCorruptError(f"{where} is damaged: {exc}") from exc
        except Exception as exc:
            raise CheckpointCorruptError(
                f"{where} could not be unpickled ({type(exc).__name__}: {exc}); a class or "
                "module it needs may have changed or be missing"
            ) from exc

    def read_blob(self, blob: str, where: str) -> Any:
        try:
            data = self.handler.read(blob_path(blob))
        except FileNotFoundError as exc:
            raise CheckpointCorruptError(
                f"{where} is missing from storage. Run `checkpoint-flow verify` to list the "
                "damage; rerun with on_corrupt='previous' to fall back to an intact snapshot."
            ) from exc
        except OSError as exc:
            raise _read_error(where, exc) from exc
        if not self.signer.check_blob(data, blob, self.signer.blob_hash):
            raise CheckpointCorruptError(
                f"{where} does not match its hash: the blob was altered or truncated. Rerun "
                "with on_corrupt='previous' to fall back to an intact snapshot."
            )
        return data

    def _encode(self, value: Any, what: str, remedy: str = "") -> EncodedValue:
        try:
            return encode(value)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise UnpicklableStateError(
                f"{what} ({_type_name(value)}) cannot be pickled: {exc}.{remedy}"
            ) from exc

    def _put_blob(
        self, encoded: EncodedValue, value: Any, *, what: str
    ) -> tuple[dict[str, Any], int]:
        name = self.signer.blob_name(encoded)
        entry = {
            "blob": name,
            "digest": encoded.digest,
            "size": encoded.size,
            "type": _type_name(value),
        }
        try:
            # Never rewrite a stored blob: on a store without atomic writes a failed rewrite
            # could damage content that an older snapshot still names. Ask the store rather
            # than a cache: another process may have collected the blob since.
            if self.handler.exists(blob_path(name)):
                return entry, 0
            self.handler.write(blob_path(name), encoded.chunks)
        except OSError as exc:
            raise CheckpointWriteError(
                f"could not write {what} to {self.location}: {exc}. "
                "The previous checkpoint is intact; fix the storage problem and rerun."
            ) from exc
        return entry, encoded.size

    def _remember(self, key: str, value: Any, entry: dict[str, Any]) -> None:
        # An immutable object that is still referenced cannot have changed, so the next save
        # can reuse its entry without pickling or hashing it again.
        if _is_immutable(value):
            self._remembered[key] = _Remembered(value, entry)
        else:
            self._remembered.pop(key, None)

    # -- records ------------------------------------------------------------------------------

    def record_names(self) -> list[str]:
        try:
            names = self.handler.list(RECORDS)
        except OSError as exc:
            raise _read_error(f"the records at {self.location}", exc) from exc
        return [n for n in names if n.endswith(".rec")]

    def read_record(self, name: str) -> dict[str, Any]:
        where = f"{self.location}/{name}"
        try:
            data = self.handler.read(name)
        except FileNotFoundError as exc:
            raise CheckpointCorruptError(f"record {where} disappeared while reading") from exc
        except OSError as exc:
            raise _read_error(f"record {where}", exc) from exc
        body = unseal(data, self.signer, where)
        version = body.get("format")
        if version != FORMAT_VERSION:
            raise CheckpointCorruptError(
                f"record {where} has format version {version!r}; this checkpoint_flow reads "
                f"version {FORMAT_VERSION}. Use the checkpoint_flow version that wrote it, or "
                "start a new location."
            )
        if body.get("hash") == "blake2b-256-keyed" and not self.signer.enabled:
            raise CheckpointSignatureError(
                f"record {where} was written with a signing key; set the same key "
                "(key=... or CHECKPOINT_FLOW_KEY) to load it"
            )
        return body

    def latest_record(self, *, fallback: bool = False) -> dict[str, Any] | None:
        """The newest committed record, or None if the location holds none.

        A damaged newest record raises; with ``fallback`` the newest intact record whose blobs
        all verify is returned instead, and the skipped records are logged.
        """
        names = self.record_names()
        if names:
            self._last_seq = max(self._last_seq or 0, _seq_of(names[-1]))
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
            f"no intact checkpoint at {self.location}: every record is damaged "
            f"({'; '.join(problems)}). Move the location aside to start over."
        )

    def commit(self, body: dict[str, Any]) -> str:
        """Append a record. Its blobs must already be written. Returns the record's name."""
        if self._last_seq is None:
            names = self.record_names()
            self._last_seq = _seq_of(names[-1]) if names else 0
        seq = self._last_seq + 1
        body = dict(body, format=FORMAT_VERSION, seq=seq, written_at=time.time(),
                    hash=self.signer.blob_hash)
        name = f"{RECORDS}/{seq:012d}.rec"
        try:
            created = self.handler.create(name, seal(body, self.signer))
        except OSError as exc:
            # A store without atomic writes may keep part of a failed record; remove it so the
            # previous record stays the newest one.
            with contextlib.suppress(OSError):
                self.handler.delete(name)
            raise CheckpointWriteError(
                f"could not commit {name} at {self.location}: {exc}. The previous checkpoint "
                "is intact; fix the storage problem and rerun."
            ) from exc
        if not created:
            raise CheckpointWriteError(
                f"{name} at {self.location} was written by another process during this run; "
                "two runs are using the same location. Stop the other run and rerun."
            )
        self._last_seq = seq
        self._committed[name] = body
        return name

    # -- records below the GC roots (memoized calls, fan-out items) ---------------------------

    def put_root_record(self, name: str, body: dict[str, Any]) -> None:
        """Create the record ``name`` below one of ``GC_ROOTS``; it must not exist yet.

        The blobs the body lists under ``"blobs"`` must already be written; collection keeps
        them until the record is deleted. Raises CheckpointWriteError if ``name`` exists.
        """
        sealed = self._seal_root_record(name, body)
        try:
            created = self.handler.create(name, sealed)
        except OSError as exc:
            raise _write_error(name, self.location, exc) from exc
        if not created:
            raise CheckpointWriteError(
                f"{name} at {self.location} already exists; two runs are using the same location"
            )

    def write_root_record(self, name: str, body: dict[str, Any]) -> None:
        """Create or atomically replace the record ``name`` below one of ``GC_ROOTS``."""
        sealed = self._seal_root_record(name, body)
        try:
            self.handler.write(name, sealed)
        except OSError as exc:
            raise _write_error(name, self.location, exc) from exc

    def _seal_root_record(self, name: str, body: dict[str, Any]) -> bytes:
        if name.split("/", 1)[0] not in GC_ROOTS or not name.endswith(".rec"):
            raise ValueError(f"{name!r} is not a record name below one of {GC_ROOTS}")
        body = dict(body, format=FORMAT_VERSION, written_at=time.time(),
                    hash=self.signer.blob_hash)
        return seal(body, self.signer)

    def root_record_names(self, folder: str) -> list[str]:
        """The record names below ``folder`` (a GC root or a folder inside one), sorted."""
        if folder.split("/", 1)[0] not in GC_ROOTS:
            raise ValueError(f"{folder!r} is not below a collection root; roots are: {GC_ROOTS}")
        return [n for n in self.handler.list(folder) if n.endswith(".rec")]

    def delete_root_record(self, name: str) -> None:
        """Delete a record below a GC root; its blobs become collectable."""
        if name.split("/", 1)[0] not in GC_ROOTS:
            raise ValueError(f"{name!r} is not a record below one of {GC_ROOTS}")
        self.handler.delete(name)

    # -- integrity and collection ---------------------------------------------------------------

    def verify_record(self, body: Mapping[str, Any]) -> None:
        for blob in body.get("blobs", []):
            self.read_blob(blob, f"blob {blob} named by record {body.get('seq')}")

    def verify(self) -> list[str]:
        """Check every record and every blob it names; return a list of problems (empty: ok)."""
        problems: list[str] = []
        checked: set[str] = set()  # records share most blobs: read and hash each one once
        for name in self.record_names() + self._root_records():
            try:
                body = self.read_record(name)
            except CheckpointCorruptError as exc:
                problems.append(str(exc))
                continue
            for blob in body.get("blobs", []):
                if blob in checked:
                    continue
                checked.add(blob)
                try:
                    self.read_blob(blob, f"blob {blob} named by {name}")
                except CheckpointCorruptError as exc:
                    problems.append(str(exc))
        return problems

    def collect(self, keep: Callable[[list[dict[str, Any]]], Iterable[int]]) -> tuple[int, int]:
        """Delete the records ``keep`` does not name and every blob no kept record names.

        ``keep`` receives the readable records, oldest first, and returns the seqs to keep. A
        damaged record is kept and its blobs are not touched. Returns (records, blobs) deleted.
        """
        names = self.record_names()
        listed = set(names)
        self._committed = {n: b for n, b in self._committed.items() if n in listed}
        bodies, damaged = [], []
        for name in names:
            try:
                bodies.append((name, self._committed.get(name) or self.read_record(name)))
            except CheckpointCorruptError:
                damaged.append(name)
        if damaged:
            logger.warning("collection skipped at %s: damaged records %s", self.location, damaged)
            return 0, 0
        kept = set(keep([b for _, b in bodies]))
        if names and _seq_of(names[-1]) not in kept:
            raise ValueError("a retention rule must keep the newest record")
        # Records go first: a crash after this point leaves unreferenced blobs, never a record
        # naming a deleted blob.
        dropped = 0
        for name, body in bodies:
            if body["seq"] not in kept:
                self.handler.delete(name)
                dropped += 1
        referenced: set[str] = set()
        for _name, body in bodies:
            if body["seq"] in kept:
                referenced.update(body.get("blobs", []))
        for name in self._root_records():
            referenced.update(self.read_record(name).get("blobs", []))
        removed = 0
        for path in self.handler.list(BLOBS):
            blob = path.rsplit("/", 1)[-1]
            if blob not in referenced:
                self.handler.delete(path)
                removed += 1
        return dropped, removed

    def _root_records(self) -> list[str]:
        names: list[str] = []
        for root in GC_ROOTS:
            names.extend(self.root_record_names(root))
        return names


def _inline_content(entry: Mapping[str, Any], where: str) -> bytes:
    try:
        data = base64.b64decode(entry["inline"], validate=True)
    except (ValueError, TypeError) as exc:
        raise CheckpointCorruptError(f"{where} is damaged: bad inline value ({exc})") from exc
    if digest_chunks([data]) != entry.get("digest"):
        raise CheckpointCorruptError(f"{where} does not match its digest: it was altered")
    return data


def _write_error(name: str, location: str, exc: OSError) -> CheckpointWriteError:
    return CheckpointWriteError(
        f"could not write {name} at {location}: {exc}. Nothing else was changed; fix the "
        "storage problem and retry."
    )


def _read_error(what: str, exc: OSError) -> CheckpointReadError:
    return CheckpointReadError(
        f"could not read {what}: {type(exc).__name__}: {exc}. Nothing was changed; rerun when "
        "the storage is reachable."
    )


def blob_path(blob: str) -> str:
    if not blob or not all(c in "0123456789abcdef" for c in blob):
        raise CheckpointCorruptError(f"invalid blob name {blob!r} in a record")
    return f"{BLOBS}/{blob[:2]}/{blob}"


def _seq_of(name: str) -> int:
    try:
        return int(name.rsplit("/", 1)[-1].split(".", 1)[0])
    except ValueError as exc:
        raise CheckpointCorruptError(f"unexpected record name {name!r}") from exc


class KeepLatestRun:
    """Retention rule: keep every record of the newest run and the last record of the run
    before it (so on_corrupt='previous' always has an earlier intact snapshot to fall back to)."""

    def __call__(self, records: list[dict[str, Any]]) -> set[int]:
        if not records:
            return set()
        latest_run = records[-1]["run"]["id"]
        keep = {r["seq"] for r in records if r["run"]["id"] == latest_run}
        earlier = [r for r in records if r["run"]["id"] != latest_run]
        if earlier:
            keep.add(earlier[-1]["seq"])
        return keep


class KeepLastRecords:
    """Retention rule: keep the newest ``n`` records, whatever run wrote them."""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"KeepLastRecords needs n >= 1, got {n!r}")
        self.n = n

    def __call__(self, records: list[dict[str, Any]]) -> set[int]:
        return {r["seq"] for r in records[-self.n :]}
