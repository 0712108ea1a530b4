"""Capturing training state: what to take from each object, and an in-memory copy of it.

Each tracked object is captured by the first adapter that fits:

- ``"generator"``: random generators (their state is set back in place, see :mod:`.rng`);
- ``"state_dict"``: anything with ``state_dict()`` and ``load_state_dict()`` (models, optimizers,
  schedulers, scalers...);
- ``"value"``: anything else, pickled as it is and handed back on restore.

For background saves the captured state is copied: torch tensors are cloned to CPU memory, NumPy
arrays copied, other values deep-copied, so training can modify the live objects right away.
Tensors are stored as raw bytes in a NumPy array, which the codec writes out of band without
another copy; they come back as CPU tensors.
"""

from __future__ import annotations

import copy as copy_module
import sys
from collections import OrderedDict
from typing import Any, Literal

from ..errors import UnpicklableStateError
from .rng import generator_state, is_generator, set_generator_state

StateKind = Literal["generator", "state_dict", "value"]
_ATOMS = (int, float, complex, str, bytes, bool, type(None))


def has_state_dict(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


class Staging:
    """CPU buffers reused from one background copy to the next.

    Copying into memory that is already mapped is several times faster than cloning into fresh
    memory, whose page faults dominate for large states. The price is one copy of the tensors
    kept between saves. Call :meth:`begin` only once the previous copy has been written.
    """

    def __init__(self) -> None:
        self._in_use: dict[tuple[str, int], list[Any]] = {}
        self._free: dict[tuple[str, int], list[Any]] = {}

    def begin(self) -> None:
        """Mark every buffer of the previous copy as free for reuse."""
        for key, buffers in self._in_use.items():
            self._free.setdefault(key, []).extend(buffers)
        self._in_use = {}

    def copy(self, tensor: Any) -> Any:
        """A contiguous CPU copy of ``tensor`` in a reused or new buffer."""
        import torch

        key = (str(tensor.dtype), tensor.numel())
        pool = self._free.get(key)
        buffer = pool.pop() if pool else torch.empty(key[1], dtype=tensor.dtype)
        source = tensor.detach()
        if (
            source.device.type == "cpu"
            and source.is_contiguous()
            and not source.is_conj()
            and not source.is_neg()
            and source.numel() > 0
        ):
            # One memcpy: torch's copy_ splits a large copy over its thread pool, which on a
            # small machine costs more than it gains (measured 1.5-3x slower on 2 cores).
            import numpy as np

            np.copyto(
                buffer.view(torch.uint8).numpy(), source.reshape(-1).view(torch.uint8).numpy()
            )
        else:
            buffer.copy_(source.reshape(-1))
        self._in_use.setdefault(key, []).append(buffer)
        return buffer.view(tensor.shape)


def capture(obj: Any, *, copy: bool, staging: Staging | None = None) -> tuple[StateKind, Any]:
    """The state to store for ``obj``; a private copy when ``copy`` is true.

    ``staging`` provides reusable buffers for the tensor copies.
    """
    if is_generator(obj):
        return "generator", detach(generator_state(obj), copy=copy)
    if has_state_dict(obj):
        return "state_dict", detach(obj.state_dict(), copy=copy, staging=staging)
    return "value", detach(obj, copy=copy, staging=staging)


def capture_all(
    objects: dict[str, Any], *, copy: bool, staging: Staging | None = None
) -> dict[str, tuple[StateKind, Any]]:
    """:func:`capture` of each named object. Raises UnpicklableStateError naming the object."""
    states: dict[str, tuple[StateKind, Any]] = {}
    for name, obj in objects.items():
        try:
            states[name] = capture(obj, copy=copy, staging=staging)
        except Exception as exc:
            raise UnpicklableStateError(
                f"the state of {name!r} ({type(obj).__name__})",
                f"it could not be captured ({type(exc).__name__}: {exc})",
            ) from exc
    return states


def apply(obj: Any, kind: StateKind, state: Any) -> Any:
    """Restore ``state`` into ``obj`` in place when it can; return the restored object.

    For ``"value"`` state there is nothing to load into, so the stored value is returned.
    """
    if kind == "generator":
        set_generator_state(obj, state)
        return obj
    if kind == "state_dict":
        if not has_state_dict(obj):
            raise TypeError(
                f"the checkpoint holds a state_dict for a {type(obj).__name__}, which has no "
                "load_state_dict()"
            )
        obj.load_state_dict(state)
        return obj
    return state


def detach(value: Any, *, copy: bool, staging: Staging | None = None) -> Any:
    """Walk containers, turning tensors into picklable CPU byte arrays (copied when ``copy``)."""
    if isinstance(value, _ATOMS):
        return value
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _pack_tensor(value, copy=copy, staging=staging)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return value.copy() if copy else value
    if type(value) in (dict, OrderedDict):
        return type(value)((k, detach(v, copy=copy, staging=staging)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(detach(v, copy=copy, staging=staging) for v in value)
    return copy_module.deepcopy(value) if copy else value


class TensorBytes:
    """A CPU tensor held as its raw bytes (a uint8 NumPy array), its dtype and shape.

    Pickles as a call to :func:`rebuild_tensor`, so a loaded checkpoint holds ordinary tensors,
    and the bytes travel as a protocol-5 out-of-band buffer.
    """

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, data: Any, dtype: str, shape: tuple[int, ...]) -> None:
        self.data = data
        self.dtype = dtype
        self.shape = shape

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return rebuild_tensor, (self.data, self.dtype, self.shape)


def _pack_tensor(tensor: Any, *, copy: bool, staging: Staging | None) -> Any:
    import torch

    t = tensor.detach()
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        # Rare layouts keep torch's own pickling; clone so training cannot change the copy.
        return t.clone() if copy else t
    if t.device.type != "cpu":
        t = t.to("cpu")  # already a private copy
    elif copy:
        t = t.clone(memory_format=torch.contiguous_format) if staging is None else staging.copy(t)
    t = t.resolve_conj().resolve_neg().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy()
    return TensorBytes(raw, str(t.dtype).removeprefix("torch."), tuple(t.shape))


def rebuild_tensor(data: Any, dtype: str, shape: tuple[int, ...]) -> Any:
    """Inverse of the packing above; imports torch only when a checkpoint holds tensors."""
    import torch

    return torch.from_numpy(data).view(getattr(torch, dtype)).reshape(shape)
