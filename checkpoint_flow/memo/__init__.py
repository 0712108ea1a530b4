"""Memoized calls: a function's result stored in the checkpoint store, returned on a repeat call."""

from .global_api import (
    MEMO,
    CallInfo,
    KeyFunction,
    MemoEntry,
    apply_checkpoint,
    argument_digest,
    cached,
    del_checkpoint,
    entries,
    entry_name,
    lookup,
    remove,
    save,
    set_checkpoint_dir,
    set_checkpoint_file,
)
from .global_api import _configured_store as _configured_store

__all__ = [
    "MEMO",
    "CallInfo",
    "KeyFunction",
    "MemoEntry",
    "apply_checkpoint",
    "argument_digest",
    "cached",
    "del_checkpoint",
    "entries",
    "entry_name",
    "lookup",
    "remove",
    "save",
    "set_checkpoint_dir",
    "set_checkpoint_file",
]
