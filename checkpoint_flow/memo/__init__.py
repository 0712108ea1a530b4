"""Memoized calls: a function's result stored in the checkpoint store, returned on a repeat call.

Modules, lowest first: ``entry_store`` (one self-contained entry per result), ``keys`` (argument
digests), ``decorators`` (``cached``, keyed by name, arguments and code) and ``global_api``
(ai2-kit's ``set_checkpoint_dir`` and ``apply_checkpoint``, keyed by a key alone). Memo is an
extension: it imports the core, never the reverse.
"""

from .decorators import cached
from .entry_store import MEMO, MemoEntry, entries, entry_name, lookup, remove, save
from .global_api import (
    CallInfo,
    KeyFunction,
    apply_checkpoint,
    del_checkpoint,
    set_checkpoint_dir,
    set_checkpoint_file,
)
from .global_api import _configured_store as _configured_store
from .keys import argument_digest

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
