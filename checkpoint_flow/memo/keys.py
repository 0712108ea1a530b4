"""What identifies a call: a digest of its arguments' content, bound to the function's signature.

Also the checks of ``ignore=`` (the arguments left out of the digest) and a function's name.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Collection
from typing import Any

from .. import identity


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
    name = function_name(fn)
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
                remedy=f"Leave it out of the key with cached(ignore=[{argument!r}]), or pass "
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


def check_ignore(fn: Callable[..., Any], ignore: Collection[str]) -> tuple[str, ...]:
    name = function_name(fn)
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


def function_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


