"""`FsspecHandler`: a checkpoint location on any fsspec filesystem (s3://, gs://, memory://,
file://), whose storage library's own exceptions come out as OSError saying what to do.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .files import TEMP_MARK, create_file, link_file, remove_stale_temp_files, replace_file
from .protocol import Buffer, Chunks, as_chunks, check_name

T = TypeVar("T")
# One PUT is atomic on object stores; above this size a multipart upload is committed at the end.
_SINGLE_PUT_LIMIT = 64 * 2**20


def _nbytes(chunk: Buffer) -> int:
    return chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


# Exceptions of storage clients (botocore) that mean "no usable credentials".
_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")


def _transport_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Re-raise a storage library's own exceptions (botocore's connection errors, say) as
    OSError, so callers handle one family of storage failures; missing credentials and a
    missing bucket get a message saying what to do."""

    @functools.wraps(method)
    def wrapper(self: FsspecHandler, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except PermissionError as exc:
            raise PermissionError(self.access_remedy(exc)) from exc
        except FileNotFoundError as exc:
            if _missing_bucket(exc):
                raise FileNotFoundError(self.bucket_remedy()) from exc
            raise
        except (OSError, ValueError, TypeError):
            raise
        except Exception as exc:
            if type(exc).__name__ in _CREDENTIAL_ERRORS:
                raise PermissionError(self.access_remedy(exc)) from exc
            raise OSError(f"storage error: {type(exc).__name__}: {exc}") from exc

    return wrapper


def _missing_bucket(exc: FileNotFoundError) -> bool:
    cause = exc.__cause__ or exc.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code")
    return code == "NoSuchBucket" or "bucket does not exist" in str(exc).lower()


class FsspecHandler:
    """Any fsspec filesystem, chosen from the URL's protocol (s3://, gs://, memory://, file://).

    Object stores have no atomic rename, but a single PUT (or a completed multipart upload) is
    atomic, which is what ``write`` relies on; the store commits by writing a new small record
    last, so no object is ever updated in place.
    """

    def __init__(
        self,
        location: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        filesystem: Any = None,
    ) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        if not isinstance(location, str):
            raise TypeError(f"location must be a URL string, got {type(location).__name__}")
        options = dict(storage_options or {})
        if filesystem is None:
            try:
                filesystem, root = fsspec.core.url_to_fs(location, **options)
            except (ImportError, ValueError) as exc:
                hint = ""
                if isinstance(exc, ImportError) and location.startswith(("s3://", "s3a://")):
                    hint = " For s3:// install the 's3' extra (pip install 'checkpoint_flow[s3]')."
                raise ValueError(f"cannot open storage location {location!r}: {exc}.{hint}") \
                    from exc
        else:
            root = filesystem._strip_protocol(location)
        self.fs = filesystem
        self.root = str(root).rstrip("/")
        self.location = location
        self._local = isinstance(filesystem, LocalFileSystem)

    def __repr__(self) -> str:
        return f"FsspecHandler({self.location!r})"

    def access_remedy(self, exc: BaseException) -> str:
        """The message for storage that refuses us: what happened and how to give access."""
        if self._local:
            return f"{self.location}: {exc}. Check the permissions of the directory"
        how = "through storage_options (on the command line: --storage-option KEY=VALUE)"
        if self.location.startswith(("s3://", "s3a://")):
            how = (
                "as storage_options={'key': ..., 'secret': ...} (on the command line: "
                "--storage-option key=... --storage-option secret=...) or in the "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables or an AWS "
                "profile"
            )
        return (
            f"{self.location} refused access ({type(exc).__name__}: {exc}). Give credentials "
            f"that may read and write it {how}"
        )

    def bucket_remedy(self) -> str:
        """The message for a location whose bucket does not exist."""
        bucket = self.root.split("/", 1)[0]
        return (
            f"the bucket {bucket!r} of {self.location} does not exist. Create it first "
            f"(checkpoint_flow never creates buckets), or correct the location"
        )

    def path(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"

    @_transport_errors
    def read(self, name: str) -> bytearray:
        # Writable, like the local handler's, so NumPy arrays come back writable.
        return bytearray(self.fs.cat_file(self.path(name)))

    @_transport_errors
    def write(self, name: str, data: Chunks) -> None:
        path = self.path(name)
        chunks = as_chunks(data)
        if self._local:
            replace_file(Path(path), chunks)
        elif sum(_nbytes(c) for c in chunks) <= _SINGLE_PUT_LIMIT:
            self.fs.pipe_file(path, b"".join(chunks))
        else:
            self._write_multipart(path, chunks)
        self._invalidate(path)

    @_transport_errors
    def create(self, name: str, data: bytes) -> bool:
        path = self.path(name)
        if self._local:
            # fsspec's local pipe_file(mode="create") checks, then writes: two callers can both
            # succeed.
            return create_file(Path(path), data)
        try:
            self.fs.pipe_file(path, bytes(data), mode="create")
        except FileExistsError:
            return False
        finally:
            self._invalidate(path)
        return True

    @_transport_errors
    def exists(self, name: str) -> bool:
        path = self.path(name)
        # Listing caches (s3fs's dircache) answer from this process's last listing and miss
        # what other processes wrote or deleted since.
        self._invalidate(path)
        return bool(self.fs.exists(path))

    @_transport_errors
    def delete(self, name: str) -> None:
        path = self.path(name)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        self._invalidate(path)

    @_transport_errors
    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        names = []
        for path in found:
            stripped = self.fs._strip_protocol(path)
            if stripped.startswith(root) and TEMP_MARK not in stripped.rsplit("/", 1)[-1]:
                names.append(stripped[len(root):])
        return sorted(names)

    @_transport_errors
    def link(self, source: str, target: str) -> None:
        """Make ``target`` hold the bytes of ``source`` without sending them again: a hard link
        (or copy) on local filesystems, a server-side copy on object stores, where one copy
        request is atomic. Raises FileNotFoundError."""
        src, dst = self.path(source), self.path(target)
        if self._local:
            link_file(Path(src), Path(dst))
            return
        self._invalidate(src)
        if not self.fs.exists(src):
            raise FileNotFoundError(f"no {source!r} in {self.location}")
        self.fs.copy(src, dst)
        self._invalidate(dst)

    @_transport_errors
    def list_dir(self, prefix: str = "") -> builtins.list[str]:
        """The files directly in folder ``prefix`` ("" for the top level), sorted."""
        base = self.root if prefix == "" else self.path(prefix)
        self._invalidate(base)
        try:
            found = self.fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        lead = f"{prefix}/" if prefix else ""
        names = []
        for entry in found:
            leaf = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "file" and TEMP_MARK not in leaf:
                names.append(lead + leaf)
        return sorted(names)

    def remove_stale_temps(self, older_than_s: float) -> int:
        """Like LocalHandler's, for a local filesystem behind a file:// URL; object stores
        write in one request and leave no temp files."""
        return remove_stale_temp_files(Path(self.root), older_than_s) if self._local else 0

    def _invalidate(self, path: str) -> None:
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)

    def _write_multipart(self, path: str, chunks: builtins.list[Buffer]) -> None:
        f = self.fs.open(path, "wb", autocommit=False)
        try:
            for chunk in chunks:
                f.write(chunk)
            f.close()
        except BaseException:
            f.discard()
            raise
        f.commit()
