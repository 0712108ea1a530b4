"""Choosing the handler for a location (local files for a path, fsspec for a URL); the handlers and
their protocol live in `local`, `fsspec_handler` and `protocol`, and are importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .fsspec_handler import FsspecHandler
from .local import LocalHandler
from .protocol import Buffer, Chunks, StateHandler, as_chunks, check_name

__all__ = [
    "Buffer",
    "Chunks",
    "FsspecHandler",
    "LocalHandler",
    "StateHandler",
    "as_chunks",
    "check_name",
    "resolve_handler",
]


def resolve_handler(
    location: str | os.PathLike[str] | StateHandler,
    handler: str | type | StateHandler | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> StateHandler:
    """Pick the handler for a location: a plain path gets local files, a URL gets fsspec.

    ``handler`` may be ``"local"``, ``"fsspec"``, a handler class (called with the location, and
    ``storage_options`` when given), or a ready handler instance.
    """
    if handler is None and isinstance(location, StateHandler):
        return location
    if handler is not None and not isinstance(handler, (str, type)):
        if isinstance(handler, StateHandler):
            return handler
        raise TypeError(
            f"handler must be 'local', 'fsspec', a handler class or a StateHandler instance, "
            f"got {handler!r}"
        )
    if not isinstance(location, (str, os.PathLike)):
        raise TypeError(
            f"location must be a path or URL string, got {type(location).__name__}: {location!r}"
        )
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(f"storage_options must be a mapping, got {storage_options!r}")
    if handler is None:
        handler = "fsspec" if _is_url(os.fspath(location)) else "local"
    if handler == "local":
        if storage_options:
            raise ValueError("storage_options apply to fsspec locations, not to handler='local'")
        if _is_url(os.fspath(location)):
            raise ValueError(f"handler='local' needs a filesystem path, got the URL {location!r}")
        return LocalHandler(location)
    if handler == "fsspec":
        return FsspecHandler(os.fspath(location), storage_options)
    if isinstance(handler, type):
        made = handler(location, storage_options) if storage_options else handler(location)
        if not isinstance(made, StateHandler):
            raise TypeError(f"{handler.__name__} does not implement the StateHandler protocol")
        return made
    raise ValueError(
        f"unknown handler {handler!r}; valid choices: 'local', 'fsspec', a handler class or "
        "a StateHandler instance"
    )


def _is_url(location: str) -> bool:
    return "://" in location
