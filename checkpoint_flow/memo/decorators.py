"""``cached``: memoize a function in a store, keyed by its name, arguments and code.

The key changes with the arguments' content, the code or a captured value, so any of those is a
miss, in any process. A result whose write fails is still returned (the failure is logged):
storage trouble never costs the work already done.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Collection
from typing import Any, TypeVar, overload

from ..errors import CheckpointWriteError
from ..identity import fingerprint
from ..storage.store import Store
from .entry_store import lookup, save
from .keys import argument_digest, check_ignore, function_name

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def memoize(
    fn: F,
    store: Callable[[], Store],
    make_key: Callable[[tuple[Any, ...], dict[str, Any]], str],
    code: str,
    call_site: str | None = None,
) -> F:
    """Wrap ``fn`` so that a call looks up ``make_key(args, kwargs)`` before running.

    ``call_site`` is recorded with each entry; by default where ``fn`` is defined.
    """
    function = function_name(fn)
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
        ignored = check_ignore(function, ignore)
        name = key or function_name(function)
        code = fingerprint(function)

        def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            digest = argument_digest(function, args, kwargs, ignore=ignored)
            return f"{name}:{digest}:{code[:16]}"

        return memoize(function, lambda: store, make_key, code)

    if fn is None:
        return decorate
    return decorate(fn)
