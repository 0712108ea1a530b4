"""The module-level API of ai2-kit: ``set_checkpoint_dir`` once, then ``apply_checkpoint(key)``.

The key alone decides: the first call runs and stores, later calls return the stored value.
Before any location is set the function runs unchanged, as in ai2-kit.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .. import checks
from ..errors import CheckpointFlowError
from ..identity import fingerprint
from ..storage.codec import Signer
from ..storage.handlers import StateHandler, resolve_handler
from ..storage.store import Store
from .decorators import memoize
from .entry_store import MemoEntry, remove
from .keys import function_name

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CallInfo:
    """What a one-argument key function of ``apply_checkpoint`` receives (ai2-kit's FnInfo).

    ``call_site`` is ``"file:line"`` of the ``apply_checkpoint(...)`` call.
    """

    fn_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call_site: str


KeyFunction = (
    Callable[[CallInfo], str] | Callable[[str, tuple[Any, ...], dict[str, Any]], str]
)


_default_store: Store | None = None
_said_nothing_is_stored = False


def set_checkpoint_dir(
    location: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Set the location ``apply_checkpoint`` stores results in (a directory or fsspec URL).

    Nothing is created until the first result is stored. Records are signed with the
    ``CHECKPOINT_FLOW_KEY`` environment variable when it is set.
    """
    global _default_store
    handler: StateHandler = resolve_handler(location, None, storage_options)
    _default_store = Store(handler, Signer.from_env(None))


def set_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Older spelling of ``set_checkpoint_dir``; ``path`` is used as a directory."""
    set_checkpoint_dir(path)


def _configured_store() -> Store:
    if _default_store is None:
        raise CheckpointFlowError(
            "apply_checkpoint has no location to store results in: call "
            "checkpoint_flow.memo.set_checkpoint_dir(path) first"
        )
    return _default_store


def _say_nothing_is_stored(function: str) -> None:
    global _said_nothing_is_stored
    if not _said_nothing_is_stored:
        _said_nothing_is_stored = True
        logger.warning(
            "apply_checkpoint: no location is set, so %s (and every other apply_checkpoint "
            "function) runs without storing its result; call set_checkpoint_dir(path) first "
            "to store results", function,
        )


def _key_takes_info(key: Callable[..., Any]) -> bool:
    """True for a one-argument key function (ai2-kit's), False for ``key(name, args, kwargs)``."""
    try:
        signature = inspect.signature(key)
    except (TypeError, ValueError):  # some builtins have no signature: assume ai2-kit's form
        return True
    for arguments, takes_info in (((None,), True), ((None, None, None), False)):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return takes_info
    raise TypeError(
        f"a key function takes one argument (the call: .fn_name, .args, .kwargs, .call_site) "
        f"or three (name, args, kwargs); {key!r} takes neither"
    )


def apply_checkpoint(key: str | KeyFunction, disable: bool = False) -> Callable[[F], F]:
    """Memoize under a key: ``apply_checkpoint("step-1")(fn)(*args, **kwargs)``.

    ``key`` may be a function: ``key(info) -> str``, where ``info`` is a `CallInfo` with
    ``.fn_name``, ``.args``, ``.kwargs`` and ``.call_site`` (ai2-kit's form), or
    ``key(fn_name, args, kwargs) -> str``. The first call runs ``fn`` and stores its result
    (the awaited result for async functions); later calls with the same key return the stored
    value without running ``fn``, whatever their arguments. A stored entry that cannot be read
    raises CheckpointCorruptError instead of rerunning.

    ``disable=True`` returns ``fn`` unchanged. Before ``set_checkpoint_dir`` (or
    ``set_checkpoint_file``) is called, ``fn`` runs unchanged and the log says, once, that
    nothing is stored.
    """
    if not (callable(key) or (isinstance(key, str) and key)):
        raise TypeError(f"key must be a non-empty str or a function returning one, got {key!r}")
    checks.flag("disable", disable)
    takes_info = callable(key) and _key_takes_info(key)
    caller = sys._getframe(1)
    call_site = f"{caller.f_code.co_filename}:{caller.f_lineno}"

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"apply_checkpoint expects a function, got {fn!r}")
        if disable:
            return fn
        function = function_name(fn)
        fn_name = getattr(fn, "__name__", function)

        def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if isinstance(key, str):
                return key
            if takes_info:
                made = cast(Callable[[CallInfo], str], key)(
                    CallInfo(fn_name, args, kwargs, call_site)
                )
            else:
                made = cast(Callable[[str, tuple[Any, ...], dict[str, Any]], str], key)(
                    fn_name, args, kwargs
                )
            if not isinstance(made, str) or not made:
                raise TypeError(
                    f"the key function for {function} returned {made!r}; it must return a "
                    "non-empty str"
                )
            return made

        memoized = memoize(fn, _configured_store, make_key, fingerprint(fn), call_site)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _default_store is None:
                    _say_nothing_is_stored(function)
                    return await fn(*args, **kwargs)
                return await memoized(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _default_store is None:
                _say_nothing_is_stored(function)
                return fn(*args, **kwargs)
            return memoized(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def del_checkpoint(prefix: str) -> list[MemoEntry]:
    """Forget the stored results whose key starts with ``prefix``; return them.

    Like ``checkpoint-flow rm LOCATION --prefix PREFIX`` on the location given to
    ``set_checkpoint_dir``; each entry holds its result, so their space is freed at once.
    An empty prefix is refused: it would forget every entry.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(
            f"prefix must be a non-empty str, got {prefix!r}; to forget every entry, delete "
            "the location's memo/ folder"
        )
    return remove(_configured_store(), prefix)
