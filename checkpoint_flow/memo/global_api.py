"""Memoized calls: a function's result stored in the checkpoint store, returned on a repeat call.

Each result is one self-contained entry ``memo/<hash of key>.entry`` in the store's ``memo``
namespace: a sealed header (the human-readable key, the function name, its code fingerprint, when
it was created) and the result's blob. Removing the entry frees its space at once, and collection
never touches it, so a `gc` beside memoized calls cannot break them.

Two ways in:

- ``@cp.cached`` / ``cached(store)``: the key is the function's name (or ``key=``), a digest of
  its arguments' content (less those named in ``ignore=``) and its fingerprint, so a change to
  the arguments, the code or a captured value is a miss, in any process.
- ``apply_checkpoint(key)(fn)(*args)`` after ``set_checkpoint_dir(location)``: the key alone
  decides; the first call runs and stores, later calls return the stored value. Before any
  location is set the function runs unchanged, as in ai2-kit.

A result whose write fails is still returned (the failure is logged): storage trouble never
costs the work already done.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from .. import identity
from ..errors import (
    CheckpointCorruptError,
    CheckpointFlowError,
    CheckpointWriteError,
)
from ..identity import fingerprint
from ..storage.codec import Signer
from ..storage.handlers import StateHandler, resolve_handler
from ..storage.namespaces import Namespace
from ..storage.store import Store

logger = logging.getLogger(__name__)

MEMO = "memo"

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


@dataclass(frozen=True)
class MemoEntry:
    """One stored call result, as listed by ``entries``."""

    key: str
    name: str
    function: str
    size: int
    created_at: float
    call_site: str | None = None  # "file:line" of the decorated function or apply_checkpoint


def _entries(store: Store) -> Namespace:
    return Namespace(store, MEMO)


def entry_name(key: str) -> str:
    """The entry name of a key: keys may hold any character, storage names may not."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.entry"


def lookup(store: Store, key: str) -> tuple[bool, Any]:
    """``(True, value)`` if ``key`` is stored, else ``(False, None)``.

    An entry that exists but cannot be read raises CheckpointCorruptError: a damaged entry is
    never taken for a missing one (which would silently rerun the call).
    """
    name = entry_name(key)
    where = f"memoized result of {key!r} ({MEMO}/{name} at {store.location})"
    remedy = f"remove it with `checkpoint-flow rm {store.location} --prefix {key!r}`"
    try:
        opened = _entries(store).open(name)
    except CheckpointCorruptError as exc:
        raise type(exc)(f"{exc}. To compute it again, {remedy}") from exc
    if opened is None:
        return False, None
    if opened.meta.get("key") != key:
        raise CheckpointCorruptError(
            f"{where} holds key {opened.meta.get('key')!r} instead; {remedy}"
        )
    try:
        return True, opened.value()
    except Exception as exc:
        raise CheckpointCorruptError(
            f"{where} could not be unpickled ({type(exc).__name__}: {exc}); a class or module it "
            f"needs may have changed or be missing. To compute it again, {remedy}"
        ) from exc


def save(
    store: Store, key: str, value: Any, *, function: str, code: str,
    call_site: str | None = None,
) -> int:
    """Store ``value`` under ``key`` as one self-contained entry; return the bytes written.

    ``call_site`` (``"file:line"``) says where the memoized function was declared.
    """
    written = _entries(store).put(
        entry_name(key),
        value,
        {"kind": "memo", "key": key, "function": function, "fingerprint": code,
         "created_at": time.time(), "call_site": call_site},
        what=f"the result of {function} (memo key {key!r})",
    )
    logger.info("memoized %s under %r (%d bytes written)", function, key, written)
    return written


def entries(store: Store) -> list[MemoEntry]:
    """Every memo entry at the store's location, sorted by key."""
    found = []
    namespace = _entries(store)
    for name in namespace.names():
        opened = namespace.open(name)
        if opened is None:  # removed since it was listed
            continue
        meta = opened.meta
        found.append(
            MemoEntry(
                key=str(meta.get("key")),
                name=f"{MEMO}/{name}",
                function=str(meta.get("function")),
                size=opened.size,
                created_at=float(meta.get("created_at", 0.0)),
                call_site=meta.get("call_site") if isinstance(meta.get("call_site"), str) else None,
            )
        )
    return sorted(found, key=lambda e: e.key)


def remove(store: Store, prefix: str) -> list[MemoEntry]:
    """Delete the entries whose key starts with ``prefix``; return them (their space is freed
    at once)."""
    removed = [e for e in entries(store) if e.key.startswith(prefix)]
    for e in removed:
        store.handler.delete(e.name)
    logger.info("removed %d memo entries starting with %r at %s", len(removed), prefix,
                store.location)
    return removed


def argument_digest(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    ignore: Collection[str] = (),
) -> str:
    """A hash of a call's arguments, bound to ``fn``'s signature with defaults applied.

    ``f(1)`` and ``f(x=1)`` give the same digest. Arguments named in ``ignore`` (parameters, or
    keywords gathered by ``**kwargs``) are left out. Each argument is digested by content (see
    ``identity.digest``), so the digest is the same in every process. Raises TypeError if the
    arguments do not fit the signature and UndigestableValueError naming the argument that has
    no stable content.
    """
    name = _function_name(fn)
    signature = _signature(fn)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}(): {exc}") from exc
    bound.apply_defaults()
    h = hashlib.sha256()
    for param, given in bound.arguments.items():
        if param in ignore:
            continue
        if signature.parameters[param].kind is inspect.Parameter.VAR_KEYWORD:
            named = {k: v for k, v in given.items() if k not in ignore}
        else:
            named = {param: given}
        for argument in sorted(named):
            digest = identity.digest(
                named[argument],
                what=f"argument {argument!r} of {name}()",
                remedy=f". Leave it out of the key with cached(ignore=[{argument!r}]), or pass "
                "a value that identifies it instead",
            )
            h.update(f"{param}\0{argument}\0{digest}\0".encode())
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=1024)
def _cached_signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    # Computing a signature costs more than digesting small arguments; a memoized function's
    # signature does not change.
    try:
        return _cached_signature(fn)
    except TypeError:  # an unhashable callable object
        return inspect.signature(fn)


def _check_ignore(fn: Callable[..., Any], ignore: Collection[str]) -> tuple[str, ...]:
    name = _function_name(fn)
    if isinstance(ignore, str) or not all(isinstance(n, str) for n in ignore):
        raise TypeError(
            f"ignore= must be a list of argument names of {name}(), got {ignore!r}; "
            "for example ignore=['logger']"
        )
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the arguments of {name}: {exc}") from exc
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return tuple(ignore)  # any keyword may arrive through **kwargs
    unknown = [n for n in ignore if n not in parameters]
    if unknown:
        raise ValueError(
            f"ignore= names {', '.join(map(repr, unknown))}, which {name}() does not take; "
            f"its arguments are: {', '.join(parameters) or 'none'}"
        )
    return tuple(ignore)


def _function_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _memoize(
    fn: F,
    store: Callable[[], Store],
    make_key: Callable[[tuple[Any, ...], dict[str, Any]], str],
    code: str,
    call_site: str | None = None,
) -> F:
    """Wrap ``fn`` so that a call looks up ``make_key(args, kwargs)`` before running.

    ``call_site`` is recorded with each entry; by default where ``fn`` is defined.
    """
    function = _function_name(fn)
    if call_site is None:
        code_object = getattr(inspect.unwrap(fn), "__code__", None)
        if code_object is not None:
            call_site = f"{code_object.co_filename}:{code_object.co_firstlineno}"

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            s, key = store(), make_key(args, kwargs)
            hit, value = lookup(s, key)
            if hit:
                logger.info("memo hit for %s: %r", function, key)
                return value
            value = await fn(*args, **kwargs)
            _save_or_log(s, key, value, function=function, code=code, call_site=call_site)
            return value

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        s, key = store(), make_key(args, kwargs)
        hit, value = lookup(s, key)
        if hit:
            logger.info("memo hit for %s: %r", function, key)
            return value
        value = fn(*args, **kwargs)
        _save_or_log(s, key, value, function=function, code=code, call_site=call_site)
        return value

    return wrapper  # type: ignore[return-value]


def _save_or_log(
    store: Store, key: str, value: Any, *, function: str, code: str, call_site: str | None
) -> None:
    """``save``, except that a failed write is logged: the caller still gets its result."""
    try:
        save(store, key, value, function=function, code=code, call_site=call_site)
    except (CheckpointWriteError, OSError) as exc:
        logger.error(
            "could not store the result of %s under %r at %s, returning it without storing "
            "it (the next call runs again): %s", function, key, store.location, exc,
        )


@overload
def cached(
    store: Store, fn: F, *, key: str | None = None, ignore: Collection[str] = ()
) -> F: ...


@overload
def cached(
    store: Store, fn: None = None, *, key: str | None = None, ignore: Collection[str] = ()
) -> Callable[[F], F]: ...


def cached(
    store: Store, fn: F | None = None, *, key: str | None = None, ignore: Collection[str] = ()
) -> Any:
    """Memoize ``fn`` in ``store``; usable bare or with ``key=`` / ``ignore=``.

    The entry key is ``<name>:<argument hash>:<code fingerprint>`` where ``<name>`` is ``key``
    or the function's qualified name, so ``rm --prefix <name>`` removes every entry of the
    function. The argument hash leaves out the arguments named in ``ignore`` (a logger, a
    client, a progress callback); the fingerprint covers the code, defaults and captured
    values (see ``identity``). Entries made by an older version of the code stay until removed.
    Raises TypeError/ValueError for a bad ``key`` or ``ignore``.
    """
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty str, got {key!r}")

    def decorate(function: F) -> F:
        if not callable(function):
            raise TypeError(f"cached expects a function, got {function!r}")
        ignored = _check_ignore(function, ignore)
        name = key or _function_name(function)
        code = fingerprint(function)

        def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            digest = argument_digest(function, args, kwargs, ignore=ignored)
            return f"{name}:{digest}:{code[:16]}"

        return _memoize(function, lambda: store, make_key, code)

    if fn is None:
        return decorate
    return decorate(fn)


# -- module-level compatibility API (ai2-kit style) --------------------------------------------

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
    if not isinstance(disable, bool):
        raise TypeError(f"disable must be True or False, got {disable!r}")
    takes_info = callable(key) and _key_takes_info(key)
    caller = sys._getframe(1)
    call_site = f"{caller.f_code.co_filename}:{caller.f_lineno}"

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"apply_checkpoint expects a function, got {fn!r}")
        if disable:
            return fn
        function = _function_name(fn)
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

        memoized = _memoize(fn, _configured_store, make_key, fingerprint(fn), call_site)

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
